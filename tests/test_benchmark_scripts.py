"""The benchmark scripts still build every case they time (no timings here: benchmarks/RESULTS.md holds those).

The scripts in benchmarks/ are not imported by the package, so an API change can break them silently (as the move
of ``fused_restraint_force`` to ``bias.restraint`` did); these tests build each case's System (no MD, no timing).
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from openmm import unit

import latentbias as lb
from latentbias import native

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

pytestmark = [
    pytest.mark.skipif(not native.is_available(), reason="the native LatentBiasForce plugin is not built"),
]


def load(name: str):
    """Import benchmarks/<name>.py as a module (its folder on sys.path, as when run as a script)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_cases(cases, new_system) -> list[str]:
    """Apply every case's setup to a fresh System; each biased case must add at least one force."""
    names = []
    for name, setup in cases:
        system = new_system()
        n = system.getNumForces()
        setup(system)
        assert (system.getNumForces() > n) == (name != "unbiased"), name
        names.append(name)
    return names


@pytest.fixture(scope="module")
def ala2_model(tmp_path_factory):
    pytest.importorskip("openmmtorch")
    overhead = load("overhead")
    model = overhead.build_model(tmp_path_factory.mktemp("bench"))
    _, _, positions = lb.testsystems.alanine_dipeptide_vacuum()
    return model, lb.load_model(model).encode(positions)


def test_native_and_opencl_overhead_cases_build(ala2_model):
    model, z = ala2_model
    new_system = lambda: lb.testsystems.alanine_dipeptide_vacuum()[0]  # noqa: E731
    names = check_cases(load("native_overhead").cases(model, z), new_system)
    assert "fused_restraint_force d=3 native" in names and "CustomCVForce route d=3" in names
    names = check_cases(load("opencl_overhead").cases(model, z), new_system)
    assert names[0] == "unbiased" and len(names) == 5


@pytest.mark.parametrize("key", ["villin", "ala2_water"])
def test_protein_overhead_cases_build(key, tmp_path):
    pytest.importorskip("openmmtorch")
    bench = load("protein_overhead")
    builder = bench.SYSTEMS[key][1]
    system, topology, positions, atoms = builder()
    assert len(atoms) == bench.N_FEATURE_ATOMS
    xyz = np.asarray(positions.value_in_unit(unit.nanometer))
    box = None
    if system.usesPeriodicBoundaryConditions():
        box = np.array([[v.x, v.y, v.z] for v in system.getDefaultPeriodicBoxVectors()])  # nm (OpenMM's units)
    model = bench.export_encoder(tmp_path / "enc.pt", topology.getNumAtoms(), atoms, xyz, box)
    loaded = lb.load_model(model)
    assert loaded.latent_dim == bench.LATENT_DIM
    z = loaded.encode(xyz, box)
    names = check_cases(bench.cases(model, z), lambda: copy.deepcopy(system))
    assert len(names) == 5


def test_deposit_cost_opes_breakdown_runs(ala2_model):
    model, _ = ala2_model
    parts = load("deposit_cost").opes_breakdown(model, 1, 0, 1)
    assert parts["kernels"] >= 1
    assert all(np.isfinite(v) and v >= 0 for v in parts.values())


def test_deposit_cost_opes_routes_interleaved_runs(ala2_model):
    model, _ = ala2_model
    out = load("deposit_cost").interleaved_opes_deposit_cost(model, 1, 2, ("refit", "local", "hermite"))
    assert set(out) == {"refit", "local", "hermite", "step", "kernels"} and out["kernels"] >= 1


def test_opes_local_accuracy_runs(ala2_model):
    model, _ = ala2_model
    bench = load("opes_local_accuracy")
    opes, sim = bench.run(model, 1, 1500, 1, with_simulation=True)
    r = bench.errors(opes, 20, 1, sim)
    assert r["kernels"] >= 1 and 0 <= r["local rms"] < 0.1 and 0 <= r["refit rms"] < 0.1
    assert 0 <= r["hermite rms"] < 0.1
    assert r["context check"] < 1e-8  # the benchmark's Hermite evaluation is what the Context applies


def test_deposit_cost_interleaved_runs(ala2_model):
    model, _ = ala2_model
    bench = load("deposit_cost")
    out = bench.interleaved_deposit_cost(model, 1, 2)
    assert set(out) == {"full old", "full new", "cut old", "cut new", "step"} and out["step"] > 0
    bench.old_and_new_deposits_agree(model, 2, steps=1000)  # raises unless grids, energies and records agree
    parts = bench.interleaved_parts(model, 2, 2)
    assert all(v > 0 for v in parts.values()) and len(parts) == 5


def test_cutoff_effect_replay_reproduces_the_run(tmp_path):
    """The replay of a short truncated run at its recorded centres and heights gives its bias grid (the script
    raises otherwise) and c(t) starting at 0; the untruncated replay differs, by less than one height."""
    bench = load("cutoff_effect")
    meta = bench.run(1, 1000, "default", tmp_path / "phipsi.pt")
    v_full, v_cut, ct_full, ct_cut, b_full, b_cut = bench.replay_untruncated(meta)
    assert len(ct_cut) == meta.numDeposits == 4 and ct_cut[0] == 0.0 == ct_full[0]
    assert 0 < np.abs(v_full - v_cut).max() < bench.SETTINGS["height"]
