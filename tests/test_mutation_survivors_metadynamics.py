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


# ------------------------------------------------------------------ issue 15, second sitting (helper kill15b)

def _linear(meta, a, b):
    """A bias a + b z on the grid: the Context's cubic spline reproduces it exactly inside the grid."""
    return a + b * meta.getGridAxes()[0]


def _acting_is_linear(meta, sim, a, b):
    """The bias energy OpenMM applies in the Context equals a + b z at the particle (inside the grid)."""
    z = meta.getCollectiveVariables(sim)[0]
    assert abs(z) < 1.0
    assert meta.getBiasEnergy(sim.context) == pytest.approx(a + b * z, abs=1e-6)


def test_bias_factor_and_frequency_limits(tmp_path):
    """γ = 1.5 is a valid bias factor (any γ > 1): the free-energy estimate is −γ/(γ−1) V = −3 V; γ = 1 is
    refused. frequency = 1 deposits at every step (like openmm.app.Metadynamics); 0 and −1 are refused."""
    model = identity_model(tmp_path / "x.pt", 1, 1)
    var = [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=101)]
    meta = LatentMetadynamics(particle_system(DOUBLE_WELL_1D), model, var, 300.0, biasFactor=1.5, height=0.5,
                              frequency=1)
    meta.addBias(_linear(meta, 1.0, 2.0))
    np.testing.assert_allclose(meta.getFreeEnergy()._value, -3.0 * _linear(meta, 1.0, 2.0), rtol=1e-12)
    system = particle_system(DOUBLE_WELL_1D)
    meta1 = LatentMetadynamics(system, model, var, 300.0, biasFactor=6.0, height=0.5, frequency=1)
    sim = particle_simulation(system, [-0.5], seed=3)
    meta1.step(sim, 3)
    assert meta1.numDeposits == 3
    np.testing.assert_array_equal(meta1.getRecords()["step"], [1, 2, 3])
    for gamma in (1.0, 0.5):
        with pytest.raises(ValueError, match="biasFactor must be > 1"):
            LatentMetadynamics(particle_system(DOUBLE_WELL_1D), model, var, 300.0, biasFactor=gamma, height=0.5,
                               frequency=10)
    for freq in (0, -1):
        with pytest.raises(ValueError, match="frequency must be a positive"):
            LatentMetadynamics(particle_system(DOUBLE_WELL_1D), model, var, 300.0, biasFactor=6.0, height=0.5,
                               frequency=freq)


def test_non_finite_added_bias_is_refused(tmp_path):
    meta, _ = _metad(tmp_path)
    for bad in (np.nan, np.inf):
        values = np.zeros(meta.grid.shape)
        values[3] = bad
        with pytest.raises(ValueError, match="finite"):
            meta.addBias(values)
    np.testing.assert_array_equal(meta.getBias(), 0.0)


def test_a_nested_bias_dir_is_created(tmp_path):
    bias_dir = tmp_path / "a" / "b" / "bias"
    meta, system = _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="w")
    meta.step(particle_simulation(system, [-0.5], seed=3), 10)
    assert (bias_dir / "bias_w.npz").is_file()


def test_another_walkers_bias_found_at_construction_acts_from_the_first_step(tmp_path):
    """Walker b's file (bias 5 + 2z) is in biasDir before walker a is built: a reads it at construction and the
    Context applies it from a's first step, long before a's first save point."""
    bias_dir = tmp_path / "bias"
    b, system_b = _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="b")
    b.addBias(_linear(b, 5.0, 2.0))
    b.step(particle_simulation(system_b, [0.5], seed=4), 10)
    a, system = _metad(tmp_path, saveFrequency=1000, biasDir=bias_dir, walkerId="a")
    a.depositionEnabled = False
    sim = particle_simulation(system, [-0.5], seed=5)
    a.step(sim, 5)
    _acting_is_linear(a, sim, 5.0, 2.0)


def test_rebuilding_a_walker_does_not_erase_its_file(tmp_path):
    """A walker rebuilt with the same id (e.g. to loadState and continue) must not overwrite its file in biasDir
    with an empty bias before it writes again: a third walker built in between still sees the first one's bias."""
    bias_dir = tmp_path / "bias"
    a, system = _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="a")
    a.addBias(_linear(a, 4.0, 1.0))
    a.step(particle_simulation(system, [-0.5], seed=4), 10)
    expected = a.walkerContribution()["selfBias"]
    _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="a")  # rebuilt, not stepped yet
    c, _ = _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="c")
    np.testing.assert_allclose(c.getBias(), expected, rtol=0, atol=0)


def test_a_later_change_of_another_walkers_file_reaches_the_context(tmp_path):
    """b writes 5 + 2z, a reads it; b then adds 1 − z and writes again: at a's next save point its Context applies
    b's new total 6 + z (read from the Context, inside the grid)."""
    bias_dir = tmp_path / "bias"
    a, system = _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="a")
    a.depositionEnabled = False
    b, system_b = _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="b")
    b.depositionEnabled = False
    sim_b = particle_simulation(system_b, [0.5], seed=4)
    b.addBias(_linear(b, 5.0, 2.0))
    b.step(sim_b, 10)
    sim = particle_simulation(system, [-0.5], seed=5)
    a.step(sim, 10)
    _acting_is_linear(a, sim, 5.0, 2.0)
    b.addBias(_linear(b, 1.0, -1.0))
    b.step(sim_b, 10)
    a.step(sim, 10)
    _acting_is_linear(a, sim, 6.0, 1.0)


def test_damaged_or_unreadable_walker_files_do_not_hide_later_ones(tmp_path):
    """A damaged walker file (checksum mismatch) and an unreadable one (not an npz) sorting before walker b's file
    are skipped; b's bias is still read, and acts in the Context."""
    bias_dir = tmp_path / "bias"
    bias_dir.mkdir()
    b, system_b = _metad(tmp_path, saveFrequency=10, biasDir=bias_dir, walkerId="b")
    b.addBias(_linear(b, 5.0, 2.0))
    b.step(particle_simulation(system_b, [0.5], seed=4), 10)
    for broken in ("damaged", "unreadable"):
        for f in bias_dir.glob("bias_a*.npz"):
            f.unlink()
        if broken == "damaged":
            save_npz(bias_dir / "bias_a0.npz", checksum=True, selfBias=np.zeros(b.grid.shape))
            with np.load(bias_dir / "bias_a0.npz") as raw:
                arrays = {k: raw[k] for k in raw.files}
            arrays["selfBias"] = arrays["selfBias"] + 1.0  # checksum no longer matches
            np.savez(bias_dir / "bias_a0.npz", **arrays)
        else:
            (bias_dir / "bias_a0.npz").write_bytes(b"not an npz file")
        a, system = _metad(tmp_path, saveFrequency=1000, biasDir=bias_dir, walkerId="a1")
        np.testing.assert_allclose(a.getBias(), b.walkerContribution()["selfBias"], rtol=0, atol=0)
        a.depositionEnabled = False
        sim = particle_simulation(system, [-0.5], seed=5)
        a.step(sim, 5)
        _acting_is_linear(a, sim, 5.0, 2.0)


def test_other_walkers_given_by_a_driver_act_in_a_running_context(tmp_path):
    """setOtherWalkers on a running walker: its own id (sorting first) is ignored, the others' biases (5 + 2z and
    1 − z) act in the Context from the next step."""
    a, system = _metad(tmp_path, walkerId="a")
    a.depositionEnabled = False
    sim = particle_simulation(system, [-0.5], seed=5)
    a.step(sim, 5)
    a.setOtherWalkers({"a": {"selfBias": np.full(a.grid.shape, 7.0)},
                       "b": {"selfBias": _linear(a, 5.0, 2.0)}, "c": {"selfBias": _linear(a, 1.0, -1.0)}})
    np.testing.assert_allclose(a.getBias(), _linear(a, 6.0, 1.0), rtol=1e-12)
    a.step(sim, 5)
    _acting_is_linear(a, sim, 6.0, 1.0)


def test_trajectory_frames_are_the_positions_at_each_deposition(tmp_path):
    """With a trajectory file, frame i holds the positions at deposition i: for the identity model, x of frame i
    is the recorded z_i (DCD stores single precision, in Å)."""
    meta, system = _metad(tmp_path, trajectoryFile=tmp_path / "t.dcd")
    sim = particle_simulation(system, [-0.5], seed=3)
    meta.step(sim, 50)
    z = meta.getRecords()["z"][:, 0]
    import mdtraj as md

    traj = md.load(str(tmp_path / "t.dcd"), top=md.Topology.from_openmm(sim.topology))
    assert traj.n_frames == len(z) == 5
    np.testing.assert_allclose(traj.xyz[:, 0, 0], z, atol=1e-5)


def test_an_edited_state_json_is_refused(tmp_path):
    """The state's JSON carries its own checksum: a changed deposit count (valid JSON, npz untouched) is refused
    on load instead of silently changing the restored run."""
    from latentbias.io import ChecksumError

    meta, system = _metad(tmp_path)
    meta.step(particle_simulation(system, [-0.5], seed=3), 30)
    _, meta_json = meta.saveState(tmp_path / "s")
    text = meta_json.read_text()
    assert '"numDeposits": 3' in text
    meta_json.write_text(text.replace('"numDeposits": 3', '"numDeposits": 4'))
    restored, _ = _metad(tmp_path)
    with pytest.raises(ChecksumError, match="s.json"):
        restored.loadState(tmp_path / "s")
