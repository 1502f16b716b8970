"""Tests that kill mutants of the frame bookkeeping of ``latentbias/campaign/weights.py`` (``frame_exclusions``,
``bias_states``, ``read_plans``, ``_attempts``, ``write_weights``) that survived its fast selection (issue 15).

References are closed forms: restraint energies ½ k s |z − c|², the piecewise-static metadynamics state
½ (V_start + V_end) read at the grid nodes, c(t) log-weights (V − c)/kT, frame counts and times set by construction.
TESTING.md lists the mutants each test kills.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from latentbias.analysis import kt_kjmol
from latentbias.bias.grid import BiasGrid, LatentVariable
from latentbias.campaign.config import CampaignConfig
from latentbias.campaign.converge import RESTART_REASON
from latentbias.campaign.records import KIND_METAD, KIND_OPES, KIND_RESTRAINT, KIND_UNBIASED, load_frames
from latentbias.campaign.rundir import RunDir
from latentbias.campaign.weights import EXCLUSIONS, bias_states, frame_exclusions, write_weights

from test_campaign_weights import VARIABLES, columns

T = 300.0
KT = kt_kjmol(T)


def _segment(x, kind, time_ps=None, scale=1.0, target=-1, bias=None, ct=None, ood=None):
    seg = columns(np.asarray(x, dtype=float), kind, scale=scale, target=target)
    n = len(x)
    seg["time_ps"] = np.arange(n, dtype=float) if time_ps is None else np.asarray(time_ps, dtype=float)
    if bias is not None:
        seg["bias_kjmol"] = np.asarray(bias, dtype=float)
    if ct is not None:
        seg["ct_kjmol"] = np.asarray(ct, dtype=float)
    if ood is not None:
        seg["ood"] = np.asarray(ood, dtype=bool)
    return seg


def _frames(run_dir, rounds):
    return load_frames((r, k, run_dir.read_segment(r, k)) for r, n in rounds for k in range(n))


def test_burn_in_applies_only_to_converge_rounds():
    """Without a converge round, burn_in cuts nothing: a metadynamics round's early frames are used."""
    frames = {"round": np.r_[np.zeros(10, int), np.ones(40, int)], "kind": np.r_[np.zeros(10, int),
                                                                                   np.full(40, KIND_METAD)],
              "scale": np.ones(50), "time_ps": np.r_[np.arange(10.0), np.arange(40.0)]}
    plans = {0: {"strategy": "unbiased"}, 1: {"strategy": "metadynamics"}}
    codes = frame_exclusions(frames, plans, burn_in=0.25)
    assert np.all(codes[:10] == 1) and np.all(codes[10:] == 0)
    plans[1]["converge"] = True  # a converge round: burn-in only when asked for (default 0)
    assert np.all(frame_exclusions(frames, plans)[10:] == 0)
    assert np.count_nonzero(frame_exclusions(frames, plans, burn_in=0.25) == 6) == 10  # t < 0.25 * 39 ps


def test_bias_states_of_metad_segments_and_restraint_targets(tmp_path):
    """Metadynamics segment k is the static state ½ (V at its start + V at its end): the carried initial bias for
    k = 0, the previous segment's end for k > 0 (grids v, 2v, 3v here, initial 0.5 v). Restraint frames (a round
    whose plan lists two targets) are the state ½ k s |z − c_target|² of the target they were pulled to, with the
    encoder of the round before. Checked on the states' energies at the grid nodes and at chosen z."""
    run_dir = RunDir(tmp_path / "run")
    grid = BiasGrid([LatentVariable(**VARIABLES[0])])
    nodes = grid.axes[0]
    v = 1.0 + 0.5 * nodes**2
    run_dir.write_plan(0, {"round": 0, "strategy": "unbiased", "segments": 1})
    run_dir.save_npz(run_dir.segment_file(0, 0), **_segment(np.zeros(5), KIND_UNBIASED))
    run_dir.round_dir(1).mkdir(exist_ok=True)
    run_dir.save_npz(run_dir.round_dir(1) / "initial_bias.npz", grid=0.5 * v)
    run_dir.write_plan(1, {"round": 1, "strategy": "metadynamics", "segments": 3, "variables": VARIABLES,
                           "initial_bias": "initial_bias.npz"})
    for k in range(3):
        run_dir.save_npz(run_dir.segment_file(1, k), grid_end=(k + 1) * v,
                         **_segment(np.full(4, 0.1 * k), KIND_METAD))
    targets = [[-0.7], [0.4]]
    run_dir.write_plan(2, {"round": 2, "strategy": "restraint", "segments": 3, "targets": targets})
    run_dir.save_npz(run_dir.segment_file(2, 0), **_segment(np.full(3, 0.3), KIND_RESTRAINT, target=1))
    run_dir.save_npz(run_dir.segment_file(2, 1), **_segment(np.full(3, -0.6), KIND_RESTRAINT, target=0,
                                                            scale=0.5))
    run_dir.save_npz(run_dir.segment_file(2, 2), **_segment(np.full(2, 0.1), KIND_RESTRAINT, target=0,
                                                            scale=0.0))
    run_dir.write_plan(3, {"round": 3, "strategy": "opes", "segments": 1, "variables": VARIABLES})
    run_dir.save_npz(run_dir.segment_file(3, 0), grid_end=v, **_segment(np.full(2, 0.0), KIND_OPES))
    frames = _frames(run_dir, ((0, 1), (1, 3), (2, 3), (3, 1)))
    config = CampaignConfig()
    config.converge.burn_in = 0.0
    config.metadynamics.wall_force_constant = 700.0
    config.opes.wall_force_constant = 300.0
    states, state_of = bias_states(frames, run_dir, config)
    assert np.all(state_of[:5] == -1)  # round 0 is kept out
    starts = [0.5 * v, v, 2 * v]
    for k in range(3):
        st = states[state_of[5 + 4 * k]]
        assert st.kind == "metad" and st.model_round == 0
        np.testing.assert_allclose(st.energy(nodes[:, None]), 0.5 * (starts[k] + (k + 1) * v), rtol=1e-12)
    # edge walls beyond the grid [-2, 2]: ½ k_wall d², with the metadynamics or the OPES wall constant
    beyond = np.array([[2.5], [-2.2]])
    for first, k_wall in ((5, 700.0), (25, 300.0)):
        st = states[state_of[first]]
        edge = st.energy(np.array([[2.0], [-2.0]]))
        np.testing.assert_allclose(st.energy(beyond) - edge, 0.5 * k_wall * np.array([0.5, 0.2]) ** 2, rtol=1e-9)
    assert np.all(state_of[23:25] == -1)  # restraint switched off (scale 0): kept out as "bias-off"
    kr = config.frontier.restraint_k
    z = np.array([[0.0], [0.25]])
    for first, centre, s in ((17, 0.4, 1.0), (20, -0.7, 0.5)):
        st = states[state_of[first]]
        assert st.kind == "restraint" and st.model_round == 1
        np.testing.assert_allclose(st.energy(z), 0.5 * kr * s * (z[:, 0] - centre) ** 2, rtol=1e-12)


def _converge_campaign(tmp_path, ood_fraction=0.0):
    """Round 0 unbiased; rounds 1 and 2 converge attempts that went back to retraining (OOD; round 2 before
    committing any frame); round 3 the attempt of the estimate (metadynamics, 100 frames at t = 100..199 ps,
    ended "converged")."""
    rng = np.random.default_rng(4)
    run_dir = RunDir(tmp_path / "run")
    run_dir.write_plan(0, {"round": 0, "strategy": "unbiased", "segments": 1})
    run_dir.save_npz(run_dir.segment_file(0, 0), **_segment(rng.normal(size=20), KIND_UNBIASED))
    grid = np.zeros(81)
    run_dir.write_plan(1, {"round": 1, "strategy": "metadynamics", "segments": 1, "variables": VARIABLES,
                           "converge": True, "model_round": 0})  # no "attempt": the first (0)
    run_dir.save_npz(run_dir.segment_file(1, 0), grid_end=grid,
                     **_segment(rng.normal(size=30), KIND_METAD, ood=np.arange(30) < 15))
    run_dir.write_round_end(1, 1, RESTART_REASON)
    run_dir.write_plan(2, {"round": 2, "strategy": "metadynamics", "segments": 1, "variables": VARIABLES,
                           "converge": True, "model_round": 1, "attempt": 1})
    run_dir.write_round_end(2, 0, RESTART_REASON)  # an attempt that ended before committing a segment
    run_dir.write_plan(3, {"round": 3, "strategy": "metadynamics", "segments": 2, "variables": VARIABLES,
                           "converge": True, "model_round": 2, "attempt": 2})
    n_ood = int(round(ood_fraction * 50))
    for k in range(2):
        run_dir.save_npz(run_dir.segment_file(3, k), grid_end=grid,
                         **_segment(rng.normal(size=50), KIND_METAD, time_ps=100.0 + 50.0 * k + np.arange(50.0),
                                    bias=rng.normal(0, 2, 50), ct=rng.normal(0, 1, 50),
                                    ood=np.arange(50) < (n_ood if k == 1 else 0)))
    run_dir.write_round_end(3, 2, "converged")
    return run_dir, _frames(run_dir, ((0, 1), (1, 1), (3, 2)))


def test_weights_of_the_converge_phase_and_their_bookkeeping(tmp_path, caplog):
    """The converge estimate: frames of the last attempt after its burn-in (20 % of 99 ps: t < 119.8 ps, 20 frames),
    log-weights (V − c(t))/kT normalised over those 80 frames; the earlier attempt that went back to retraining is
    kept out (code 7) and listed with how it ended; the counts, times, ESS and end reason in weights.json."""
    run_dir, frames = _converge_campaign(tmp_path)
    config = CampaignConfig()
    x = frames["positions"][:, 0, 0].astype(float)
    caplog.set_level(logging.WARNING, logger="latentbias.campaign.weights")
    info = write_weights(run_dir, config, 3, frames, lambda q: x[:, None])
    with warnings.catch_warnings():  # round 2 has no frames: an empty table
        warnings.simplefilter("ignore", UserWarning)
        tables = [np.loadtxt(run_dir.round_dir(r) / "frames.csv", delimiter=",", skiprows=2,
                             ndmin=2).reshape(-1, 9) for r in range(4)]
    header = (run_dir.round_dir(3) / "frames.csv").read_text().splitlines()[1].split(",")
    assert header == ["step", "time_ps", "z0", "bias_kjmol", "logweight", "round", "ood", "excluded", "walker"]
    assert not (run_dir.round_dir(4) / "frames.csv").exists()
    codes = np.concatenate([t[:, 7] for t in tables]).astype(int)
    assert info["frames_used"] == 80 and np.count_nonzero(codes == 0) == 80
    assert info["frames_excluded"] == {"round0-unbiased": 20, "burn-in": 20, "converge-restarted": 30}
    assert np.all(codes[20:50] == 7) and np.all(codes[50:70] == 6)
    assert info["converge_end"] == "converged"
    assert info["converge_ps"] == pytest.approx(99.0) and info["burn_in_ps"] == pytest.approx(0.2 * 99.0)
    used = np.flatnonzero(codes == 0)
    logw = (frames["bias_kjmol"][used] - frames["ct_kjmol"][used]) / KT
    w = np.exp(logw - logw.max())
    assert info["ess"] == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-9)
    first, empty, last = info["converge_attempts"]
    assert first["round"] == 1 and first["ended"].startswith("retrain") and not first["in_estimate"]
    assert first["max_segment_ood_fraction"] == pytest.approx(0.5) and first["attempt"] == 0
    assert empty["round"] == 2 and empty["ps"] == 0.0 and empty["max_segment_ood_fraction"] == 0.0
    assert last["round"] == 3 and last["ended"] == "converged" and last["in_estimate"]
    assert last["max_segment_ood_fraction"] == 0.0 and last["ps"] == pytest.approx(99.0)
    assert "warning" not in info and "no frame is an equilibrium sample" not in caplog.text


def test_converge_estimate_warns_when_its_encoder_met_ood_frames(tmp_path, caplog):
    """70 % of the last segment out of distribution (> retrain_fraction 60 %) with no restart left: the estimate
    says so, with both percentages."""
    run_dir, frames = _converge_campaign(tmp_path, ood_fraction=0.7)
    x = frames["positions"][:, 0, 0].astype(float)
    caplog.set_level(logging.WARNING, logger="latentbias.campaign.weights")
    config = CampaignConfig()
    config.ood.retrain_fraction = 0.6
    info = write_weights(run_dir, config, 3, frames, lambda q: x[:, None])
    assert info["converge_attempts"][-1]["max_segment_ood_fraction"] == pytest.approx(0.7)
    assert "up to 70 % of a converge segment (> [ood] retrain_fraction = 60 %)" in info["warning"]
    # ... and the share of the estimate's weight in those frames, recomputed from weights.csv's own columns
    table = np.genfromtxt(run_dir.path / "weights.csv", delimiter=",", names=True, skip_header=1)
    used = np.isfinite(table["logweight"])
    w = np.exp(table["logweight"][used] - table["logweight"][used].max())
    expected = w[table["ood"][used] > 0].sum() / w.sum()
    assert info["ood_weight"]["estimate"] == pytest.approx(expected) and 0 < expected < 1
    assert info["ood_weight"]["frames"] == pytest.approx(35 / 80) and info["ood_weight"]["microstates"] == {}
    assert f"{100 * expected:.2g} % of its weight" in info["warning"]


def test_no_equilibrium_frame_yet_is_said(tmp_path, caplog):
    """After round 0 alone every frame is kept out: frames_used 0 and a warning; none once a round is used."""
    run_dir = RunDir(tmp_path / "run")
    run_dir.write_plan(0, {"round": 0, "strategy": "unbiased", "segments": 1})
    run_dir.save_npz(run_dir.segment_file(0, 0), **_segment(np.linspace(-1, 1, 10), KIND_UNBIASED))
    frames = _frames(run_dir, ((0, 1),))
    x = frames["positions"][:, 0, 0].astype(float)
    log = logging.getLogger("latentbias.campaign.weights")
    log.addHandler(caplog.handler)
    try:
        caplog.set_level(logging.WARNING, logger="latentbias.campaign.weights")
        info = write_weights(run_dir, CampaignConfig(), 0, frames, lambda q: x[:, None])
        assert info["frames_used"] == 0 and info["frames_excluded"] == {EXCLUSIONS[1]: 10}
        assert "no frame is an equilibrium sample" in caplog.text
        caplog.clear()
        run_dir.write_plan(1, {"round": 1, "strategy": "metadynamics", "segments": 1, "variables": VARIABLES})
        run_dir.save_npz(run_dir.segment_file(1, 0), grid_end=np.zeros(81),
                         **_segment(np.linspace(-1, 1, 10), KIND_METAD))
        frames = _frames(run_dir, ((0, 1), (1, 1)))
        x = frames["positions"][:, 0, 0].astype(float)
        info = write_weights(run_dir, CampaignConfig(), 1, frames, lambda q: x[:, None])
        assert info["frames_used"] == 10
        assert "no frame is an equilibrium sample" not in caplog.text
    finally:
        log.removeHandler(caplog.handler)


# ------------------------------------------------------------------ issue 15, second sitting (helper kill15b)

def test_burn_in_cut_is_the_reported_burn_in_time(tmp_path):
    """The converge estimate uses exactly the frames at t ≥ t0 + burn_in_ps, burn_in_ps = burn_in · (t_max − t0)
    as weights.json reports it: 41 frames at t = 0..40 ps with burn-in 0.25 cut t < 10 ps (10 frames); the frame
    at t = 10 ps is the first one used."""
    frames = {"round": np.r_[np.zeros(5, int), np.ones(41, int)],
              "kind": np.r_[np.zeros(5, int), np.full(41, KIND_METAD)],
              "scale": np.ones(46), "time_ps": np.r_[np.arange(5.0), np.arange(41.0)]}
    plans = {0: {"strategy": "unbiased"}, 1: {"strategy": "metadynamics", "converge": True}}
    codes = frame_exclusions(frames, plans, burn_in=0.25)
    used_t = frames["time_ps"][codes == 0]
    assert used_t.min() == 0.25 * 40.0 and len(used_t) == 31
    assert np.count_nonzero(codes == 6) == 10


def test_a_converge_round_without_frames_reports_zero_time_and_sample_size(tmp_path):
    """A converge attempt that ended before committing a frame, with only round 0 (kept out) before it: no
    simulated time (converge_ps = burn_in_ps = 0), no used frame, so an effective sample size of 0."""
    run_dir = RunDir(tmp_path / "run")
    run_dir.write_plan(0, {"round": 0, "strategy": "unbiased", "segments": 1})
    run_dir.save_npz(run_dir.segment_file(0, 0), **_segment(np.linspace(-1, 1, 10), KIND_UNBIASED))
    run_dir.write_plan(1, {"round": 1, "strategy": "metadynamics", "segments": 1, "variables": VARIABLES,
                           "converge": True, "model_round": 0})
    run_dir.write_round_end(1, 0, "converged")
    frames = _frames(run_dir, ((0, 1),))
    x = frames["positions"][:, 0, 0].astype(float)
    config = CampaignConfig()
    config.converge.burn_in = 0.2
    info = write_weights(run_dir, config, 1, frames, lambda q: x[:, None])
    assert info["frames_used"] == 0
    assert info["converge_ps"] == 0.0 and info["burn_in_ps"] == 0.0 and info["ess"] == 0.0


def test_ood_fraction_at_the_retrain_threshold_is_not_warned_about(tmp_path):
    """The converge phase goes back to retraining only when a segment's OOD fraction exceeds [ood]
    retrain_fraction (campaign.converge); an estimate whose worst segment sits exactly at it (30/50 = 60 %) is
    one the campaign accepted, so it carries no OOD warning."""
    run_dir, frames = _converge_campaign(tmp_path, ood_fraction=0.6)
    x = frames["positions"][:, 0, 0].astype(float)
    config = CampaignConfig()
    config.ood.retrain_fraction = 0.6
    info = write_weights(run_dir, config, 3, frames, lambda q: x[:, None])
    assert info["converge_attempts"][-1]["max_segment_ood_fraction"] == 0.6
    assert "warning" not in info


def test_parallel_walker_frames_get_their_own_walkers_bias(tmp_path):
    """A parallel-walker metadynamics segment stores each walker's bias at its start and end: a frame of walker w
    is the static state ½ (V_w,start + V_w,end), read at the grid nodes (walker 0: v, 2v; walker 1: 3v, 5v)."""
    run_dir = RunDir(tmp_path / "run")
    grid = BiasGrid([LatentVariable(**VARIABLES[0])])
    nodes = grid.axes[0]
    v = 1.0 + 0.5 * nodes**2
    run_dir.write_plan(0, {"round": 0, "strategy": "unbiased", "segments": 1})
    run_dir.save_npz(run_dir.segment_file(0, 0), **_segment(np.zeros(4), KIND_UNBIASED))
    run_dir.write_plan(1, {"round": 1, "strategy": "metadynamics", "segments": 1, "variables": VARIABLES})
    seg = _segment(np.linspace(-0.5, 0.5, 6), KIND_METAD)
    seg["walker"] = np.array([0, 1, 0, 1, 0, 1])
    run_dir.save_npz(run_dir.segment_file(1, 0), grid_end=2 * v, walker_grid_start=np.stack([v, 3 * v]),
                     walker_grid_end=np.stack([2 * v, 5 * v]), **seg)
    frames = _frames(run_dir, ((0, 1), (1, 1)))
    states, state_of = bias_states(frames, run_dir, CampaignConfig())
    assert np.all(state_of[:4] == -1)
    for n, expected in ((4, 1.5 * v), (5, 4.0 * v), (8, 1.5 * v), (9, 4.0 * v)):
        np.testing.assert_allclose(states[state_of[n]].energy(nodes[:, None]), expected, rtol=1e-12)
    assert state_of[4] != state_of[5]


def test_n_states_counts_the_distinct_bias_states_of_used_frames(tmp_path):
    """Cross-round MBAR after round 1: round 0 is kept out; round 1 holds unbiased frames (state 0, used) and two
    metadynamics segments: 3 distinct states of used frames (excluded frames are in none)."""
    run_dir = RunDir(tmp_path / "run")
    v = np.zeros(81)
    run_dir.write_plan(0, {"round": 0, "strategy": "unbiased", "segments": 1})
    run_dir.save_npz(run_dir.segment_file(0, 0), **_segment(np.linspace(-1, 1, 6), KIND_UNBIASED))
    run_dir.write_plan(1, {"round": 1, "strategy": "metadynamics", "segments": 3, "variables": VARIABLES})
    run_dir.save_npz(run_dir.segment_file(1, 0), grid_end=v, **_segment(np.linspace(-1, 1, 6), KIND_UNBIASED))
    for k in (1, 2):
        run_dir.save_npz(run_dir.segment_file(1, k), grid_end=v + k, **_segment(np.linspace(-1, 1, 6), KIND_METAD))
    frames = _frames(run_dir, ((0, 1), (1, 3)))
    x = frames["positions"][:, 0, 0].astype(float)
    info = write_weights(run_dir, CampaignConfig(), 1, frames, lambda q: x[:, None])
    assert info["frames_used"] == 18 and info["n_states"] == 3
