"""Runs that can grow and move (issue 9 item 4): extending a finished campaign, moving it to another platform,
refusing changes that would invalidate completed work (naming the key), dry-building a configuration before
round 0, and the integrity checks of the run-directory records and checkpoints."""

from __future__ import annotations

import copy as copy_module
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from latentbias.campaign import Campaign, ConfigError, RunDirError, load_config
from latentbias.campaign.extend import ConfigChangeError, assess_change
from latentbias.campaign.rundir import RunDir
from latentbias.io import JSON_CHECKSUM_KEY, ChecksumError, load_json, write_json

from campaign_toy import toy_config_text, write_toy_system

SMALL = dict(rounds=3, steps=2000, round0=2000, checkpoint=1000)  # metadynamics, 2 segments per round


def write_config(folder: Path, text: str, name: str = "toy.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "system.xml").is_file():
        write_toy_system(folder)
    (folder / name).write_text(text)
    return folder / name


def small(**kw) -> str:
    return toy_config_text(**{**SMALL, **kw})


def run(config: Path, rundir: Path) -> dict:
    return Campaign(load_config(config), rundir, progress=False).run()


def segments(rundir: Path) -> dict[str, str]:
    """SHA-256 of every committed segment, by path relative to the run directory."""
    return {str(p.relative_to(rundir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(rundir.glob("round_*/seg_*.npz"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(folder with system files, run directory) of a finished 3-round metadynamics campaign (do not modify)."""
    folder = tmp_path_factory.mktemp("finished")
    config = write_config(folder, small())
    run(config, folder / "run")
    return folder, folder / "run"


@pytest.fixture
def copy(finished, tmp_path):
    """A private copy of the finished campaign: (folder for config files, run directory)."""
    folder, rundir = finished
    for name in ("system.xml", "start.pdb"):
        shutil.copy(folder / name, tmp_path / name)
    shutil.copytree(rundir, tmp_path / "run")
    return tmp_path, tmp_path / "run"


def resume_round_2_after_segment_0(rundir: Path) -> None:
    """Make a finished 3-round campaign look interrupted after segment 0 of round 2: progress.json says so, and the
    checkpoint and bias state of segment 1 stand in for segment 0's (deleted when segment 1 was committed)."""
    write_json(rundir / "progress.json", {"round": 2, "phase": "simulate", "segments": 1, "finished": False},
               checksum=True)
    for suffix in (".chk", ".xml", ".json"):
        shutil.copy(rundir / "round_002" / f"chk_00001{suffix}", rundir / "round_002" / f"chk_00000{suffix}")
    for suffix in (".npz", ".json"):
        shutil.copy(rundir / "round_002" / f"bias_00001{suffix}", rundir / "round_002" / f"bias_00000{suffix}")


class Interrupt(Exception):
    pass


def run_until(monkeypatch, config: Path, rundir: Path, r: int, k: int) -> None:
    """Run the campaign and stop it right after segment k of round r is committed (as a kill would)."""
    original = RunDir.commit_segment

    def commit(self, rr, kk, *args, **kwargs):
        original(self, rr, kk, *args, **kwargs)
        if (rr, kk) == (r, k):
            raise Interrupt

    monkeypatch.setattr(RunDir, "commit_segment", commit)
    with pytest.raises(Interrupt):
        run(config, rundir)
    monkeypatch.setattr(RunDir, "commit_segment", original)


# ------------------------------------------------------------------------------------------------ growing

def test_finished_campaign_extended_by_a_round_equals_the_longer_campaign(copy, tmp_path):
    folder, rundir = copy
    before = segments(rundir)
    assert len(before) == 6
    progress = run(write_config(folder, small(rounds=4)), rundir)
    assert progress == {"round": 3, "phase": "done", "segments": 0, "finished": True}
    after = segments(rundir)
    assert {k: after[k] for k in before} == before  # completed rounds untouched, byte for byte
    assert len(after) == 8 and (rundir / "round_003" / "model.pt").is_file()
    # ... and the continuation is the campaign that would have run with rounds = 4 from the start
    straight = tmp_path / "straight"
    run(write_config(folder, small(rounds=4), "four.toml"), straight)
    assert segments(straight) == after
    assert load_json(rundir / "config.json")["campaign"]["rounds"] == 4
    history = load_json(rundir / "config_changes.json")["changes"]
    assert [k["key"] for k in history[-1]["keys"]] == ["[campaign] rounds"]
    assert "rounds 0-3" in history[-1]["keys"][0]["effect"]
    assert "configuration change [campaign] rounds = 3 -> 4" in (rundir / "campaign.log").read_text()


def test_longer_rounds_take_effect_in_the_added_round_and_leave_completed_segments_untouched(copy, tmp_path):
    """Issue 9 item 4b end to end: a finished 3-round campaign given one more round and twice the steps per round.
    The completed rounds keep their segments byte for byte, the new round (the first planned after the change)
    runs twice the segments, and the change is recorded with both keys."""
    folder, rundir = copy
    before = segments(rundir)
    longer = small(rounds=4, steps=4000)
    progress = run(write_config(folder, longer), rundir)
    assert progress == {"round": 3, "phase": "done", "segments": 0, "finished": True}
    after = segments(rundir)
    assert {k: after[k] for k in before} == before
    new = sorted(k for k in after if k.startswith("round_003/"))
    assert len(new) == 4  # 4000 steps / checkpoint 1000 (the completed rounds have 2 each)
    assert load_json(rundir / "round_003" / "plan.json")["segments"] == 4
    history = load_json(rundir / "config_changes.json")["changes"][-1]["keys"]
    assert sorted(k["key"] for k in history) == ["[campaign] rounds", "[campaign] steps_per_round"]


def test_converge_phase_added_to_a_finished_campaign_and_its_budget_grown(finished, copy, tmp_path):
    folder, rundir = copy
    text = small(converge_steps=2000).replace("min_steps = 1000", "min_steps = 2000")
    progress = run(write_config(folder, text), rundir)
    assert progress["finished"] and progress["round"] == 3
    plan = load_json(rundir / "round_003" / "plan.json")
    assert plan["converge"] and plan["segments"] == 2
    first = segments(rundir)
    # the budget spent, the converge phase continues from its last checkpoint to the larger one
    bigger = small(converge_steps=4000).replace("min_steps = 2000", "min_steps = 4000")
    progress = run(write_config(folder, bigger), rundir)
    assert progress == {"round": 3, "phase": "done", "segments": 0, "finished": True}
    grown = segments(rundir)
    assert {k: grown[k] for k in first} == first and len(grown) == len(first) + 2
    assert load_json(rundir / "round_003" / "plan.json")["segments"] == 4
    # identical to a converge phase given the larger budget at once
    straight = tmp_path / "straight"
    shutil.copytree(finished[1], straight)
    run(write_config(folder, bigger, "bigger.toml"), straight)
    assert segments(straight) == grown
    # the rounds cannot change around a converge phase that has run
    with pytest.raises(ConfigChangeError, match=r"\[campaign\] rounds = 3 -> 4: would invalidate the converge phase "
                                                r"\(round 3\)"):
        run(write_config(folder, small(rounds=4, converge_steps=4000).replace("min_steps = 2000",
                                                                              "min_steps = 4000")), rundir)


# ------------------------------------------------------------------------------------------------- moving

def test_interrupted_round_moves_to_another_platform(copy, monkeypatch):
    folder, rundir = copy
    config = write_config(folder, small(rounds=4))
    run_until(monkeypatch, config, rundir, 3, 0)
    meta = load_json(rundir / "round_003" / "chk_00000.json")
    assert meta["platform"] == "Reference" and (rundir / "round_003" / "chk_00000.xml").is_file()
    seg0 = segments(rundir)["round_003/seg_00000.npz"]
    moved = write_config(folder, small(rounds=4).replace('platform = "Reference"', 'platform = "CPU"'))
    progress = run(moved, rundir)
    assert progress["finished"] and progress["round"] == 3
    log = (rundir / "campaign.log").read_text()
    assert "continues on the CPU platform from the platform-independent state" in log
    assert "[md] platform = 'Reference' -> 'CPU': the rest of the campaign runs with it; round 3 continues" in log
    after = segments(rundir)
    assert after["round_003/seg_00000.npz"] == seg0 and len(after) == 8
    from latentbias.io import load_npz

    s0, s1 = (load_npz(rundir / "round_003" / f"seg_0000{k}.npz") for k in (0, 1))
    assert s1["step"][0] == s0["step"][-1] + 100  # the step count continues across the move
    assert load_json(rundir / "round_003" / "chk_00001.json")["platform"] == "CPU"


# ----------------------------------------------------------------------------------------------- refusing

def test_incompatible_changes_are_refused_naming_the_key_and_change_nothing(copy):
    from latentbias.cli import main

    folder, rundir = copy
    stored = {p: (rundir / p).read_bytes() for p in ("config.json", "progress.json")}
    text = small(rounds=4).replace('kind = ["distances"]', 'kind = ["contacts"]').replace(
        "temperature = 300.0", "temperature = 310.0")
    config = write_config(folder, text)
    with pytest.raises(ConfigChangeError) as err:
        Campaign(load_config(config), rundir, progress=False)
    msg = str(err.value)
    assert "different configuration" in msg and "new --rundir" in msg
    assert "[features] kind = ['distances'] -> ['contacts']: would invalidate the models of rounds 0-2" in msg
    assert "[md] temperature = 300.0 -> 310.0: would invalidate the frames of rounds 0-2" in msg
    assert "[campaign] rounds" not in msg  # the acceptable part of the change is not listed
    with pytest.raises(SystemExit, match=r"(?s)error: .*\[features\] kind"):
        main(["run", str(config), "--rundir", str(rundir), "--quiet"])
    assert {p: (rundir / p).read_bytes() for p in stored} == stored
    assert not (rundir / "round_003").exists()


def _with(d: dict, section: str, key: str, value) -> dict:
    out = copy_module.deepcopy(d)
    out.setdefault(section, {})[key] = value
    return out


def test_rules_for_each_kind_of_change(copy):
    """Which changes a finished (or part-way) 3-round metadynamics campaign accepts, and the work each refused one
    would invalidate."""
    _, rundir = copy
    rd = RunDir(rundir)
    old = rd.stored_config()

    def verdict(new: dict) -> str:
        try:
            ext = assess_change(rd, old, new)
        except ConfigChangeError as exc:
            return "refused: " + str(exc)
        return "accepted: " + json.dumps(ext.effects)

    accepted = {("md", "platform"): "CPU", ("md", "platform_properties"): {"Threads": "1"},
                ("model", "epochs"): 5, ("campaign", "steps_per_round"): 4000, ("metadynamics", "height"): 2.0,
                ("metadynamics", "sigma"): 0.2, ("frontier", "n_targets"): 3, ("ood", "threshold"): 5.0,
                ("converge", "tolerance"): 0.1, ("campaign", "rounds"): 5}
    for (section, key), value in accepted.items():
        assert verdict(_with(old, section, key, value)).startswith("accepted"), (section, key)
    assert "rounds planned from round 3 on" in verdict(_with(old, "campaign", "steps_per_round", 4000))

    refused = [
        ("metadynamics", "wall_force_constant", 10.0, r"frames of rounds 1-2 \(metadynamics\).*log-weights"),
        ("campaign", "rounds", 2, r"rounds 0-2, planned already \(keep \[campaign\] rounds >= 3\)"),
        ("campaign", "strategy", ["frontier"], r"round 1 \(planned and run as 'metadynamics'\), round 2"),
        ("model", "hidden", [8], r"warm start of the next model from the model of round 2"),
        ("campaign", "round0_steps", 4000, r"round 0, planned with the old value"),
        ("campaign", "save_interval", 200, r"frames of rounds 0-2"),
        ("walkers", "count", 2, r"\[walkers\] count = None -> 2: would invalidate the frames of rounds 0-2"),
    ]
    for section, key, value, pattern in refused:
        v = verdict(_with(old, section, key, value))
        assert v.startswith("refused") and f"[{section}] {key}" in v, (section, key, v)
        assert __import__("re").search(pattern, v), (section, key, v)
    no_warm = _with(_with(old, "model", "hidden", [8]), "model", "warm_start", False)
    assert verdict(no_warm).startswith("accepted")
    # a run directory of a version without some key resumes when the key holds its default (as it behaved)
    older = copy_module.deepcopy(old)
    del older["ood"]["min_frames"], older["opes"]
    rd.write_json(rd.config_file, older)
    assert assess_change(rd, older, old).changes == []
    changed = assess_change(rd, older, _with(old, "ood", "min_frames", 5)).changes
    assert [str(c) for c in changed] == ["[ood] min_frames = None -> 5"]
    rd.write_json(rd.config_file, old)

    # part-way through round 2 (metadynamics): its bias settings are fixed, planning keys still free
    write_json(rundir / "progress.json", {"round": 2, "phase": "simulate", "segments": 1, "finished": False},
               checksum=True)
    v = verdict(_with(old, "metadynamics", "height", 2.0))
    assert "[metadynamics] height = 1.5 -> 2.0: would invalidate round 2 (metadynamics), 1 segment(s)" in v
    assert "refused" in verdict(_with(old, "campaign", "checkpoint_interval", 2000))
    assert "refused" in verdict(_with(old, "ood", "action", "off"))
    assert verdict(_with(old, "metadynamics", "margin", 0.5)).startswith("accepted")
    assert verdict(_with(old, "md", "platform", "CPU")).startswith("accepted")


# --------------------------------------------------------------------------------------------- dry build

@pytest.mark.parametrize("edit, match", [
    (("grid_points = 50", "grid_points = 2"), r"\[metadynamics\].*gridWidth must be at least 4"),
    (('selection = "all"', 'selection = "name XX"'), r"\[features\] kind / selection.*matched no atoms"),
])
def test_config_that_cannot_work_is_refused_before_round_0(tmp_path, edit, match):
    from latentbias.cli import main

    config = write_config(tmp_path, small().replace(*edit))
    with pytest.raises(ConfigError, match=match) as err:
        run(config, tmp_path / "run")
    assert "nothing was run" in str(err.value)
    assert not (tmp_path / "run" / "progress.json").exists() and not (tmp_path / "run" / "config.json").exists()
    assert not list((tmp_path / "run").glob("round_*"))
    with pytest.raises(SystemExit, match=match):
        main(["run", str(config), "--rundir", str(tmp_path / "run"), "--quiet"])


def test_a_change_that_cannot_work_is_refused_before_it_is_applied(copy):
    folder, rundir = copy
    stored = (rundir / "config.json").read_bytes()
    with pytest.raises(ConfigError, match=r"\[metadynamics\].*gridWidth must be at least 4"):
        run(write_config(folder, small(rounds=4).replace("grid_points = 50", "grid_points = 3")), rundir)
    assert (rundir / "config.json").read_bytes() == stored and not (rundir / "round_003").exists()


@pytest.mark.parametrize("edit, match", [
    (("hidden = [16, 16]", "hidden = [0]"), r"\[model\] hidden must list the widths .* got \[0\]"),
    (("height = 1.5", "height = inf"), r"\[metadynamics\] height must be a finite number, got inf"),
    (("sigma = 0.08", "sigma = nan"), r"\[metadynamics\] sigma must be a finite number"),
])
def test_values_that_cannot_work_are_refused_by_the_config(tmp_path, edit, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write_config(tmp_path, small().replace(*edit)))


# --------------------------------------------------------------------------------------------- integrity

@pytest.mark.parametrize("name", ["progress.json", "config.json", "round_001/plan.json", "round_001/model.json",
                                  "weights.json", "round_002/end.json"])
def test_json_records_carry_a_checksum_verified_on_load(copy, name):
    _, rundir = copy
    path = rundir / name
    if name.endswith("end.json"):
        RunDir(rundir).write_round_end(2, 2, "ood")
    raw = json.loads(path.read_text())
    assert JSON_CHECKSUM_KEY in raw
    key = next(k for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)
               and k != JSON_CHECKSUM_KEY) if name != "config.json" else None
    if key is None:
        raw["md"]["temperature"] = 301.0
    else:
        raw[key] += 1  # a plausible value, valid JSON, the old checksum
    path.write_text(json.dumps(raw))
    with pytest.raises(RunDirError, match=rf"{name}: its content does not match the checksum.*new --rundir"):
        RunDir(rundir).read_json(path)


def test_load_json_names_the_file_and_accepts_records_without_checksum(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1}, checksum=True)
    assert load_json(tmp_path / "a.json") == {"x": 1}
    (tmp_path / "b.json").write_text('{"x": 1}')
    assert load_json(tmp_path / "b.json") == {"x": 1}
    (tmp_path / "c.json").write_text('{"x": ')
    with pytest.raises(ValueError, match=r"c\.json is not valid JSON"):
        load_json(tmp_path / "c.json")
    (tmp_path / "a.json").write_text((tmp_path / "a.json").read_text().replace('"x": 1', '"x": 2'))
    with pytest.raises(ChecksumError, match=r"a\.json: its content does not match"):
        load_json(tmp_path / "a.json")


def test_checkpoints_are_verified_and_readable_on_another_platform(copy):
    _, rundir = copy
    rd = RunDir(rundir)
    kind, data = rd.read_checkpoint(2, 1, "Reference")
    assert kind == "checkpoint" and data == (rundir / "round_002" / "chk_00001.chk").read_bytes()
    kind, data = rd.read_checkpoint(2, 1, "CPU")
    assert kind == "state" and data.startswith(b"<?xml") and b"<Velocities>" in data
    chk = rundir / "round_002" / "chk_00001.chk"
    damaged = bytearray(chk.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    chk.write_bytes(bytes(damaged))
    with pytest.raises(RunDirError, match=r"round_002/chk_00001\.chk does not match the SHA-256 stored in "
                                          r".*chk_00001\.json"):
        rd.read_checkpoint(2, 1, "Reference")


def test_damaged_bias_state_names_the_file_and_what_to_do(copy):
    """A resumed round whose saved bias state is damaged stops with the file and a fix that exists (the older
    states are gone: the message must not send the user to them)."""
    folder, rundir = copy
    config = write_config(folder, small())
    resume_round_2_after_segment_0(rundir)  # then damage segment 0's bias state JSON
    meta = rundir / "round_002" / "bias_00000.json"
    meta.write_text(meta.read_text().replace('"numDeposits": ', '"numDeposits": 1'))
    with pytest.raises(RunDirError, match=r"round 2: the bias state after segment 0 cannot be restored .*"
                                          r"bias_00000\.json.*checksum.*backup"):
        run(config, rundir)
