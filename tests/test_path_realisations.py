"""Independent realisations of a path's umbrella windows (latentbias.pathway.realisations): seeds, pooling, and the
check that flags realisations whose profiles disagree (issue 11: a window stuck in a conformer the encoder does
not resolve gave a barrier 12 kJ/mol off with a 0.4 kJ/mol error bar).

Windows along x with exact samples of their biased densities, F(x) = h (x² − 1)², as in test_pathway's analytic
profile test; a "stuck" realisation samples a tilted F(x) + c x (what windows trapped in another hidden state see).
"""

from __future__ import annotations

import numpy as np
import pytest

from latentbias.analysis.constants import kt_kjmol
from latentbias.bias.umbrella import UmbrellaResult
from latentbias.pathway import (PathWindows, compare_realisations, path_barrier, path_end_difference, pool_windows,
                                realisation_seed, umbrella_profile)

T, H, K = 300.0, 12.0, 60.0
CENTERS = np.column_stack([np.linspace(-1.3, 1.3, 14), np.zeros(14)])
RESTRAINT = {"dims": [0, 1], "lower_walls": [-np.inf] * 2, "upper_walls": [np.inf] * 2,
             "wall_force_constant": [0.0, 0.0], "period": [0.0, 0.0]}


def windows(seed: int, tilt: float = 0.0, n: int = 400) -> PathWindows:
    """Exact samples of every window's biased density of F(x) = H (x² − 1)² + tilt·x (y harmonic)."""
    kt = kt_kjmol(T)
    rng = np.random.default_rng(seed)
    grid = np.linspace(-2.5, 2.5, 20001)
    zs = []
    for c in CENTERS:
        u = (H * (grid**2 - 1) ** 2 + tilt * grid + 0.5 * K * (grid - c[0]) ** 2) / kt
        cdf = np.cumsum(np.exp(-(u - u.min())))
        x = np.interp(rng.random(n), cdf / cdf[-1], grid)
        zs.append(np.column_stack([x, rng.normal(0.0, np.sqrt(kt / (20.0 + K)), n)]))
    result = UmbrellaResult(CENTERS, np.full(CENTERS.shape, K), zs, T, RESTRAINT, [np.arange(n)] * len(zs))
    k = len(CENTERS)
    return PathWindows(CENTERS, np.zeros((k, 1, 3)), CENTERS.copy(), np.zeros(k), result, {"force_constant": K})


def binned_exact(length: float, nbins: int, tilt: float = 0.0) -> np.ndarray:
    """Bin averages exp(−F/kT) of the analytic profile on the bins umbrella_profile uses."""
    kt = kt_kjmol(T)
    edges = np.linspace(0.0, length, nbins + 1) - 1.3
    fine = [np.linspace(a, b, 200) for a, b in zip(edges[:-1], edges[1:])]
    return np.array([-kt * np.log(np.mean(np.exp(-(H * (f**2 - 1) ** 2 + tilt * f) / kt))) for f in fine])


def test_realisation_seeds_keep_realisation_zero_and_are_distinct_valid_openmm_seeds():
    assert realisation_seed(0, 0) == 0 and realisation_seed(123, 0) == 123  # one realisation = relax_path(seed)
    seeds = [realisation_seed(s, r) for s in (0, 1, 2024) for r in range(1, 6)]
    assert len(set(seeds)) == len(seeds) and all(1 <= s <= 2**31 - 1 for s in seeds)
    assert realisation_seed(7, 3) == realisation_seed(7, 3)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            realisation_seed(bad, 1)
    with pytest.raises(ValueError, match="realisation"):
        realisation_seed(1, -1)


def test_agreeing_realisations_pass_pool_to_the_analytic_barrier_and_a_stuck_one_is_flagged():
    a, b, stuck = windows(1), windows(2), windows(3, tilt=8.0)
    kw = {"bins": 26, "n_bootstrap": 20, "seed": 1}
    pa, pb, ps = (umbrella_profile(w.umbrella, **kw) for w in (a, b, stuck))
    exact = binned_exact(pa.length, 26)
    tilted = binned_exact(pa.length, 26, tilt=8.0)
    for prof, ref in ((pa, exact), (pb, exact), (ps, tilted)):
        assert prof.end_minus_start.error > 0
        # each realisation's end difference against its own analytic answer (3 sigma + 0.3 kJ/mol)
        assert abs(prof.end_minus_start.value - path_end_difference(ref)) < 3 * prof.end_minus_start.error + 0.3
    good = compare_realisations([pa, pb])
    assert good.consistent and good.largest_deviation < 3.0, good.message()
    assert "agree" in good.message() and good.summary()["n"] == 2
    bad = compare_realisations([pa, pb, ps])
    assert not bad.consistent and bad.largest_deviation > 5.0
    assert "DISAGREE" in bad.message() and "--production-steps" in bad.message()
    assert bad.summary()["consistent"] is False and len(bad.summary()["barrier_kjmol"]) == 3
    # pooling two agreeing realisations = one MBAR over 28 windows; its barrier is the analytic one
    pooled = pool_windows([a, b])
    assert len(pooled.z) == 28 and np.array_equal(pooled.window_of_sample[:400], np.zeros(400))
    pp = umbrella_profile(pooled, CENTERS, **kw)
    assert abs(pp.barrier.value - path_barrier(exact)) < 3 * pp.barrier.error + 0.2
    assert pp.barrier.error < max(pa.barrier.error, pb.barrier.error)  # twice the samples


def test_pooling_and_comparing_refuse_what_does_not_belong_together():
    a = windows(1, n=50)
    other = windows(2, n=50)
    other.umbrella.centers = other.umbrella.centers + 0.1
    with pytest.raises(ValueError, match="realisation 1 has other nodes"):
        pool_windows([a, other])
    with pytest.raises(ValueError, match="no realisations"):
        pool_windows([])
    prof = umbrella_profile(a.umbrella, bins=10, n_bootstrap=4)
    with pytest.raises(ValueError, match="at least 2"):
        compare_realisations([prof])
    with pytest.raises(ValueError, match="n_sigma"):
        compare_realisations([prof, prof], n_sigma=0)
    same = compare_realisations([prof, prof])
    assert same.consistent and same.largest_deviation == 0.0
