"""The README's 'add to an existing OpenMM script' snippet runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import openmm

import latentbias as lb

from conftest import perturbed_frames, random_latent_model

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_bias_snippet_runs(ala2, tmp_path, monkeypatch):
    system, top, xyz = ala2
    model = random_latent_model(lb.Distances.from_selection(top, "element != H"), 22, perturbed_frames(xyz, 10))
    monkeypatch.chdir(tmp_path)
    lb.save_model(model, "latent.pt")
    snippet = next(b for b in python_blocks() if "CustomCVForce" in b)
    sys_copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    namespace = {"system": sys_copy}
    exec(compile(snippet, "README.md", "exec"), namespace)
    ctx = openmm.Context(sys_copy, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(xyz)
    z = namespace["cv"].getCollectiveVariableValues(ctx)
    np.testing.assert_allclose(z, lb.load_model("latent.pt").encode(xyz), atol=1e-5)
