"""OPES deposits as local updates of the Context's table (issue 10 item 6; :mod:`latentbias.bias.densitygrid`).

The native force holds the kernel sum S of :class:`KernelDensity` and evaluates G = s (α/β) ln(max(S, 0)/N + ε)
itself (``setGridLogTransform``). Checked here:

* the energy is that formula applied to OpenMM's own spline of S (a ``Continuous*DFunction`` of the same table in a
  ``CustomCompoundBondForce`` at the same z, Reference), to 1e-9 relative, after local kernel deposits, removals
  (compression) and a changed N; forces against central finite differences (Reference, CPU; and the common-compute
  kernels on OpenCL in double precision, with mixed precision against Reference to 1e-4/1e-3);
* a ``LatentOPES`` run on the local route: the Context's bias at every deposit is the recorded bias; at grid nodes
  the local and the refit route give the same energy (both interpolants pass through V at the nodes); between nodes
  both differ from the exact kernel-sum V by their interpolation errors (stated bounds);
* save/restore and the XML serialization of the System keep the bias (Z included).
"""

from __future__ import annotations

import math

import numpy as np
import openmm
import pytest
from openmm import unit

import latentbias as lb
from latentbias import native
from latentbias.bias import LatentOPES, LatentVariable
from latentbias.bias.densitygrid import DensityGridLink, supports_density_grid
from latentbias.bias.fused import FusedBackend
from latentbias.bias.grid import BiasGrid
from latentbias.bias.kernels import KernelDensity

from test_export_forces import check_finite_differences, energy_and_forces, make_context
from toy import DOUBLE_WELL_1D, identity_model, particle_simulation, particle_system

pytestmark = pytest.mark.skipif(not native.is_available() or not hasattr(native.load().LatentBiasForce,
                                                                         "setGridLogTransform"),
                                reason="native plugin with setGridLogTransform not built")

PREFACTOR, EPSILON = 2.4, 3e-5   # (α/β) in kJ/mol and ε of a typical OPES run (βΔE/α ≈ 10)


def _platforms():
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def variables(d: int, periodic: bool = False, width: float = 0.08):
    ranges = [(-0.6, 0.6, 41), (-0.5, 0.7, 33), (-0.4, 0.4, 27)]
    if periodic:
        return [LatentVariable(i, -math.pi, math.pi, width * 4, periodic=True, gridWidth=n)
                for i, (_, _, n) in enumerate(ranges[:d])]
    return [LatentVariable(i, lo, hi, width, gridWidth=n) for i, (lo, hi, n) in enumerate(ranges[:d])]


def deposit_kernels(kde: KernelDensity, d: int, n: int, seed: int, scale: float = 0.15) -> None:
    rng = np.random.default_rng(seed)
    sigma = np.array([v.biasWidth for v in kde.grid.variables])
    for _ in range(n):
        kde.add(rng.normal(0.0, scale, d), sigma * rng.uniform(0.8, 1.2, d), float(np.exp(rng.normal())))


def spline_of_table(grid: BiasGrid, table: np.ndarray, points: np.ndarray, expression: str = "T") -> np.ndarray:
    """OpenMM's spline of ``table`` (Continuous1D/2D/3DFunction, Reference) at ``points`` (n, d), through
    ``expression`` of it (T): one CustomCompoundBondForce particle per point, z = its coordinates."""
    d = grid.ndim
    periodic = grid.variables[0].periodic
    lo = [v.minValue for v in grid.variables]
    hi = [v.maxValue for v in grid.variables]
    values = np.asarray(table, dtype=float).ravel(order="F").tolist()
    if d == 1:
        fn = openmm.Continuous1DFunction(values, lo[0], hi[0], periodic)
    elif d == 2:
        fn = openmm.Continuous2DFunction(*grid.shape, values, lo[0], hi[0], lo[1], hi[1], periodic)
    else:
        fn = openmm.Continuous3DFunction(*grid.shape, values, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], periodic)
    args = ", ".join(["x1", "y1", "z1"][:d])
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomCompoundBondForce(1, expression.replace("T", f"table({args})"))
    force.addTabulatedFunction("table", fn)
    force.addBond([0], [])
    system.addForce(force)
    ctx, _ = make_context(system, [[0.0, 0.0, 0.0]], "Reference")
    out = []
    for p in np.atleast_2d(points):
        ctx.setPositions([list(p) + [0.0] * (3 - d)])
        out.append(energy_and_forces(ctx)[0])
    return np.array(out)


def link_system(tmp_path, d: int, periodic: bool = False):
    model = tmp_path / f"id{d}.pt"
    identity_model(model, 1, d)
    system = openmm.System()
    system.addParticle(1.0)
    grid = BiasGrid(variables(d, periodic))
    backend = FusedBackend(model, system, grid, 500.0, forceGroup=3)
    kde = KernelDensity(grid, threshold=1.0, cutoff=3.0)
    link = DensityGridLink(backend, kde, PREFACTOR, EPSILON)
    return system, backend, kde, link


@pytest.mark.parametrize("d,periodic", [(1, False), (1, True), (2, False), (2, True), (3, False)])
@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_log_transform_energy_is_the_formula_on_openmms_spline_and_forces_match_fd(tmp_path, d, periodic, platform):
    """E(z) = (α/β) ln(max(S(z), 0)/N + ε) with S OpenMM's spline of the kernel-sum table: after the first push (a
    whole table), after local deposits with compression (kernels added and removed in the live Context) and after a
    new N; central finite differences of the energy equal the forces (1e-4 of max(1, |F|))."""
    if platform not in _platforms():
        pytest.skip(f"no {platform} platform")
    system, backend, kde, link = link_system(tmp_path, d, periodic)
    deposit_kernels(kde, d, 6, seed=1)
    rng = np.random.default_rng(2)
    x0 = np.zeros((1, 3))
    x0[0, :d] = rng.normal(0, 0.05, d)
    ctx, _ = make_context(system, x0, platform)
    zed = float(np.mean(kde.center_sum))
    link.push(zed, ctx)
    assert kde.journal == []
    for step in range(3):
        if step:
            deposit_kernels(kde, d, 5, seed=10 + step)  # compresses: removals and merged kernels
            zed = float(np.mean(kde.center_sum))
            link.push(zed, ctx)
        points = np.concatenate([rng.normal(0, 0.12, (4, d)), kde.centers[:2]])
        expected = spline_of_table(backend.grid, kde.grid_sum, points,
                                   f"{PREFACTOR!r}*log(max(T, 0)/{zed!r} + {EPSILON!r})")
        for p, e in zip(points, expected):
            x = np.zeros((1, 3))
            x[0, :d] = p
            ctx.setPositions(x)
            got, _ = energy_and_forces(ctx, 1 << 3)
            assert got == pytest.approx(e, rel=1e-9, abs=1e-9)
        x = np.zeros((1, 3))
        x[0, :d] = kde.centers[0]
        check_finite_differences(ctx, x + 0.013, 1 << 3, rtol=1e-4)
    # far from the kernels S(z) is ~0 (spline tails): the energy is flat at (α/β) ln ε, and exactly so with no
    # force where the spline of S is <= 0
    x = np.zeros((1, 3))
    x[0, :d] = [v.maxValue - 0.01 for v in backend.grid.variables]
    ctx.setPositions(x)
    e, f = energy_and_forces(ctx, 1 << 3)
    s_far = spline_of_table(backend.grid, kde.grid_sum, x[:, :d], "T")[0]
    assert e == pytest.approx(PREFACTOR * math.log(EPSILON), abs=1e-6)
    if s_far <= 0:
        assert e == PREFACTOR * math.log(EPSILON) and np.abs(f).max() == 0.0


def _native_model(tmp_path, ala2):
    from conftest import perturbed_frames
    from test_native_path import export, featurizer

    _, top, xyz = ala2
    path = export(tmp_path / "cat.pt", featurizer("concatenate", top, xyz), top.n_atoms, perturbed_frames(xyz, 20))
    return path, top, xyz


@pytest.mark.parametrize("platform,precision", [("Reference", None), ("CPU", None), ("OpenCL", "double"),
                                                ("OpenCL", "mixed")])
def test_log_transform_on_every_platform(tmp_path, ala2, platform, precision):
    """A native model (ala2, 3 latent components) with a 3-D kernel-sum table and the log transform: energies and
    forces on CPU and OpenCL equal Reference's (double: 1e-8; mixed: energy 1e-4 relative, forces 1e-3 of the
    largest), before and after local deposits and a new N; finite differences on every platform (double)."""
    if platform not in _platforms():
        pytest.skip(f"no {platform} platform")
    if platform == "OpenCL" and not openmm.Platform.getPlatformByName("OpenCL").supportsKernels([native.KERNEL_NAME]):
        pytest.skip("plugin built without OpenCL kernels")
    path, top, xyz = _native_model(tmp_path, ala2)
    z = lb.load_model(path).encode(xyz)
    contexts = {}
    for name, prec in (("Reference", None), (platform, precision)):
        system = openmm.System()
        for _ in range(top.n_atoms):
            system.addParticle(1.0)
        grid = BiasGrid([LatentVariable(i, z[i] - 0.8, z[i] + 0.7, 0.12, gridWidth=n)
                         for i, n in enumerate((17, 15, 13))])
        backend = FusedBackend(path, system, grid, 300.0, forceGroup=2, evaluationPath="native")
        kde = KernelDensity(grid, threshold=1.0, cutoff=3.0)
        link = DensityGridLink(backend, kde, PREFACTOR, EPSILON)
        rng = np.random.default_rng(4)
        for _ in range(5):
            kde.add(z[:3] + rng.normal(0, 0.1, 3), np.full(3, 0.12), float(rng.uniform(0.5, 2)))
        if name == "OpenCL":
            integrator = openmm.VerletIntegrator(0.001)
            ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("OpenCL"),
                                 {"Precision": prec})
            ctx.setPositions(xyz)
        else:
            ctx, integrator = make_context(system, xyz, name)
        link.push(float(np.mean(kde.center_sum)), ctx)
        contexts[name if name != "Reference" or platform == "Reference" else "ref"] = (ctx, integrator, kde, link)
        if platform == "Reference":
            break
    ref_key = "ref" if platform != "Reference" else "Reference"

    def compare():
        e0, f0 = energy_and_forces(contexts[ref_key][0], 1 << 2)
        assert np.abs(f0).max() > 1.0 and e0 > PREFACTOR * math.log(EPSILON) + 1.0  # not flat
        if platform != "Reference":
            e1, f1 = energy_and_forces(contexts[platform][0], 1 << 2)
            tol_e, tol_f = (1e-8, 1e-8) if precision in (None, "double") else (1e-4, 1e-3)
            assert abs(e1 - e0) <= tol_e * abs(e0)
            np.testing.assert_allclose(f1, f0, rtol=0, atol=tol_f * np.abs(f0).max())
        if precision in (None, "double"):
            check_finite_differences(contexts[platform][0], xyz, 1 << 2, rtol=1e-4)

    compare()
    for ctx, _, kde, link in contexts.values():  # the same local deposits (with compression) in both Contexts
        rng = np.random.default_rng(9)
        for _ in range(4):
            kde.add(z[:3] + rng.normal(0, 0.1, 3), np.full(3, 0.1), float(rng.uniform(0.5, 2)))
        link.push(float(np.mean(kde.center_sum)) * 1.7, ctx)
    compare()


# ------------------------------------------------------------------------------------------------ LatentOPES


def make_opes(tmp_path, d=2, contextUpdate="local", seed=3, **kw):
    model = tmp_path / f"x{d}.pt"
    if not model.exists():
        identity_model(model, 1, d)
    expr = DOUBLE_WELL_1D if d == 1 else "10*(4*x^2-1)^2 + 40*y^2 + 50*z^2"
    system = particle_system(expr)
    vars_ = [LatentVariable(0, -1.0, 1.0, 0.06, gridWidth=61), LatentVariable(1, -0.6, 0.6, 0.05, gridWidth=41)][:d]
    kw.setdefault("pace", 50)
    opes = LatentOPES(system, model, vars_, 300.0, 20.0, contextUpdate=contextUpdate, **kw)
    sim = particle_simulation(system, [-0.5, 0.0][:d], seed=seed)
    return opes, sim, system


def test_local_route_records_the_acting_bias(tmp_path):
    opes, sim, _ = make_opes(tmp_path)
    assert opes.contextUpdate == "local" and supports_density_grid(opes.backend)
    opes.step(sim, 3000)
    rec = opes.getRecords()
    assert len(rec["step"]) == 60 and opes.numKernels > 3
    # the recorded bias at each deposit is what the Context applied then (read back from the Context)
    z = opes.getCollectiveVariables(sim)
    acting = opes.getBiasEnergy(sim.context) - opes.backend.wall_energy(z)
    zed = float(np.mean(opes.kde.center_sum))
    exact = opes._alpha * opes._kt * math.log(max(opes.kde.mixture_at(z[None], opes.kde.all_centers,
                                                                     opes.kde.all_sigmas, opes.kde.all_weights)[0],
                                                  0.0) / zed + math.exp(opes._logEpsilon))
    assert acting == pytest.approx(exact, abs=0.05)  # the spline of S at z vs the exact kernel sum


def test_local_and_refit_routes_agree_at_grid_nodes_and_bound_the_interpolation_error(tmp_path):
    """Same kernels (a state saved by the local run, loaded by a refit one): at every grid node probed the two
    Contexts give the same bias (both interpolants pass through V there: 1e-7 kJ/mol); between nodes both differ
    from the exact kernel-sum V by their interpolation errors, of the same order (stated in
    benchmarks/RESULTS.md); the V grids (getBias, used for c(t) and analysis) are identical."""
    local, sim, _ = make_opes(tmp_path, d=2)
    local.step(sim, 4000)
    local.saveState(tmp_path / "state")
    refit, sim2, _ = make_opes(tmp_path, d=2, contextUpdate="refit")
    refit.loadState(tmp_path / "state")
    refit.updateContext(sim2.context)
    local.updateContext(sim.context)
    np.testing.assert_array_equal(local.getBias(), refit.getBias())
    assert local.ct() == refit.ct()
    axes = local.grid.axes
    kde = local.kde
    rng = np.random.default_rng(0)

    def bias(opes, s, p):
        x = np.zeros((1, 3))
        x[0, :2] = p
        s.context.setPositions(x)
        return opes.getBiasEnergy(s.context)

    for _ in range(15):  # nodes near the kernels
        c = kde.centers[rng.integers(len(kde.centers))]
        node = [int(np.argmin(np.abs(a - c[k] - rng.normal(0, 0.05)))) for k, a in enumerate(axes)]
        p = np.array([axes[k][node[k]] for k in range(2)])
        assert bias(local, sim, p) == pytest.approx(bias(refit, sim2, p), abs=1e-7)
        assert bias(local, sim, p) == pytest.approx(local.getBias()[tuple(node)], abs=1e-7)
    zed = float(np.mean(kde.center_sum))
    pts = kde.centers[rng.integers(len(kde.centers), size=40)] + rng.normal(0, 0.05, (40, 2))
    pts = np.clip(pts, [-0.95, -0.55], [0.95, 0.55])
    exact = local._biasFromSums(kde.mixture_at(pts, kde.all_centers, kde.all_sigmas, kde.all_weights), zed)
    err_local = np.array([bias(local, sim, p) for p in pts]) - exact
    err_refit = np.array([bias(refit, sim2, p) for p in pts]) - exact
    # σ ≥ ~1.3 grid spacings here: both interpolation errors are a small fraction of kT (2.49 kJ/mol)
    assert np.abs(err_local).max() < 0.25 and np.abs(err_refit).max() < 0.25
    assert np.sqrt(np.mean(err_local**2)) < 2.0 * np.sqrt(np.mean(err_refit**2)) + 0.01


def test_local_route_restart_and_xml_round_trip_keep_the_bias(tmp_path):
    opes, sim, system = make_opes(tmp_path, d=1)
    opes.step(sim, 2000)
    e = opes.getBiasEnergy(sim.context)
    opes.saveState(tmp_path / "s")
    again, sim2, _ = make_opes(tmp_path, d=1)
    again.loadState(tmp_path / "s")
    state = sim.context.getState(getPositions=True)
    sim2.context.setPositions(state.getPositions())
    again.updateContext(sim2.context)
    assert again.getBiasEnergy(sim2.context) == pytest.approx(e, rel=1e-10)
    # the System's XML carries the table and the current Z (the parameter's default): a new Context agrees
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    ctx, _ = make_context(copy, state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), "Reference")
    e_copy = ctx.getState(getEnergy=True, groups={opes.backend.force_group}).getPotentialEnergy()
    assert e_copy.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(e, rel=1e-10)


def test_context_update_option_is_validated(tmp_path):
    with pytest.raises(ValueError, match="contextUpdate"):
        make_opes(tmp_path, contextUpdate="fast")
    opes, _, _ = make_opes(tmp_path, contextUpdate="refit")
    assert opes.contextUpdate == "refit" and opes._densityLink is None
