"""Non-finite latent values or forces raise naming the atoms or the component on every route (issue 9 item 1).

The native LatentBiasForce names atoms itself (tests/test_force_safety.py). Here: the openmm-torch routes (the
TorchForce of a LatentRestraint, the per-component TorchForces of the CustomCVForce backend) and the campaign's
segment runner. Two models: ``SqrtOfAtom2`` is NaN (value and gradient) when atom 2 sits at x < 0; ``Distance`` is
finite but its gradient is 0/0 on atoms 0 and 1 when they coincide (NaN forces with a finite energy), which raises in
the same evaluation on every route.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit
from torch import Tensor

import latentbias as lb
from latentbias.bias import LatentRestraint
from latentbias.bias.backends import CustomCVBackend
from latentbias.bias.grid import BiasGrid, LatentVariable
from latentbias.export import save_cv_module
from latentbias.nonfinite import NonFiniteBiasError, describe_nonfinite


class SqrtOfAtom2(torch.nn.Module):
    """z0 = |x0 - x3| + sqrt(x2): NaN (value and gradient, on atom 2 only) when atom 2 is at x < 0."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        p = positions.to(torch.float64)
        return (torch.sqrt(((p[0] - p[3]) ** 2).sum()) + torch.sqrt(p[2, 0])).reshape(1)


class Distance(torch.nn.Module):
    """z0 = |x0 - x1|: the gradient is 0/0 (NaN) on atoms 0 and 1 when they coincide; z stays finite."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        p = positions.to(torch.float64)
        return torch.sqrt(((p[0] - p[1]) ** 2).sum()).reshape(1)


def _positions():
    return np.array([[0.0, 0.0, 0.0], [0.5, 0.1, 0.0], [1.0, 1.0, 1.0], [1.5, 0.2, 0.3]])


def _system():
    system = openmm.System()
    for _ in range(4):
        system.addParticle(12.0)
    return system


def _context(system, positions):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    return ctx


def _restraint(model, system):
    LatentRestraint(model, system, centers=[0.5], forceConstants=100.0, backend="torchforce")


def _customcv(model, system):
    grid = BiasGrid([LatentVariable(0, 0.0, 3.0, 0.1, gridWidth=31)])
    CustomCVBackend(model, system, grid)


def _component_force(model, system):
    system.addForce(lb.latent_component_force(model, system, 0))  # the public TorchForce of one component


ROUTES = {"torchforce-restraint": _restraint, "customcv-metadynamics": _customcv, "component-force": _component_force}


@pytest.fixture
def sqrt_model(tmp_path):
    return lb.load_model(save_cv_module(SqrtOfAtom2(), tmp_path / "sqrt.pt", n_atoms=4, latent_dim=1))


@pytest.fixture
def distance_model(tmp_path):
    return lb.load_model(save_cv_module(Distance(), tmp_path / "d.pt", n_atoms=4, latent_dim=1))


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_nan_latent_value_names_the_component_and_the_atom(sqrt_model, route):
    system = _system()
    ROUTES[route](sqrt_model, system)
    pos = _positions()
    ctx = _context(system, pos)
    assert np.all(np.isfinite(ctx.getState(getForces=True).getForces(asNumpy=True)._value))
    pos[2, 0] = -0.3
    ctx.setPositions(pos)
    with pytest.raises(openmm.OpenMMException) as info:
        ctx.getState(getForces=True, getEnergy=True)
    assert "latent component(s) z[0] not finite" in str(info.value)
    assert "gradient is not finite on 1 atom(s) (indices 2)" in str(info.value)
    pos[2, 0] = 0.3  # a finite configuration makes the same Context usable again
    ctx.setPositions(pos)
    assert np.isfinite(ctx.getState(getEnergy=True).getPotentialEnergy()._value)


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_nan_forces_of_coincident_atoms_name_the_atoms_in_the_same_evaluation(distance_model, route):
    """A finite z with a NaN gradient: the modules return their own forces (TorchForce.setOutputsForces) and check
    them, so the very evaluation that would give NaN forces raises, naming the atoms and the component whose dz/dx
    is not finite; getState(getForces=True) never returns NaN forces and a step never applies them."""
    system = _system()
    ROUTES[route](distance_model, system)
    pos = _positions()
    pos[1] = pos[0]
    ctx = _context(system, pos)
    assert describe_nonfinite(distance_model, pos) == "dz[0]/dx is not finite on 2 atom(s) (indices 0, 1)"
    what = "the latent restraint on z[0]" if route == "torchforce-restraint" else "latent component z[0]"
    expected = (rf"the forces of {re.escape(what)} are not finite on 2 atom\(s\) \(indices 0, 1\) at finite positions "
                r"and finite latent values; dz\[0\]/dx is not finite on 2 atom\(s\) \(indices 0, 1\).*the forces were "
                r"not applied")
    with pytest.raises(openmm.OpenMMException, match=expected):
        ctx.getState(getForces=True)
    with pytest.raises(openmm.OpenMMException, match=expected):
        ctx.getIntegrator().step(1)
    after = ctx.getState(getPositions=True).getPositions(asNumpy=True)._value
    np.testing.assert_array_equal(after, pos)  # the failed step moved nothing
    pos[1, 0] += 0.2  # apart again: the same Context evaluates finite forces
    ctx.setPositions(pos)
    assert np.all(np.isfinite(ctx.getState(getForces=True).getForces(asNumpy=True)._value))


def test_segment_runner_names_the_atoms_and_the_models_diagnosis(distance_model):
    """Whatever force produced the NaN (here a CustomExternalForce, which raises nothing), the segment runner
    stops at the first frame with non-finite positions, names the atoms, and evaluates the bias's model at the last
    finite frame."""
    from latentbias.campaign.simulate import record_segment

    system = _system()
    pull = openmm.CustomExternalForce("sqrt(x^2 + y^2 + z^2)")  # 0/0 force at the origin
    pull.addParticle(0, [])
    pull.addParticle(1, [])
    system.addForce(pull)
    topology = app.Topology()
    residue = topology.addResidue("X", topology.addChain())
    for i in range(4):
        topology.addAtom(f"C{i}", app.element.carbon, residue)
    sim = app.Simulation(topology, system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    pos = _positions()
    pos[1] = pos[0]
    sim.context.setPositions(pos * unit.nanometer)

    class Bias:  # the part of a RoundBias that record_segment uses
        model = SimpleNamespace(file=distance_model)

        def step(self, sim, n):
            sim.step(n)

        def observe(self, sim, xyz, box=None):
            return {}

    with pytest.raises(NonFiniteBiasError) as info:
        record_segment(sim, Bias(), 3, 5, periodic=False)
    text = str(info.value)
    assert "between step 0 and step 5" in text
    assert "positions are NaN/inf on 2 atom(s) (indices 0, 1)" in text
    assert "the bias's model at step 0: dz[0]/dx is not finite on 2 atom(s) (indices 0, 1)" in text


def test_checks_leave_healthy_forces_unchanged(distance_model):
    """The in-module checks do not change energies or forces: TorchForce restraint vs the analytic restraint
    ½ k (|x0 - x1| - z0)² and its central finite differences."""
    system = _system()
    _restraint(distance_model, system)
    pos = _positions()
    ctx = _context(system, pos)
    state = ctx.getState(getEnergy=True, getForces=True)
    d = np.linalg.norm(pos[0] - pos[1])
    assert state.getPotentialEnergy()._value == pytest.approx(0.5 * 100.0 * (d - 0.5) ** 2, rel=1e-12)
    f = state.getForces(asNumpy=True)._value
    h = 1e-5
    for k in range(3):
        dx = np.zeros_like(pos)
        dx[0, k] = h
        e = []
        for sign in (1, -1):
            ctx.setPositions(pos + sign * dx)
            e.append(ctx.getState(getEnergy=True).getPotentialEnergy()._value)
        assert -(e[0] - e[1]) / (2 * h) == pytest.approx(f[0, k], rel=1e-6, abs=1e-8)
