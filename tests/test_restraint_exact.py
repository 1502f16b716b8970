"""Latent restraints against closed forms on particle 'encoders' (z = coordinates, z = a distance).

Energies and forces of both backends and of ``LatentRestraint.energy`` for harmonic terms, flat-bottom walls on
either side and a periodic dimension, all in one configuration whose answer is written out by hand; steering of a
restraint on fixed (massless) particles, where the work telescopes exactly to V(x; end) − V(x; start); the
defaults and input contract of the constructor. Fast (one-particle systems, no MD); they run first in the
mutation session of ``bias/restraint.py`` (TESTING.md, "Mutation testing").
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit
from torch import Tensor

import latentbias as lb
from latentbias import native
from latentbias.bias import LatentRestraint, steer
from latentbias.bias.restraint import MAX_RESTRAINED_DIMS, fused_restraint_force, restraint_energy
from latentbias.export import save_cv_module

from test_export_forces import bare_system, energy_and_forces, make_context

BACKENDS = ["torchforce"] + (["native"] if native.is_available() else [])
PERIOD = 2 * np.pi


class FirstParticle(torch.nn.Module):
    """z = the coordinates of particle 0 (nm); d = 3, or the first 3 * n_particles coordinates when ``all``."""

    def __init__(self, n: int = 3):
        super().__init__()
        self.n = n

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return positions.reshape(-1)[: self.n].to(torch.float64)


@pytest.fixture(scope="module")
def xyz_model(tmp_path_factory):
    """z = (x, y, z) of particle 0, the third dimension periodic with period 2 pi."""
    return save_cv_module(FirstParticle(3), tmp_path_factory.mktemp("m") / "xyz.pt", n_atoms=1, latent_dim=3,
                          periodic=[None, None, [-np.pi, np.pi]])


# position, centres, constants, walls, and the energy and forces worked out by hand
X = np.array([0.3, -0.05, -3.0])
CENTERS = [0.2, -0.1, 3.0]
K = [50.0, 80.0, 10.0]
LOWER, UPPER, WALL_K = [0.5, -np.inf, -np.inf], [np.inf, -0.3, np.inf], [400.0, 300.0, 0.0]
DEV2 = -6.0 + PERIOD  # -3 - 3 wrapped into half a period
E_EXACT = 0.5 * 50 * 0.1**2 + 0.5 * 80 * 0.05**2 + 0.5 * 10 * DEV2**2 + 0.5 * 400 * 0.2**2 + 0.5 * 300 * 0.25**2
F_EXACT = np.array([-50 * 0.1 + 400 * 0.2, -80 * 0.05 - 300 * 0.25, -10 * DEV2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_restraint_energy_and_forces_equal_the_closed_form(xyz_model, backend):
    sys_ = bare_system(1)
    r = LatentRestraint(xyz_model, sys_, centers=CENTERS, forceConstants=K, lowerWalls=LOWER, upperWalls=UPPER,
                        wallForceConstant=WALL_K, backend=backend)
    np.testing.assert_allclose(r.period, [0.0, 0.0, PERIOD], rtol=1e-15)
    ctx, _ = make_context(sys_, X[None], "Reference")
    e, f = energy_and_forces(ctx)
    assert e == pytest.approx(E_EXACT, rel=1e-10)
    np.testing.assert_allclose(f[0], F_EXACT, rtol=1e-9)
    assert r.energy(X) == pytest.approx(E_EXACT, rel=1e-13)
    assert isinstance(r.energy(X), float)
    two = r.energy(np.stack([X, X + [0.0, 0.0, PERIOD]]))  # a period further along z: the same energy
    assert two.shape == (2,)
    np.testing.assert_allclose(two, E_EXACT, rtol=1e-12)
    # another window without touching the restraint
    assert r.energy(X, centers=[0.3, -0.05, -3.0], forceConstants=[1.0, 1.0, 1.0]) == pytest.approx(
        0.5 * 400 * 0.2**2 + 0.5 * 300 * 0.25**2, rel=1e-13)
    # move the window in the live Context: at the particle's own position only the walls remain
    r.setCenters(ctx, X)
    np.testing.assert_allclose(r.centers, X)
    e, f = energy_and_forces(ctx)
    assert e == pytest.approx(0.5 * 400 * 0.2**2 + 0.5 * 300 * 0.25**2, rel=1e-10)
    np.testing.assert_allclose(f[0], [400 * 0.2, -300 * 0.25, 0.0], rtol=1e-9, atol=1e-12)
    r.setCenters(ctx, CENTERS)
    r.setForceConstants(ctx, [0.0, 2.0, 0.0])
    np.testing.assert_allclose(r.forceConstants, [0.0, 2.0, 0.0])
    assert ctx.getParameter(r.forceConstantName(1)) == 2.0 and ctx.getParameter(r.centerName(2)) == 3.0
    e, _ = energy_and_forces(ctx)
    assert e == pytest.approx(0.5 * 2 * 0.05**2 + 0.5 * 400 * 0.2**2 + 0.5 * 300 * 0.25**2, rel=1e-10)
    assert r.energy(X) == pytest.approx(e, rel=1e-10)
    with pytest.raises(ValueError, match=">= 0"):
        r.setForceConstants(ctx, [1.0, -1.0, 0.0])
    with pytest.raises(ValueError, match="forceConstants must be finite"):
        r.setForceConstants(ctx, [1.0, np.inf, 0.0])
    with pytest.raises(ValueError, match="centers must be finite"):
        r.setCenters(ctx, [0.0, -np.inf, 0.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_subset_of_dimensions_in_any_order_and_two_prefixes(xyz_model, backend):
    sys_ = bare_system(1)
    # z_0 is 0.8 from its centre: a non-periodic deviation beside a periodic one is never wrapped
    r1 = LatentRestraint(xyz_model, sys_, centers=[3.0, -0.5], forceConstants=[10.0, 50.0], dims=[2, 0],
                         backend=backend)
    r2 = LatentRestraint(xyz_model, sys_, centers=0.0, forceConstants=7.0, dims=[1], prefix="b_", forceGroup=4,
                         backend=backend)
    assert r1.centerName(0) == "latent_z0_0" and r1.forceConstantName(1) == "latent_k_1"
    assert r2.centerName(0) == "b_z0_0" and r2.ndim == 1
    e1 = 0.5 * 10 * DEV2**2 + 0.5 * 50 * 0.8**2
    e2 = 0.5 * 7 * 0.05**2
    assert r1.energy(X) == pytest.approx(e1, rel=1e-13) and r2.energy(X) == pytest.approx(e2, rel=1e-13)
    ctx, _ = make_context(sys_, X[None], "Reference")
    assert energy_and_forces(ctx, 1 << 30)[0] == pytest.approx(e1, rel=1e-10)  # default force group 30
    assert energy_and_forces(ctx, 1 << 4)[0] == pytest.approx(e2, rel=1e-10)
    assert r1.parameters() == {"dims": [2, 0], "centers": [3.0, -0.5], "force_constants": [10.0, 50.0],
                               "lower_walls": [-np.inf, -np.inf], "upper_walls": [np.inf, np.inf],
                               "wall_force_constant": [1000.0, 1000.0], "period": [PERIOD, 0.0]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_walls_default_to_1000_and_act_only_when_finite_with_a_positive_constant(xyz_model, backend):
    x = np.array([0.3, 0.2, 0.1])
    sys_ = bare_system(1)
    LatentRestraint(xyz_model, sys_, centers=x, forceConstants=0.0, lowerWalls=[0.5, -np.inf, -np.inf],
                    backend=backend)  # only a lower wall on z_0, default constant
    LatentRestraint(xyz_model, sys_, centers=x, forceConstants=0.0, upperWalls=[np.inf, 0.1, np.inf],
                    wallForceConstant=0.0, prefix="off_", backend=backend)  # a wall without force constant
    n_forces = sys_.getNumForces()
    LatentRestraint(xyz_model, sys_, centers=x, forceConstants=1.0, prefix="no_", addToSystem=False,
                    backend=backend)
    assert sys_.getNumForces() == n_forces == 2
    ctx, _ = make_context(sys_, x[None], "Reference")
    e, f = energy_and_forces(ctx)
    assert e == pytest.approx(0.5 * 1000 * 0.2**2, rel=1e-10)
    np.testing.assert_allclose(f[0], [1000 * 0.2, 0.0, 0.0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_period_shorter_than_one_is_wrapped_too(tmp_path, backend):
    """Periodic latent dimensions of any period (here 0.6 in units of z) wrap the deviation into half a period."""
    model = save_cv_module(FirstParticle(1), tmp_path / "p.pt", n_atoms=1, latent_dim=1, periodic=[[0.0, 0.6]])
    sys_ = bare_system(1)
    r = LatentRestraint(model, sys_, centers=[0.05], forceConstants=[200.0], backend=backend)
    ctx, _ = make_context(sys_, np.array([[0.55, 0.0, 0.0]]), "Reference")
    e, f = energy_and_forces(ctx)  # 0.55 - 0.05 = 0.5 is -0.1 modulo 0.6
    assert e == pytest.approx(0.5 * 200 * 0.1**2, rel=1e-9)
    assert f[0, 0] == pytest.approx(200 * 0.1, rel=1e-9)
    assert r.energy([0.55]) == pytest.approx(e, rel=1e-9)


def test_numpy_restraint_energy_is_the_closed_form():
    z = np.stack([X, X + [0.0, 0.0, 2 * PERIOD], [0.6, -0.2, 3.0]])
    e = restraint_energy(z.copy(), np.array(CENTERS), np.array(K), np.array(LOWER), np.array(UPPER),
                         np.array(WALL_K), np.array([0.0, 0.0, PERIOD]))
    e3 = 0.5 * 50 * 0.4**2 + 0.5 * 80 * 0.1**2 + 0.5 * 300 * 0.1**2  # z_1 = -0.2 is 0.1 above its wall
    np.testing.assert_allclose(e, [E_EXACT, E_EXACT, e3], rtol=1e-12)
    # without periodicity the same deviation of -6 counts in full
    e_np = restraint_energy(X[None].copy(), np.array(CENTERS), np.array(K), np.array(LOWER), np.array(UPPER),
                            np.array(WALL_K), np.zeros(3))
    assert e_np[0] == pytest.approx(E_EXACT - 0.5 * 10 * DEV2**2 + 0.5 * 10 * 36.0, rel=1e-13)


def test_force_group_defaults_and_the_fused_restraint_force(xyz_model):
    sys_ = bare_system(1)
    assert LatentRestraint(xyz_model, sys_, centers=CENTERS, forceConstants=K, backend="torchforce",
                           addToSystem=False).force.getForceGroup() == 30
    if not native.is_available():
        pytest.skip("native plugin not built")
    force = fused_restraint_force(xyz_model, sys_, centers=CENTERS, forceConstants=K, lowerWalls=LOWER,
                                  upperWalls=UPPER, wallForceConstant=WALL_K)
    assert force.getForceGroup() == 30 and sys_.getNumForces() == 1
    ctx, _ = make_context(sys_, X[None], "Reference")
    assert energy_and_forces(ctx)[0] == pytest.approx(E_EXACT, rel=1e-10)
    assert fused_restraint_force(xyz_model, sys_, CENTERS, K, addToSystem=False).getForceGroup() == 30
    assert sys_.getNumForces() == 1
    walled = bare_system(1)  # a lower wall on z_0 with the default constant, 1000
    fused_restraint_force(xyz_model, walled, centers=X, forceConstants=0.0, lowerWalls=[0.5, -np.inf, -np.inf])
    ctx, _ = make_context(walled, X[None], "Reference")
    assert energy_and_forces(ctx)[0] == pytest.approx(0.5 * 1000 * 0.2**2, rel=1e-10)


def test_without_the_native_plugin_the_torchforce_backend_is_used(xyz_model, monkeypatch):
    monkeypatch.setattr(native, "is_available", lambda: False)
    monkeypatch.setattr(native, "unavailable_reason", lambda: "not built in this test")
    r = LatentRestraint(xyz_model, bare_system(1), centers=CENTERS, forceConstants=K)
    assert r.backend == "torchforce"
    r = LatentRestraint(xyz_model, bare_system(1), centers=CENTERS, forceConstants=K, backend="torchforce")
    assert r.backend == "torchforce"
    with pytest.raises(ValueError, match="not built in this test"):
        LatentRestraint(xyz_model, bare_system(1), centers=CENTERS, forceConstants=K, backend="native")


def test_restraint_input_contract(xyz_model, tmp_path):
    sys_ = bare_system(1)

    def make(**kw):
        args = dict(centers=CENTERS, forceConstants=K, addToSystem=False, backend="torchforce")
        args.update(kw)
        return LatentRestraint(xyz_model, sys_, **args)

    r = make(centers=0.5, forceConstants=2.0)  # scalars apply to every dimension
    np.testing.assert_array_equal(r.centers, [0.5] * 3)
    np.testing.assert_array_equal(r.forceConstants, [2.0] * 3)
    np.testing.assert_array_equal(r.wallForceConstant, [1000.0] * 3)
    np.testing.assert_array_equal(r.lowerWalls, [-np.inf] * 3)
    np.testing.assert_array_equal(r.upperWalls, [np.inf] * 3)
    with pytest.raises(ValueError, match="backend"):
        make(backend="cuda")
    for dims in ([], [0, 0], [3], [-1]):
        with pytest.raises(ValueError, match="dims"):
            make(centers=0.0, forceConstants=1.0, dims=dims)
    assert make(centers=0.0, forceConstants=1.0, dims=[2]).dims == [2]
    with pytest.raises(ValueError, match="one per restrained dimension"):
        make(centers=[0.0, 1.0])
    with pytest.raises(ValueError, match="centers contains NaN"):
        make(centers=[0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="centers must be finite"):
        make(centers=[0.0, np.inf, 1.0])
    with pytest.raises(ValueError, match="forceConstants must be finite"):
        make(forceConstants=np.inf)
    with pytest.raises(ValueError, match="lowerWalls contains NaN"):
        make(lowerWalls=np.nan)
    with pytest.raises(ValueError, match="lower wall must lie below"):
        make(lowerWalls=[0.0, 0.0, 0.0], upperWalls=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="wallForceConstant is required"):
        make(wallForceConstant=None)
    big = save_cv_module(FirstParticle(9), tmp_path / "nine.pt", n_atoms=3, latent_dim=9)
    assert MAX_RESTRAINED_DIMS == 8
    with pytest.raises(ValueError, match="at most 8"):
        LatentRestraint(big, bare_system(3), centers=0.0, forceConstants=1.0, addToSystem=False)
    assert LatentRestraint(big, bare_system(3), centers=0.0, forceConstants=1.0, dims=range(8),
                           addToSystem=False, backend="torchforce").ndim == 8


# ------------------------------------------------------------------------------------------------- steering


def fixed_particles_simulation(system, positions):
    """A Simulation whose particles have mass 0: OpenMM never moves them, so z stays fixed while centres move."""
    top = app.Topology()
    chain = top.addChain()
    for _ in range(system.getNumParticles()):
        top.addAtom("P", app.element.argon, top.addResidue("P", chain))
    sim = app.Simulation(top, system, openmm.VerletIntegrator(0.002 * unit.picoseconds),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    return sim


@pytest.mark.parametrize("backend", BACKENDS)
def test_steering_work_on_fixed_particles_telescopes_to_the_energy_change(tmp_path, backend):
    """z = |x1 - x0| = 1.5 nm (no box: a non-periodic System's default 2 nm box must not be applied)."""
    model = save_cv_module(lb.Distances([[0, 1]]), tmp_path / "d.pt", n_atoms=2, latent_dim=1)
    system = openmm.System()
    system.addParticle(0.0)
    system.addParticle(0.0)
    r = LatentRestraint(model, system, centers=[1.0], forceConstants=[100.0], forceGroup=3, backend=backend)
    sim = fixed_particles_simulation(system, np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]))
    res = steer(sim, r, target=[1.4], steps=25, update_interval=10)
    # two updates: 12 then 13 steps, centres 1.0 -> 1.2 -> 1.4
    np.testing.assert_array_equal(res.step, [0, 12, 25])
    np.testing.assert_allclose(res.time_ps, [0.0, 0.024, 0.05], rtol=1e-12)
    np.testing.assert_allclose(res.centers[:, 0], [1.0, 1.2, 1.4], rtol=1e-15)
    np.testing.assert_allclose(res.z[:, 0], 1.5, rtol=1e-12)
    v = lambda c: 0.5 * 100.0 * (1.5 - c) ** 2  # noqa: E731
    np.testing.assert_allclose(res.work_kjmol, [0.0, v(1.2) - v(1.0), v(1.4) - v(1.0)], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.centers, [1.4])
    # update interval longer than the run: one update at the end
    res = steer(sim, r, target=[1.5], steps=5, update_interval=10)
    np.testing.assert_array_equal(res.step, [25, 30])
    np.testing.assert_allclose(res.work_kjmol, [0.0, -v(1.4)], rtol=1e-9)
    # the default update interval is 10 steps: 18 steps are one update; an interval of 1 is allowed
    res = steer(sim, r, target=[1.3], steps=18)
    np.testing.assert_array_equal(res.step, [30, 48])
    res = steer(sim, r, target=[1.5], steps=2, update_interval=1)
    np.testing.assert_array_equal(res.step, [48, 49, 50])
    np.testing.assert_allclose(res.centers[:, 0], [1.3, 1.4, 1.5], rtol=1e-14)
    np.testing.assert_allclose(res.work_kjmol, [0.0, v(1.4) - v(1.3), -v(1.3)], rtol=1e-9, atol=1e-12)
    res.to_csv(tmp_path / "steer.csv")
    table = np.loadtxt(tmp_path / "steer.csv", delimiter=",", skiprows=2)
    np.testing.assert_allclose(table, np.column_stack([res.step, res.time_ps, res.centers, res.z, res.work_kjmol]))
    with open(tmp_path / "steer.csv") as fh:
        assert "step,time_ps,z0_0,z0,work_kjmol" in fh.read()
    for steps, interval in ((0, 10), (10, 0), (-5, 1)):
        with pytest.raises(ValueError, match="positive"):
            steer(sim, r, target=[1.0], steps=steps, update_interval=interval)
    with pytest.raises(ValueError, match="target"):
        steer(sim, r, target=[1.0, 2.0], steps=10)
    with pytest.raises(ValueError, match="target must be finite"):
        steer(sim, r, target=[np.inf], steps=10)
