"""latentbias.bias.stiffness: the largest harmonic frequency of a force group against analytic values, and the
time-step warning (benchmarks/RESULTS.md, "time step under a stiff latent bias")."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
from openmm import unit  # noqa: E402

from latentbias.bias.stiffness import (  # noqa: E402
    DEFAULT_OMEGA_DT_LIMIT, bias_force_groups, check_timestep, group_force_magnitudes, max_frequency)


def _system(k_bond: float, k_x: float, k_y: float, masses=(12.0, 16.0, 40.0)):
    """Atoms 0-1: a harmonic bond (group 0, E = k_bond/2 (r - 0.12)^2); atom 2: an anisotropic well
    E = k_x x^2 + k_y y^2 (group 5, the 'bias')."""
    system = openmm.System()
    for m in masses:
        system.addParticle(m)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.12, k_bond)
    system.addForce(bond)
    well = openmm.CustomExternalForce("kx*x^2 + ky*y^2")
    well.addGlobalParameter("kx", k_x)
    well.addGlobalParameter("ky", k_y)
    well.addParticle(2, [])
    well.setForceGroup(5)
    system.addForce(well)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    pos = np.array([[0.0, 0.0, 0.0], [0.13, 0.0, 0.0], [0.02, -0.01, 0.3]])
    ctx.setPositions(pos)
    return system, ctx, pos


def test_max_frequency_matches_analytic_modes():
    # bond: omega = sqrt(k/mu); well on atom 2: omega = sqrt(2 k_max / m)
    k_bond, kx, ky = 3.0e5, 2.0e4, 5.0e4
    system, ctx, pos = _system(k_bond, kx, ky)
    mu = 12.0 * 16.0 / 28.0
    assert max_frequency(ctx, pos, {0}, iterations=60) == pytest.approx(math.sqrt(k_bond / mu), rel=1e-3)
    assert max_frequency(ctx, pos, {5}, iterations=60) == pytest.approx(math.sqrt(2 * ky / 40.0), rel=1e-3)
    # negative curvature counts: an inverted well as sharp as the y direction
    ctx.setParameter("ky", -8.0e4)
    assert max_frequency(ctx, pos, {5}, iterations=60) == pytest.approx(math.sqrt(2 * 8.0e4 / 40.0), rel=1e-3)


def test_group_force_magnitudes_and_bias_groups():
    system, ctx, pos = _system(3.0e5, 2.0e4, 5.0e4)
    f = group_force_magnitudes(ctx, pos[None], {5})
    assert f == pytest.approx([math.hypot(2 * 2.0e4 * 0.02, 2 * 5.0e4 * 0.01)])
    assert bias_force_groups(system, 1) == {5}
    assert bias_force_groups(system, 2) == set()


def test_check_timestep_warns_names_the_fix_and_restores_the_context(caplog):
    # well omega = sqrt(2*5e4/40) = 50 /ps -> omega*dt = 0.1 at 2 fs: quiet; k 100x -> 500 /ps, 1.0 at 2 fs: warns
    assert DEFAULT_OMEGA_DT_LIMIT == 0.3
    system, ctx, pos = _system(3.0e5, 2.0e4, 5.0e4)
    ctx.setVelocities(np.full((3, 3), 0.1))
    frames = np.stack([pos, pos + 0.01])
    with caplog.at_level(logging.WARNING, logger="latentbias.bias.stiffness"):
        quiet = check_timestep(ctx, frames, {5}, 2.0)
    assert quiet["warned"] == 0.0 and quiet["omega"] == pytest.approx(50.0, rel=1e-3)
    assert not caplog.records
    ctx.setParameter("ky", 5.0e6)
    with caplog.at_level(logging.WARNING, logger="latentbias.bias.stiffness"):
        loud = check_timestep(ctx, frames, {5}, 2.0, where="round 3")
    assert loud["warned"] == 1.0
    assert loud["omega_dt"] == pytest.approx(1.0, rel=1e-3)
    assert loud["suggested_timestep_fs"] == pytest.approx(1000 * DEFAULT_OMEGA_DT_LIMIT / 500.0, rel=1e-3)
    text = caplog.records[-1].getMessage()
    assert "round 3" in text and "[md] timestep <= 0.6 fs" in text
    # the same bias at the suggested step is quiet
    assert check_timestep(ctx, frames, {5}, 0.5)["warned"] == 0.0
    # the Context got its own positions and velocities back
    st = ctx.getState(getPositions=True, getVelocities=True)
    assert np.allclose(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer), pos)
    assert np.allclose(st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond), 0.1)


def test_check_timestep_rejects_bad_input():
    system, ctx, pos = _system(3.0e5, 2.0e4, 5.0e4)
    with pytest.raises(ValueError, match="timestep_fs"):
        check_timestep(ctx, pos[None], {5}, 0.0)
    with pytest.raises(ValueError, match="frames"):
        check_timestep(ctx, pos, {5}, 2.0)
    with pytest.raises(ValueError, match="positions"):
        max_frequency(ctx, pos[:2], {5})
    assert check_timestep(ctx, pos[None], set(), 2.0)["warned"] == 0.0


def test_campaign_hook_warns_once_and_never_raises(caplog):
    from openmm import app

    from latentbias.campaign.simulate import _stiffness_warning

    system, ctx, pos = _system(3.0e5, 2.0e4, 5.0e6)  # bias omega 500 /ps: omega*dt = 1.0 at 2 fs
    top = app.Topology()
    chain = top.addChain()
    for name in ("C", "O", "Ar"):
        top.addAtom(name, app.Element.getBySymbol(name), top.addResidue("X", chain))
    sim = app.Simulation(top, system, openmm.VerletIntegrator(0.002), openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(pos)
    with caplog.at_level(logging.WARNING, logger="latentbias.bias.stiffness"):
        assert _stiffness_warning(sim, pos[None], {5}, 2.0, 4, 7) is True
    assert "round 4 segment 7" in caplog.records[-1].getMessage()
    assert _stiffness_warning(sim, pos[None], {5}, 0.5, 4, 8) is False
    # a diagnostic must not end a campaign: bad frames are logged, not raised
    assert _stiffness_warning(sim, pos[None, :2], {5}, 2.0, 4, 9) is False
