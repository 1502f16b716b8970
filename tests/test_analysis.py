"""Physics checks of latentbias.analysis: FES, reweighting, MBAR and c(t) against analytic free energies.

Samples are drawn exactly from known Boltzmann distributions with numpy (inverse CDF on a fine grid), so every
deviation from the analytic answer is statistical. Tolerances are stated per test; free energies are compared
after removing their mean offset over the compared bins (F is defined up to a constant).
"""

from __future__ import annotations

import numpy as np
import pytest
from openmm import unit

from latentbias.analysis import (
    GAS_CONSTANT_KJ_PER_MOL_K,
    FreeEnergySurface,
    basin_free_energy_difference,
    block_labels,
    effective_sample_size,
    free_energy_surface,
    kt_kjmol,
    mbar_logweights,
    metad_ct_logweights,
    metad_final_bias_logweights,
    normalize_logweights,
    plot_fes,
    well_tempered_ct,
)

T = 300.0
KT = GAS_CONSTANT_KJ_PER_MOL_K * T  # 2.494 kJ/mol
LO, HI = -2.5, 2.5  # sampling interval (nm) of the 1-D potentials: U(2.5) > 100 kJ/mol, nothing is lost


def double_well(x):
    """U(x) = 5 (x^2 - 1)^2 kJ/mol: minima at x = +-1 nm, barrier 5 kJ/mol."""
    return 5.0 * (x**2 - 1.0) ** 2


def sample_1d(energy, n, seed, kt=KT):
    """n exact samples of p(x) ∝ exp(-energy(x)/kt) on [LO, HI] by inverse CDF on a fine grid."""
    grid = np.linspace(LO, HI, 400_001)
    e = energy(grid)
    p = np.exp(-(e - e.min()) / kt)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]))])
    cdf /= cdf[-1]
    return np.interp(np.random.default_rng(seed).random(n), cdf, grid)


def exact_bin_fes(energy, edges, kt=KT, sub=64):
    """-kT ln(bin average of exp(-U/kT)), min 0: the exact histogram free energy (midpoint rule, sub points)."""
    lo, hi = edges[:-1], edges[1:]
    t = (np.arange(sub) + 0.5) / sub
    x = lo[:, None] + (hi - lo)[:, None] * t[None, :]
    f = -kt * np.log(np.mean(np.exp(-energy(x) / kt), axis=1))
    return f - f.min()


def offset_rmse(estimate, exact, mask):
    """RMSE of estimate - exact over mask after removing the mean difference (F is defined up to a constant)."""
    d = estimate[mask] - exact[mask]
    return float(np.sqrt(np.mean((d - d.mean()) ** 2)))


# --------------------------------------------------------------------------------------------------- constants


def test_kt_float_and_quantity():
    assert kt_kjmol(300.0) == pytest.approx(2.494338785445972, rel=1e-12)
    r = (unit.MOLAR_GAS_CONSTANT_R * 310.0 * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    assert kt_kjmol(310.0 * unit.kelvin) == pytest.approx(r, rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        kt_kjmol(-5.0)
    with pytest.raises(ValueError, match="temperature units"):
        kt_kjmol(3.0 * unit.nanometer)


# --------------------------------------------------------------------------------------------------- 1-D FES


@pytest.fixture(scope="module")
def dw_samples():
    return sample_1d(double_well, 200_000, seed=1)


def test_fes_1d_matches_boltzmann_double_well(dw_samples):
    """Histogram FES of exact double-well samples: RMSE < 0.3 kJ/mol over bins with F < 10 kJ/mol."""
    fes = free_energy_surface(dw_samples, bins=50, range=(-1.8, 1.8), temperature=T, n_blocks=5)
    assert isinstance(fes, FreeEnergySurface) and fes.ndim == 1
    assert fes.free_energy.shape == fes.error.shape == fes.probability.shape == (50,)
    assert np.nanmin(fes.free_energy) == 0.0
    exact = exact_bin_fes(double_well, fes.edges[0])
    mask = exact < 10.0
    assert np.all(np.isfinite(fes.free_energy[mask]))
    assert offset_rmse(fes.free_energy, exact, mask) < 0.3
    # error bars: finite, positive, and close to the iid expectation kT sqrt((1 - p) / (N p)) for exact samples
    err = fes.error[mask]
    assert np.all(np.isfinite(err)) and np.all(err > 0) and np.all(err < 0.5)
    p = fes.probability[mask]
    expected = KT * np.sqrt((1 - p) / (len(dw_samples) * p))
    ratio = np.median(err / expected)
    assert 0.5 < ratio < 2.0, ratio
    # probability is the weight fraction per bin
    inside = np.count_nonzero((dw_samples >= -1.8) & (dw_samples <= 1.8)) / len(dw_samples)
    assert fes.probability.sum() == pytest.approx(inside, rel=1e-12)


def test_fes_empty_and_sparse_bins_are_nan():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 1, 1000), rng.uniform(2, 3, 1000), np.full(5, 1.55)])
    fes = free_energy_surface(x, bins=30, range=(0, 3))
    empty = fes.counts == 0
    assert np.count_nonzero(empty) == 9  # (1, 2) minus the bin holding 1.55
    assert np.all(np.isnan(fes.free_energy[empty])) and np.all(np.isnan(fes.error[empty]))
    assert np.all(np.isfinite(fes.free_energy[~empty]))
    # min_count masks sparse bins too (the 5 frames at 1.55 in one block: no error bar there either)
    fes2 = free_energy_surface(x, bins=30, range=(0, 3), min_count=10)
    sparse = fes2.counts < 10
    assert np.count_nonzero(sparse) == 10
    assert np.all(np.isnan(fes2.free_energy[sparse])) and np.all(np.isfinite(fes2.free_energy[~sparse]))
    assert np.isnan(fes.error[15])  # frames of the 1.55 bin all sit in the last block
    with pytest.raises(ValueError, match="min_count"):
        free_energy_surface(x, bins=30, range=(0, 3), min_count=10**6)


def test_reweighting_recovers_unbiased_fes():
    """Samples of p_b ∝ exp(-β(U + V_b)) with V_b = -(1 - 1/γ) U; log-weights βV_b: RMSE < 0.5 kJ/mol."""
    gamma = 5.0

    def bias(x):
        return -(1.0 - 1.0 / gamma) * double_well(x)

    x = sample_1d(lambda s: double_well(s) + bias(s), 200_000, seed=2)
    logw = metad_final_bias_logweights(bias(x), T)
    fes = free_energy_surface(x, logweights=logw, bins=50, range=(-1.8, 1.8), temperature=T)
    exact = exact_bin_fes(double_well, fes.edges[0])
    mask = exact < 10.0
    assert offset_rmse(fes.free_energy, exact, mask) < 0.5
    # without the weights the biased FES is (1/γ) U, far from U
    biased = free_energy_surface(x, bins=50, range=(-1.8, 1.8), temperature=T)
    assert offset_rmse(biased.free_energy, exact, mask) > 1.0
    # c(t)-weights with a constant c give the same (normalised) weights
    ct = well_tempered_ct(bias(np.linspace(-2, 2, 201)), T, gamma)
    logw_ct = metad_ct_logweights(bias(x), ct, T)
    np.testing.assert_allclose(logw_ct, logw - ct / KT, rtol=0, atol=1e-12)
    np.testing.assert_allclose(normalize_logweights(logw_ct), normalize_logweights(logw), rtol=1e-9)


# --------------------------------------------------------------------------------------------------- 2-D FES


def test_fes_2d_gaussian():
    """Anisotropic, correlated 2-D Gaussian: F = kT/2 x^T C^-1 x; RMSE < 0.3 kJ/mol where F < 6 kJ/mol."""
    cov = np.array([[0.04, 0.012], [0.012, 0.01]])
    x = np.random.default_rng(3).multivariate_normal([0.5, -0.2], cov, size=300_000)
    sx, sy = np.sqrt(np.diag(cov))
    rng = ((0.5 - 3.5 * sx, 0.5 + 3.5 * sx), (-0.2 - 3.5 * sy, -0.2 + 3.5 * sy))
    fes = free_energy_surface(x, bins=(30, 25), range=rng, temperature=T, n_blocks=5)
    assert fes.free_energy.shape == (30, 25)  # ij indexing: first index = cv[:, 0]
    assert np.nanmin(fes.free_energy) == 0.0
    # exact bin-averaged F by a 8x8 midpoint rule per bin
    prec = np.linalg.inv(cov)
    sub = (np.arange(8) + 0.5) / 8

    def sub_points(e):
        return (e[:-1, None] + np.diff(e)[:, None] * sub[None, :]).ravel()

    px, py = np.meshgrid(sub_points(fes.edges[0]) - 0.5, sub_points(fes.edges[1]) + 0.2, indexing="ij")
    q = prec[0, 0] * px**2 + 2 * prec[0, 1] * px * py + prec[1, 1] * py**2
    boltz = np.exp(-0.5 * q).reshape(30, 8, 25, 8).mean(axis=(1, 3))
    exact = -KT * np.log(boltz)
    exact -= exact.min()
    mask = exact < 6.0
    assert np.all(np.isfinite(fes.free_energy[mask]))
    assert offset_rmse(fes.free_energy, exact, mask) < 0.3
    assert np.all(np.isfinite(fes.error[mask])) and np.nanmax(fes.error[mask]) < 0.6


# --------------------------------------------------------------------------------------------------- MBAR


def test_mbar_umbrella_recovers_double_well(capfd):
    """Umbrella windows on the double well, exact samples per window: MBAR + FES RMSE < 0.5 kJ/mol (F < 12)."""
    k_umb = 100.0  # kJ/mol/nm^2
    centers = np.arange(-1.8, 1.8001, 0.2)
    n_per = 3000
    xs = [
        sample_1d(lambda s, c=c: double_well(s) + 0.5 * k_umb * (s - c) ** 2, n_per, seed=10 + i)
        for i, c in enumerate(centers)
    ]
    x = np.concatenate(xs)
    n_k = np.full(len(centers), n_per)
    u_bias = 0.5 * k_umb * (x[None, :] - centers[:, None]) ** 2 / KT  # beta V_k(x_n)

    logw, f_k, df_k = mbar_logweights(u_bias, n_k)
    out = capfd.readouterr()
    assert "JAX" not in out.out + out.err and "pymbar" not in out.out  # import banner suppressed

    assert logw.shape == x.shape and f_k.shape == df_k.shape == (len(centers),)
    assert np.all(np.isfinite(f_k)) and f_k[0] == 0.0
    assert df_k[0] == 0.0 and np.all(df_k[1:] > 0) and np.all(np.isfinite(df_k))
    # f_k against the exact -ln(Z_k / Z_0)
    grid = np.linspace(LO, HI, 200_001)
    z = np.array([np.trapezoid(np.exp(-(double_well(grid) + 0.5 * k_umb * (grid - c) ** 2) / KT), grid)
                  for c in centers])
    f_exact = -np.log(z / z[0])
    assert np.all(np.abs(f_k - f_exact) < 5 * df_k + 0.02)
    assert np.log(np.sum(np.exp(logw))) == pytest.approx(0.0, abs=1e-10)

    blocks = block_labels(n_k, 5)
    fes = free_energy_surface(x, logweights=logw, bins=40, range=(-1.8, 1.8), temperature=T, blocks=blocks)
    exact = exact_bin_fes(double_well, fes.edges[0])
    mask = exact < 12.0
    assert np.all(np.isfinite(fes.free_energy[mask]))
    assert offset_rmse(fes.free_energy, exact, mask) < 0.5
    assert np.all(np.isfinite(fes.error[mask])) and np.all(fes.error[mask] > 0)

    # same weights from full reduced potentials beta (U + V_k) with the unbiased state as target
    u_full = u_bias + double_well(x)[None, :] / KT
    logw_full, f_full, _ = mbar_logweights(u_full, n_k, target_reduced_potential=double_well(x) / KT)
    np.testing.assert_allclose(logw_full, logw, atol=1e-5)

    with pytest.raises(ValueError, match="sums to"):
        mbar_logweights(u_bias, n_k - 1)
    with pytest.raises(ValueError, match="one count per state"):
        mbar_logweights(u_bias, n_k[:-1])


# --------------------------------------------------------------------------------------------------- c(t)


def test_well_tempered_ct_formula_and_shift():
    gamma = 8.0
    x, y = np.meshgrid(np.linspace(-1.5, 1.5, 31), np.linspace(-1, 1, 21), indexing="ij")
    free = double_well(x) + 3.0 * y**2  # kJ/mol, 2-D grid
    v = -(1.0 - 1.0 / gamma) * free
    beta = 1.0 / KT
    direct = np.log(np.sum(np.exp(gamma / (gamma - 1) * beta * v)) / np.sum(np.exp(beta * v / (gamma - 1)))) / beta
    c = well_tempered_ct(v, T, gamma)
    assert c == pytest.approx(direct, abs=1e-10)
    # at the well-tempered fixed point V = -(1 - 1/γ) F: c = kT ln[Σ exp(-βF) / Σ exp(-βF/γ)]
    via_f = KT * (np.log(np.sum(np.exp(-beta * free))) - np.log(np.sum(np.exp(-beta * free / gamma))))
    assert c == pytest.approx(via_f, abs=1e-10)
    # c(V + a) = c(V) + a, also for a shift that overflows a naive exp (βa ~ 2000)
    for a in (3.7, -12.0, 5000.0):
        assert well_tempered_ct(v + a, T, gamma) == pytest.approx(c + a, abs=1e-8)
    # plain metadynamics limit γ -> inf
    assert well_tempered_ct(v, T, np.inf) == pytest.approx(KT * np.log(np.mean(np.exp(beta * v))), abs=1e-10)
    with pytest.raises(ValueError, match="> 1"):
        well_tempered_ct(v, T, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        well_tempered_ct(np.array([0.0, np.nan]), T, gamma)


# --------------------------------------------------------------------------------------------------- weights


def test_normalize_and_effective_sample_size():
    n = 1000
    assert effective_sample_size(np.zeros(n)) == pytest.approx(n)
    assert effective_sample_size(np.full(n, 700.0)) == pytest.approx(n)  # offset invariant, no overflow
    lw = np.zeros(n)
    lw[0] = 50.0
    assert effective_sample_size(lw) == pytest.approx(1.0, abs=1e-6)
    w = normalize_logweights(np.array([1000.0, 1000.0 + np.log(3.0), -np.inf]))
    np.testing.assert_allclose(w, [0.25, 0.75, 0.0], rtol=1e-12)
    np.testing.assert_allclose(metad_ct_logweights([1.0, 2.0], [0.5, 0.5], T), np.array([0.5, 1.5]) / KT)


def test_basin_free_energy_difference_tilted_double_well():
    """Tilted double well, exact samples: ΔF_B-A = -kT ln(P_B/P_A) within 0.3 kJ/mol of the exact value."""

    def tilted(s):
        return double_well(s) + 1.5 * s

    x = sample_1d(tilted, 200_000, seed=4)
    grid = np.linspace(LO, HI, 400_001)
    p = np.exp(-tilted(grid) / KT)
    exact = -KT * np.log(np.trapezoid(p * (grid > 0), grid) / np.trapezoid(p * (grid < 0), grid))
    df, err = basin_free_energy_difference(x, None, x < 0, x > 0, temperature=T)
    assert abs(df - exact) < 0.3
    assert exact > 2.0  # the tilt matters
    assert np.isfinite(err) and 0 < err < 0.1
    df2, _ = basin_free_energy_difference(x, np.zeros_like(x), lambda s: s < 0, lambda s: s > 0, T)
    assert df2 == pytest.approx(df, rel=1e-12)
    with pytest.raises(ValueError, match="basin B"):
        basin_free_energy_difference(x, None, x < 0, x > 10, T)
    with pytest.raises(ValueError, match="boolean"):
        basin_free_energy_difference(x, None, (x < 0).astype(int), x > 0, T)


# --------------------------------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def small_fes_1d():
    x = sample_1d(double_well, 20_000, seed=5)
    return free_energy_surface(x, bins=25, range=(-2.0, 2.0), temperature=T)


@pytest.fixture(scope="module")
def small_fes_2d():
    x = np.random.default_rng(6).normal(size=(20_000, 2)) * [0.3, 0.1]
    return free_energy_surface(x, bins=(20, 15), temperature=T)


def test_plot_fes_writes_png_and_refuses_overwrite(tmp_path, small_fes_1d, small_fes_2d):
    xs = np.linspace(-2, 2, 200)
    p1 = plot_fes(small_fes_1d, tmp_path / "fes1d.png", labels=["x (nm)"], title="double well", vmax=15.0,
                  reference=(xs, double_well(xs)))
    p2 = plot_fes(small_fes_2d, tmp_path / "fes2d.png", labels=["z0", "z1"], vmax=10.0)
    for p in (p1, p2):
        data = p.read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        plot_fes(small_fes_1d, p1)
    assert plot_fes(small_fes_1d, p1, overwrite=True) == p1
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]  # no temp files left behind
    with pytest.raises(ValueError, match="one label per CV"):
        plot_fes(small_fes_2d, tmp_path / "bad.png", labels=["only one"])


@pytest.mark.parametrize("which", ["small_fes_1d", "small_fes_2d"])
def test_to_csv_round_trip(tmp_path, request, which):
    fes = request.getfixturevalue(which)
    path = fes.to_csv(tmp_path / "fes.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "# free energy surface, kJ/mol, T=300 K"
    cols = ["cv0"] + (["cv1"] if fes.ndim == 2 else []) + ["free_energy_kjmol", "error_kjmol", "probability"]
    assert lines[2] == ",".join(cols)
    data = np.loadtxt(path, delimiter=",", skiprows=3)
    shape = fes.free_energy.shape
    grids = np.meshgrid(*fes.centers, indexing="ij")
    for i, g in enumerate(grids):
        np.testing.assert_allclose(data[:, i].reshape(shape), g, rtol=1e-9)
    nd = fes.ndim
    np.testing.assert_allclose(data[:, nd].reshape(shape), fes.free_energy, rtol=1e-8, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(data[:, nd + 1].reshape(shape), fes.error, rtol=1e-8, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(data[:, nd + 2].reshape(shape), fes.probability, rtol=1e-8, atol=1e-15)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fes.to_csv(path)
    fes.to_csv(path, overwrite=True)


# --------------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    x = np.linspace(0, 1, 100)
    with pytest.raises(ValueError, match="100 frames"):
        free_energy_surface(x, logweights=np.zeros(99))
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        free_energy_surface(bad)
    with pytest.raises(ValueError, match="non-finite"):
        free_energy_surface(x, logweights=np.where(x > 0.5, np.nan, 0.0))
    with pytest.raises(ValueError, match=r"\(n_frames, d\) with d <= 3"):
        free_energy_surface(np.zeros((100, 4)))
    with pytest.raises(ValueError, match=r"\(n_frames, d\) with d <= 3"):
        free_energy_surface(np.zeros((10, 10, 2)))
    with pytest.raises(ValueError, match="n_blocks must be a positive integer"):
        free_energy_surface(x, n_blocks=-1)
    with pytest.raises(ValueError, match="larger than the number of frames"):
        free_energy_surface(x, n_blocks=1000)
    with pytest.raises(ValueError, match="range"):
        free_energy_surface(x, range=(1.0, 0.0))
    with pytest.raises(ValueError, match="does not vary"):
        free_energy_surface(np.ones(10))
    with pytest.raises(ValueError, match="bins"):
        free_energy_surface(x, bins=0)
    with pytest.raises(ValueError, match="temperature"):
        free_energy_surface(x, temperature=0.0)
    with pytest.raises(ValueError, match="blocks must be one integer label per frame"):
        free_energy_surface(x, blocks=np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match="non-finite"):
        metad_ct_logweights([1.0, np.inf], 0.0, T)
    with pytest.raises(ValueError, match="2 values but there are 3 frames"):
        metad_ct_logweights([1.0, 2.0, 3.0], [0.0, 0.0], T)
    with pytest.raises(ValueError, match="shape"):
        mbar_logweights(np.zeros(10), [10])
    with pytest.raises(ValueError, match="non-negative"):
        block_labels([10, -1], 2)
    with pytest.raises(ValueError, match="at least one finite"):
        normalize_logweights([-np.inf, -np.inf])
