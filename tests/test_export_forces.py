"""Exported models inside OpenMM: save/load, metadata, TorchForce finite differences, serialization, bad input."""

from __future__ import annotations

import json

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

import latentbias as lb
from latentbias.export import ExportError

from conftest import perturbed_frames, random_latent_model

PLATFORMS = ["Reference", "CPU"]


def make_context(system, positions, platform):
    integrator = openmm.VerletIntegrator(0.001)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    ctx.setPositions(positions)
    return ctx, integrator


def energy_and_forces(ctx, group_mask=-1):
    state = ctx.getState(getEnergy=True, getForces=True, groups=group_mask)
    e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return e, np.asarray(f)


def check_finite_differences(ctx, xyz, group_mask, h=1e-5, n_dirs=6, rtol=1e-4, seed=0):
    """Directional central differences of the energy vs -F.d along random unit directions.

    Tolerance: |FD - (-F.d)| <= rtol * max(1, |F|) (kJ/mol/nm); float64 model, h = 1e-5 nm.
    """
    rng = np.random.default_rng(seed)
    ctx.setPositions(xyz)
    _, forces = energy_and_forces(ctx, group_mask)
    scale = max(1.0, float(np.abs(forces).max()))
    for _ in range(n_dirs):
        d = rng.standard_normal(xyz.shape)
        d /= np.linalg.norm(d)
        ctx.setPositions(xyz + h * d)
        ep, _ = energy_and_forces(ctx, group_mask)
        ctx.setPositions(xyz - h * d)
        em, _ = energy_and_forces(ctx, group_mask)
        fd = (ep - em) / (2 * h)
        analytic = -float((forces * d).sum())
        assert abs(fd - analytic) <= rtol * scale, (fd, analytic)
    ctx.setPositions(xyz)


def bare_system(n):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(1.0)
    return system


# --------------------------------------------------------------------------------------------------- save/load


def test_save_load_identical_z_and_metadata(ala2, ala2_model):
    _, top, xyz = ala2
    mf = lb.load_model(ala2_model)
    frames = perturbed_frames(xyz, 3, seed=7)
    z1 = mf.encode(frames)
    z2 = lb.load_model(ala2_model).encode(frames)
    assert z1.shape == (3, 2)
    np.testing.assert_array_equal(z1, z2)
    md_ = mf.metadata
    assert md_["n_atoms"] == 22 and md_["latent_dim"] == 2 and md_["dtype"] == "float64"
    assert md_["atom_indices"] == [int(i) for i in lb.select_atoms(top, "element != H")]
    assert md_["feature_spec"]["type"] == "distances" and md_["units"]["positions"] == "nm"
    assert md_["latentbias_version"] == lb.__version__
    # single frame, float32 input and Quantity input give the same z
    np.testing.assert_allclose(mf.encode(frames[0]), z1[0], atol=1e-12)
    np.testing.assert_allclose(mf.encode(frames[0] * unit.nanometer), z1[0], atol=1e-12)


def test_exported_z_equals_in_memory_model(ala2, tmp_path):
    _, top, xyz = ala2
    feat = lb.AlignedCoordinates.from_selection(top, "element != H", xyz)
    model = random_latent_model(feat, 22, perturbed_frames(xyz, 20), latent_dim=3)
    frames = perturbed_frames(xyz, 4, seed=9)
    for dtype, tol in (("float64", 1e-10), ("float32", 1e-4)):
        path = lb.save_model(model, tmp_path / f"m_{dtype}.pt", dtype=dtype)
        np.testing.assert_allclose(lb.load_model(path).encode(frames), model.transform(frames), atol=tol)


def test_save_refuses_overwrite(ala2_model, ala2, tmp_path):
    _, top, xyz = ala2
    model = random_latent_model(lb.Distances.from_selection(top, "element C"), 22, perturbed_frames(xyz, 5))
    path = tmp_path / "m.pt"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="overwrite"):
        lb.save_model(model, path)
    assert path.read_bytes() == b"user data"
    lb.save_model(model, path, overwrite=True)
    assert lb.load_model(path).latent_dim == 2


def test_not_a_model_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        lb.load_model(junk)
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 1)), str(plain))
    with pytest.raises(ValueError, match="not a latentbias model"):
        lb.load_model(plain)
    with pytest.raises(FileNotFoundError):
        lb.load_model(tmp_path / "missing.pt")


class PythonOnlyLayer(torch.nn.Module):
    """A layer TorchScript cannot compile (calls numpy)."""

    def forward(self, x):
        return torch.as_tensor(np.tanh(x.detach().numpy()))


def test_uncompilable_custom_layer_gives_clear_error(ala2, tmp_path):
    _, top, xyz = ala2
    model = random_latent_model(lb.Distances.from_selection(top, "element C"), 22, perturbed_frames(xyz, 5))
    model.autoencoder.encoder = torch.nn.Sequential(model.autoencoder.encoder, PythonOnlyLayer())
    with pytest.raises(ExportError, match="TorchScript cannot compile"):
        lb.save_model(model, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_bad_positions(ala2_model, ala2):
    mf = lb.load_model(ala2_model)
    _, _, xyz = ala2
    with pytest.raises(ValueError, match="expects 22"):
        mf.encode(xyz[:10])
    bad = xyz.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        mf.encode(bad)
    with pytest.raises(ValueError, match="shape"):
        mf.encode(xyz.ravel())


# -------------------------------------------------------------------------------------------- OpenMM forces


@pytest.mark.parametrize("platform", PLATFORMS)
def test_component_force_energy_is_z_and_forces_match_fd(ala2, ala2_model, platform):
    system, _, xyz = ala2
    mf = lb.load_model(ala2_model)
    sys_ = bare_system(22)
    for i in range(mf.latent_dim):
        force = lb.latent_component_force(mf, system, i, force_group=i + 1)
        sys_.addForce(force)
    ctx, _ = make_context(sys_, xyz, platform)
    z = mf.encode(xyz)
    for i in range(mf.latent_dim):
        e, _ = energy_and_forces(ctx, 1 << (i + 1))
        assert e == pytest.approx(z[i], abs=1e-9)
        check_finite_differences(ctx, xyz, 1 << (i + 1))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_custom_cv_force_over_latent_components_matches_fd(ala2, ala2_model, platform):
    system, _, xyz = ala2
    mf = lb.load_model(ala2_model)
    cv = openmm.CustomCVForce("50*(z0-0.3)^2 + 20*z0*z1 + 10*sin(z1)")
    for i, f in enumerate(lb.latent_cv_forces(mf, system)):
        cv.addCollectiveVariable(f"z{i}", f)
    cv.setForceGroup(3)
    sys_ = openmm.System()
    sys_.__setstate__(system.__getstate__())  # a copy of the full ala2 system
    sys_.addForce(cv)
    ctx, _ = make_context(sys_, xyz, platform)
    z = mf.encode(xyz)
    e, _ = energy_and_forces(ctx, 1 << 3)
    assert e == pytest.approx(50 * (z[0] - 0.3) ** 2 + 20 * z[0] * z[1] + 10 * np.sin(z[1]), rel=1e-9)
    np.testing.assert_allclose(cv.getCollectiveVariableValues(ctx), z, atol=1e-9)
    check_finite_differences(ctx, xyz, 1 << 3)
    if platform == "Reference":  # the CPU platform's own nonbonded kernels are single precision
        check_finite_differences(ctx, xyz, -1, rtol=2e-4)  # the whole system, bias included


def test_float32_model_forces_match_fd_loosely(ala2, tmp_path):
    """float32 exports: same check with a tolerance set by single precision (h = 1e-3 nm, 2 % of max |F|)."""
    system, top, xyz = ala2
    model = random_latent_model(lb.Distances.from_selection(top, "element != H"), 22, perturbed_frames(xyz, 20))
    path = lb.save_model(model, tmp_path / "f32.pt", dtype="float32")
    sys_ = bare_system(22)
    sys_.addForce(lb.latent_component_force(path, system, 0))
    ctx, _ = make_context(sys_, xyz, "Reference")
    check_finite_differences(ctx, xyz, -1, h=1e-3, rtol=2e-2)


def test_xml_serializer_round_trip(ala2, ala2_model):
    system, _, xyz = ala2
    mf = lb.load_model(ala2_model)
    cv = openmm.CustomCVForce("z0 + 2*z1")
    for i, f in enumerate(lb.latent_cv_forces(mf, system)):
        cv.addCollectiveVariable(f"z{i}", f)
    sys_ = bare_system(22)
    sys_.addForce(cv)
    sys2 = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(sys_))
    results = []
    for s in (sys_, sys2):
        ctx, _ = make_context(s, xyz, "Reference")
        results.append(energy_and_forces(ctx))
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-10)


def test_bias_variable_accepts_latent_force(ala2, ala2_model):
    from openmm import app

    system, _, _ = ala2
    force = lb.latent_component_force(ala2_model, system, 0)
    bv = app.BiasVariable(force, -5.0, 5.0, 0.2)
    assert bv.force is force


def test_periodic_system_receives_box(tmp_path):
    """A periodic System hands the box to the model: a pair split across the boundary keeps its distance."""
    system = bare_system(2)
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(2, 0, 0), openmm.Vec3(0, 2, 0), openmm.Vec3(0, 0, 2))
    feat = lb.Distances([[0, 1]])
    model = random_latent_model(feat, 2, np.array([[[0.1, 0, 0], [0.4, 0, 0]], [[0.1, 0, 0], [0.6, 0, 0]]]), 1)
    path = lb.save_model(model, tmp_path / "pbc.pt", dtype="float64")
    force = lb.latent_component_force(path, system, 0, periodic=True)
    assert force.usesPeriodicBoundaryConditions()
    system.addForce(force)
    ctx, _ = make_context(system, np.array([[0.1, 0.0, 0.0], [0.4, 0.0, 0.0]]), "Reference")
    e1, _ = energy_and_forces(ctx)
    ctx.setPositions(np.array([[0.1, 0.0, 0.0], [-1.6, 0.0, 0.0]]))  # same pair, other image
    e2, _ = energy_and_forces(ctx)
    assert e1 == pytest.approx(e2, abs=1e-9)


def test_atom_count_mismatch_refused_before_context(ala2_model):
    with pytest.raises(ValueError, match="built for 22 atoms but the System has 5"):
        lb.latent_component_force(ala2_model, bare_system(5), 0)
    with pytest.raises(ValueError, match="component must be"):
        lb.latent_component_force(ala2_model, bare_system(22), 2)


def test_latent_reporter_writes_z_rows(ala2, ala2_model, tmp_path):
    from openmm import app

    from latentbias.reporters import LatentReporter
    from latentbias.testsystems import alanine_dipeptide_vacuum

    system, topology, positions = alanine_dipeptide_vacuum()
    sim = app.Simulation(topology, system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    reporter = LatentReporter(tmp_path / "z.csv", 20, ala2_model)
    sim.reporters.append(reporter)
    sim.step(100)
    reporter.close()
    rows = np.loadtxt(tmp_path / "z.csv", delimiter=",", skiprows=1)
    assert rows.shape == (5, 4) and rows[-1, 0] == 100
    assert rows[-1, 1] == pytest.approx(0.1)
    last = sim.context.getState(getPositions=True).getPositions(asNumpy=True)
    np.testing.assert_allclose(rows[-1, 2:], lb.load_model(ala2_model).encode(last), rtol=1e-6)
    with pytest.raises(FileExistsError, match="append=True"):
        LatentReporter(tmp_path / "z.csv", 20, ala2_model)
