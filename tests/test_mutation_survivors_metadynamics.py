"""Tests that kill mutants of ``latentbias/bias/metadynamics.py`` which survived its fast selection (issue 15).

References: the bias energy OpenMM applies in a Context (Reference platform), closed-form edge walls
½ k (distance beyond the grid)², and linear bias fields (which the Context's cubic spline reproduces exactly).
TESTING.md lists the mutants each test kills.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from latentbias.analysis import kt_kjmol
from latentbias.bias import LatentMetadynamics, LatentVariable
from latentbias.io import load_npz, save_npz, write_json

from toy import DOUBLE_WELL_1D, identity_model, particle_simulation, particle_system


def _metad(tmp_path, frequency=10, lo=-1.0, hi=1.0, width=101, **kw):
    model = tmp_path / "x.pt"
    if not model.exists():
        identity_model(model, 1, 1)
    system = particle_system(DOUBLE_WELL_1D)
    meta = LatentMetadynamics(system, model, [LatentVariable(0, lo, hi, 0.05, gridWidth=width)], 300.0,
                              biasFactor=6.0, height=0.5, frequency=frequency, **kw)
    return meta, system


def test_gaussians_are_deposited_every_frequency_steps_whatever_the_chunking(tmp_path):
    """Like openmm.app.Metadynamics, a Gaussian is deposited whenever the step count reaches a multiple of
    ``frequency``, however the run is split into step() calls: ten calls of 7 steps with frequency 10 deposit at
    steps 10, 20, ..., 70."""
    meta, system = _metad(tmp_path)
    sim = particle_simulation(system, [-0.5], seed=3)
    for _ in range(10):
        meta.step(sim, 7)
    assert sim.currentStep == 70
    np.testing.assert_array_equal(meta.getRecords()["step"], np.arange(10, 71, 10))
    assert meta.numDeposits == 7
    for _ in range(25):  # single steps
        meta.step(sim, 1)
    assert sim.currentStep == 95 and meta.numDeposits == 9


def test_an_empty_record_file_is_started_not_refused(tmp_path):
    """An existing but empty record file (e.g. made by ``touch`` or a crash before the header) holds no records:
    it gets the header and the depositions, without appendRecord; a non-empty one is refused."""
    path = tmp_path / "hills.csv"
    path.touch()
    meta, system = _metad(tmp_path, recordFile=path)
    meta.step(particle_simulation(system, [-0.5], seed=3), 20)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# latent metadynamics") and lines[1].startswith("step,time_ps,z0")
    assert len(lines) == 4
    with pytest.raises(FileExistsError, match="appendRecord"):
        _metad(tmp_path, recordFile=path)
    one_byte = tmp_path / "one.csv"
    one_byte.write_text("\n")
    with pytest.raises(FileExistsError, match="appendRecord"):
        _metad(tmp_path, recordFile=one_byte)


def test_bad_height_scale_and_missing_state_files_are_refused(tmp_path):
    meta, system = _metad(tmp_path)
    sim = particle_simulation(system, [-0.5], seed=3)
    with pytest.raises(ValueError, match="scale must be >= 0"):
        meta.setBiasScale(sim.context, -0.5)
    with pytest.raises(FileNotFoundError, match="no metadynamics state"):
        meta.saveState(tmp_path / "s")
        (tmp_path / "s.npz").unlink()
        meta.loadState(tmp_path / "s")
    with pytest.raises(ValueError, match="height must be positive"):
        LatentMetadynamics(particle_system(DOUBLE_WELL_1D), identity_model(tmp_path / "h.pt", 1, 1),
                           [LatentVariable(0, -1.0, 1.0, 0.05)], 300.0, biasFactor=6.0, height=0.0, frequency=10)


def test_added_bias_is_the_energy_the_context_applies(tmp_path):
    """addBias(V) with V linear in z: getBias() is V and the Context's bias energy at the particle is V(z) (a cubic
    spline reproduces a linear function exactly; the particle stays inside the grid, so no wall acts); added again
    while running, 2 V acts."""
    meta, system = _metad(tmp_path)
    axis = meta.getGridAxes()[0]
    values = 3.0 + 2.0 * axis
    meta.addBias(values)
    np.testing.assert_allclose(meta.getBias(), values, rtol=0, atol=0)
    sim = particle_simulation(system, [-0.5], seed=3)
    meta.depositionEnabled = False
    meta.step(sim, 5)
    z = meta.getCollectiveVariables(sim)
    assert abs(z[0]) < 1.0
    assert meta.getBiasEnergy(sim.context) == pytest.approx(3.0 + 2.0 * z[0], abs=1e-6)
    meta.addBias(values)  # added to a running Context: it acts from the next step on
    meta.step(sim, 5)
    z = meta.getCollectiveVariables(sim)
    assert meta.getBiasEnergy(sim.context) == pytest.approx(2 * (3.0 + 2.0 * z[0]), abs=1e-6)


def test_walkers_sharing_a_bias_dir_see_each_others_bias_in_the_context(tmp_path):
    """Walker b (started after a) adds a linear bias 5 + 2z and writes its file; walker a, at its next save point, must read it (past
    its own file and a foreign file in the folder) and push it to its Context: a's total is a's own + b's, and the
    energy the Context applies equals the one after a full refit and the interpolated total bias."""
    bias_dir = tmp_path / "bias"
    bias_dir.mkdir()
    (bias_dir / "README.txt").write_text("not a walker file\n")
    a, system_a = _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="a")
    sim = particle_simulation(system_a, [-0.5], seed=5)
    a.step(sim, 10)  # a writes its file; b's does not exist yet
    b, system_b = _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="b")
    b.addBias(5.0 + 2.0 * b.getGridAxes()[0])
    b.step(particle_simulation(system_b, [0.5], seed=4), 10)
    a.step(sim, 10)  # a's next save point: reads b's file
    np.testing.assert_allclose(a.getBias(), a.walkerContribution()["selfBias"] + b.walkerContribution()["selfBias"],
                               rtol=1e-12, atol=1e-12)
    z = a.getCollectiveVariables(sim)
    before = a.getBiasEnergy(sim.context)
    a.updateContext(sim.context)
    assert before == pytest.approx(a.getBiasEnergy(sim.context), abs=1e-6)
    assert before == pytest.approx(a.biasAt(z[None])[0], abs=0.05)
    assert before > 3.0  # b's 5 + 2z (z > -1) is in it
    # the same exchange through a driver: a's own id in the dict is ignored, b's bias is added
    c, _ = _metad(tmp_path, walkerId="c")
    c.setOtherWalkers({"c": {"selfBias": np.full(c.grid.shape, 7.0)}, "b": b.walkerContribution()})
    np.testing.assert_allclose(c.getBias(), b.walkerContribution()["selfBias"], rtol=1e-12)


def test_loading_a_state_without_wall_records_adds_the_walls_to_the_logweights(tmp_path):
    """A state saved before the wall energy was recorded (its log-weights lack W(z)/kT): loading it recomputes
    W(z) = ½ k (distance beyond the grid)² from the recorded z and adds it, giving back the log-weights of the bias
    the Context applied. Grid [-0.3, 0.3] on the double well (minima ±0.5), so most frames lie beyond an edge."""
    meta, system = _metad(tmp_path, frequency=20, lo=-0.3, hi=0.3, width=61, wallForceConstant=200.0)
    meta.step(particle_simulation(system, [-0.5], seed=7), 1000)
    rec = meta.getRecords()
    z = rec["z"][:, 0]
    wall = 0.5 * 200.0 * (np.clip(z - 0.3, 0, None) + np.clip(-0.3 - z, 0, None)) ** 2
    assert np.count_nonzero(wall > 0) >= 10
    npz, meta_json = meta.saveState(tmp_path / "s")
    data = load_npz(npz)
    old = {k: v for k, v in data.items() if k != "record_wall_kjmol"}
    old["record_logweight"] = data["record_logweight"] - wall / kt_kjmol(300.0)  # the old log-weights
    save_npz(npz, **old)
    info = json.loads(meta_json.read_text())
    info = {k: v for k, v in info.items() if not k.startswith("_")}
    info["npz_sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    write_json(meta_json, info, checksum=True)

    restored, _ = _metad(tmp_path, frequency=20, lo=-0.3, hi=0.3, width=61, wallForceConstant=200.0)
    restored.loadState(tmp_path / "s")
    got = restored.getRecords()
    np.testing.assert_allclose(got["wall_kjmol"], wall, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["logweight"], rec["logweight"], rtol=1e-12, atol=1e-12)

    # an old state saved before any deposition loads with empty records
    fresh, _ = _metad(tmp_path, frequency=20, lo=-0.3, hi=0.3, width=61, wallForceConstant=200.0)
    npz, meta_json = fresh.saveState(tmp_path / "e")
    data = load_npz(npz)
    save_npz(npz, **{k: v for k, v in data.items() if k != "record_wall_kjmol"})
    info = {k: v for k, v in json.loads(meta_json.read_text()).items() if not k.startswith("_")}
    info["npz_sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    write_json(meta_json, info, checksum=True)
    fresh.loadState(tmp_path / "e")
    assert all(len(v) == 0 for v in fresh.getRecords().values())


def _ct_scaled(grid, temperature, gamma, scale):
    """c_s(t) = kT ln[Σ e^{γ/(γ−1) βV} / Σ e^{γ/(γ−1) βV − s βV}] of a bias grid (Tiwary & Parrinello 2015, s = 1;
    the acting bias s·V for s != 1)."""
    from scipy.special import logsumexp

    beta = 1.0 / kt_kjmol(temperature)
    a = gamma / (gamma - 1.0) * beta * grid.ravel()
    return float((logsumexp(a) - logsumexp(a - scale * beta * grid.ravel())) / beta)


@pytest.mark.parametrize("scale", [0.5, 0.0])
def test_records_of_a_scaled_bias_beyond_the_grid_edge(tmp_path, scale):
    """Grid [-0.3, 0.3] on the double well (minima ±0.5): depositions happen mostly beyond the edge, where the
    walls act. With the bias scaled by s, each record holds the unscaled V(z) (the Context's (acting − W)/s; for
    s = 0 the grid's value), the wall ½ k d², and c_s(t) of the bias grid before that deposition."""
    meta, system = _metad(tmp_path, frequency=20, lo=-0.3, hi=0.3, width=61, wallForceConstant=200.0)
    sim = particle_simulation(system, [-0.5], seed=7)
    meta.step(sim, 400)
    meta.setBiasScale(sim.context, scale)
    beyond = 0
    for _ in range(15):
        before = meta.getBias().copy()
        meta.step(sim, 20)
        rec = meta.getRecords()
        z = rec["z"][-1]
        assert rec["bias_kjmol"][-1] == pytest.approx(meta.grid.interpolate(z[None], before)[0], abs=0.05)
        wall = 0.5 * 200.0 * (max(0.0, z[0] - 0.3) + max(0.0, -0.3 - z[0])) ** 2
        assert rec["wall_kjmol"][-1] == pytest.approx(wall, abs=1e-9)
        assert rec["ct_kjmol"][-1] == pytest.approx(_ct_scaled(before, 300.0, 6.0, scale), rel=1e-9, abs=1e-12)
        beyond += wall > 0
    assert beyond >= 5
