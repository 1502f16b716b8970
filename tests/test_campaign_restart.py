"""The converge phase goes back to exploration when its frozen encoder meets a region it was never trained on.

Toy: the 2-D three-well toy (tests/campaign_toy.py) with no exploration round at all — the encoder frozen for the
converge phase is round 0's, trained on well A only. OPES in that encoder leaves well A within the first segments;
the frames it reaches are out of the encoder's training distribution, so the attempt must end, the encoder retrain
on everything so far, and a second converge attempt in the retrained encoder give the final estimate, from its own
frames only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latentbias.campaign import Campaign, load_config
from latentbias.campaign.weights import EXCLUSIONS

from campaign_toy import nearest_well, toy_config_text, write_toy_system

CONVERGE_STEPS = 60000
CHECKPOINT = 2000


def _table(path: Path) -> dict[str, np.ndarray]:
    header = path.read_text().splitlines()[1].split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=2, ndmin=2)
    return {h: data[:, i] for i, h in enumerate(header)}


@pytest.fixture(scope="module")
def restarted_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("restart")
    write_toy_system(folder)
    text = toy_config_text(rounds=1, converge_steps=CONVERGE_STEPS, checkpoint=CHECKPOINT,
                           extra="\n[ood]\nmin_frames = 50\n")
    # converge frames every 50 steps (exploration: every 100)
    (folder / "toy.toml").write_text(text.replace("tolerance = 0.3", "tolerance = 0.3\nsave_interval = 50\nrestarts = 1"))
    campaign = Campaign(load_config(folder / "toy.toml"), folder / "run", progress=False)
    campaign.run()
    return campaign, folder / "run"


def test_converge_attempt_in_a_stale_encoder_goes_back_to_retraining(restarted_run):
    campaign, rundir = restarted_run
    first, final = 1, campaign.converge_round
    assert final == first + 1 == campaign.last_round
    end = json.loads((rundir / "round_001" / "end.json").read_text())
    assert end["reason"] == "ood"
    frames = campaign.all_frames(final)
    seg = frames["segment"][frames["round"] == first]
    ood = frames["ood"][frames["round"] == first].astype(bool)
    assert ood[seg == seg.max()].mean() > campaign.cfg.ood.retrain_fraction  # why it ended, from the frames
    # the frames that triggered it are away from well A, the only region the round-0 encoder saw
    xy = frames["positions"][:, 0, :2].astype(float)
    wells = nearest_well(xy)
    assert (wells[frames["round"] == first][ood] != "A").any()
    # it was trained on like an exploration round, and the next attempt uses that encoder, with the budget left
    assert (rundir / "round_001" / "model.pt").is_file()
    plan = json.loads((rundir / "round_002" / "plan.json").read_text())
    assert plan["converge"] and plan["model_round"] == first and plan["attempt"] == 1
    assert plan["restart_segments"] == 0  # [converge] restarts = 1: no second restart
    used_steps = sum(campaign.run_dir.round_segments(r) for r in (first, final)) * CHECKPOINT
    assert used_steps <= CONVERGE_STEPS  # the attempts share the budget
    progress = json.loads((rundir / "progress.json").read_text())
    assert progress["finished"] and progress["round"] == final
    # [converge] save_interval = 50: twice the frames of [campaign] save_interval = 100 per segment, 0.2 ps apart
    for r, per_segment in ((0, CHECKPOINT // 100), (first, CHECKPOINT // 50), (final, CHECKPOINT // 50)):
        n = int(np.count_nonzero(frames["round"] == r))
        assert n == per_segment * campaign.run_dir.round_segments(r)
    np.testing.assert_allclose(np.diff(frames["time_ps"][frames["round"] == final]), 50 * 0.004)


def test_final_estimate_uses_the_last_attempt_only_and_says_why(restarted_run):
    campaign, rundir = restarted_run
    table = _table(rundir / "weights.csv")
    used = np.isfinite(table["logweight"])
    assert used.any() and set(table["round"][used].astype(int)) == {campaign.converge_round}
    code = {v: k for k, v in EXCLUSIONS.items()}
    first = table["round"] == 1
    assert np.all(table["excluded"][first] == code["converge-restarted"]) and not used[first].any()
    np.testing.assert_array_equal(used, table["excluded"] == 0)
    info = json.loads((rundir / "weights.json").read_text())
    attempts = info["converge_attempts"]
    assert [a["round"] for a in attempts] == [1, 2]
    assert [a["in_estimate"] for a in attempts] == [False, True]
    assert attempts[0]["ended"].startswith("retrain") and attempts[1]["model_round"] == 1
    assert info["frames_excluded"]["converge-restarted"] == int(first.sum())
    assert "round 2" in info["frames_used_why"]
    if attempts[1]["max_segment_ood_fraction"] > 0.2:  # a stale final encoder is said so, never silently used
        assert "out-of-distribution" in info["warning"]
    else:  # (a converge phase that the budget ended before min_round_trips warns about that, not about OOD)
        assert "out-of-distribution" not in info.get("warning", "")
    # run-directory contract: every frame of every round in frames.csv (with its final log-weight) beside its DCD
    import mdtraj as md

    for r in range(campaign.last_round + 1):
        d = rundir / f"round_{r:03d}"
        rows = _table(d / "frames.csv")
        traj = md.load(str(d / "frames.dcd"), top=str(d / "topology.pdb"))
        assert len(rows["step"]) == len(traj) == int((table["round"] == r).sum())
        np.testing.assert_array_equal(rows["logweight"], table["logweight"][table["round"] == r])
    # the retrained encoder's converge attempt samples all three wells
    frames = campaign.all_frames(campaign.last_round)
    wells = nearest_well(frames["positions"][:, 0, :2].astype(float))[frames["round"] == campaign.converge_round]
    assert {"A", "B", "C"} <= set(wells)


def test_no_restart_when_disabled(tmp_path):
    """``[converge] restarts = 0``: the converge phase runs in the stale encoder to its end (the old behaviour)."""
    write_toy_system(tmp_path)
    (tmp_path / "toy.toml").write_text(toy_config_text(
        rounds=1, converge_steps=20000, checkpoint=CHECKPOINT,
        extra="\n[ood]\nmin_frames = 50\n").replace("tolerance = 0.3", "tolerance = 0.3\nrestarts = 0"))
    campaign = Campaign(load_config(tmp_path / "toy.toml"), tmp_path / "run", progress=False)
    campaign.run()
    assert campaign.converge_round == campaign.last_round == 1
    end = campaign.run_dir.round_end(1)
    assert end is None or end["reason"] != "ood"
    assert json.loads((tmp_path / "run" / "round_001" / "plan.json").read_text())["restart_segments"] == 0
    info = json.loads((tmp_path / "run" / "weights.json").read_text())  # the stale encoder is reported
    assert info["converge_attempts"][0]["max_segment_ood_fraction"] > 0.2 and "may be biased" in info["warning"]
