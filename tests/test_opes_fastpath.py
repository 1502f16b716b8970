"""The OPES deposit fast path: every shortcut checked against a straightforward recomputation.

The shortcuts (``latentbias/bias/kernels.py``, ``latentbias/bias/opes.py``): incremental kernel sums at the centres
(the K kernels a deposit adds and removes evaluated at all centres in one pass, the changed kernel's sum in full),
blocks of recently added kernels reused when a compression removes them, the occupied box of the grid sum (c(t)
and V evaluated on it only), c(t)'s log-sum-exp as one vectorised pass with βV = α ln(r + ε), N_eff from running
weight sums, the time from ``Context.getTime``. The references below are written out kernel by kernel and node by
node, without any of them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentbias.analysis import kt_kjmol
from latentbias.bias import LatentOPES, LatentVariable
from latentbias.bias.grid import BiasGrid
from latentbias.bias.kernels import KernelDensity

from toy import DOUBLE_WELL_1D, identity_model, particle_simulation, particle_system

KT = kt_kjmol(300.0)


def make_grid(d: int, periodic: bool) -> BiasGrid:
    lo, hi = (-math.pi, math.pi) if periodic else (-2.0, 2.0)
    return BiasGrid([LatentVariable(i, lo, hi, 0.3, periodic=periodic, gridWidth=(61, 31, 17)[d - 1])
                     for i in range(d)])


def reference_sum(grid: BiasGrid, cutoff: float | None, points, centers, sigmas, weights) -> np.ndarray:
    """Σ_k w_k N_c(p; c_k, σ_k) at points (n, d), kernel by kernel (minimum image, truncated and shifted)."""
    points = np.atleast_2d(points)
    periods = np.array([v.maxValue - v.minValue if v.periodic else 0.0 for v in grid.variables])
    out = np.zeros(len(points))
    for c, s, w in zip(centers, sigmas, weights):
        dv = points - c
        for j, period in enumerate(periods):
            if period > 0:
                dv[:, j] -= period * np.round(dv[:, j] / period)
        r2 = np.sum((dv / s) ** 2, axis=1)
        g = np.exp(-0.5 * r2)
        if cutoff is not None:
            g = np.where(r2 < cutoff**2, g - math.exp(-0.5 * cutoff**2), 0.0)
        out += w * g / np.prod(np.sqrt(2 * np.pi) * s)
    return out


def grid_points(grid: BiasGrid) -> np.ndarray:
    mesh = np.meshgrid(*grid.axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def random_walk(kde: KernelDensity, n: int, rng, d: int, removals: list[int]) -> float:
    """``n`` kernels along a random walk with shrinking, unequal widths and log-normal weights; returns Σw and
    appends the number of kernels each deposit removed (compression, recursive merges) to ``removals``."""
    x, total = np.zeros(d), 0.0
    for i in range(n):
        x = np.clip(x + rng.normal(0.0, 0.25, d), -2.2, 2.2)
        sigma = 0.3 * (1 + i) ** -0.15 * rng.uniform(0.7, 1.3, d)
        w = float(np.exp(rng.normal()))
        before = len(kde.journal)
        kde.add(x, sigma, w)
        removals.append(sum(1 for _, _, wj in kde.journal[before:] if wj < 0))
        total += w
    return total


@pytest.mark.parametrize("cutoff", [None, 3.0])
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_incremental_sums_after_many_compressed_deposits_equal_a_full_recomputation(d, periodic, cutoff):
    """300 deposits with compression (and recursive merges), other walkers' kernels set half-way, no rebuild:
    the centre sums, Z = their mean and the grid sum equal a kernel-by-kernel recomputation to 1e-10 (relative);
    weight and sample count are conserved; every non-zero node of the grid sum lies in the occupied box."""
    rng = np.random.default_rng(10 * d + periodic)
    grid = make_grid(d, periodic)
    kde = KernelDensity(grid, threshold=1.0, rebuild_interval=10**9, cutoff=cutoff)
    kde.journal = []
    removals: list[int] = []
    total = random_walk(kde, 150, rng, d, removals)
    kde.set_fixed(rng.uniform(-1.5, 1.5, (4, d)), np.full((4, d), 0.2), rng.uniform(0.5, 2.0, 4))
    total += random_walk(kde, 150, rng, d, removals)
    assert kde.num_kernels - 4 < 300 and max(removals) >= 2  # compressed, with recursive merges
    assert kde.counts.sum() == 300 and kde.weights.sum() == pytest.approx(total, rel=1e-12)

    c, s, w = kde.all_centers, kde.all_sigmas, kde.all_weights
    expected = reference_sum(grid, cutoff, c, c, s, w)
    np.testing.assert_allclose(kde.center_sum, expected, rtol=1e-10, atol=0)
    assert np.mean(kde.center_sum) == pytest.approx(np.mean(expected), rel=1e-10)  # Σw·Z
    on_grid = reference_sum(grid, cutoff, grid_points(grid), c, s, w).reshape(grid.shape)
    np.testing.assert_allclose(kde.grid_sum, on_grid, rtol=0, atol=1e-10 * on_grid.max())

    outside = np.ones(grid.shape, bool)
    outside[kde.occupied_box()] = False
    assert not np.any(kde.grid_sum[outside] != 0)


def test_reused_blocks_of_merged_kernels_are_exact():
    """A compression removes a kernel added shortly before; its block is then reused from the cache. The grid sum
    must be bit for bit that of the same deposits with the cache switched off, and the cache must have been hit."""

    class Counting(dict):
        hits = 0

        def pop(self, key, default=None):
            value = super().pop(key, default)
            Counting.hits += value is not None
            return value

    class Never(dict):
        def __setitem__(self, key, value):
            pass

    grid = make_grid(3, False)
    cached, uncached = (KernelDensity(grid, threshold=1.5, rebuild_interval=10**9, cutoff=4.0) for _ in range(2))
    cached._blocks, uncached._blocks = Counting(), Never()
    rng = np.random.default_rng(5)
    x = np.zeros(3)
    for _ in range(200):
        x = np.clip(x + rng.normal(0.0, 0.15, 3), -2.0, 2.0)
        sigma, w = rng.uniform(0.15, 0.3, 3), float(rng.uniform(0.5, 2.0))
        cached.add(x, sigma, w)
        uncached.add(x, sigma, w)
    assert Counting.hits > 50
    np.testing.assert_array_equal(cached.grid_sum, uncached.grid_sum)
    np.testing.assert_array_equal(cached.center_sum, uncached.center_sum)


def test_occupied_box_of_an_assigned_grid_sum_and_after_a_rebuild():
    """The box is the bounding box of the non-zero nodes when the grid sum is set as a whole (a restart), and covers
    every kernel after a rebuild; empty for an all-zero sum."""
    grid = make_grid(3, False)
    kde = KernelDensity(grid, threshold=0.0, cutoff=3.0)
    assert all(b.start == b.stop for b in kde.occupied_box())
    values = np.zeros(grid.shape)
    values[2, 5:9, 16] = 1.0
    values[4, 7, 3] = -1e-30
    kde.grid_sum = values
    assert kde.occupied_box() == (slice(2, 5), slice(5, 9), slice(3, 17))
    kde.add([0.0, 0.0, 0.0], [0.2, 0.2, 0.2], 1.0)
    kde.add([1.5, -1.5, 0.5], [0.2, 0.2, 0.2], 1.0)
    kde.rebuild()
    outside = np.ones(grid.shape, bool)
    outside[kde.occupied_box()] = False
    assert np.count_nonzero(kde.grid_sum) > 0 and not np.any(kde.grid_sum[outside] != 0)


def make_opes(tmp_path, variables, explore, **kw):
    model = tmp_path / f"id{len(variables)}.pt"
    if not model.exists():
        identity_model(model, 1, len(variables))
    system = particle_system(DOUBLE_WELL_1D if len(variables) == 1 else "10*(4*x^2-1)^2 + 20*(y^2+z^2)")
    return LatentOPES(system, model, variables, 300.0, barrier=20.0, pace=50, explore=explore, **kw), system


def reference_ct(opes: LatentOPES) -> float:
    """c(t) over the distinct grid nodes, node by node: −kT ln Σ P e^{−βV} (METAD), kT ln Σ P e^{βV} (explore),
    P = max(S, 0) normalised, V = α kT ln(S/Z + ε) with Z·Σw the mean of the kernel sum over the centres."""
    kde = opes.kde
    unique = tuple(slice(0, n - 1) if v.periodic else slice(0, n) for v, n in zip(opes.variables, opes.grid.shape))
    p = np.maximum(kde.grid_sum[unique], 0.0).ravel()
    p = p[p > 0]
    alpha = (opes.biasFactor - 1) if opes.explore else (1 - 1 / opes.biasFactor)
    zed = np.mean(reference_sum(opes.grid, kde.cutoff, kde.all_centers, kde.all_centers, kde.all_sigmas,
                                kde.all_weights))
    beta_v = alpha * np.log(p / zed + math.exp(-opes.barrier / (alpha * KT)))
    terms = p / p.sum() * np.exp(beta_v if opes.explore else -beta_v)
    return (1 if opes.explore else -1) * KT * math.log(math.fsum(terms))


@pytest.mark.parametrize("explore", [False, True])
@pytest.mark.parametrize("periodic", [False, True])
def test_ct_and_the_bias_grid_equal_a_whole_grid_computation(tmp_path, periodic, explore):
    """c(t) (occupied box, vectorised log-sum-exp) equals the node-by-node formula over the whole grid to 1e-12
    relative, with kernels across a periodic seam; V on the grid (occupied box, the value at S = 0 elsewhere) equals
    _biasFromSums of the whole grid bit for bit."""
    variables = [LatentVariable(i, -1.0, 1.0, 0.08, periodic=periodic, gridWidth=(24, 20, 16)[i]) for i in range(3)]
    opes, _ = make_opes(tmp_path, variables, explore)
    rng = np.random.default_rng(7 + periodic)
    for center in ([0.95, -0.97, 0.1], [-0.2, 0.3, 0.99], [0.0, 0.0, 0.0]):
        for _ in range(15):
            opes.kde.add(np.array(center) + rng.normal(0, 0.05, 3), [0.08, 0.1, 0.06], float(rng.uniform(0.1, 3)))
    opes._refreshBias()
    assert opes.ct() == pytest.approx(reference_ct(opes), rel=1e-12, abs=1e-12)
    whole = opes._biasFromSums(opes.kde.grid_sum, opes._normalization())
    np.testing.assert_array_equal(opes._computeBiasGrid(), whole)
    if not periodic:  # (across the seams the box is the whole grid)
        box = opes.kde.occupied_box()
        assert np.prod([b.stop - b.start for b in box]) < opes.kde.grid_sum.size  # the shortcut is taken


@pytest.mark.parametrize("explore", [False, True])
def test_deposits_neff_sigma_time_and_ct_equal_a_recomputation_from_the_records(tmp_path, explore):
    """After a run of deposits (1-D double well, OPES-METAD and explore): N_eff from the running weight sums equals
    (1 + Σw)²/(1 + Σw²) of the recorded biases (w = e^{βV}, with PLUMED's fictitious first sample) to 1e-10; σ of the
    next kernel is Silverman's shrink of σ0; Z equals the mean of the recomputed centre sums to 1e-10; the recorded
    times are step · dt; each recorded c(t) equals the node-by-node formula for the estimate before its deposit."""
    opes, system = make_opes(tmp_path, [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=201)], explore)
    sim = particle_simulation(system, [-0.5], seed=4)
    cts = []
    original = opes._deposit

    def deposit(simulation):
        cts.append(reference_ct(opes) if opes.kde.num_kernels else -opes.barrier)
        original(simulation)

    opes._deposit = deposit
    opes.step(sim, 5000)
    rec = opes.getRecords()
    assert len(rec["step"]) == 100
    np.testing.assert_allclose(rec["ct_kjmol"], cts, rtol=1e-12, atol=1e-12)
    dt = sim.integrator.getStepSize().value_in_unit(unit_ps())
    np.testing.assert_allclose(rec["time_ps"], rec["step"] * dt, rtol=1e-12)
    if explore:
        assert opes.getNeff() == 101
    else:
        w = [math.exp(b / KT) for b in rec["bias_kjmol"]]
        sum_w = math.exp(-20.0 / KT) + math.fsum(w)
        sum_w2 = math.exp(-40.0 / KT) + math.fsum(x * x for x in w)
        assert opes.getNeff() == pytest.approx((1 + sum_w) ** 2 / (1 + sum_w2), rel=1e-10)
        assert opes.kde.weights.sum() == pytest.approx(math.fsum(w), rel=1e-10)
    assert opes.getSigma()[0] == pytest.approx(0.05 * (opes.getNeff() * 3 / 4) ** (-1 / 5), rel=1e-12)
    kde = opes.kde
    centre_sums = reference_sum(opes.grid, kde.cutoff, kde.all_centers, kde.all_centers, kde.all_sigmas,
                                kde.all_weights)
    assert opes._normalization() == pytest.approx(np.mean(centre_sums), rel=1e-10)


def unit_ps():
    from openmm import unit

    return unit.picosecond


@pytest.mark.parametrize("periodic", [False, True])
def test_axis_by_axis_sums_for_many_kernels_equal_the_reduce_bit_for_bit(periodic, monkeypatch):
    """From ``_AXIS_BY_AXIS`` kernels on, distances, centre sums and the changed kernel's sum are taken axis by axis
    (in the order numpy's reduce over the short last axis adds them): 400 uncompressed and then compressed deposits
    give bit for bit the sums of the reduce path (switched on for all sizes), and both equal the kernel-by-kernel
    recomputation to 1e-10."""
    from latentbias.bias import kernels as kernels_module

    def run(threshold_kernels: int) -> KernelDensity:
        monkeypatch.setattr(kernels_module, "_AXIS_BY_AXIS", threshold_kernels)
        rng = np.random.default_rng(2)
        grid = make_grid(3, periodic)
        kde = KernelDensity(grid, threshold=0.0, rebuild_interval=10**9, cutoff=4.0)
        kde.journal = []
        random_walk(kde, 300, rng, 3, [])
        kde.threshold = 1.5  # then compress into the many kernels
        random_walk(kde, 100, rng, 3, [])
        return kde

    fast, reduce_ = run(kernels_module._AXIS_BY_AXIS), run(10**9)
    assert fast.num_kernels > 256  # more than one chunk of mixture_at
    for name in ("grid_sum", "center_sum", "centers", "sigmas", "weights", "counts"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(reduce_, name), err_msg=name)
    c, s, w = fast.all_centers, fast.all_sigmas, fast.all_weights
    np.testing.assert_allclose(fast.center_sum, reference_sum(fast.grid, 4.0, c, c, s, w), rtol=1e-10, atol=0)
