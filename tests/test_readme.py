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


def ala2_namespace(ala2):
    from openmm import app, unit

    from latentbias.testsystems import alanine_dipeptide_vacuum

    system, topology, positions = alanine_dipeptide_vacuum()
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    return {"system": system, "topology": topology, "positions": positions, "integrator": integrator,
            "platform": openmm.Platform.getPlatformByName("Reference"), "app": app}


def test_metadynamics_snippet_runs(ala2, tmp_path, monkeypatch):
    from latentbias.training import latent_range

    _, top, xyz = ala2
    frames = perturbed_frames(xyz, 10)
    model = random_latent_model(lb.Distances.from_selection(top, "element != H"), 22, frames)
    monkeypatch.chdir(tmp_path)
    lb.save_model(model, "ranged.pt", dtype="float64")
    lb.save_model(model, "latent.pt", z_range=latent_range(lb.load_model("ranged.pt").encode(frames)))
    snippet = next(b for b in python_blocks() if "LatentMetadynamics(" in b).replace("50_000", "1_000")
    ns = ala2_namespace(ala2)
    exec(compile(snippet, "README.md", "exec"), ns)
    widths = tuple(v.gridWidth for v in ns["variables"])
    assert ns["fes"].shape == widths and min(widths) >= 150  # default gridWidth = ceil(5 * range / sigma)
    assert len(np.loadtxt("hills.csv", delimiter=",", skiprows=2)) == 2


def test_opes_snippet_runs(ala2, tmp_path, monkeypatch):
    from latentbias.bias import LatentVariable
    from latentbias.training import latent_range

    _, top, xyz = ala2
    frames = perturbed_frames(xyz, 10)
    model = random_latent_model(lb.Distances.from_selection(top, "element != H"), 22, frames)
    monkeypatch.chdir(tmp_path)
    lb.save_model(model, "ranged.pt", dtype="float64")
    lb.save_model(model, "latent.pt", z_range=latent_range(lb.load_model("ranged.pt").encode(frames)))
    snippet = next(b for b in python_blocks() if "LatentOPES(" in b).replace("50_000", "1_000")
    ns = ala2_namespace(ala2)
    exec(compile(snippet, "README.md", "exec"), ns)
    # issue 9: the grid is the model's training range of z (not the ±3 that did not transfer)
    assert ns["opes"].variables == [LatentVariable.fromModel(i, "latent.pt") for i in (0, 1)]
    assert ns["fes"].shape == tuple(v.gridWidth for v in ns["opes"].variables)
    assert len(np.loadtxt("opes.csv", delimiter=",", skiprows=2)) == 2 == len(ns["logw"])


def test_umbrella_snippet_runs(ala2, tmp_path, monkeypatch):
    _, top, xyz = ala2
    model = random_latent_model(lb.Distances.from_selection(top, "element != H"), 22, perturbed_frames(xyz, 10))
    monkeypatch.chdir(tmp_path)
    lb.save_model(model, "latent.pt")
    snippet = next(b for b in python_blocks() if "LatentUmbrellaSampling(" in b)
    snippet = snippet.replace("50_000", "400").replace("sampleInterval=100", "sampleInterval=40")
    ns = ala2_namespace(ala2)
    exec(compile(snippet, "README.md", "exec"), ns)
    assert np.isfinite(ns["fes"].free_energy).any()
    assert len(list((tmp_path / "umbrella").glob("window_*.npz"))) == 21


def test_native_snippet_runs(ala2, tmp_path, monkeypatch):
    import pytest

    from latentbias import native

    if not native.is_available():
        pytest.skip(f"native plugin not built: {native.unavailable_reason()}")
    _, top, xyz = ala2
    model = random_latent_model(lb.Distances.from_selection(top, "element != H"), 22, perturbed_frames(xyz, 10))
    monkeypatch.chdir(tmp_path)
    lb.save_model(model, "latent.pt")
    snippet = next(b for b in python_blocks() if "LatentBiasForce.fromModelData" in b)
    ns = ala2_namespace(ala2)
    exec(compile(snippet, "README.md", "exec"), ns)
    ctx = openmm.Context(ns["system"], openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(xyz)
    z = lb.load_model("latent.pt").encode(xyz)
    energy = ctx.getState(getEnergy=True, groups={0}).getPotentialEnergy()._value
    np.testing.assert_allclose(ns["force"].getLastEnergies(ctx)[1], 0.5 * 100.0 * (z[0] - 0.5) ** 2, rtol=1e-6)
    assert np.isfinite(energy)
