"""TorchScript errors keep their cause and put it first (issue 9 item 6: "only the first line of TorchScript errors
is kept (the cause, e.g. ``linalg.svd: non-finite values``, is cut)").

A TorchScript interpreter error ends with its cause; every error latentbias raises from one must carry the cause on
its FIRST line (what logs, ``SystemExit`` lines and users read), with the traceback kept after it. The messages are
produced by torch itself here (a scripted SVD of non-finite values), not written by hand.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import openmm
import pytest
import torch

import latentbias as lb
from latentbias import native
from latentbias.export import ExportError, ModelEvaluationError, save_cv_module, script_module
from latentbias.torchscript_errors import cause_first, torchscript_cause

SVD_CAUSE = "linalg.svd: The algorithm failed to converge because the input matrix contained non-finite values"


class SVDOfNaNBeyond5nm(torch.nn.Module):
    """z = largest singular value of the centred positions; non-finite input (hence a TorchScript error inside
    linalg.svd) when atom 0 sits beyond x = 5 nm. Differentiable and finite elsewhere (passes the load checks)."""

    def forward(self, positions: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = positions - positions.mean(0)
        x = torch.where(positions[0, 0] > 5.0, x * float("nan"), x)
        return torch.linalg.svdvals(x)[:1]


def _bad_frame() -> np.ndarray:
    xyz = np.random.default_rng(0).random((4, 3))
    xyz[0, 0] = 6.0
    return xyz


def _interpreter_message() -> str:
    scripted = torch.jit.script(SVDOfNaNBeyond5nm())
    with pytest.raises(RuntimeError) as info:
        scripted(torch.as_tensor(_bad_frame()))
    return str(info.value)


def test_cause_first_moves_the_interpreter_cause_to_the_front():
    message = _interpreter_message()
    assert SVD_CAUSE not in message.splitlines()[0]  # torch puts it last: the reason for this module
    reordered = cause_first(message)
    first, *rest = reordered.splitlines()
    assert first.startswith("RuntimeError: " + SVD_CAUSE)
    assert torchscript_cause(message) == first
    # nothing is lost: the traceback (with the failing line) follows
    assert "TorchScript traceback:" in rest and any("svdvals" in line for line in rest)
    assert set(message.strip().splitlines()) <= set(reordered.splitlines())
    assert cause_first(reordered) == reordered  # idempotent: a message reordered by the plugin stays as it is
    wrapped = "LatentBiasForce: the model's forward pass failed: " + message  # the plugin's prefix on torch's text
    assert cause_first(wrapped).splitlines()[0] == first
    # plain messages (cause already first, nothing after it) are unchanged; C++ backtraces go behind the cause
    assert cause_first("  some error: value 3 \n") == "some error: value 3"
    cpp = "shape mismatch: (3,) vs (4,)\nException raised from check at x.cpp:12 (most recent call first):\nframe #0: f"
    assert cause_first(cpp).splitlines()[0] == "shape mismatch: (3,) vs (4,)"
    assert cause_first(cpp).splitlines()[-1] == "frame #0: f"


@pytest.fixture
def svd_model(tmp_path):
    return lb.load_model(save_cv_module(SVDOfNaNBeyond5nm(), tmp_path / "svd.pt", n_atoms=4, latent_dim=1))


def test_encode_error_names_the_file_and_starts_with_the_cause(svd_model):
    assert np.isfinite(svd_model.encode(np.random.default_rng(1).random((4, 3)))).all()
    with pytest.raises(ModelEvaluationError) as info:
        svd_model.encode(_bad_frame())
    first = str(info.value).splitlines()[0]
    assert str(svd_model.path) in first and SVD_CAUSE in first
    assert "svdvals" in str(info.value)  # the traceback is kept after the cause
    assert isinstance(info.value, RuntimeError)  # code catching torch's RuntimeError still does


def test_load_probe_error_starts_with_the_cause(tmp_path):
    class AlwaysNaN(torch.nn.Module):
        def forward(self, positions: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
            return torch.linalg.svdvals(positions * float("nan"))[:1]

    path = tmp_path / "nan.pt"
    with pytest.raises(ValueError) as info:
        lb.load_model(save_cv_module(AlwaysNaN(), path, n_atoms=4, latent_dim=1))
    first = str(info.value).splitlines()[0]
    assert str(path) in first and SVD_CAUSE in first


def test_export_error_starts_with_the_compiler_cause():
    class UsesNumpy(torch.nn.Module):
        def forward(self, positions: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(np.sum(positions.numpy()))

    with pytest.raises(ExportError) as info:
        script_module(UsesNumpy(), "test layer")
    first = str(info.value).splitlines()[0]
    assert first.startswith("TorchScript cannot compile the test layer: ") and len(first) > 45


@pytest.mark.skipif(not native.is_available(), reason="native plugin not built")
def test_latentbiasforce_torch_path_error_starts_with_the_cause(svd_model):
    """The plugin's C++ (describeException) applies the same rule to the LatentBiasForce's libtorch path."""
    from latentbias.bias import LatentRestraint

    system = openmm.System()
    for _ in range(4):
        system.addParticle(1.0)
    LatentRestraint(svd_model, system, centers=[0.0], forceConstants=1.0, backend="native", evaluationPath="torch")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(_bad_frame())
    with pytest.raises(openmm.OpenMMException) as info:
        context.getState(getForces=True)
    first = str(info.value).splitlines()[0]
    assert first.startswith("LatentBiasForce: the model's forward pass failed: RuntimeError: " + SVD_CAUSE)
    assert "svdvals" in str(info.value)


@pytest.mark.skipif(not native.is_available(), reason="native plugin not built")
def test_campaign_segment_error_starts_with_the_cause(svd_model):
    """A campaign segment whose biasing force's model fails raises with torch's cause on the first line, whatever
    order the force's own message has (openmm-torch's TorchForce puts it last)."""
    from openmm import app, unit

    from latentbias.bias import LatentRestraint
    from latentbias.campaign.simulate import record_segment

    class Bias:  # the part of a RoundBias that record_segment uses
        def step(self, sim, n):
            sim.step(n)

    system = openmm.System()
    topology = app.Topology()
    residue = topology.addResidue("X", topology.addChain())
    for i in range(4):
        system.addParticle(1.0)
        topology.addAtom(f"C{i}", app.element.carbon, residue)
    LatentRestraint(svd_model, system, centers=[0.0], forceConstants=1.0, backend="native", evaluationPath="torch")
    sim = app.Simulation(topology, system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(_bad_frame() * unit.nanometer)
    # the LatentBiasForce puts the cause first itself (then the error passes unchanged; a plugin built before
    # that change is reordered here)
    with pytest.raises(Exception) as info:
        record_segment(sim, Bias(), 1, 5, periodic=False)
    assert SVD_CAUSE in str(info.value).splitlines()[0]

    class TorchForceLike(Bias):  # openmm-torch's TorchForce raises torch's own text: cause last
        def step(self, sim, n):
            raise openmm.OpenMMException(_interpreter_message())

    with pytest.raises(ModelEvaluationError) as info:
        record_segment(sim, TorchForceLike(), 1, 5, periodic=False)
    first = str(info.value).splitlines()[0]
    assert first.startswith("the biasing force's model failed after step 0: RuntimeError: " + SVD_CAUSE)
    assert isinstance(info.value.__cause__, openmm.OpenMMException)


TORCHFORCE_RESTRAINT = """
import sys
import numpy as np
import openmm
import latentbias as lb
from latentbias.bias import LatentRestraint
model = lb.load_model(sys.argv[1])
system = openmm.System()
for _ in range(4):
    system.addParticle(1.0)
LatentRestraint(model, system, centers=[0.0], forceConstants=1.0, backend="torchforce")
context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
xyz = np.random.default_rng(0).random((4, 3))
xyz[0, 0] = 6.0
context.setPositions(xyz)
try:
    context.getState(getEnergy=True)
except Exception as exc:
    print("RAISED", str(exc).strip().splitlines()[-1])
"""


def test_torchforce_restraint_with_a_failing_model_raises_instead_of_crashing(svd_model, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(TORCHFORCE_RESTRAINT)
    out = subprocess.run([sys.executable, str(script), str(svd_model.path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, f"rc {out.returncode}: {out.stderr[-1000:]}"
    assert "RAISED" in out.stdout and SVD_CAUSE in out.stdout
