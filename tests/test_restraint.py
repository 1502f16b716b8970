"""Latent restraints: energy, finite differences, moving windows with setParameter, walls, steering work."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import app, unit

import latentbias as lb
from latentbias.bias import BiasGrid, LatentRestraint, LatentVariable, steer

from test_export_forces import bare_system, check_finite_differences, energy_and_forces, make_context
from toy import DOUBLE_WELL_1D, identity_model, particle_simulation, particle_system


from latentbias import native

BACKENDS = ["torchforce"] + (["native"] if native.is_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_restraint_energy_and_finite_differences(ala2, ala2_model, platform, backend):
    system, _, xyz = ala2
    mf = lb.load_model(ala2_model)
    z = mf.encode(xyz)
    sys_ = bare_system(22)
    r = LatentRestraint(mf, sys_, centers=z + [0.3, -0.2], forceConstants=[50.0, 80.0], lowerWalls=[z[0] + 0.1, -9],
                        upperWalls=[9, z[1] - 0.05], wallForceConstant=[400.0, 300.0], forceGroup=5,
                        backend=backend)
    ctx, _ = make_context(sys_, xyz, platform)
    e, _ = energy_and_forces(ctx, 1 << 5)
    expected = 0.5 * 50 * 0.3**2 + 0.5 * 80 * 0.2**2 + 0.5 * 400 * 0.1**2 + 0.5 * 300 * 0.05**2
    assert e == pytest.approx(expected, rel=1e-9)
    assert r.energy(z) == pytest.approx(expected, rel=1e-12)
    check_finite_differences(ctx, xyz, 1 << 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_parameter_moves_the_window_without_reinitialising(ala2, ala2_model, backend):
    system, _, xyz = ala2
    mf = lb.load_model(ala2_model)
    z = mf.encode(xyz)
    sys_ = bare_system(22)
    r = LatentRestraint(mf, sys_, centers=z, forceConstants=100.0, backend=backend)
    assert r.backend == backend
    ctx, _ = make_context(sys_, xyz, "Reference")
    assert energy_and_forces(ctx)[0] == pytest.approx(0.0, abs=1e-12)
    for shift in ([0.2, 0.0], [-0.1, 0.4]):
        r.setCenters(ctx, z + shift)
        e, f = energy_and_forces(ctx)
        assert e == pytest.approx(0.5 * 100 * np.sum(np.square(shift)), rel=1e-9)
        assert np.abs(f).max() > 0
    r.setForceConstants(ctx, [10.0, 0.0])
    assert energy_and_forces(ctx)[0] == pytest.approx(0.5 * 10 * 0.1**2, rel=1e-9)
    assert ctx.getParameter(r.centerName(1)) == pytest.approx(z[1] + 0.4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_restraint_serializes_with_its_parameters(ala2, ala2_model, backend):
    _, _, xyz = ala2
    sys_ = bare_system(22)
    LatentRestraint(ala2_model, sys_, centers=[0.1, 0.2], forceConstants=[30.0, 40.0], backend=backend)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(sys_))
    e1 = energy_and_forces(make_context(sys_, xyz, "Reference")[0])[0]
    e2 = energy_and_forces(make_context(copy, xyz, "Reference")[0])[0]
    assert e1 == pytest.approx(e2, abs=1e-12) and e1 > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_periodic_latent_dimension_wraps(tmp_path, backend):
    """For an angle-like latent coordinate the deviation is taken modulo the period."""
    import torch

    from latentbias.export import save_cv_module
    from toy import ParticleCoordinates

    path = save_cv_module(ParticleCoordinates(1), tmp_path / "angle.pt", n_atoms=1, latent_dim=1,
                          periodic=[[-np.pi, np.pi]])
    sys_ = bare_system(1)
    r = LatentRestraint(path, sys_, centers=[3.0], forceConstants=[10.0], backend=backend)
    ctx, _ = make_context(sys_, np.array([[-3.0, 0, 0]]), "Reference")
    dev = 2 * np.pi - 6.0
    assert energy_and_forces(ctx)[0] == pytest.approx(0.5 * 10 * dev**2, rel=1e-9)
    assert r.energy([[-3.0]])[0] == pytest.approx(0.5 * 10 * dev**2, rel=1e-9)


def test_bad_restraint_input(ala2_model):
    sys_ = bare_system(22)
    with pytest.raises(ValueError, match="one per restrained dimension"):
        LatentRestraint(ala2_model, sys_, centers=[0.0, 1.0, 2.0], forceConstants=1.0)
    with pytest.raises(ValueError, match="dims"):
        LatentRestraint(ala2_model, sys_, centers=[0.0], forceConstants=1.0, dims=[5])
    with pytest.raises(ValueError, match=">= 0"):
        LatentRestraint(ala2_model, sys_, centers=[0.0, 0.0], forceConstants=-1.0)
    with pytest.raises(ValueError, match="built for 22 atoms"):
        LatentRestraint(ala2_model, bare_system(3), centers=[0.0, 0.0], forceConstants=1.0)


def test_steering_work_matches_the_protocol(tmp_path):
    """Pull a particle in a harmonic trap; with a stiff restraint and slow pulling, W ≈ ΔF = ½K d² (trap)."""
    model = identity_model(tmp_path / "x.pt", 1, 1)
    system = particle_system("0.5*200*(x^2+y^2+z^2)")
    r = LatentRestraint(model, system, centers=[0.0], forceConstants=[2000.0])
    sim = particle_simulation(system, [0.0], seed=3)
    sim.step(200)
    res = steer(sim, r, target=[0.3], steps=20000, update_interval=10)
    assert res.centers[-1, 0] == pytest.approx(0.3)
    assert len(res.work_kjmol) == 2001 and np.all(np.diff(res.step) == 10)
    # free energy of moving a stiff trap by 0.3 nm in the 200 kJ/mol/nm^2 well: ½·(K·k/(K+k))·d²
    k_eff = 200 * 2000 / 2200
    assert res.work_kjmol[-1] == pytest.approx(0.5 * k_eff * 0.3**2, abs=1.5)
    assert abs(res.z[-1, 0] - 0.3 * 2000 / 2200) < 0.05
    res.to_csv(tmp_path / "steer.csv")
    table = np.loadtxt(tmp_path / "steer.csv", delimiter=",", skiprows=2)
    assert table.shape == (2001, 5)
    with pytest.raises(FileExistsError):
        res.to_csv(tmp_path / "steer.csv")


def test_snake_case_method_names_still_work_but_warn(ala2_model, ala2):
    """OpenMM-facing classes use camelCase (setCenters, setForceConstants, centerName, forceConstantName); the
    earlier snake_case names keep working with a DeprecationWarning."""
    import openmm

    system, _, xyz = ala2
    sys_ = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    r = LatentRestraint(ala2_model, sys_, centers=[0.0, 0.0], forceConstants=1.0)
    ctx = openmm.Context(sys_, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    with pytest.warns(DeprecationWarning, match=r"LatentRestraint\.set_centers is deprecated; use "
                                                r"LatentRestraint\.setCenters"):
        r.set_centers(ctx, [0.25, -0.5])
    assert ctx.getParameter(r.centerName(1)) == -0.5
    with pytest.warns(DeprecationWarning, match="force_constant_name"):
        name = r.force_constant_name(0)
    with pytest.warns(DeprecationWarning, match="set_force_constants"):
        r.set_force_constants(ctx, [3.0, 4.0])
    assert name == r.forceConstantName(0) and ctx.getParameter(name) == 3.0
    with pytest.warns(DeprecationWarning, match="center_name"):
        assert r.center_name(0) == r.centerName(0)


def test_snake_case_keywords_still_work_but_warn(ala2_model, ala2):
    """Constructor keywords of the OpenMM-facing classes are camelCase (issue 9 item 7); the snake_case keywords and
    attributes of earlier releases build the same force and warn, and passing both names is an error."""
    import inspect

    import openmm

    from latentbias.bias import CustomCVBackend, LatentUmbrellaSampling
    from latentbias.bias.fused import FusedBackend

    system, _, xyz = ala2

    def fresh():
        return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))

    new = LatentRestraint(ala2_model, fresh(), centers=[0.1, 0.2], forceConstants=[30.0, 40.0], lowerWalls=[-2, -3],
                          upperWalls=[2, 3], wallForceConstant=50.0, forceGroup=7, addToSystem=False)
    with pytest.warns(DeprecationWarning, match=r"LatentRestraint\(force_constants=\.\.\., lower_walls=\.\.\., "
                                                r".*\) is deprecated; use LatentRestraint\(forceConstants=\.\.\., "
                                                r"lowerWalls=\.\.\., "):
        old = LatentRestraint(ala2_model, fresh(), centers=[0.1, 0.2], force_constants=[30.0, 40.0],
                              lower_walls=[-2, -3], upper_walls=[2, 3], wall_force_constant=50.0, force_group=7,
                              add_to_system=False)
    assert old.parameters() == new.parameters() and old.force.getForceGroup() == 7
    with pytest.warns(DeprecationWarning, match=r"LatentRestraint\.force_constants is deprecated"):
        assert old.force_constants.tolist() == [30.0, 40.0]
    with pytest.warns(DeprecationWarning, match="energy"):
        assert new.energy(np.zeros(2), force_constants=[1.0, 1.0]) == pytest.approx(0.5 * (0.1**2 + 0.2**2))
    with pytest.raises(TypeError, match="both force_constants= and forceConstants="):
        LatentRestraint(ala2_model, fresh(), [0.0, 0.0], forceConstants=1.0, force_constants=1.0)
    # the signature users see (help(), IDEs) is the camelCase one
    assert "forceConstants" in inspect.signature(LatentRestraint).parameters
    assert "force_constants" not in inspect.signature(LatentRestraint).parameters

    grid = BiasGrid([LatentVariable(0, -3.0, 3.0, 0.2, gridWidth=31)])
    backends = [CustomCVBackend] + ([FusedBackend] if native.is_available() else [])
    for cls in backends:
        with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}\(wall_force_constant=\.\.\., "
                                                     r"force_group=\.\.\.\)"):
            b = cls(lb.load_model(ala2_model), fresh(), grid, wall_force_constant=123.0, force_group=9)
        assert (b.force_group, b.wall_force_constant) == (9, 123.0)

    sys_ = fresh()
    r = LatentRestraint(ala2_model, sys_, centers=[0.0, 0.0], forceConstants=0.0)
    sim = openmm.app.Simulation(ala2[1].to_openmm(), sys_, openmm.VerletIntegrator(0.0005),
                                openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(xyz * unit.nanometer)
    with pytest.warns(DeprecationWarning, match=r"LatentUmbrellaSampling\(force_constants=\.\.\.\)"):
        us = LatentUmbrellaSampling(sim, r, [[0.0, 0.0], [0.1, 0.0]], force_constants=10.0, temperature=300.0)
    with pytest.warns(DeprecationWarning, match=r"LatentUmbrellaSampling\.run\(steps_per_window="
                                                r"\.\.\., sample_interval"):
        result = us.run(steps_per_window=4, sample_interval=2, progress=False)
    assert [len(z) for z in result.z] == [2, 2]
