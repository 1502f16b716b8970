"""LatentBiasForce's common-compute kernels (plugin/platforms/common) on OpenMM's OpenCL platform.

The device kernels evaluate the model's native description in the context's precision; they are compared with the
TorchScript path on the Reference platform (float64 autograd), the independent reference:

* single and mixed precision: z to 1e-4 and forces to 1e-3 of their largest magnitude, energies to 1e-4 relative
  (float32 arithmetic through ~60 features and two hidden layers), for every featurizer and every activation, in
  vacuum and with the molecule split across a triclinic box, and for villin in its water box straddling a face;
* double precision: to 1e-8 (the same arithmetic as the C++ evaluator), and central finite differences;
* an XML round trip gives the same energies and forces; broken inputs fail with exceptions, never zero forces.

Every test skips with the reason where there is no OpenCL platform or the plugin was built without OpenCL (with
pocl-opencl-icd, OpenCL runs on the CPU; `.ci/run` installs it).
"""

from __future__ import annotations

import numpy as np
import openmm
import pytest

import latentbias as lb
from latentbias import native
from latentbias.models import ACTIVATIONS
from latentbias.platforms import check_platform

from conftest import perturbed_frames
from test_export_forces import bare_system, check_finite_differences, energy_and_forces, make_context


def _opencl_skip_reason() -> str | None:
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if "OpenCL" not in names:
        return ("no OpenCL platform in OpenMM here (install an OpenCL runtime, e.g. apt-get install pocl-opencl-icd; "
                f"platforms: {names})")
    if not native.is_available():
        return f"native LatentBiasForce plugin not built: {native.unavailable_reason()}"
    if not openmm.Platform.getPlatformByName("OpenCL").supportsKernels([native.KERNEL_NAME]):
        return ("the LatentBiasForce plugin was built without its OpenCL kernels (no OpenCL library/headers at "
                "build time: apt-get install ocl-icd-opencl-dev opencl-headers, then rebuild)")
    return None


_REASON = _opencl_skip_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from test_native_path import BOX, export, featurizer, restrained_system, wrapped  # noqa: E402

Z_TOL, F_TOL, E_TOL = 1e-4, 1e-3, 1e-4  # single/mixed precision, relative to the largest |z|, |F|; |E|
DOUBLE_TOL = 1e-8


def opencl_context(system, positions, precision):
    integrator = openmm.VerletIntegrator(0.001)
    platform = openmm.Platform.getPlatformByName("OpenCL")
    ctx = openmm.Context(system, integrator, platform, {"Precision": precision})
    ctx.setPositions(positions)
    return ctx, integrator


def evaluate(data, n_atoms, positions, periodic, z_ref, platform, precision=None, path="auto", box=BOX):
    system, force = restrained_system(data, n_atoms, path, periodic, z_ref)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    check_platform(system, platform)
    if platform == "OpenCL":
        ctx, integ = opencl_context(system, positions, precision)
    else:
        ctx, integ = make_context(system, positions, platform)
    e, f = energy_and_forces(ctx)
    out = (np.array(force.getLastLatentValues(ctx)), e, f, force.getEvaluationPathInContext(ctx))
    del ctx, integ
    return out


def assert_close(got, ref, z_tol, f_tol, e_tol):
    (z, e, f, path), (zr, er, fr, _) = got, ref
    assert path == "native"
    assert np.all(np.isfinite(f)) and np.abs(fr).max() > 1.0  # a real, non-trivial force
    np.testing.assert_allclose(z, zr, rtol=0, atol=z_tol * np.abs(zr).max())
    assert abs(e - er) <= e_tol * abs(er)
    np.testing.assert_allclose(f, fr, rtol=0, atol=f_tol * np.abs(fr).max())


@pytest.fixture(scope="module")
def frames(ala2):
    return perturbed_frames(ala2[2], 40, scale=0.03)


@pytest.mark.parametrize("periodic", [False, True], ids=["vacuum", "box-split"])
@pytest.mark.parametrize("kind", ["distances", "contacts", "dihedrals", "aligned", "concatenate"])
def test_opencl_equals_reference_torchscript_per_featurizer(tmp_path, ala2, frames, kind, periodic):
    _, top, xyz = ala2
    path = export(tmp_path / f"{kind}.pt", featurizer(kind, top, xyz), top.n_atoms, frames)
    positions = wrapped(xyz) if periodic else xyz + 0.01 * np.random.default_rng(1).standard_normal(xyz.shape)
    if periodic:
        assert np.abs(positions[1:] - positions[:-1]).max() > 1.0  # the molecule really is split
    data = path.read_bytes()
    z_ref = lb.load_model(path).encode(positions, BOX if periodic else None)
    ref = evaluate(data, top.n_atoms, positions, periodic, z_ref, "Reference", path="torch")
    # "mixed" and "single" run the model in the same float32 arithmetic (they differ in integration only): both on
    # the concatenation of all featurizers, "mixed" on each one alone
    for precision in ("single", "mixed") if kind == "concatenate" else ("mixed",):
        assert_close(evaluate(data, top.n_atoms, positions, periodic, z_ref, "OpenCL", precision), ref,
                     Z_TOL, F_TOL, E_TOL)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_opencl_equals_reference_torchscript_per_activation(tmp_path, ala2, frames, activation):
    _, top, xyz = ala2
    path = export(tmp_path / f"{activation}.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames,
                  activation=activation, seed=3)
    positions = wrapped(xyz)
    data = path.read_bytes()
    z_ref = lb.load_model(path).encode(positions, BOX)
    ref = evaluate(data, top.n_atoms, positions, True, z_ref, "Reference", path="torch")
    assert_close(evaluate(data, top.n_atoms, positions, True, z_ref, "OpenCL", "mixed"), ref, Z_TOL, F_TOL, E_TOL)


def test_opencl_double_precision_equals_the_cpp_evaluator(tmp_path, ala2, frames):
    """Double precision on the device: the same float64 arithmetic as the C++ native path, to 1e-8."""
    _, top, xyz = ala2
    path = export(tmp_path / "cat.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames, activation="elu")
    positions = wrapped(xyz)
    data = path.read_bytes()
    z_ref = lb.load_model(path).encode(positions, BOX)
    ref = evaluate(data, top.n_atoms, positions, True, z_ref, "Reference", path="native")
    assert_close(evaluate(data, top.n_atoms, positions, True, z_ref, "OpenCL", "double"), ref,
                 DOUBLE_TOL, DOUBLE_TOL, DOUBLE_TOL)


def test_opencl_finite_differences_across_the_boundary(tmp_path, ala2, frames):
    """Grid bias + walls through the device kernels (double precision), molecule split by the box: directional
    central differences (h = 1e-5 nm) of the energy equal -F.d to 1e-4 max(1, |F|)."""
    from latentbias.bias.fused import FusedBackend
    from latentbias.bias.grid import BiasGrid, LatentVariable

    _, top, xyz = ala2
    path = export(tmp_path / "cat.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames, activation="silu")
    model = lb.load_model(path)
    positions = wrapped(xyz)
    z = model.encode(positions, BOX)
    system = bare_system(top.n_atoms)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in BOX])
    grid = BiasGrid([LatentVariable(i, z[i] - 1.0, z[i] + 0.6, 0.2, gridWidth=30) for i in range(2)])
    backend = FusedBackend(model, system, grid, 500.0, forceGroup=2, evaluationPath="native")
    backend.force.setUsesPeriodicBoundaryConditions(True)
    backend.set_grid(5.0 * grid.gaussian(z[:2] + 0.2) + 3.0 * grid.gaussian(z[:2] - 0.3), None)
    ctx, _ = opencl_context(system, positions, "double")
    assert backend.force.getEvaluationPathInContext(ctx) == "native"
    e, f = energy_and_forces(ctx, 1 << 2)
    assert abs(e) > 0.1 and np.abs(f).max() > 1.0
    check_finite_differences(ctx, positions, 1 << 2)


def test_opencl_protein_in_water_across_the_boundary(tmp_path):
    """Villin HP35 in its water box (openmm's test.pdb, 8867 atoms), protein straddling the x face with every atom
    wrapped: CA distances, backbone dihedrals, aligned CA coordinates; OpenCL (mixed) equals Reference TorchScript."""
    import os

    import mdtraj as md
    from openmm import app

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
    top = md.Topology.from_openmm(pdb.topology)
    xyz = np.asarray(pdb.getPositions(asNumpy=True)._value)
    box = np.array([list(v._value if hasattr(v, "_value") else v) for v in pdb.topology.getPeriodicBoxVectors()])
    ca = top.select("name CA")
    protein = top.select("protein")
    feat = lb.Concatenate([lb.Distances.from_selection(top, ca[::3]), lb.Dihedrals.backbone(top),
                           lb.AlignedCoordinates.from_selection(top, ca, xyz)])
    frames = xyz[None] + 0.02 * np.random.default_rng(4).standard_normal((12,) + xyz.shape)
    path = export(tmp_path / "villin.pt", feat, top.n_atoms, frames, activation="gelu")
    shifted = xyz + (np.array([box[0, 0], 0.5 * box[1, 1], 0.5 * box[2, 2]]) - xyz[protein].mean(0))
    positions = shifted - np.floor(shifted / np.diag(box)) * np.diag(box)
    assert np.ptp(positions[ca, 0]) > 0.5 * box[0, 0]  # the protein is split across the x face
    data = path.read_bytes()
    z_ref = lb.load_model(path).encode(xyz, box)
    ref = evaluate(data, top.n_atoms, positions, True, z_ref, "Reference", path="torch", box=box)
    assert_close(evaluate(data, top.n_atoms, positions, True, z_ref, "OpenCL", "mixed", box=box), ref,
                 Z_TOL, F_TOL, E_TOL)


def test_opencl_xml_round_trip(tmp_path, ala2, frames):
    _, top, xyz = ala2
    path = export(tmp_path / "cat.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames)
    positions = wrapped(xyz)
    system, _ = restrained_system(path.read_bytes(), top.n_atoms, "auto", True, [0.1, 0.2, 0.3])
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    e0, f0 = energy_and_forces(opencl_context(system, positions, "mixed")[0])
    e1, f1 = energy_and_forces(opencl_context(copy, positions, "mixed")[0])
    assert e0 == e1 and np.array_equal(f0, f1) and np.abs(f0).max() > 1.0


def test_opencl_dynamics_follow_the_reference(tmp_path, ala2, frames):
    """20 Verlet steps of the bias alone from the same start: OpenCL (double) and Reference trajectories agree."""
    _, top, xyz = ala2
    path = export(tmp_path / "cat.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames)
    z = lb.load_model(path).encode(xyz)
    finals = []
    for platform in ("Reference", "OpenCL"):
        system, _ = restrained_system(path.read_bytes(), top.n_atoms, "native", False, z)
        ctx, integ = (opencl_context(system, xyz, "double") if platform == "OpenCL" else make_context(system, xyz, platform))
        integ.step(20)
        finals.append(ctx.getState(getPositions=True).getPositions(asNumpy=True)._value)
    moved = np.abs(finals[0] - xyz).max()
    assert moved > 1e-5
    np.testing.assert_allclose(finals[1], finals[0], rtol=0, atol=1e-6 * moved)


def test_torchscript_routes_are_refused_on_opencl_before_a_context(tmp_path, ala2, frames):
    """OpenCL has only the native path: a force forced onto TorchScript, or a model without a native description,
    raises ValueError in check_platform; a Context made anyway fails with an OpenMMException naming the fix."""
    _, top, xyz = ala2
    path = export(tmp_path / "d.pt", featurizer("distances", top, xyz), top.n_atoms, frames)
    system, force = restrained_system(path.read_bytes(), top.n_atoms, "torch", False, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="forced onto the TorchScript path.*OpenCL platform evaluates only native"):
        check_platform(system, "OpenCL")
    with pytest.raises(openmm.OpenMMException, match="OpenCL platform evaluates only models with a native description"):
        opencl_context(system, xyz, "single")
    force.setEvaluationPath("auto")
    check_platform(system, "OpenCL")  # the native path: accepted


def test_opencl_non_finite_forces_raise(tmp_path, ala2, frames):
    """Two coincident atoms of a distance pair (d|r|/dr = 0/0): the device flags the gradient; an evaluation with the
    energy raises at once, force-only evaluations (dynamics) within CHECK_INTERVAL = 64 steps, and so does a query
    of z. Never a silent zero or NaN force: the exception names the two atoms, as on the Reference platform
    (tests/test_native_path.py::test_native_non_finite_forces_name_the_atoms), and the forces returned before the
    check stay finite (a non-finite force is not added to the force buffer)."""
    _, top, xyz = ala2
    path = export(tmp_path / "d.pt", lb.Distances([[0, 4], [4, 8], [8, 14]]), top.n_atoms, frames)
    system, force = restrained_system(path.read_bytes(), top.n_atoms, "native", False, [0.0, 0.0, 0.0])
    pos = xyz.copy()
    pos[8] = pos[4]
    named = r"not finite on 2 atom\(s\) \(indices 4, 8\).*OpenCL platform"
    ctx, _ = opencl_context(system, pos, "single")
    with pytest.raises(openmm.OpenMMException, match=named):
        ctx.getState(getEnergy=True, getForces=True)
    with pytest.raises(openmm.OpenMMException, match=named):
        for _ in range(65):
            forces = ctx.getState(getForces=True).getForces(asNumpy=True)._value
            assert np.isfinite(forces).all()
    ctx.getState(getForces=True)
    with pytest.raises(openmm.OpenMMException, match=named):
        force.getLastLatentValues(ctx)
    ctx.setPositions(xyz)  # a sound structure evaluates again
    assert np.isfinite(energy_and_forces(ctx)[0])


def test_opencl_bias_updates_follow_the_reference(tmp_path, ala2, frames):
    """The bias is evaluated on the device: a 3-D grid with mixed periodicity (Hermite patches of the per-axis
    construction), walls (z beyond a non-periodic edge) and restraints with Context parameters. Energies, the
    grid/restraint split, z and forces equal the Reference native path (double precision: 1e-8) initially, after
    Context.setParameter and after setGridValues + updateParametersInContext."""
    _, top, xyz = ala2
    path = export(tmp_path / "cat.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames)
    z = lb.load_model(path).encode(xyz)
    rng = np.random.default_rng(5)
    sizes = (9, 8, 7)
    values = rng.uniform(0.0, 5.0, sizes[::-1])
    values[:, 0, :] = values[:, -1, :] = 0.5 * (values[:, 0, :] + values[:, -1, :])  # periodic planes equal
    contexts = {}
    for platform in ("Reference", "OpenCL"):
        system = bare_system(top.n_atoms)
        force = native.load().LatentBiasForce.fromModelData(path.read_bytes())
        force.setEvaluationPath("native")
        force.addGridDimension(0, z[0] - 1.0, z[0] + 1.0, sizes[0], False)
        force.addGridDimension(1, -np.pi, np.pi, sizes[1], True)
        force.addGridDimension(2, z[2] + 0.2, z[2] + 1.5, sizes[2], False)  # z[2] below the grid: a wall acts
        force.setGridValues(values.ravel().tolist())
        force.setWallForceConstant(300.0)
        force.setGridScaleParameter("scale", 0.7)
        force.addRestraint(1, "c1", float(z[1]) + 0.4, "k1", 50.0, 2 * np.pi, -np.inf, np.inf, 0.0)
        force.addRestraint(0, "c0", float(z[0]), "k0", 20.0, 0.0, float(z[0]) + 0.1, np.inf, 200.0)
        system.addForce(force)
        ctx, integ = (opencl_context(system, xyz, "double") if platform == "OpenCL" else make_context(system, xyz, platform))
        contexts[platform] = (ctx, integ, force, values)

    def compare():
        out = {}
        for platform, (ctx, _, force, _) in contexts.items():
            e, f = energy_and_forces(ctx)
            out[platform] = (e, f, np.array(force.getLastEnergies(ctx)), np.array(force.getLastLatentValues(ctx)))
        (e0, f0, s0, z0), (e1, f1, s1, z1) = out["Reference"], out["OpenCL"]
        assert np.abs(f0).max() > 1.0 and abs(s0[0]) > 0.1 and abs(s0[1]) > 0.1
        np.testing.assert_allclose(z1, z0, rtol=0, atol=DOUBLE_TOL * np.abs(z0).max())
        np.testing.assert_allclose(s1, s0, rtol=DOUBLE_TOL, atol=DOUBLE_TOL)
        assert abs(e1 - e0) <= DOUBLE_TOL * abs(e0)
        np.testing.assert_allclose(f1, f0, rtol=0, atol=DOUBLE_TOL * np.abs(f0).max())
        return e0

    e_start = compare()
    for ctx, _, _, _ in contexts.values():
        ctx.setParameter("c1", float(z[1]) - 2.9)  # across the period
        ctx.setParameter("scale", 1.3)
    e_params = compare()
    new_values = rng.uniform(0.0, 8.0, sizes[::-1])
    new_values[:, 0, :] = new_values[:, -1, :]
    for ctx, _, force, _ in contexts.values():
        force.setGridValues(new_values.ravel().tolist())
        force.updateParametersInContext(ctx)
    e_grid = compare()
    assert len({round(e_start, 6), round(e_params, 6), round(e_grid, 6)}) == 3  # every update changed the energy
