"""Regression tests for the SIGSEGV of a failing model inside an openmm-torch TorchForce (issue 9, "no segfaults").

Cause (found with gdb and reproduced with torch alone, no OpenMM): openmm-torch 1.5's kernels call
``torch::jit::freeze`` on the TorchForce's module. Freezing inlines ``forward``'s method calls (the restraint's
``energy`` helper, the model's ``forward``) and then deletes the inlined methods from the compilation unit, while the
inlined nodes' call stacks keep raw ``Function*`` pointers to them. When an op inside the inlined code throws
(``linalg.svd`` of NaN), ``InterpreterStateImpl::callstack()`` calls ``name()`` through those freed pointers while
formatting the TorchScript traceback: a use-after-free, which segfaults or not depending on the heap (it did for
``LatentRestraint(backend="torchforce")`` once ``load_model`` had run the model). latentbias freezes and reloads every
module before it reaches a TorchForce (:func:`latentbias.forces.frozen_for_torchforce`), so openmm-torch's freeze has
nothing left to inline and the error surfaces as an exception.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Optional

import numpy as np
import pytest
import torch

import latentbias as lb
from latentbias.bias.restraint import _Restraint
from latentbias.export import save_cv_module
from latentbias.forces import frozen_for_torchforce

SVD_CAUSE = "linalg.svd: The algorithm failed to converge because the input matrix contained non-finite values"


class _Features(torch.nn.Module):
    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        d = positions[:, None, :] - positions[None, :, :]
        return torch.sqrt((d * d).sum(-1) + 1e-12).reshape(-1)


class TwoLayerWithHelpers(torch.nn.Module):
    """A model whose forward calls a submodule and a helper method (what freezing inlines)."""

    def __init__(self, n_atoms: int):
        super().__init__()
        torch.manual_seed(3)
        self.features = _Features()
        self.hidden = torch.nn.Linear(n_atoms * n_atoms, 8).double()
        self.out = torch.nn.Linear(8, 2).double()

    def encode(self, f: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(f)))

    def forward(self, positions: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.encode(self.features(positions))


def _calls(module: torch.jit.ScriptModule) -> list[str]:
    return [n.kind() for n in module.graph.nodes() if n.kind() in ("prim::CallMethod", "prim::CallFunction")]


def test_frozen_torchforce_module_has_no_calls_and_the_same_energy_and_forces(tmp_path):
    model = lb.load_model(save_cv_module(TwoLayerWithHelpers(5), tmp_path / "m.pt", n_atoms=5, latent_dim=2))
    scripted = torch.jit.script(_Restraint(model.module, [0, 1], np.full(2, -1e70), np.full(2, 1e70),
                                           np.full(2, 1000.0), np.zeros(2), False))
    assert _calls(scripted)  # the structure openmm-torch's freeze inlines (and whose methods it then frees)
    frozen = frozen_for_torchforce(scripted)
    assert _calls(frozen) == []
    assert _calls(scripted)  # the argument is left as it was
    params = [torch.tensor(v, dtype=torch.float64) for v in (0.3, -0.2, 5.0, 7.0)]
    for seed in range(3):
        xyz = np.random.default_rng(seed).random((5, 3))
        energies, grads = [], []
        for m in (scripted, frozen):
            x = torch.tensor(xyz, requires_grad=True)
            e, forces = m(x, *params)  # the module returns its own forces (TorchForce.setOutputsForces)
            energies.append(float(e.detach()))
            grads.append(-forces.numpy())
        # the same computation: equal to rounding (the frozen graph folds attributes into constants)
        assert energies[1] == pytest.approx(energies[0], rel=1e-13, abs=1e-13)
        np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12, atol=1e-13)


CRASH_SEQUENCE = """
import sys
from typing import Optional
import numpy as np
import torch
from latentbias.bias.restraint import _Restraint
from latentbias.forces import frozen_for_torchforce

class SVD(torch.nn.Module):
    def forward(self, positions: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = positions - positions.mean(0)
        x = torch.where(positions[0, 0] > 5.0, x * float("nan"), x)
        return torch.linalg.svdvals(x)[:1]

# what load_model's probe did before the crash: run another instance of the model's class (changes the heap)
torch.jit.script(SVD())(torch.rand(4, 3, dtype=torch.float64), None)
module = torch.jit.script(_Restraint(torch.jit.script(SVD()), [0], np.array([-1e70]), np.array([1e70]),
                                     np.array([1000.0]), np.array([0.0]), False))
module = frozen_for_torchforce(module)
module = torch.jit.freeze(module.eval())  # what openmm-torch's kernels do (torch::jit::freeze)
xyz = np.random.default_rng(0).random((4, 3))
xyz[0, 0] = 6.0
try:
    module(torch.tensor(xyz, requires_grad=True), torch.tensor(0.0, dtype=torch.float64),
           torch.tensor(1.0, dtype=torch.float64))
except RuntimeError as exc:
    print("RAISED", str(exc).strip().splitlines()[-1])
"""


def test_torch_freeze_of_a_failing_restraint_module_raises_instead_of_crashing(tmp_path):
    """The reproducer without OpenMM (torch.jit.freeze as openmm-torch calls it): without
    ``frozen_for_torchforce`` this sequence segfaulted (rc -11) with torch 2.9.1."""
    script = tmp_path / "seq.py"
    script.write_text(CRASH_SEQUENCE)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"rc {out.returncode}: {out.stderr[-1000:]}"
    assert "RAISED" in out.stdout and SVD_CAUSE in out.stdout


COMPONENT_FORCE = """
import sys
import numpy as np
import openmm
import latentbias as lb
from latentbias.forces import latent_component_force
model = lb.load_model(sys.argv[1])
system = openmm.System()
for _ in range(4):
    system.addParticle(1.0)
cv = openmm.CustomCVForce("2*z")
cv.addCollectiveVariable("z", latent_component_force(model, system, 0))
system.addForce(cv)
context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
xyz = np.random.default_rng(0).random((4, 3))
xyz[0, 0] = 6.0
context.setPositions(xyz)
try:
    context.getState(getForces=True)
except Exception as exc:
    print("RAISED", str(exc).strip().splitlines()[-1])
"""


def test_customcv_component_force_with_a_failing_model_raises_instead_of_crashing(tmp_path):
    """The CustomCVForce route wraps the model in a component module (a submodule call, inlined by the freeze: the
    same use-after-free; this sequence happened not to crash without the fix, the heap decides)."""

    class SVDOfNaNBeyond5nm(torch.nn.Module):
        def forward(self, positions: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
            x = positions - positions.mean(0)
            x = torch.where(positions[0, 0] > 5.0, x * float("nan"), x)
            return torch.linalg.svdvals(x)[:1]

    path = save_cv_module(SVDOfNaNBeyond5nm(), tmp_path / "svd.pt", n_atoms=4, latent_dim=1)
    script = tmp_path / "run.py"
    script.write_text(COMPONENT_FORCE)
    out = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"rc {out.returncode}: {out.stderr[-1000:]}"
    assert "RAISED" in out.stdout and SVD_CAUSE in out.stdout
