"""The native LatentBiasForce plugin: finite differences, equality with the CustomCVForce + TorchForce route,
live updates, serialization, bad inputs, last latent values. Skipped when the plugin is not built."""

from __future__ import annotations

import copy

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

import latentbias as lb
from latentbias import native
from latentbias.bias.backends import CustomCVBackend
from latentbias.bias.grid import BiasGrid, LatentVariable
from latentbias.bias.restraint import LatentRestraint
from latentbias.export import save_cv_module

from conftest import perturbed_frames, random_latent_model
from test_export_forces import bare_system, check_finite_differences, energy_and_forces, make_context

if not native.is_available():
    pytest.skip(f"native plugin not available: {native.unavailable_reason()}", allow_module_level=True)

from latentbias.bias.fused import FusedBackend  # noqa: E402
from latentbias.bias.restraint import fused_restraint_force  # noqa: E402

PLATFORMS = ["Reference", "CPU"]
GROUP = 3


@pytest.fixture(scope="module")
def ala2_model_d3(ala2, tmp_path_factory):
    """float64 model with d = 3 on ala2 heavy-atom distances (random weights)."""
    _, top, xyz = ala2
    feat = lb.Distances.from_selection(top, "element != H")
    model = random_latent_model(feat, top.n_atoms, perturbed_frames(xyz, 50), latent_dim=3, seed=3)
    path = tmp_path_factory.mktemp("native") / "ala2_d3.pt"
    lb.save_model(model, path, dtype="float64")
    return path


def copy_system(system):
    s = openmm.System()
    s.__setstate__(system.__getstate__())
    return s


def exact_max(lo, hi, n):
    """hi nudged up until OpenMM's last grid point lo + (n-1)*((hi-lo)/(n-1)) equals it exactly.

    Otherwise OpenMM's Continuous*DFunction (Reference platform) throws from SplineFitter for an argument clamped
    to hi (z beyond the upper edge), which aborts the process; LatentBiasForce clamps to the node range instead.
    """
    while lo + (n - 1) * ((hi - lo) / (n - 1)) != hi:
        hi = float(np.nextafter(hi, np.inf))
    return hi


def make_grid(z, indices, periodic=False, shift=0.0, width=0.15, n=25):
    """Grid around z[indices] (shifted by `shift` so that z may lie beyond an edge) with gridWidth n."""
    return BiasGrid([LatentVariable(i, z[i] - 0.8 + shift, exact_max(z[i] - 0.8 + shift, z[i] + 0.8 + shift, n), width,
                                    periodic=periodic, gridWidth=n) for i in indices])


def bumpy_values(grid, z, seed=0):
    """A sum of Gaussians on the grid (periodic planes duplicate exactly), kJ/mol."""
    rng = np.random.default_rng(seed)
    values = np.zeros(grid.shape)
    for _ in range(6):
        centre = [z[v.index] + rng.uniform(-0.6, 0.6) for v in grid.variables]
        values += rng.uniform(2.0, 8.0) * grid.gaussian(centre)
    return values


def fused_system(model_path, system, grid, values, kw=500.0):
    sys_ = copy_system(system)
    backend = FusedBackend(lb.load_model(model_path), sys_, grid, kw, forceGroup=GROUP)
    backend.set_grid(values, None)
    return sys_, backend


def customcv_system(model_path, system, grid, values, kw=500.0):
    sys_ = copy_system(system)
    backend = CustomCVBackend(lb.load_model(model_path), sys_, grid, kw, forceGroup=GROUP)
    backend.set_grid(values, None)
    return sys_, backend


def assert_same(ctx_a, ctx_b, positions, rtol=1e-5):
    for xyz in positions:
        ctx_a.setPositions(xyz)
        ctx_b.setPositions(xyz)
        ea, fa = energy_and_forces(ctx_a, 1 << GROUP)
        eb, fb = energy_and_forces(ctx_b, 1 << GROUP)
        assert ea == pytest.approx(eb, rel=rtol, abs=1e-9)
        scale = max(1.0, float(np.abs(fb).max()))
        np.testing.assert_allclose(fa, fb, rtol=rtol, atol=rtol * scale)


# ------------------------------------------------------------------------------------------ finite differences


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("kind", ["grid", "restraint", "both"])
def test_forces_match_finite_differences(ala2, ala2_model, platform, kind):
    system, _, xyz = ala2
    mf = lb.load_model(ala2_model)
    z = mf.encode(xyz)
    sys_ = copy_system(system)
    if kind in ("grid", "both"):
        grid = make_grid(z, [0, 1])
        backend = FusedBackend(mf, sys_, grid, 500.0, forceGroup=GROUP)
        backend.set_grid(bumpy_values(grid, z), None)
    if kind in ("restraint", "both"):
        fused_restraint_force(mf, sys_, centers=z + [0.2, -0.1], forceConstants=[300.0, 150.0], forceGroup=GROUP)
    ctx, _ = make_context(sys_, xyz, platform)
    e, _ = energy_and_forces(ctx, 1 << GROUP)
    assert e > 0.0
    check_finite_differences(ctx, xyz, 1 << GROUP)
    if platform == "Reference":
        check_finite_differences(ctx, xyz, -1, rtol=2e-4)  # the whole system, bias included


def test_three_dims_and_mixed_periodicity_match_finite_differences(ala2, ala2_model_d3):
    system, _, xyz = ala2
    mf = lb.load_model(ala2_model_d3)
    z = mf.encode(xyz)
    grid = BiasGrid([LatentVariable(0, z[0] - 0.7, z[0] + 0.9, 0.15, gridWidth=13),
                     LatentVariable(1, z[1] - 0.5, z[1] + 0.5, 0.1, periodic=True, gridWidth=11),
                     LatentVariable(2, z[2] - 0.8, z[2] + 0.6, 0.2, gridWidth=9)])
    sys_, backend = fused_system(ala2_model_d3, system, grid, bumpy_values(grid, z, 4))
    ctx, _ = make_context(sys_, xyz, "Reference")
    check_finite_differences(ctx, xyz, 1 << GROUP)


# --------------------------------------------------------------------- identical to the CustomCVForce route


@pytest.mark.parametrize("platform", PLATFORMS)
def test_grid_2d_equals_custom_cv_route(ala2, ala2_model, platform):
    system, _, xyz = ala2
    z = lb.load_model(ala2_model).encode(xyz)
    frames = [xyz] + list(perturbed_frames(xyz, 3, scale=0.01, seed=5))
    for shift in (0.0, -1.0, 1.0):  # z inside, beyond the upper edge, beyond the lower edge (walls)
        grid = make_grid(z, [0, 1], shift=shift)
        values = bumpy_values(grid, z + shift)
        sys_a, fused = fused_system(ala2_model, system, grid, values)
        sys_b, custom = customcv_system(ala2_model, system, grid, values)
        ctx_a, _ = make_context(sys_a, xyz, platform)
        ctx_b, _ = make_context(sys_b, xyz, platform)
        if shift != 0.0:
            assert fused.wall_energy(z) > 0.0
        assert_same(ctx_a, ctx_b, frames)
        np.testing.assert_allclose(fused.latent_values(ctx_a), custom.latent_values(ctx_b), rtol=1e-10)
        assert fused.energy(ctx_a) == pytest.approx(custom.energy(ctx_b), rel=1e-5)


@pytest.mark.parametrize("indices,periodic", [([1], False), ([0], True), ([1, 0], True), ([0, 1, 2], False)])
def test_grid_equals_custom_cv_route(ala2, ala2_model_d3, indices, periodic):
    system, _, xyz = ala2
    z = lb.load_model(ala2_model_d3).encode(xyz)
    frames = [xyz] + list(perturbed_frames(xyz, 2, scale=0.01, seed=6))
    grid = make_grid(z, indices, periodic=periodic, shift=0.0 if periodic else -0.9)
    values = bumpy_values(grid, z, seed=len(indices))
    sys_a, _ = fused_system(ala2_model_d3, system, grid, values)
    sys_b, _ = customcv_system(ala2_model_d3, system, grid, values)
    ctx_a, _ = make_context(sys_a, xyz, "Reference")
    ctx_b, _ = make_context(sys_b, xyz, "Reference")
    assert_same(ctx_a, ctx_b, frames)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_restraint_equals_latent_restraint(ala2, ala2_model, platform):
    system, _, xyz = ala2
    z = lb.load_model(ala2_model).encode(xyz)
    kwargs = dict(centers=z + [0.3, -0.2], forceConstants=[200.0, 80.0], lowerWalls=[z[0] + 0.1, -np.inf],
                  upperWalls=[np.inf, z[1] - 0.05], wallForceConstant=[500.0, 700.0], forceGroup=GROUP)
    sys_a, sys_b = copy_system(system), copy_system(system)
    fused_restraint_force(ala2_model, sys_a, **kwargs)
    restraint = LatentRestraint(ala2_model, sys_b, **kwargs)
    ctx_a, _ = make_context(sys_a, xyz, platform)
    ctx_b, _ = make_context(sys_b, xyz, platform)
    frames = [xyz] + list(perturbed_frames(xyz, 2, scale=0.01, seed=8))
    assert_same(ctx_a, ctx_b, frames)
    for name, value in ((restraint.centerName(0), z[0] - 0.4), (restraint.forceConstantName(1), 20.0)):
        ctx_a.setParameter(name, value)
        ctx_b.setParameter(name, value)
    assert_same(ctx_a, ctx_b, frames)


# --------------------------------------------------------------------------------------------- live updates


def test_set_grid_updates_context_without_reinitialising(ala2, ala2_model):
    system, _, xyz = ala2
    z = lb.load_model(ala2_model).encode(xyz)
    grid = make_grid(z, [0, 1])
    sys_a, fused = fused_system(ala2_model, system, grid, np.zeros(grid.shape))
    sys_b, custom = customcv_system(ala2_model, system, grid, np.zeros(grid.shape))
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.001 * unit.picoseconds)
    ctx_a = openmm.Context(sys_a, integrator, openmm.Platform.getPlatformByName("Reference"))
    ctx_a.setPositions(xyz)
    ctx_b, _ = make_context(sys_b, xyz, "Reference")
    integrator.step(5)
    time_before = ctx_a.getState().getTime()
    positions = ctx_a.getState(getPositions=True).getPositions(asNumpy=True)
    assert fused.energy(ctx_a) == pytest.approx(0.0, abs=1e-12)
    values = bumpy_values(grid, z, seed=9)
    fused.set_grid(values, ctx_a)
    custom.set_grid(values, ctx_b)
    ctx_b.setPositions(positions)
    assert ctx_a.getState().getTime() == time_before  # same Context, state kept
    e_new = fused.energy(ctx_a)
    assert e_new > 0.1
    assert e_new == pytest.approx(custom.energy(ctx_b), rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        fused.set_grid(np.zeros((3, 3)), ctx_a)
    with pytest.raises(ValueError, match="finite"):
        fused.set_grid(np.full(grid.shape, np.nan), ctx_a)


def test_set_scale_equals_custom_cv_route(ala2, ala2_model):
    system, _, xyz = ala2
    z = lb.load_model(ala2_model).encode(xyz)
    grid = make_grid(z, [0, 1], shift=-1.0)  # beyond the upper edge: the walls must not be scaled
    values = bumpy_values(grid, z - 1.0, seed=2) + 5.0
    sys_a, fused = fused_system(ala2_model, system, grid, values)
    sys_b, custom = customcv_system(ala2_model, system, grid, values)
    ctx_a, _ = make_context(sys_a, xyz, "Reference")
    ctx_b, _ = make_context(sys_b, xyz, "Reference")
    walls = fused.wall_energy(z)
    table = fused.energy(ctx_a) - walls
    assert walls > 0.0 and abs(table) > 1e-3
    for scale in (0.3, 0.0):
        fused.set_scale(scale, ctx_a)
        custom.set_scale(scale, ctx_b)
        assert fused.scale == scale
        assert fused.energy(ctx_a) == pytest.approx(scale * table + walls, rel=1e-10)
        assert_same(ctx_a, ctx_b, [xyz])


def test_set_parameter_moves_restraint_centre(ala2, ala2_model):
    system, _, xyz = ala2
    z = lb.load_model(ala2_model).encode(xyz)
    sys_ = copy_system(system)
    force = fused_restraint_force(ala2_model, sys_, centers=z, forceConstants=[100.0, 50.0], forceGroup=GROUP)
    assert [force.getGlobalParameterName(i) for i in range(force.getNumGlobalParameters())] == [
        "latent_z0_0", "latent_k_0", "latent_z0_1", "latent_k_1"]
    ctx, _ = make_context(sys_, xyz, "Reference")
    assert energy_and_forces(ctx, 1 << GROUP)[0] == pytest.approx(0.0, abs=1e-12)
    ctx.setParameter("latent_z0_0", z[0] + 0.3)
    ctx.setParameter("latent_z0_1", z[1] - 0.2)
    e, _ = energy_and_forces(ctx, 1 << GROUP)
    assert e == pytest.approx(0.5 * 100.0 * 0.09 + 0.5 * 50.0 * 0.04, rel=1e-10)
    assert force.getLastEnergies(ctx) == pytest.approx([0.0, e], rel=1e-12)


# ------------------------------------------------------------------------------------------- serialization


def test_xml_round_trip_of_system_with_force(ala2, ala2_model):
    system, _, xyz = ala2
    z = lb.load_model(ala2_model).encode(xyz)
    grid = BiasGrid([LatentVariable(0, z[0] - 0.5, z[0] + 0.5, 0.1, gridWidth=11),
                     LatentVariable(1, z[1] - 0.5, z[1] + 0.5, 0.1, periodic=True, gridWidth=9)])
    sys_, backend = fused_system(ala2_model, system, grid, bumpy_values(grid, z, 2))
    fused_restraint_force(ala2_model, sys_, centers=z + 0.1, forceConstants=40.0, upperWalls=[np.inf, z[1]],
                          forceGroup=GROUP)
    xml = openmm.XmlSerializer.serialize(sys_)
    assert "LatentBiasForce" in xml
    restored = openmm.XmlSerializer.deserialize(xml)
    forces = [native.as_latent_bias_force(restored.getForce(i)) for i in range(restored.getNumForces())
              if native.load().LatentBiasForce.isinstance(restored.getForce(i))]
    assert len(forces) == 2
    assert forces[0].getGridValues() == backend.force.getGridValues()
    assert forces[0].getModelData() == backend.force.getModelData()
    assert forces[1].getRestraintParameters(1)[7] == pytest.approx(z[1])
    for other in (restored, copy.deepcopy(sys_)):
        ctx_a, _ = make_context(sys_, xyz, "Reference")
        ctx_b, _ = make_context(other, xyz, "Reference")
        ea, fa = energy_and_forces(ctx_a)
        eb, fb = energy_and_forces(ctx_b)
        assert ea == pytest.approx(eb, rel=1e-12)
        np.testing.assert_allclose(fa, fb, rtol=1e-12, atol=1e-10)


# ------------------------------------------------------------------------------------------------ bad input


class ThreeOutputs(torch.nn.Module):
    def forward(self, positions: torch.Tensor, box: torch.Tensor | None = None) -> torch.Tensor:
        return positions[:3, 0].to(torch.float64)


def test_bad_inputs_raise(ala2, ala2_model, tmp_path):
    system, _, xyz = ala2
    LatentBiasForce = native.LatentBiasForce
    # model output size != latent_dim of the metadata: at the first evaluation
    path = save_cv_module(ThreeOutputs(), tmp_path / "three.pt", n_atoms=22, latent_dim=2)
    sys_ = bare_system(22)
    force = LatentBiasForce(str(path))
    force.addRestraint(0, "", 0.0, "", 1.0)
    sys_.addForce(force)
    ctx, _ = make_context(sys_, xyz, "Reference")
    with pytest.raises(openmm.OpenMMException, match="returned 3 latent values but 2 were expected"):
        energy_and_forces(ctx)
    # atom-count mismatch: the backends refuse before any Context, the raw force at Context creation
    z = lb.load_model(ala2_model).encode(xyz)
    grid = make_grid(z, [0])
    with pytest.raises(ValueError, match="built for 22 atoms but the System has 5"):
        FusedBackend(lb.load_model(ala2_model), bare_system(5), grid)
    with pytest.raises(ValueError, match="built for 22 atoms"):
        fused_restraint_force(ala2_model, bare_system(5), centers=[0, 0], forceConstants=1.0)
    small = bare_system(5)
    force = LatentBiasForce(str(ala2_model))
    force.addRestraint(0, "", 0.0, "", 1.0)
    small.addForce(force)
    with pytest.raises(openmm.OpenMMException, match="built for 22 atoms but the System has 5"):
        openmm.Context(small, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    # grid values: size and finiteness
    force = LatentBiasForce(str(ala2_model))
    force.addGridDimension(0, -1.0, 1.0, 10, False)
    force.addGridDimension(1, -1.0, 1.0, 8, False)
    with pytest.raises(openmm.OpenMMException, match="80 points"):
        force.setGridValues(np.zeros(79))
    bad = np.zeros(80)
    bad[5] = np.inf
    with pytest.raises(openmm.OpenMMException, match="not finite"):
        force.setGridValues(bad)
    bad[5] = np.nan
    with pytest.raises(openmm.OpenMMException, match="not finite"):
        force.setGridValues(bad)
    # d > 3, components beyond the model's latent_dim
    with pytest.raises(openmm.OpenMMException, match="latent component 2 does not exist"):
        force.addGridDimension(2, -1.0, 1.0, 8, False)
    with pytest.raises(ValueError, match="out of range"):
        FusedBackend(lb.load_model(ala2_model), copy_system(system), BiasGrid([LatentVariable(2, -1.0, 1.0, 0.1)]))
    force3 = LatentBiasForce(str(ThreeDModel.path(tmp_path)))
    for i in range(3):
        force3.addGridDimension(i, -1.0, 1.0, 5, False)
    with pytest.raises(openmm.OpenMMException, match="at most 3 dimensions"):
        force3.addGridDimension(3, -1.0, 1.0, 5, False)
    with pytest.raises(ValueError, match="1, 2 or 3 latent variables"):
        BiasGrid([LatentVariable(i, -1.0, 1.0, 0.2) for i in range(4)])
    # not a model
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(openmm.OpenMMException, match="not a loadable TorchScript archive"):
        LatentBiasForce(str(junk))
    with pytest.raises(openmm.OpenMMException, match="cannot open"):
        LatentBiasForce(str(tmp_path / "missing.pt"))
    with pytest.raises(TypeError, match="bytes"):
        LatentBiasForce.fromModelData("not bytes")


class ThreeDModel(torch.nn.Module):
    """z = x, y, z, w of particle 0 (4 outputs) to test the 3-dimension limit."""

    def forward(self, positions: torch.Tensor, box: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([positions[0], positions[1, :1]]).to(torch.float64)

    @staticmethod
    def path(folder):
        return save_cv_module(ThreeDModel(), folder / "four.pt", n_atoms=22, latent_dim=4, overwrite=True)


# ----------------------------------------------------------------------------------------------- last values


@pytest.mark.parametrize("platform", PLATFORMS)
def test_last_latent_values_equal_encode(ala2, ala2_model, platform):
    system, topology, xyz = ala2
    mf = lb.load_model(ala2_model)
    z = mf.encode(xyz)
    grid = make_grid(z, [1])
    sys_ = copy_system(system)
    backend = FusedBackend(mf, sys_, grid, forceGroup=GROUP)
    backend.set_grid(bumpy_values(grid, z), None)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(3)
    ctx = openmm.Context(sys_, integrator, openmm.Platform.getPlatformByName(platform))
    ctx.setPositions(xyz)
    ctx.getState(getEnergy=True)
    np.testing.assert_allclose(backend.force.getLastLatentValues(ctx), z, rtol=1e-10, atol=1e-12)
    assert backend.force.isLastEvaluationCurrent(ctx)
    integrator.step(10)
    current = ctx.getState(getPositions=True).getPositions(asNumpy=True)
    # the integrator evaluated forces before its last position update: the stored z are one step old
    assert not backend.force.isLastEvaluationCurrent(ctx)
    z_now = mf.encode(current)
    np.testing.assert_allclose(backend.latent_values(ctx), z_now[[1]], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backend.force.getLastLatentValues(ctx), z_now, rtol=1e-10, atol=1e-12)
    assert backend.force.isLastEvaluationCurrent(ctx)
    np.testing.assert_allclose(backend.all_latent_values(ctx), z_now, rtol=1e-10, atol=1e-12)
    state = ctx.getState(getEnergy=True, groups={GROUP})
    assert backend.energy(ctx) == pytest.approx(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                                                rel=1e-12)


class CountingModel(torch.nn.Module):
    """z = (x of atom 0, number of forward calls so far): exposes how often the force runs the model.

    z1 = calls + (y1 - y1.detach()): exactly the count, with a gradient (along y of atom 1), since a component
    without one is refused at load."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1, dtype=torch.float64))

    def forward(self, positions: torch.Tensor, box: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.add_(1.0)
        y1 = positions[1, 1:2].to(torch.float64)
        return torch.cat([positions[0, :1].to(torch.float64), self.calls + (y1 - y1.detach())])


def test_one_model_evaluation_per_force_evaluation(ala2, tmp_path):
    system, _, xyz = ala2
    path = save_cv_module(CountingModel(), tmp_path / "counting.pt", n_atoms=22, latent_dim=2)
    sys_ = copy_system(system)
    grid = BiasGrid([LatentVariable(0, -2.0, exact_max(-2.0, 2.0, 21), 0.2, gridWidth=21),
                     LatentVariable(1, 0.0, exact_max(0.0, 50.0, 21), 2.0, gridWidth=21)])
    backend = FusedBackend(lb.load_model(path), sys_, grid, forceGroup=GROUP)
    backend.set_grid(np.fromfunction(lambda i, j: np.sin(i) + np.cos(j), grid.shape), None)
    fused_restraint_force(path, sys_, centers=[0.0, 0.0], forceConstants=[1.0, 0.0], forceGroup=GROUP)
    integrator = openmm.VerletIntegrator(0.0005)
    ctx = openmm.Context(sys_, integrator, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(xyz)
    energy_and_forces(ctx)
    assert backend.force.getLastLatentValues(ctx)[1] == 1.0  # both dimensions of the grid from one pass
    integrator.step(4)
    assert backend.force.getLastLatentValues(ctx)[1] == 5.0  # one evaluation per step
    backend.latent_values(ctx)   # stale after the step: one energy-only evaluation ...
    backend.energy(ctx)          # ... reused here
    assert backend.force.getLastLatentValues(ctx)[1] == 6.0


def test_metadynamics_runs_with_fused_backend(ala2, ala2_model, tmp_path):
    """LatentMetadynamics accepts FusedBackend and deposits at the current z."""
    from openmm import app

    from latentbias.bias import LatentMetadynamics
    from latentbias.testsystems import alanine_dipeptide_vacuum

    system, topology, positions = alanine_dipeptide_vacuum()
    mf = lb.load_model(ala2_model)
    z = mf.encode(positions)
    variables = [LatentVariable(i, z[i] - 2.0, z[i] + 2.0, 0.2) for i in range(2)]
    meta = LatentMetadynamics(system, mf, variables, 300.0, 5.0, 1.0, 10, backend=FusedBackend)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    meta.step(sim, 30)
    assert meta.numDeposits == 3
    current = sim.context.getState(getPositions=True).getPositions(asNumpy=True)
    np.testing.assert_allclose(meta.records["z"][-1], mf.encode(current), rtol=1e-10)
    assert meta.getBias().max() > 0.0


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("cutoff", [None, 2.0])
@pytest.mark.parametrize("indices,periodic", [([1], False), ([0, 1], True), ([0, 1, 2], False), ([2, 0, 1], True)])
def test_local_deposits_equal_full_refit(ala2, ala2_model_d3, platform, cutoff, indices, periodic):
    """Gaussians added with LatentBiasForce.addGridGaussian (a local update of the Context's interpolant, issue
    10 item 6) give the energies and forces of a new Context built from the summed table (setGridValues), and the
    force's table equals BiasGrid.gaussian's sum; Gaussians beyond an edge and wrapping a periodic axis included;
    untruncated and truncated at 2 widths (``BiasGrid(kernelCutoff=)``: C++ and Python truncate alike)."""
    system, _, xyz = ala2
    mf = lb.load_model(ala2_model_d3)
    z = mf.encode(xyz)
    grid = make_grid(z, indices, periodic=periodic, n=21)
    grid.kernelCutoff = cutoff
    start = bumpy_values(grid, z, seed=4)
    sys_a, local = fused_system(ala2_model_d3, system, grid, start)
    ctx_a, _ = make_context(sys_a, xyz, platform)
    rng = np.random.default_rng(7)
    total = start.copy()
    for _ in range(8):
        centre = np.array([z[v.index] + rng.uniform(-1.2, 1.2) for v in grid.variables])  # some beyond the edges
        height = rng.uniform(0.5, 3.0)
        total += height * grid.gaussian(centre)
        local.add_gaussian(centre, height, lambda: pytest.fail("the native backend must not need the table"), ctx_a)
    np.testing.assert_allclose(np.asarray(local.force.getGridValues()), total.ravel(order="F"), rtol=1e-12,
                               atol=1e-12)
    sys_b, refit = fused_system(ala2_model_d3, system, grid, total)
    ctx_b, _ = make_context(sys_b, xyz, platform)
    assert_same(ctx_a, ctx_b, perturbed_frames(xyz, 6, scale=0.03, seed=2), rtol=1e-9)


def test_metadynamics_context_equals_its_grid_after_local_deposits(ala2, ala2_model_d3):
    """After LatentMetadynamics deposits (locally updated in the Context), the acting bias equals a Context
    refitted from the Python grid (updateContext), to rounding."""
    from openmm import app

    from latentbias.bias import LatentMetadynamics
    from latentbias.testsystems import alanine_dipeptide_vacuum

    system, topology, positions = alanine_dipeptide_vacuum()
    mf = lb.load_model(ala2_model_d3)
    z = mf.encode(positions)
    variables = [LatentVariable(i, z[i] - 1.0, z[i] + 1.0, 0.15, gridWidth=30) for i in range(3)]
    meta = LatentMetadynamics(system, mf, variables, 300.0, 5.0, 2.0, 5, backend=FusedBackend)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    meta.step(sim, 100)
    assert meta.numDeposits == 20
    local = meta.getBiasEnergy(sim.context)
    assert local > 1.0
    meta.updateContext(sim.context)
    assert meta.getBiasEnergy(sim.context) == pytest.approx(local, rel=1e-10, abs=1e-10)


def test_add_restraint_in_five_arguments_plus_setters(ala2, ala2_model):
    """addRestraint(component, centre name, centre, k name, k) + setRestraintPeriod/setRestraintWalls give the
    restraint of the one-call form; bad values are refused by the setters with the restraint unchanged."""
    system, _, _ = ala2
    mf = lb.load_model(ala2_model)
    from latentbias.bias.fused import _new_force

    one_call = _new_force(mf, copy_system(system))
    one_call.addRestraint(1, "c", 0.25, "k", 40.0, 3.0, -0.5, 0.75, 200.0)
    split = _new_force(mf, copy_system(system))
    index = split.addRestraint(1, "c", 0.25, "k", 40.0)
    assert split.getRestraintParameters(index)[6:] != one_call.getRestraintParameters(0)[6:]
    split.setRestraintPeriod(index, 3.0)
    split.setRestraintWalls(index, -0.5, 0.75, 200.0)
    assert split.getRestraintParameters(index) == one_call.getRestraintParameters(0)
    for call, args in ((split.setRestraintPeriod, (index, -1.0)), (split.setRestraintWalls, (index, 1.0, 0.5, 10.0)),
                       (split.setRestraintWalls, (index, -1.0, 1.0, float("nan"))), (split.setRestraintPeriod, (5, 1.0))):
        with pytest.raises(Exception):
            call(*args)
    assert split.getRestraintParameters(index) == one_call.getRestraintParameters(0)
