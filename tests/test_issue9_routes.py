"""Issue 9, smaller clauses on the Python routes: the TorchForce restraint validates the centres and force constants
the Context holds (``Context.setParameter`` bypasses the setters), an integer-dtype z is refused at load, and the
atom-count refusal names the remapping fix (item 5b)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from torch import Tensor

import latentbias as lb
from latentbias.bias import LatentRestraint
from latentbias.export import save_cv_module


class Distance(torch.nn.Module):
    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        p = positions.to(torch.float64)
        return torch.sqrt(((p[0] - p[1]) ** 2).sum()).reshape(1)


class IntegerCount(torch.nn.Module):
    """The Why's "integer output": a contact count as int64 (no gradient, not a float)."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        d = torch.sqrt(((positions[0] - positions[1]) ** 2).sum())
        return (d < 0.6).to(torch.int64).reshape(1)


def _system(n=4):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    return system


POSITIONS = np.array([[0.0, 0.0, 0.0], [0.5, 0.1, 0.0], [1.0, 1.0, 1.0], [1.5, 0.2, 0.3]])


@pytest.mark.parametrize("which,value,match", [
    ("k", float("nan"), r"force constant parameter 'latent_k_0' is nan .*finite and >= 0"),
    ("k", -5.0, r"force constant parameter 'latent_k_0' is -5\.0? .*finite and >= 0"),
    ("k", float("inf"), r"force constant parameter 'latent_k_0' is inf"),
    ("z0", float("inf"), r"centre parameter 'latent_z0_0' is inf .*must be finite"),
])
def test_torchforce_restraint_validates_parameters_set_in_the_context(tmp_path, which, value, match):
    model = lb.load_model(save_cv_module(Distance(), tmp_path / "d.pt", n_atoms=4, latent_dim=1))
    system = _system()
    restraint = LatentRestraint(model, system, centers=[0.3], forceConstants=100.0, backend="torchforce")
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(POSITIONS)
    e0 = ctx.getState(getEnergy=True).getPotentialEnergy()._value
    d = np.linalg.norm(POSITIONS[0] - POSITIONS[1])
    assert e0 == pytest.approx(0.5 * 100.0 * (d - 0.3) ** 2, rel=1e-12)
    name = restraint.forceConstantName(0) if which == "k" else restraint.centerName(0)
    ctx.setParameter(name, value)
    with pytest.raises(openmm.OpenMMException, match=match):
        ctx.getState(getEnergy=True)
    ctx.setParameter(name, 100.0 if which == "k" else 0.3)  # a valid value makes the Context usable again
    assert ctx.getState(getEnergy=True).getPotentialEnergy()._value == pytest.approx(e0, rel=1e-12)


def test_integer_dtype_output_is_refused_at_load(tmp_path):
    path = save_cv_module(IntegerCount(), tmp_path / "count.pt", n_atoms=4, latent_dim=1)
    with pytest.raises(ValueError, match=r"count\.pt.*the model output z \(torch\.int64\) does not depend "
                                         r"differentiably on the positions"):
        lb.load_model(path)


def test_atom_count_refusal_names_the_remapping_fix(tmp_path):
    model = lb.load_model(save_cv_module(Distance(), tmp_path / "d.pt", n_atoms=4, latent_dim=1))
    with pytest.raises(ValueError, match=r"built for 4 atoms but the System has 7 particles.*remap_model\(.*"
                                         r"`latentbias remap`"):
        model.check_system(_system(7))
