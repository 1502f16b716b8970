"""OPES against its defining formulas, step by step (issue 15, mutation testing of ``bias/opes.py``,
``bias/kernels.py`` and ``bias/cutoff.py``; helper mut15d).

Kernels are deposited at chosen points: the particle is massless (OpenMM never moves it), its position is set
before every ``pace`` steps, and every point is a grid node whose coordinate is exact in binary, so the acting
spline bias there is the grid value. An independent OPES written from the papers (Invernizzi & Parrinello,
JPCL 2020 and JCTC 2022; PLUMED's OPES_METAD/OPES_METAD_EXPLORE conventions stated in ``opes.py``) then gives,
after every deposit: the bias V = (α/β) ln(P/Z + ε) on the grid, the recorded bias, c(t), rct and log-weight,
the kernel weights exp(βV) (METAD) or 1 (explore), N_eff, the Silverman-shrunk σ, the probability estimate and
the free energy −V/(1 − 1/γ). Tolerances: 1e-9 kJ/mol on the grid (double precision end to end), 1e-6 kJ/mol on
what the Context evaluates (spline at a node).

Also: adaptive σ against the documented Welford statistics; walkers through ``setOtherWalkers`` and through a
shared folder (union estimate, damaged files, syncs that find nothing new change nothing bit for bit); restarts
bit for bit; the kernel density's merge rule (weight, mean and second moment, across the periodic seam,
recursively), truncated sums against the mixture written out (2-D, away from the origin, periodic end nodes); the
cut factor's error bound and exact zeros. Each test kills mutants listed in TESTING.md (helper mut15d).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from openmm import unit

from latentbias.analysis import kt_kjmol
from latentbias.bias import LatentOPES, LatentVariable
from latentbias.bias.cutoff import opes_default_cutoff, product_error_bound, truncated_gaussian, volume_deficit
from latentbias.bias.grid import BiasGrid
from latentbias.bias.kernels import KernelDensity

from toy import identity_model, particle_simulation, particle_system

KT = kt_kjmol(300.0)
BARRIER = 12.0
SIGMA0 = 0.15
PACE = 5
#: grid [-1, 1] with 33 nodes: spacing 1/16, every node exact in binary
NODES = np.linspace(-1.0, 1.0, 33)
#: deposit points (grid nodes), a revisit included and one at the edge of the periodic seam
POINTS = [-0.5, -0.4375, -0.5, 0.25, -0.375, 0.0, 0.9375, -1.0, -0.5, 0.5625]


def reference_opes(points, explore, cutoff, gamma=None, periodic=False, barrier=BARRIER, shrink=True,
                   sigma0=SIGMA0, others=()):
    """OPES written out from its defining formulas (1-D). Returns per-deposit records and the final state.

    ``others``: extra (centre, σ, weight) kernels and their (Σw, Σw², n) of other walkers, present from the start.
    """
    gamma = barrier / KT if gamma is None else gamma
    alpha = gamma - 1.0 if explore else 1.0 - 1.0 / gamma
    eps = math.exp(-barrier / (alpha * KT))
    period = 2.0 if periodic else 0.0
    kernels = [k for k, _ in others]
    sumw = math.exp(-barrier / KT) + sum(s[0] for _, s in others)
    sumw2 = math.exp(-2 * barrier / KT) + sum(s[1] for _, s in others)
    count = 1 + sum(s[2] for _, s in others)

    def kde(x):
        x = np.atleast_1d(np.asarray(x, float))
        out = np.zeros(len(x))
        for c, s, w in kernels:
            dx = x - c
            if period:
                dx = dx - period * np.round(dx / period)
            r2 = (dx / s) ** 2
            if cutoff is None:
                g = np.exp(-0.5 * r2)
            else:
                g = np.where(r2 < cutoff**2, np.exp(-0.5 * r2) - math.exp(-0.5 * cutoff**2), 0.0)
            out += w * g / (math.sqrt(2 * math.pi) * s)
        return out

    def bias(x):
        if not kernels:
            return np.full(np.shape(np.atleast_1d(x)), -barrier)
        zed = np.mean(kde(np.array([c for c, _, _ in kernels])))
        return alpha * KT * np.log(kde(x) / zed + eps)

    unique = NODES[:-1] if periodic else NODES

    def ct():
        if not kernels:
            return -barrier
        p = kde(unique)
        p = p / p.sum()
        v = bias(unique) / KT
        keep = p > 0
        if explore:
            return KT * math.log(np.sum(p[keep] * np.exp(v[keep])))
        return -KT * math.log(np.sum(p[keep] * np.exp(-v[keep])))

    rows = []
    for z in points:
        v = float(bias(z)[0])
        row = dict(bias=v, ct=ct(), rct=KT * math.log(sumw / count))
        row["logweight"] = (v - row["ct"]) / KT
        rows.append(row)
        w = math.exp(v / KT)
        sumw, sumw2, count = sumw + w, sumw2 + w * w, count + 1
        neff = count if explore else (1 + sumw) ** 2 / (1 + sumw2)
        sigma = sigma0 * (neff * 3 / 4.0) ** (-1 / 5) if shrink else sigma0
        kernels.append((z, sigma, 1.0 if explore else w))
    neff = count if explore else (1 + sumw) ** 2 / (1 + sumw2)
    state = dict(grid_bias=bias(NODES), kernels=kernels, neff=neff, rct=KT * math.log(sumw / count), ct=ct(),
                 probability=kde(NODES), alpha=alpha, gamma=gamma, sigma_next=sigma0 * (neff * 3 / 4.0) ** (-1 / 5)
                 if shrink else sigma0)
    return rows, state


def build(tmp_path, periodic=False, name="x.pt", **kw):
    model = tmp_path / name
    if not model.exists():
        identity_model(model, 1, 1)
    system = particle_system("0", mass=0.0)  # massless: the particle stays where it is put
    var = LatentVariable(0, -1.0, 1.0, SIGMA0, periodic=periodic, gridWidth=33)
    kw.setdefault("barrier", BARRIER)
    kw.setdefault("pace", PACE)
    opes = LatentOPES(system, model, [var], 300.0, **kw)
    sim = particle_simulation(system, [0.0])
    return opes, sim


def deposit_at(opes, sim, points):
    for z in points:
        sim.context.setPositions(np.array([[z, 0.0, 0.0]]))
        opes.step(sim, PACE)


CASES = [  # explore, kernelCutoff, biasFactor, periodic
    (False, "default", None, False),
    (True, "default", None, False),
    (False, None, 6.0, False),
    (True, None, 3.0, True),
    (False, "default", None, True),
]


@pytest.mark.parametrize("explore,cutoff,gamma,periodic", CASES)
def test_opes_step_by_step_equals_its_defining_formulas(tmp_path, explore, cutoff, gamma, periodic):
    opes, sim = build(tmp_path, periodic=periodic, explore=explore, kernelCutoff=cutoff, biasFactor=gamma,
                      compressionThreshold=0.0)
    g = BARRIER / KT if gamma is None else gamma
    alpha = g - 1 if explore else 1 - 1 / g
    cut = None if cutoff is None else (math.sqrt(2 * BARRIER / KT) if explore else math.sqrt(2 * BARRIER / KT / alpha))
    assert opes.kde.cutoff == (None if cut is None else pytest.approx(cut, rel=1e-12))
    # before any kernel: flat −ΔE, c(t) = −ΔE, rct = kT ln(e^{−βΔE}/1) = −ΔE, N_eff of the fictitious sample
    np.testing.assert_array_equal(opes.getBias(), np.full(33, -BARRIER))
    assert opes.ct() == -BARRIER and opes.rct() == pytest.approx(-BARRIER, abs=1e-12)
    import warnings

    with warnings.catch_warnings():
        # c(t) at every deposit: nodes the truncated kernels do not reach (P = 0) are left out, no log(0)
        warnings.simplefilter("error", RuntimeWarning)
        deposit_at(opes, sim, POINTS)
    rows, ref = reference_opes(POINTS, explore, cut, gamma, periodic)
    assert opes.numDeposits == len(POINTS) and opes.numKernels == len(POINTS)
    np.testing.assert_allclose(opes.getBias(), ref["grid_bias"], rtol=0, atol=1e-9)
    rec = opes.getRecords()
    np.testing.assert_array_equal(rec["step"], PACE * np.arange(1, len(POINTS) + 1))
    np.testing.assert_allclose(rec["z"][:, 0], POINTS, atol=1e-12)
    for key, col in (("bias", "bias_kjmol"), ("ct", "ct_kjmol"), ("rct", "rct_kjmol"), ("logweight", "logweight")):
        np.testing.assert_allclose(rec[col], [r[key] for r in rows], rtol=0, atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(rec["wall_kjmol"], 0.0)
    # kernel weights exp(βV_{t−1}(s_t)) (METAD) or 1 (explore), widths shrunk by Silverman's rule
    np.testing.assert_allclose(opes.kde.weights, [k[2] for k in ref["kernels"]], rtol=1e-6)
    np.testing.assert_allclose(opes.kde.sigmas[:, 0], [k[1] for k in ref["kernels"]], rtol=1e-6)
    assert opes.getNeff() == pytest.approx(ref["neff"], rel=1e-6)
    assert opes.getSigma()[0] == pytest.approx(ref["sigma_next"], rel=1e-6)
    assert opes.rct() == pytest.approx(ref["rct"], abs=1e-6)
    assert opes.ct() == pytest.approx(ref["ct"], abs=1e-6)
    # free energy −V/(1 − 1/γ) in both variants, and the normalised probability estimate
    f = opes.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)
    np.testing.assert_allclose(f, -ref["grid_bias"] / (1 - 1 / g), rtol=0, atol=1e-8)
    p = ref["probability"]
    p = p / (p[:-1].sum() if periodic else p.sum())
    np.testing.assert_allclose(opes.getProbability(), p, rtol=1e-6, atol=1e-15)
    # the four log-weights of the recorded frames
    biasv = np.array([r["bias"] for r in rows])
    np.testing.assert_allclose(opes.getLogWeights(), [r["logweight"] for r in rows], atol=1e-6)
    np.testing.assert_allclose(opes.getLogWeights("rct"), (biasv - [r["rct"] for r in rows]) / KT, atol=1e-6)
    np.testing.assert_allclose(opes.getLogWeights("bias"), biasv / KT, atol=1e-6)
    final = np.interp(POINTS, NODES, ref["grid_bias"])
    np.testing.assert_allclose(opes.getLogWeights("final"), final / KT, atol=1e-6)
    np.testing.assert_allclose(opes.biasAt(np.array(POINTS)[:, None]), final, atol=1e-9)
    # the Context feels the grid bias: the acting energy at a node is V there
    sim.context.setPositions(np.array([[0.25, 0.0, 0.0]]))
    assert opes.getBiasEnergy(sim.context) == pytest.approx(ref["grid_bias"][20], abs=1e-6)


def test_fixed_sigma_is_not_shrunk(tmp_path):
    opes, sim = build(tmp_path, shrinkSigma=False, compressionThreshold=0.0, kernelCutoff=None)
    deposit_at(opes, sim, POINTS[:4])
    rows, ref = reference_opes(POINTS[:4], False, None, shrink=False)
    np.testing.assert_array_equal(opes.kde.sigmas[:, 0], SIGMA0)
    np.testing.assert_allclose(opes.getBias(), ref["grid_bias"], atol=1e-9)


def test_recorded_bias_is_unscaled_and_walls_enter_the_logweight(tmp_path):
    """setBiasScale changes what acts, never the recorded V (kernel weights use V); a frame beyond the grid edge
    records the wall ½ k d² and its log-weight β(V + W − c(t))."""
    points = [-0.5, 0.25, -0.4375, 0.0]
    opes, sim = build(tmp_path, compressionThreshold=0.0, wallForceConstant=500.0)
    deposit_at(opes, sim, points[:2])
    opes.setBiasScale(sim.context, 0.5)
    assert opes.biasScale == 0.5
    deposit_at(opes, sim, points[2:3])
    opes.setBiasScale(sim.context, 0.0)
    deposit_at(opes, sim, points[3:])
    cut = math.sqrt(2 * BARRIER / KT / (1 - KT / BARRIER))
    rows, ref = reference_opes(points, False, cut)
    rec = opes.getRecords()
    np.testing.assert_allclose(rec["bias_kjmol"], [r["bias"] for r in rows], atol=1e-6)
    np.testing.assert_allclose(opes.getBias(), ref["grid_bias"], atol=1e-9)
    with pytest.raises(ValueError, match="scale"):
        opes.setBiasScale(sim.context, -0.1)
    # beyond the edge (x = 1.25): V at the edge node plus the wall 0.5 · 500 · 0.25²
    opes.setBiasScale(sim.context, 1.0)
    sim.context.setPositions(np.array([[1.25, 0.0, 0.0]]))
    opes.depositionEnabled = False  # frozen bias: a record, no kernel
    opes.step(sim, PACE)
    assert opes.numKernels == 4 and opes.numDeposits == 4
    last = opes.getRecords()
    wall = 0.5 * 500.0 * 0.25**2
    assert last["wall_kjmol"][-1] == pytest.approx(wall, rel=1e-9)
    assert last["bias_kjmol"][-1] == pytest.approx(ref["grid_bias"][-1], abs=1e-5)
    assert last["logweight"][-1] == pytest.approx((last["bias_kjmol"][-1] + wall - opes.ct()) / KT, abs=1e-9)
    assert opes.getLogWeights("bias")[-1] == pytest.approx((last["bias_kjmol"][-1] + wall) / KT, abs=1e-9)
    rct = last["rct_kjmol"][-1]
    assert opes.getLogWeights("rct")[-1] == pytest.approx((last["bias_kjmol"][-1] + wall - rct) / KT, abs=1e-9)
    v_final = opes.biasAt(np.array([[1.25]]))[0]
    assert v_final == pytest.approx(ref["grid_bias"][-1], abs=1e-9)  # the grid's edge value beyond the edge
    assert opes.getLogWeights("final")[-1] == pytest.approx((v_final + wall) / KT, abs=1e-9)


def test_other_walkers_enter_the_estimate_and_the_weight_sums(tmp_path):
    """A walker given another walker's contribution: bias from the union of kernels, Σw, Σw² and n summed over
    both walkers (one fictitious sample in all), its own id ignored."""
    pa, pb = [-0.5, -0.4375, 0.0], [0.5, 0.5625]
    a, sim_a = build(tmp_path, compressionThreshold=0.0, walkerId="A")
    b, sim_b = build(tmp_path, compressionThreshold=0.0, walkerId="B")
    deposit_at(b, sim_b, pb)
    cut = math.sqrt(2 * BARRIER / KT / (1 - KT / BARRIER))
    _, ref_b = reference_opes(pb, False, cut)
    contribution = b.walkerContribution()
    bw = ref_b["kernels"]
    sums_b = (sum(k[2] for k in bw), sum(k[2] ** 2 for k in bw), len(bw))
    np.testing.assert_allclose(contribution["sums"], sums_b, rtol=1e-6)
    a.setOtherWalkers({"B": contribution, "A": {"bogus": 1}})
    others = [((k[0], k[1], k[2]), sums_b if i == 0 else (0, 0, 0)) for i, k in enumerate(bw)]
    rows, ref = reference_opes([], False, cut, others=others)
    np.testing.assert_allclose(a.getBias(), ref["grid_bias"], atol=1e-9)
    assert a.numKernels == 2 and a.numDeposits == 0
    deposit_at(a, sim_a, pa)
    rows, ref = reference_opes(pa, False, cut, others=others)
    np.testing.assert_allclose(a.getBias(), ref["grid_bias"], atol=1e-9)
    np.testing.assert_allclose(a.getRecords()["bias_kjmol"], [r["bias"] for r in rows], atol=1e-6)
    np.testing.assert_allclose(a.getRecords()["rct_kjmol"], [r["rct"] for r in rows], atol=1e-6)
    assert a.rct() == pytest.approx(ref["rct"], abs=1e-6)
    assert a.getNeff() == pytest.approx(ref["neff"], rel=1e-6)
    # explore counts every walker's samples in N_eff
    e, sim_e = build(tmp_path, explore=True, compressionThreshold=0.0, walkerId="E")
    f, sim_f = build(tmp_path, explore=True, compressionThreshold=0.0, walkerId="F")
    deposit_at(f, sim_f, pb)
    e.setOtherWalkers({"F": f.walkerContribution()})
    assert e.getNeff() == 1 + len(pb)


def test_restart_mid_run_equals_the_uninterrupted_run(tmp_path):
    """Save after 5 deposits, restore into a fresh LatentOPES (different walker id), 5 more: bit for bit the same
    bias, records, weight sums, σ and kernels as 10 deposits straight (the restored sums rebuild at the same
    update as the uninterrupted ones); the restored walker keeps the saved walker id."""
    straight, sim = build(tmp_path, walkerId="S", compressionThreshold=1.0)
    first, sim1 = build(tmp_path, walkerId="S", compressionThreshold=1.0)
    again, sim2 = build(tmp_path, walkerId="other", compressionThreshold=1.0)
    for opes in (straight, first, again):  # full rebuilds of the kernel sums at updates 3, 6, 9 (the same in all)
        opes.kde.rebuild_interval = 3
    deposit_at(straight, sim, POINTS)
    deposit_at(first, sim1, POINTS[:5])
    first.saveState(tmp_path / "state")
    sim2.currentStep = sim1.currentStep
    sim2.context.setTime(sim1.context.getState().getTime())
    again.loadState(tmp_path / "state")
    assert again.walkerId == "S" and again.numDeposits == 5
    np.testing.assert_array_equal(again.getBias(), first.getBias())
    deposit_at(again, sim2, POINTS[5:])
    np.testing.assert_array_equal(again.getBias(), straight.getBias())
    assert again.numKernels == straight.numKernels and again.numDeposits == straight.numDeposits
    for key, value in straight.getRecords().items():
        np.testing.assert_array_equal(again.getRecords()[key], value, err_msg=key)
    assert again.getNeff() == straight.getNeff() and again.rct() == straight.rct()
    np.testing.assert_array_equal(again.kde.counts, straight.kde.counts)
    assert again.kde.counts.sum() == len(POINTS)


# ------------------------------------------------------------------------------------------- kernels.py


def test_merge_rule_conserves_weight_mean_and_second_moment_across_the_seam():
    """Two kernels on a periodic axis (period 2) on both sides of the seam: the merged kernel has the total
    weight, the weighted mean of the minimum-image positions (wrapped into [min, max)) and the weighted second
    moment; its grid sum is the merged Gaussian, and the centre sum is the mixture at the centre."""
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, periodic=True, gridWidth=41)])
    kde = KernelDensity(grid, threshold=2.0, rebuild_interval=10**6)
    kde.add([0.95], [0.1], 1.0)
    kde.add([-0.97], [0.05], 3.0)  # 0.08 away through the seam, within 2 σ of the stored kernel
    assert kde.num_kernels == 1 and kde.counts[0] == 2
    mean = (1 * 0.95 + 3 * 1.03) / 4  # = 1.01 -> wrapped to -0.99
    second = (1 * (0.1**2 + 0.95**2) + 3 * (0.05**2 + 1.03**2)) / 4
    assert kde.centers[0, 0] == pytest.approx(mean - 2.0, abs=1e-12)
    assert kde.sigmas[0, 0] == pytest.approx(math.sqrt(second - mean**2), rel=1e-9)
    assert kde.weights[0] == 4.0
    s = kde.sigmas[0, 0]
    x = grid.axes[0]
    dx = x - kde.centers[0, 0]
    dx -= 2.0 * np.round(dx / 2.0)
    expected = 4.0 * np.exp(-0.5 * (dx / s) ** 2) / (math.sqrt(2 * math.pi) * s)
    np.testing.assert_allclose(kde.grid_sum, expected, rtol=0, atol=1e-12)
    assert kde.center_sum[0] == pytest.approx(4.0 / (math.sqrt(2 * math.pi) * s), rel=1e-12)
    # a kernel beyond the threshold is kept apart; exactly at the threshold (2 σ of the stored kernel) too
    kde.add([-0.99 + 2 * s + 1e-9], [0.1], 1.0)
    assert kde.num_kernels == 2


def test_recursive_merge_folds_three_kernels_into_one_with_their_moments():
    """Kernels at 0 (σ 0.1) and 0.5 (σ 0.3), threshold 1.7: apart (5 σ of the first). A third at 0.05 joins the
    nearest one in its stored metric (0: 0.5 σ; 0.5: 1.5 σ), and the grown kernel (at 0.025) then lies 1.58 σ from
    the one at 0.5, which absorbs it: one kernel with the weight, mean and second moment of all three, count 3."""
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=81)])
    kde = KernelDensity(grid, threshold=1.7, rebuild_interval=10**6)
    data = [(0.0, 0.1, 1.0), (0.5, 0.3, 1.0), (0.05, 0.1, 1.0)]
    for c, s, w in data:
        kde.add([c], [s], w)
    assert kde.num_kernels == 1 and kde.counts[0] == 3
    wt = sum(w for _, _, w in data)
    mean = sum(w * c for c, _, w in data) / wt
    second = sum(w * (s * s + c * c) for c, s, w in data) / wt
    assert kde.weights[0] == pytest.approx(wt)
    assert kde.centers[0, 0] == pytest.approx(mean, abs=1e-12)
    assert kde.sigmas[0, 0] == pytest.approx(math.sqrt(second - mean**2), rel=1e-12)
    grid_sum, center_sum = kde.grid_sum.copy(), kde.center_sum.copy()
    kde.rebuild()
    np.testing.assert_allclose(grid_sum, kde.grid_sum, rtol=0, atol=1e-12)
    np.testing.assert_allclose(center_sum, kde.center_sum, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cutoff", [None, 2.5])
def test_kernel_sums_in_two_dimensions_with_fixed_kernels(cutoff):
    """2-D grid, own and fixed kernels: the grid sum is Σ_k w_k N(g; c_k, σ_k) (normalised, truncated and shifted
    at the cutoff), the centre sums the same mixture at every centre, after adds with periodic and non-periodic
    axes; a periodic axis' last node equals its first."""
    variables = [LatentVariable(0, -1.0, 1.0, 0.1, periodic=True, gridWidth=41),
                 LatentVariable(1, 0.0, 3.0, 0.1, gridWidth=31)]
    grid = BiasGrid(variables)
    kde = KernelDensity(grid, threshold=0.0, rebuild_interval=3, cutoff=cutoff)
    rng = np.random.default_rng(5)
    own = [(np.array([rng.uniform(-1, 1), rng.uniform(0.3, 2.7)]), rng.uniform(0.1, 0.3, 2), rng.uniform(0.5, 2))
           for _ in range(7)]
    own[0] = (np.array([0.98, 1.0]), np.array([0.12, 0.2]), 1.5)  # across the seam
    fixed = [(np.array([0.2, 2.0]), np.array([0.2, 0.25]), 0.7)]
    kde.set_fixed(np.array([f[0] for f in fixed]), np.array([f[1] for f in fixed]), np.array([f[2] for f in fixed]))
    for c, s, w in own:
        kde.add(c, s, w)
    assert kde.num_kernels == 8 and len(kde.weights) == 7
    allk = own + fixed

    def mixture(points):
        out = np.zeros(len(points))
        for c, s, w in allk:
            d = points - c
            d[:, 0] -= 2.0 * np.round(d[:, 0] / 2.0)
            r2 = np.sum((d / s) ** 2, axis=1)
            g = np.exp(-0.5 * r2) if cutoff is None else np.where(r2 < cutoff**2, np.exp(-0.5 * r2)
                                                                    - math.exp(-0.5 * cutoff**2), 0.0)
            out += w * g / (2 * math.pi * s[0] * s[1])
        return out

    nodes = np.stack(np.meshgrid(*grid.axes, indexing="ij"), axis=-1).reshape(-1, 2)
    scale = kde.grid_sum.max()
    np.testing.assert_allclose(kde.grid_sum.ravel(), mixture(nodes), rtol=0, atol=1e-12 * scale)
    centres = np.array([c for c, _, _ in allk])
    np.testing.assert_allclose(kde.center_sum, mixture(centres), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(kde.mixture_at(centres, kde.all_centers, kde.all_sigmas, kde.all_weights),
                               mixture(centres), rtol=0, atol=1e-12 * scale)
    np.testing.assert_array_equal(kde.grid_sum[-1], kde.grid_sum[0])
    assert kde.updates_since_rebuild < 3
    with pytest.raises(ValueError, match="fixed kernels"):
        kde.set_fixed(np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1))
    with pytest.raises(ValueError, match="bad kernel"):
        kde.add([0.0, 1.0], [0.1, 0.0], 1.0)
    with pytest.raises(ValueError, match="bad kernel"):
        kde.add([0.0, 1.0], [0.1, 0.1], float("inf"))


def test_kernel_density_defaults_and_bad_settings():
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1)])
    kde = KernelDensity(grid)
    assert kde.threshold == 1.0 and kde.rebuild_interval == 200 and kde.cutoff is None
    with pytest.raises(ValueError, match="threshold"):
        KernelDensity(grid, threshold=-0.5)
    for bad in (float("inf"), 1.0, 0.5):
        with pytest.raises(ValueError, match="cutoff"):
            KernelDensity(grid, threshold=1.0, cutoff=bad)
    assert KernelDensity(grid, threshold=0.0, cutoff=0.5).cutoff == 0.5


# ------------------------------------------------------------------------------------------- cutoff.py


@pytest.mark.parametrize("cutoff", [1.2, 1.5, 2.0, 3.0])
def test_error_bound_holds_and_is_tight_in_one_dimension(cutoff):
    """For one axis sup |g_c − e^{−u²/2}| = e^{−c²/2} (reached at the cutoff), within the stated bound
    e^{−c²/2}/(1 − e^{−c²/2}); for d axes the error stays within d times it. Short cutoffs make the bound's
    denominator matter. The cut factor is continuous at the cutoff (→ 0) and 1 at the centre."""
    e = math.exp(-0.5 * cutoff**2)
    u = np.linspace(-cutoff - 1, cutoff + 1, 200001)
    err = np.abs(truncated_gaussian(u, cutoff) - np.exp(-0.5 * u**2))
    assert err.max() == pytest.approx(e, rel=1e-3)
    assert err.max() <= product_error_bound(cutoff, 1)
    assert product_error_bound(cutoff, 1) == pytest.approx(e / (1 - e), rel=1e-12)
    assert product_error_bound(cutoff, 3) == pytest.approx(3 * e / (1 - e), rel=1e-12)
    assert truncated_gaussian(np.array([cutoff * (1 - 1e-12)]), cutoff)[0] == pytest.approx(0.0, abs=1e-10)
    assert truncated_gaussian(np.array([cutoff]), cutoff)[0] == 0.0
    assert truncated_gaussian(np.array([0.0]), cutoff)[0] == 1.0
    # volume deficit of the cut, stretched factor against a quadrature of it
    inside = np.trapezoid(truncated_gaussian(u, cutoff), u)
    assert volume_deficit(cutoff) == pytest.approx(1 - inside / math.sqrt(2 * math.pi), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("cutoff", [1.2025535559421732, 2.6805853027283018])
def test_cut_factor_is_exactly_zero_at_the_cutoff(cutoff):
    """"Exactly 0 for |u| ≥ c" (the support window of a local grid update relies on it), also at |u| = c for
    cutoffs where numpy's and libm's exp of −c²/2 differ in the last bit (then (g − e^{−c²/2}) is ~1e-16, not 0)."""
    u = np.array([-cutoff, cutoff, cutoff * (1 + 1e-15), 10 * cutoff])
    assert np.all(truncated_gaussian(u, cutoff) == 0.0)


def test_opes_default_cutoff_for_both_variants():
    """√(2βΔE/α) for METAD, √(2βΔE) for explore (α is not used there), with α ≠ 1 and βΔE ≠ 1."""
    assert opes_default_cutoff(8.0, 0.5, explore=False) == pytest.approx(4 * math.sqrt(2.0), rel=1e-14)
    assert opes_default_cutoff(8.0, 0.5, explore=True) == pytest.approx(4.0, rel=1e-14)
    assert opes_default_cutoff(4.5, 3.0, explore=True) == pytest.approx(3.0, rel=1e-14)


# ------------------------------------------------------------------------------------------- adaptive σ


def reference_adaptive_sigma(samples, stride, interval, f):
    """PLUMED's ADAPTIVE_SIGMA_STRIDE statistics as documented in ``opes.py``: a Welford variance about an
    exponentially decaying mean with time constant ``stride`` steps (τ = stride/interval samples, at most the
    number of samples so far); the variance gathered before the first deposit is multiplied by f once; σ0² is
    the variance over f. Returns the σ0 after each sample, given that the first deposit comes with sample
    ``stride/interval``."""
    mean, m2, out = 0.0, 0.0, []
    for n, z in enumerate(samples, start=1):
        tau = min(max(1, stride // interval), n)
        diff = z - mean
        mean += diff / tau
        m2 += diff * (z - mean)
        if n == stride // interval:
            m2 *= f
        out.append(math.sqrt(m2 / n / f))
    return out


@pytest.mark.parametrize("explore", [False, True])
def test_adaptive_sigma_follows_the_welford_statistics_of_the_samples(tmp_path, explore):
    """pace 10, a CV sample every 2 steps, stride 20, 50 steps: no kernel before step 20, then one every 10 steps with
    σ0 from the samples so far (METAD: the unbiased variance before the first deposit counted γ times) shrunk by
    Silverman's rule; the kernels sit at the deposit points."""
    opes, sim = build(tmp_path, pace=10, adaptiveSigmaStride=20, sigmaSampleInterval=2, explore=explore,
                      compressionThreshold=0.0, kernelCutoff=None)
    rng = np.random.default_rng(2)
    samples = [float(x) for x in np.round(rng.normal(-0.3, 0.2, 25) * 16) / 16]  # grid nodes
    for z in samples:
        sim.context.setPositions(np.array([[z, 0.0, 0.0]]))
        opes.step(sim, 2)
        if sim.currentStep < 20:
            assert opes.numDeposits == 0
    deposits = [samples[i] for i in range(len(samples)) if (i + 1) * 2 % 10 == 0 and (i + 1) * 2 >= 20]
    assert opes.numDeposits == len(deposits) == 4
    np.testing.assert_allclose(opes.kde.centers[:, 0], deposits, atol=1e-12)
    f = 1.0 if explore else opes.biasFactor
    sig0 = reference_adaptive_sigma(samples, 20, 2, f)
    # the weights of the kernels (explore 1, METAD exp(βV)) give N_eff, then σ = σ0 (3 N_eff / 4)^(−1/5)
    w = np.ones(4) if explore else opes.kde.weights
    sumw, sumw2 = math.exp(-BARRIER / KT), math.exp(-2 * BARRIER / KT)
    for k, i in enumerate(i for i in range(len(samples)) if (i + 1) * 2 % 10 == 0 and (i + 1) * 2 >= 20):
        sumw, sumw2 = sumw + w[k], sumw2 + w[k] ** 2
        neff = k + 2 if explore else (1 + sumw) ** 2 / (1 + sumw2)
        assert opes.kde.sigmas[k, 0] == pytest.approx(sig0[i] * (neff * 0.75) ** -0.2, rel=1e-9)
    if not explore:
        # the first kernel's weight: exp(βV) with the flat initial bias V = −ΔE
        assert opes.kde.weights[0] == pytest.approx(math.exp(-BARRIER / KT), rel=1e-6)
    assert opes._sigma0[0] == pytest.approx(sig0[9], rel=1e-12)
    # the running σ of the next kernel uses every sample so far
    assert opes.getSigma()[0] == pytest.approx(sig0[-1] * (opes.getNeff() * 0.75) ** -0.2, rel=1e-9)


def test_adaptive_sigma_of_a_frozen_cv_is_refused(tmp_path):
    opes, sim = build(tmp_path, pace=10, adaptiveSigmaStride=10, sigmaSampleInterval=5)
    sim.context.setPositions(np.array([[0.25, 0.0, 0.0]]))
    with pytest.raises(RuntimeError, match="adaptive sigma is zero"):
        opes.step(sim, 10)


def test_default_sample_interval_is_a_tenth_of_the_pace(tmp_path):
    assert build(tmp_path, pace=100, adaptiveSigmaStride=1000)[0].sigmaSampleInterval == 10
    assert build(tmp_path, pace=5, adaptiveSigmaStride=50)[0].sigmaSampleInterval == 1
    assert build(tmp_path, pace=10, adaptiveSigmaStride=1)[0].adaptiveSigmaStride == 1
    assert build(tmp_path, pace=10, adaptiveSigmaStride=10, sigmaSampleInterval=10)[0].sigmaSampleInterval == 10


# ------------------------------------------------------------------------------------------- walkers through files


def test_walkers_sharing_a_folder_see_each_others_kernels(tmp_path, caplog):
    """In one process: walker A deposits and writes its file at every sync; a walker B built afterwards starts
    from A's kernels and sums; after B's deposits and syncs, A's bias is the union estimate. A damaged walker file
    is skipped with a warning naming it; files that are not walker files are ignored."""
    folder = tmp_path / "shared" / "bias"
    pa, pb = [-0.5, -0.4375, -0.375], [0.5, 0.5625]
    a, sim_a = build(tmp_path, walkerId="A", saveFrequency=PACE, biasDir=folder, compressionThreshold=0.0)
    assert folder.is_dir()
    deposit_at(a, sim_a, pa)
    assert sorted(p.name for p in folder.iterdir()) == ["opes_A.npz"]
    (folder / "opes_bad.npz").write_bytes(b"not an npz file")
    (folder / "notes.txt").write_text("not a walker file")
    b, sim_b = build(tmp_path, walkerId="B", saveFrequency=PACE, biasDir=folder, compressionThreshold=0.0)
    cut = math.sqrt(2 * BARRIER / KT / (1 - KT / BARRIER))
    _, ref_a = reference_opes(pa, False, cut)
    ka = ref_a["kernels"]
    sums_a = (sum(k[2] for k in ka), sum(k[2] ** 2 for k in ka), len(ka))
    others_a = [(k, sums_a if i == 0 else (0, 0, 0)) for i, k in enumerate(ka)]
    np.testing.assert_allclose(b.getBias(), reference_opes([], False, cut, others=others_a)[1]["grid_bias"],
                               atol=1e-9)
    with caplog.at_level("WARNING", logger="latentbias"):
        deposit_at(b, sim_b, pb)
    rows_b, ref_b = reference_opes(pb, False, cut, others=others_a)
    np.testing.assert_allclose(b.getRecords()["bias_kjmol"], [r["bias"] for r in rows_b], atol=1e-6)
    np.testing.assert_allclose(b.getBias(), ref_b["grid_bias"], atol=1e-9)
    # A syncs at its next deposit step: it then holds B's kernels too
    sim_a.context.setPositions(np.array([[-0.5, 0.0, 0.0]]))
    a.step(sim_a, PACE)
    assert a.numKernels == 4 + 2 and a._totalCount == 1 + 4 + 2
    # the kernels read at that sync act in the Context when step() returns
    assert a.getBiasEnergy(sim_a.context) == pytest.approx(a.getBias()[8], abs=1e-6)
    assert sorted(a._others) == ["B"]
    np.testing.assert_allclose(np.sort(a.kde.fixed_weights), np.sort(b.kde.weights))
    # the same union through setOtherWalkers gives the same bias
    c, _ = build(tmp_path, walkerId="C", compressionThreshold=0.0)
    c.setOtherWalkers({"A": a.walkerContribution(), "B": b.walkerContribution()})
    np.testing.assert_allclose(c.getBias(), a.getBias(), atol=1e-12)
    # a walker with other settings in the same folder is refused, naming the file
    with pytest.raises(ValueError, match="different settings"):
        build(tmp_path, walkerId="D", saveFrequency=PACE, biasDir=folder, barrier=15.0)
    with pytest.raises(ValueError, match="different settings"):
        c.setOtherWalkers({"A": {**a.walkerContribution(), "settings": np.array([0.0, 1.0, 2.0, 3.0])}})


def test_opes_input_contract(tmp_path):
    """Every bad setting is refused with a message naming it; the boundary values are accepted."""
    for kw, match in ((dict(temperature=0.0), "temperature"), (dict(barrier=float("inf")), "barrier"),
                      (dict(barrier=0.0), "barrier"), (dict(biasFactor=1.0), "biasFactor"),
                      (dict(biasFactor=float("inf")), "biasFactor"), (dict(pace=0), "pace"),
                      (dict(adaptiveSigmaStride=0), "adaptiveSigmaStride"),
                      (dict(adaptiveSigmaStride=10, sigmaSampleInterval=0), "sigmaSampleInterval"),
                      (dict(saveFrequency=PACE), "saveFrequency and biasDir"),
                      (dict(biasDir=tmp_path / "b"), "saveFrequency and biasDir"),
                      (dict(saveFrequency=PACE - 1, biasDir=tmp_path / "b"), "multiple of pace"),
                      (dict(saveFrequency=PACE + 1, biasDir=tmp_path / "b"), "multiple of pace"),
                      (dict(walkerId="a/b"), "walkerId"), (dict(kernelCutoff="plumed"), "kernelCutoff")):
        kw = dict(kw)
        temperature = kw.pop("temperature", 300.0)
        model = tmp_path / "x.pt"
        if not model.exists():
            identity_model(model, 1, 1)
        with pytest.raises(ValueError, match=match):
            LatentOPES(particle_system("0", mass=0.0), model, [LatentVariable(0, -1.0, 1.0, SIGMA0)], temperature,
                       **{"barrier": BARRIER, "pace": PACE, **kw})
    with pytest.raises(ValueError, match="barrier must be a positive energy"):  # not only through γ = βΔE
        build(tmp_path, barrier=float("inf"), biasFactor=10.0)
    cold = LatentOPES(particle_system("0", mass=0.0), tmp_path / "x.pt", [LatentVariable(0, -1.0, 1.0, SIGMA0)], 0.5,
                      barrier=BARRIER, pace=PACE)  # any positive temperature
    assert cold.temperature == 0.5 and cold.biasFactor == pytest.approx(BARRIER / kt_kjmol(0.5))
    assert build(tmp_path, biasFactor=1.0 + 1e-9)[0].biasFactor == 1.0 + 1e-9
    assert build(tmp_path, pace=1)[0].pace == 1
    assert build(tmp_path, saveFrequency=2 * PACE, biasDir=tmp_path / "b2")[0].saveFrequency == 2 * PACE
    assert len(build(tmp_path)[0].walkerId) == 12
    opes = build(tmp_path)[0]
    assert opes.temperature == 300.0 and opes.explore is False and opes.shrinkSigma is True
    assert opes.kde.threshold == 1.0 and opes.backend.wall_force_constant == 1000.0


@pytest.mark.parametrize("cutoff", [1.01, 1.5, 2.5])
def test_metadynamics_gaussians_are_cut_at_any_cutoff_above_one_width(cutoff):
    """Any finite cutoff above one width is valid (``kernelCutoff`` > 1): the grid's unit-height Gaussian is then
    Π_k (e^{−u_k²/2} − e^{−c²/2}) / (1 − e^{−c²/2}) inside |u_k| < c and exactly 0 outside (PLUMED's stretched
    hill, per axis)."""
    variables = [LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=81), LatentVariable(1, 0.0, 2.0, 0.2, gridWidth=41)]
    grid = BiasGrid(variables, kernelCutoff=cutoff)
    centre = np.array([0.1, 1.0])
    e = math.exp(-0.5 * cutoff**2)
    u = [(grid.axes[0] - centre[0]) / 0.1, (grid.axes[1] - centre[1]) / 0.2]
    f = [np.where(np.abs(x) < cutoff, (np.exp(-0.5 * x**2) - e) / (1 - e), 0.0) for x in u]
    np.testing.assert_allclose(grid.gaussian(centre), np.multiply.outer(f[0], f[1]), rtol=0, atol=1e-14)
    assert grid.gaussian(centre).max() == 1.0


def test_restart_keeps_other_walkers_kernels_and_sums(tmp_path):
    """A state saved with two other walkers' contributions restores their kernels and weight sums (bias, rct,
    N_eff, σ identical) and continues identically."""
    b, sim_b = build(tmp_path, walkerId="B", compressionThreshold=0.0)
    deposit_at(b, sim_b, [0.5, 0.5625])
    c, sim_c = build(tmp_path, walkerId="C", compressionThreshold=0.0)
    deposit_at(c, sim_c, [0.0])
    a, sim_a = build(tmp_path, walkerId="A")
    a.setOtherWalkers({"C": c.walkerContribution(), "B": b.walkerContribution()})
    deposit_at(a, sim_a, POINTS[:3])
    a.saveState(tmp_path / "s")
    r, sim_r = build(tmp_path, walkerId="R")
    r.loadState(tmp_path / "s")
    assert sorted(r._others) == ["B", "C"]
    np.testing.assert_array_equal(r.getBias(), a.getBias())
    assert (r.rct(), r.getNeff(), r.numKernels) == (a.rct(), a.getNeff(), a.numKernels)
    np.testing.assert_array_equal(r.getSigma(), a.getSigma())
    for name in ("B", "C"):
        for key in ("sumW", "sumW2", "count"):
            assert r._others[name][key] == a._others[name][key]
    sim_r.currentStep = sim_a.currentStep
    deposit_at(a, sim_a, POINTS[3:6])
    deposit_at(r, sim_r, POINTS[3:6])
    np.testing.assert_array_equal(r.getBias(), a.getBias())
    np.testing.assert_array_equal(r.getRecords()["rct_kjmol"], a.getRecords()["rct_kjmol"])


def test_log_weight_methods_and_empty_estimates(tmp_path):
    opes, sim = build(tmp_path)
    assert opes.getLogWeights("final").shape == (0,)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no estimate yet: NaN by choice, not from a 0/0
        assert np.all(np.isnan(opes.getProbability()))
    with pytest.raises(ValueError, match="'ct', 'rct', 'bias' or 'final'"):
        opes.getLogWeights("mbar")
    np.testing.assert_array_equal(opes.getGridAxes()[0], NODES)
    assert opes.getRecords()["z"].shape == (0, 1)


def test_deposits_fall_on_multiples_of_the_pace_whatever_the_step_chunks(tmp_path):
    """``step`` in chunks that are not multiples of ``pace`` deposits exactly at steps 5, 10, 15, ... (the CV at
    that step), and a record file and a DCD trajectory get one row / frame per deposit at those steps."""
    import mdtraj

    opes, sim = build(tmp_path, compressionThreshold=0.0, recordFile=tmp_path / "rec.csv",
                      trajectoryFile=tmp_path / "dep.dcd")
    x = 0.0
    for chunk in (3, 4, 9, 1, 8, 5):
        x += 0.0625
        sim.context.setPositions(np.array([[x, 0.0, 0.0]]))
        opes.step(sim, chunk)
    rec = opes.getRecords()
    np.testing.assert_array_equal(rec["step"], [5, 10, 15, 20, 25, 30])
    # the CV at the deposit step: the position set before the chunk that reaches it
    np.testing.assert_allclose(rec["z"][:, 0], [0.125, 0.1875, 0.1875, 0.3125, 0.3125, 0.375], atol=1e-12)
    table = np.loadtxt(tmp_path / "rec.csv", delimiter=",", skiprows=2)
    np.testing.assert_array_equal(table[:, 0], rec["step"])
    np.testing.assert_allclose(table[:, 1], 0.004 * rec["step"], atol=1e-6)
    np.testing.assert_allclose(table[:, 2], rec["z"][:, 0], atol=1e-9)
    np.testing.assert_allclose(table[:, 3:], np.stack([rec[k] for k in ("bias_kjmol", "wall_kjmol", "ct_kjmol",
                                                                          "rct_kjmol", "logweight")], 1),
                               rtol=1e-9, atol=1e-9)
    del opes
    traj = mdtraj.load(str(tmp_path / "dep.dcd"), top=mdtraj.Topology.from_openmm(sim.topology))
    np.testing.assert_allclose(traj.xyz[:, 0, 0], rec["z"][:, 0], atol=1e-6)


def test_record_file_appends_only_when_asked(tmp_path):
    """An existing empty record file is started afresh (header written); a non-empty one is refused without
    ``appendRecord`` and continued (no second header) with it."""
    path = tmp_path / "rec.csv"
    path.write_text("")
    opes, sim = build(tmp_path, recordFile=path)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("# latent OPES-METAD") and lines[1].startswith("step,")
    deposit_at(opes, sim, [0.25])
    with pytest.raises(FileExistsError, match="appendRecord"):
        build(tmp_path, recordFile=path)
    more, sim2 = build(tmp_path, recordFile=path, appendRecord=True, explore=True)
    deposit_at(more, sim2, [0.5])
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and sum(line.startswith("#") for line in lines) == 1
    assert lines[2].startswith("5,") and lines[3].startswith("5,")
    path2 = tmp_path / "explore.csv"
    build(tmp_path, recordFile=path2, explore=True)
    assert path2.read_text().startswith("# latent OPES-explore depositions")


def test_damaged_walker_files_do_not_hide_later_ones(tmp_path, caplog):
    """A walker file whose arrays no longer match their checksum is left out with a warning naming it, an
    unreadable one silently; walkers whose files sort after them are still read."""
    from latentbias.io import NPZ_CHECKSUM_KEY

    folder = tmp_path / "bias"
    a, sim_a = build(tmp_path, walkerId="A", saveFrequency=PACE, biasDir=folder)
    deposit_at(a, sim_a, [-0.5, 0.25])
    with np.load(folder / "opes_A.npz") as data:
        arrays = {k: data[k] for k in data.files}
    assert NPZ_CHECKSUM_KEY in arrays
    arrays["weights"] = arrays["weights"] * 2.0
    np.savez(folder / "opes_0damaged.npz", **arrays)
    (folder / "opes_00unreadable.npz").write_bytes(b"\x00" * 10)
    with caplog.at_level("WARNING", logger="latentbias"):
        b, _ = build(tmp_path, walkerId="B", saveFrequency=PACE, biasDir=folder)
    assert "opes_0damaged.npz" in caplog.text and "unreadable" not in caplog.text
    assert sorted(b._others) == ["A"] and b.numKernels == a.numKernels
    np.testing.assert_allclose(b.getBias(), a.getBias(), atol=1e-12)


@pytest.mark.parametrize("cutoff", [None, 3.0])
def test_last_node_of_a_periodic_axis_is_exactly_the_first(cutoff):
    """On [−π, π) the last grid node is the first one: its kernel sum must be the same number bit for bit (a
    periodic spline or tabulated function needs equal end values), also when the minimum image of the two
    nodes rounds differently (period 2π is not exact in binary)."""
    grid = BiasGrid([LatentVariable(0, -math.pi, math.pi, 0.1, periodic=True, gridWidth=37)])
    kde = KernelDensity(grid, 0.0, rebuild_interval=10**6, cutoff=cutoff)
    for c, s in ((-2.8841484100105235, 0.336360798162764), (-1.2584473065782806, 1.2299118866348486),
                 (-2.9636549119444626, 0.5734232082990407)):
        kde.add([c], [s], 1.0)
        assert kde.grid_sum[-1] == kde.grid_sum[0] > 0


def test_truncated_kernel_sums_on_a_grid_away_from_the_origin():
    """Grid [0.5, 2.5] (the window arithmetic must measure from the first node, not from 0): kernels near both
    edges and inside, truncated at 2.5 σ, sum to the direct mixture at every node; non-positive weights are
    refused; the update counter counts the incremental updates since the last rebuild."""
    grid = BiasGrid([LatentVariable(0, 0.5, 2.5, 0.1, gridWidth=81)])
    kde = KernelDensity(grid, 0.0, rebuild_interval=10**6, cutoff=2.5)
    assert kde.updates_since_rebuild == 0
    data = [(0.55, 0.1, 1.0), (1.3, 0.2, 2.0), (2.45, 0.15, 0.5), (1.9, 0.05, 1.5)]
    for c, s, w in data:
        kde.add([c], [s], w)
    assert kde.updates_since_rebuild == len(data)
    x = grid.axes[0]
    expected = np.zeros_like(x)
    for c, s, w in data:
        r2 = ((x - c) / s) ** 2
        expected += w * np.where(r2 < 6.25, np.exp(-0.5 * r2) - math.exp(-3.125), 0.0) / (math.sqrt(2 * math.pi) * s)
    np.testing.assert_allclose(kde.grid_sum, expected, rtol=0, atol=1e-12)
    for bad in (0.0, -0.5):
        with pytest.raises(ValueError, match="bad kernel"):
            kde.add([1.0], [0.1], bad)
    kde.rebuild()
    assert kde.updates_since_rebuild == 0


def test_compression_merges_exactly_the_kernels_within_the_threshold():
    """Threshold 1 σ (of the stored kernel): a kernel 1.2 σ away is kept apart, one 0.9 σ away is merged; an empty
    rebuild (no kernels at all) leaves consistent sums; fixed kernels of zero weight are valid and add nothing."""
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=81)])
    kde = KernelDensity(grid, threshold=1.0, rebuild_interval=10**6)
    kde.rebuild()
    assert kde.center_sum.shape == (0,)
    kde.add([0.0], [0.1], 1.0)
    assert kde.center_sum == pytest.approx([1 / (math.sqrt(2 * math.pi) * 0.1)], rel=1e-12)
    kde.add([0.12], [0.1], 1.0)
    assert kde.num_kernels == 2
    kde.add([-0.09], [0.1], 1.0)
    assert kde.num_kernels == 2 and list(kde.counts) == [2, 1]
    before = kde.grid_sum.copy()
    kde.set_fixed(np.array([[0.5]]), np.array([[0.1]]), np.array([0.0]))
    assert kde.num_kernels == 3
    np.testing.assert_allclose(kde.grid_sum, before, rtol=0, atol=1e-12)


def test_walker_syncs_change_nothing_when_no_other_walker_changed(tmp_path):
    """A walker alone in its folder runs bit for bit like one without a folder, and a walker that reads another
    walker's unchanged file at every sync like one given that walker's contribution once: a sync that finds
    nothing new must not rebuild the estimate. Its own contribution given back to it is ignored."""
    pts = POINTS + [p + 0.0625 for p in POINTS[:6]]
    alone, sim1 = build(tmp_path, walkerId="A", saveFrequency=PACE, biasDir=tmp_path / "solo")
    plain, sim2 = build(tmp_path, walkerId="A")
    deposit_at(alone, sim1, pts)
    deposit_at(plain, sim2, pts)
    np.testing.assert_array_equal(alone.getBias(), plain.getBias())
    before = plain.getBias()
    plain.setOtherWalkers({"A": plain.walkerContribution()})  # no other walker: the same estimate, rebuilt
    np.testing.assert_allclose(plain.getBias(), before, rtol=0, atol=1e-12)
    assert plain.numKernels == alone.numKernels

    b, sim_b = build(tmp_path, walkerId="B", saveFrequency=PACE, biasDir=tmp_path / "two")
    deposit_at(b, sim_b, [0.5, 0.5625])
    reader, sim3 = build(tmp_path, walkerId="R", saveFrequency=PACE, biasDir=tmp_path / "two")
    given, sim4 = build(tmp_path, walkerId="R")
    given.setOtherWalkers({"B": b.walkerContribution()})
    deposit_at(reader, sim3, pts)
    deposit_at(given, sim4, pts)
    np.testing.assert_array_equal(reader.getBias(), given.getBias())


def test_a_rebuilt_walker_does_not_erase_its_file(tmp_path):
    """Rebuilding walker A (same id and folder, e.g. before loadState on restart) must not overwrite A's file with
    an empty estimate: a walker joining afterwards still sees A's kernels."""
    folder = tmp_path / "bias"
    a, sim = build(tmp_path, walkerId="A", saveFrequency=PACE, biasDir=folder)
    deposit_at(a, sim, [-0.5, 0.25])
    build(tmp_path, walkerId="A", saveFrequency=PACE, biasDir=folder)
    c, _ = build(tmp_path, walkerId="C", saveFrequency=PACE, biasDir=folder)
    assert c.numKernels == a.numKernels == 2
    np.testing.assert_array_equal(c.getBias(), a.getBias())


def test_a_walker_contribution_is_a_snapshot(tmp_path):
    """walkerContribution returns copies: a later merge inside the walker (in place) must not change what a
    driver already holds, so what each walker sees is fixed by the caller."""
    b, sim = build(tmp_path, walkerId="B", compressionThreshold=1.0)
    deposit_at(b, sim, [0.5, -0.5])
    snapshot = b.walkerContribution()
    frozen = {k: v.copy() for k, v in snapshot.items()}
    deposit_at(b, sim, [0.5625])  # merges into the kernel at 0.5 in place
    assert b.kde.counts.sum() == 3 and b.numKernels == 2
    for key in frozen:
        np.testing.assert_array_equal(snapshot[key], frozen[key], err_msg=key)


def test_restart_from_a_state_saved_before_the_first_deposit(tmp_path):
    """A fixed-σ run saved before any deposit and restored continues exactly like the run that was not
    interrupted (its σ0 is set from the start, whatever the deposit count)."""
    straight, sim = build(tmp_path, walkerId="S")
    first, _ = build(tmp_path, walkerId="S")
    first.saveState(tmp_path / "empty")
    again, sim2 = build(tmp_path, walkerId="S")
    again.loadState(tmp_path / "empty")
    deposit_at(straight, sim, POINTS[:3])
    deposit_at(again, sim2, POINTS[:3])
    np.testing.assert_array_equal(again.getBias(), straight.getBias())
    np.testing.assert_array_equal(again.kde.sigmas, straight.kde.sigmas)


def test_an_edited_state_json_is_refused(tmp_path):
    """The state's JSON carries its own checksum: a hand-edited record (here its deposit count) is refused."""
    opes, sim = build(tmp_path)
    deposit_at(opes, sim, POINTS[:3])
    _, meta = opes.saveState(tmp_path / "s")
    text = meta.read_text()
    assert '"numDeposits": 3' in text
    meta.write_text(text.replace('"numDeposits": 3', '"numDeposits": 4'))
    other, _ = build(tmp_path)
    with pytest.raises(ValueError, match="checksum"):
        other.loadState(tmp_path / "s")


def test_one_deposit_estimate(tmp_path):
    """After a single METAD deposit (weight e^{−βΔE}, so the kernel sum on the grid is far below 1) the probability
    estimate is that one kernel normalised over the nodes, and the run has one "final" log-weight."""
    opes, sim = build(tmp_path, kernelCutoff=None)
    deposit_at(opes, sim, [0.25])
    s = opes.kde.sigmas[0, 0]
    p = np.exp(-0.5 * ((NODES - 0.25) / s) ** 2)
    assert opes.kde.grid_sum.sum() < 1.0
    np.testing.assert_allclose(opes.getProbability(), p / p.sum(), rtol=1e-9)
    final = opes.getLogWeights("final")
    assert final.shape == (1,) and final[0] == pytest.approx(opes.getBias()[20] / KT, abs=1e-9)


# ------------------------------------------------------------------------------------------- mut15g (full sessions)


def test_the_barrier_must_be_positive_whatever_the_bias_factor(tmp_path):
    """ΔE sets ε = exp(−βΔE/α) and the initial bias −ΔE: 0 or a negative barrier is refused as a barrier also when
    γ is given explicitly (so γ = βΔE is never formed). A barrier too low for the default γ is refused naming
    βΔE, the default γ (here 2 kJ/mol at 300 K: 2/2.4943 = 0.802)."""
    for barrier in (0.0, -0.5, -1.0):
        with pytest.raises(ValueError, match="barrier must be a positive energy"):
            build(tmp_path, barrier=barrier, biasFactor=10.0)
    with pytest.raises(ValueError, match=r"default barrier/kT = 0\.802\)"):
        build(tmp_path, barrier=2.0)
    assert build(tmp_path, barrier=5.0, biasFactor=10.0)[0].barrier == 5.0  # below γ kT, accepted with a γ


def test_a_record_file_holding_anything_is_not_overwritten(tmp_path):
    """Only an empty record file is started afresh: one of a single byte is user data, refused without
    ``appendRecord`` and left as it was."""
    path = tmp_path / "rec.csv"
    path.write_text("\n")
    with pytest.raises(FileExistsError, match="appendRecord"):
        build(tmp_path, recordFile=path)
    assert path.read_text() == "\n"


@pytest.mark.parametrize("stride", [3, 5, 9])
def test_an_adaptive_stride_of_one_sample_measures_no_variance(tmp_path, stride):
    """The adaptive σ is a Welford variance about a mean decaying with τ = stride/interval samples (at least 1).
    With a stride shorter than two sample intervals, τ = 1: the mean is the last sample itself and the variance
    about it is exactly 0, however the CV moves, so the first deposit is refused (as for a frozen CV), without a
    division by zero on the way. Pace 10, a sample every 5 steps, two different samples before the deposit."""
    opes, sim = build(tmp_path, pace=10, adaptiveSigmaStride=stride, sigmaSampleInterval=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sim.context.setPositions(np.array([[0.25, 0.0, 0.0]]))
        opes.step(sim, 5)
        sim.context.setPositions(np.array([[-0.5, 0.0, 0.0]]))
        with pytest.raises(RuntimeError, match="adaptive sigma is zero"):
            opes.step(sim, 5)
    assert opes.numDeposits == 0
    # two samples per τ (stride 10) measure it: (0.25 − (−0.5))² / 2 / 2 samples / γ after the first deposit's γ
    moving, sim2 = build(tmp_path, pace=10, adaptiveSigmaStride=10, sigmaSampleInterval=5)
    for z in (0.25, -0.5):
        sim2.context.setPositions(np.array([[z, 0.0, 0.0]]))
        moving.step(sim2, 5)
    assert moving.numDeposits == 1
    assert moving._sigma0[0] == pytest.approx(reference_adaptive_sigma([0.25, -0.5], 10, 5, moving.biasFactor)[-1],
                                              rel=1e-12)


def test_a_walker_restarted_from_an_earlier_state_is_seen_anew(tmp_path):
    """Walker B deposits twice and A reads B's file; B then crashes and is restarted from its state after the
    first deposit, and deposits elsewhere: B's file holds as many deposits as before but other kernels. A's next
    sync must replace B's kernels by the new ones (the union estimate A acts with is the current one)."""
    folder = tmp_path / "bias"
    a, sim_a = build(tmp_path, walkerId="A", saveFrequency=PACE, biasDir=folder, compressionThreshold=0.0)
    b, sim_b = build(tmp_path, walkerId="B", saveFrequency=PACE, biasDir=folder, compressionThreshold=0.0)
    deposit_at(b, sim_b, [0.5])
    b.saveState(tmp_path / "b1")
    deposit_at(b, sim_b, [0.25])
    deposit_at(a, sim_a, [-0.5])
    np.testing.assert_array_equal(a.kde.fixed_centers[:, 0], [0.5, 0.25])
    b2, sim_b2 = build(tmp_path, walkerId="B", saveFrequency=PACE, biasDir=folder, compressionThreshold=0.0)
    b2.loadState(tmp_path / "b1")
    sim_b2.currentStep = PACE
    deposit_at(b2, sim_b2, [-0.25])
    assert b2._count == 2 and not np.array_equal(b2.kde.weights, b.kde.weights)
    deposit_at(a, sim_a, [-0.4375])
    np.testing.assert_array_equal(a.kde.fixed_centers[:, 0], [0.5, -0.25])
    np.testing.assert_array_equal(a.kde.fixed_weights, b2.kde.weights)
    given, _ = build(tmp_path, walkerId="A2", compressionThreshold=0.0)
    given.setOtherWalkers({"A": a.walkerContribution(), "B": b2.walkerContribution()})
    np.testing.assert_allclose(a.getBias(), given.getBias(), rtol=0, atol=1e-12)


def test_the_probability_estimate_is_never_negative(tmp_path):
    """Incremental kernel sums carry rounding residues: a small kernel's contribution lost against a large one's and
    both later replaced by merged kernels can leave −4e-16 at a node (kernels of weights spread over e^{±10}, as
    e^{βV} of OPES METAD, merged at threshold 1, truncated at 3 σ). The probability estimate stays ≥ 0 (0 there)
    and normalised."""
    opes, _ = build(tmp_path, kernelCutoff=3.0)
    for c, s, logw in ((-0.8125, 0.167, 2.7), (0.875, 0.133, 5.5), (0.875, 0.065, 3.9), (-0.375, 0.11, -8.3),
                       (0.75, 0.069, -9.9), (0.125, 0.05, -8.7), (0.25, 0.058, 8.1), (0.8125, 0.057, 8.4)):
        opes.kde.add([c], [s], math.exp(logw))
    assert opes.kde.grid_sum.min() < 0  # the residue this test is about
    p = opes.getProbability()
    assert p.min() == 0.0
    assert p.sum() == pytest.approx(1.0, rel=1e-12)
