"""latentbias.analysis.compare_periodic_fes: the demo's FES-against-reference measure (issue 8 item 6)."""

from __future__ import annotations

import numpy as np
import pytest

from latentbias.analysis import compare_periodic_fes, kt_kjmol

KT = kt_kjmol(300.0)
N = 72                                   # 5-degree reference cells
CENTRES = -180.0 + 2.5 + 5.0 * np.arange(N)


def smooth_reference() -> np.ndarray:
    """A two-basin periodic surface, 0 … ~32 kJ/mol, indexed [phi, psi]."""
    p, q = np.radians(np.meshgrid(CENTRES, CENTRES, indexing="ij"))
    f = 8.0 * (1 + np.cos(p)) + 6.0 * (1 - np.cos(q - 2.0)) + 4.0 * np.sin(p + q) ** 2
    return f - f.min()


def sample_cells(f: np.ndarray, n: int, rng: np.random.Generator, bias_kjmol: np.ndarray | None = None):
    """n frames drawn cell by cell from exp(-(f + bias)/kT), uniform inside the cell; log-weights bias/kT."""
    bias = np.zeros_like(f) if bias_kjmol is None else bias_kjmol
    p = np.exp(-(f + bias - (f + bias).min()) / KT).ravel()
    cells = rng.choice(p.size, size=n, p=p / p.sum())
    i, j = np.unravel_index(cells, f.shape)
    angles = np.stack([CENTRES[i], CENTRES[j]], axis=1) + rng.uniform(-2.5, 2.5, (n, 2))
    angles = (angles + 180.0) % 360.0 - 180.0
    return angles, bias.ravel()[cells] / KT


def test_exact_samples_give_a_small_rmse_and_full_coverage():
    f = smooth_reference()
    angles, lw = sample_cells(f, 400_000, np.random.default_rng(1), bias_kjmol=-0.9 * f)  # nearly flat sampling
    res = compare_periodic_fes(angles, lw, f, CENTRES)
    assert res.coverage == 1.0 and res.bins_compared == res.region_bins > 100
    assert res.rmse < 0.15
    assert res.bin_width_deg == 15.0


def test_wrong_weights_give_the_rmse_of_the_error_they_make():
    """Frames sampled under the bias -0.9 f and weighted for -0.45 f estimate 0.55 f: wrong by -0.45 f, and the
    RMSE is that error's offset-free spread over the region."""
    f = smooth_reference()
    angles, lw = sample_cells(f, 400_000, np.random.default_rng(2), bias_kjmol=-0.9 * f)
    good = compare_periodic_fes(angles, lw, f, CENTRES)
    bad = compare_periodic_fes(angles, 0.5 * lw, f, CENTRES)
    fc = -KT * np.log(np.exp(-f / KT).reshape(24, 3, 24, 3).mean((1, 3)))
    region = fc - fc.min() < 25
    expected = np.std(0.45 * fc[region])       # to within the shape of f inside a bin
    assert bad.rmse == pytest.approx(expected, rel=0.1)
    assert bad.rmse > 10 * good.rmse


def test_coarse_bins_boltzmann_average_the_reference():
    """Half the coarse bins hold a 0 / 10 kJ/mol checkerboard of fine cells: a histogram measures
    -kT ln <exp(-F/kT)> over the bin, not <F>. Exact samples must agree with the first and not the second."""
    f = np.zeros((N, N))
    fine = (np.add.outer(np.arange(N), np.arange(N)) % 2) * 10.0
    left = np.arange(N) < N // 2
    f[left] = fine[left]
    angles, lw = sample_cells(f, 300_000, np.random.default_rng(3))
    res = compare_periodic_fes(angles, lw, f, CENTRES)
    assert res.coverage == 1.0 and res.rmse < 0.25     # noise: ~kT/sqrt(500 frames per bin)
    arithmetic = f.reshape(24, 3, 24, 3).mean((1, 3))  # what a plain mean of the reference would compare with
    boltzmann = -KT * np.log(np.exp(-f / KT).reshape(24, 3, 24, 3).mean((1, 3)))
    assert np.std(arithmetic - boltzmann) > 1.0     # the test can tell the two apart


def test_offsets_and_run_scales_do_not_matter_and_runs_weigh_equally():
    f = smooth_reference()
    rng = np.random.default_rng(4)
    a1, w1 = sample_cells(f, 100_000, rng, bias_kjmol=-0.8 * f)
    a2, w2 = sample_cells(f, 20_000, rng, bias_kjmol=-0.8 * f)
    base = compare_periodic_fes([a1, a2], [w1, w2], f, CENTRES)
    shifted = compare_periodic_fes([a1, a2], [w1 + 50.0, w2 - 3.0], f + 7.0, CENTRES)
    assert shifted.rmse == pytest.approx(base.rmse, rel=1e-12) and shifted.coverage == base.coverage
    # one run of the same frames concatenated weighs them by their log-weights, not per run: different numbers
    joined = compare_periodic_fes(np.concatenate([a1, a2]), np.concatenate([w1 + 50.0, w2 - 3.0]), f, CENTRES)
    alone = compare_periodic_fes(a1, w1, f, CENTRES)
    assert joined.rmse == pytest.approx(alone.rmse, rel=1e-6)   # run 2's weights vanish beside run 1's


def test_coverage_counts_the_unsampled_part_of_the_region_and_minus_inf_frames_are_left_out():
    f = smooth_reference()
    angles, lw = sample_cells(f, 200_000, np.random.default_rng(5), bias_kjmol=-0.9 * f)
    full = compare_periodic_fes(angles, lw, f, CENTRES)
    keep = angles[:, 0] < 0
    half = compare_periodic_fes(angles, np.where(keep, lw, -np.inf), f, CENTRES)
    assert 0.3 < half.coverage < 0.7 and half.region_bins == full.region_bins
    assert half.bins_compared == round(half.coverage * half.region_bins)
    none = compare_periodic_fes(angles, np.full(len(lw), -np.inf), f, CENTRES)
    assert none.coverage == 0.0 and np.isnan(none.rmse)


def test_a_repeated_periodic_end_point_is_accepted():
    f = smooth_reference()
    angles, lw = sample_cells(f, 50_000, np.random.default_rng(6), bias_kjmol=-0.9 * f)
    centres73 = np.append(CENTRES, CENTRES[0] + 360.0)
    f73 = np.pad(f, ((0, 1), (0, 1)), mode="wrap")
    a = compare_periodic_fes(angles, lw, f73, centres73)
    b = compare_periodic_fes(angles, lw, f, CENTRES)
    assert a == b


@pytest.mark.parametrize("kwargs, match", [
    ({"coarse": 5}, "coarse must be a positive integer dividing the 72"),
    ({"cutoff": -1.0}, "cutoff must be a positive energy"),
    ({"reference_kjmol": np.zeros((10, 10))}, r"must be an \(n, n\) grid over the n = 72"),
    ({"centres_deg": np.linspace(-180, 100, N)}, "evenly spaced points covering 360"),
    ({"angles_deg": np.zeros((5, 3))}, r"run 0: angles_deg must be \(n_frames, 2\)"),
    ({"angles_deg": np.full((4, 2), np.nan)}, "non-finite"),
    ({"logweights": np.array([0.0, np.inf, 0.0, 0.0])}, r"run 0: logweights holds \+inf"),
    ({"logweights": [np.zeros(4), np.zeros(4)]}, "one logweights array per angles array"),
])
def test_bad_input_is_named(kwargs, match):
    args = {"angles_deg": np.zeros((4, 2)), "logweights": np.zeros(4), "reference_kjmol": smooth_reference(),
            "centres_deg": CENTRES}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        compare_periodic_fes(**args)
