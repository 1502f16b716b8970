"""Issue 9 (integrity, audit row 10): a run directory created by this version stores its format, and a record
without a checksum there (the checksum key removed from a JSON record, the checksum array from an .npz, a
checkpoint's chk_K.json deleted) is refused naming the file and the fix; run directories of earlier versions (no
format stored) read such records with a warning naming them, so they stay resumable."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from latentbias.campaign import Campaign, RunDirError, load_config
from latentbias.campaign.rundir import RunDir
from latentbias.campaign.rundirformat import FORMAT_KEY, RUNDIR_FORMAT
from latentbias.io import JSON_CHECKSUM_KEY, NPZ_CHECKSUM_KEY, load_json, load_npz, write_json

from test_campaign_extend import resume_round_2_after_segment_0
from test_campaign_rundir import copy, finished  # noqa: F401 (fixtures: a finished toy campaign and a private copy)
from test_issue9_records import older_version, tree_digest, without_checksum


def strip_npz_checksum(path: Path) -> None:
    """Rewrite an .npz record with the same arrays and no checksum array."""
    arrays = load_npz(path)
    np.savez(path, **arrays)
    with np.load(path) as f:
        assert NPZ_CHECKSUM_KEY not in f.files


def _strip(run: Path, name: str) -> None:
    path = run / name
    if name.endswith(".npz"):
        strip_npz_checksum(path)
    elif name.endswith("end.json"):
        path.unlink()
    else:
        without_checksum(path, lambda d: None)
        assert JSON_CHECKSUM_KEY not in json.loads(path.read_text())


# record -> how the campaign reads it (config path, run directory)
READERS = {
    "progress.json": lambda c, run: Campaign(load_config(c), run, progress=False).run(),
    "config.json": lambda c, run: Campaign(load_config(c), run, progress=False),
    "round_002/plan.json": lambda c, run: Campaign(load_config(c), run, progress=False).all_frames(2),
    "round_001/model.json": lambda c, run: Campaign(load_config(c), run, progress=False).model(1),
    "weights.json": lambda c, run: RunDir(run).read_json(run / "weights.json"),  # as `latentbias report` reads it
    "round_002/end.json": lambda c, run: RunDir(run).round_segments(2),
    "round_002/bias_00001.json": lambda c, run: RunDir(run).check_bias_state(run / "round_002" / "bias_00001"),
    "round_001/seg_00001.npz": lambda c, run: Campaign(load_config(c), run, progress=False).all_frames(2),
    "round_002/initial_bias.npz": lambda c, run: Campaign(load_config(c), run, progress=False).initial_bias(2),
    "round_001/model_state.npz": lambda c, run: RunDir(run).read_npz(run / "round_001" / "model_state.npz"),
}


def _prepare(run: Path, name: str) -> None:
    if name.endswith("end.json"):  # a round that ended early (OOD): written by the campaign with a checksum
        RunDir(run).write_round_end(2, 1, "ood")
        without_checksum(run / name, lambda d: None)
    else:
        _strip(run, name)


def test_a_new_run_directory_stores_its_format_and_readers_never_see_it(finished):
    config, run = finished
    raw = load_json(run / "config.json")
    assert raw[FORMAT_KEY] == RUNDIR_FORMAT == RunDir(run).format_version() == 2
    stored = RunDir(run).stored_config()
    assert FORMAT_KEY not in stored and stored == RunDir(run).read_config()
    assert stored == json.loads(json.dumps(Campaign(load_config(config), run, progress=False).cfg.to_dict()))


def test_rewriting_the_config_keeps_the_format_a_directory_has(copy, tmp_path):
    """Extending a run directory rewrites config.json (campaign.extend): a directory of an earlier version must
    stay one (its records may lack checksums), a current one stays current, a new one gets the current format."""
    _, run = copy
    rd = RunDir(run)
    cfg = rd.stored_config()
    rd.write_config({**cfg, "campaign": {**cfg["campaign"], "rounds": 4}})
    assert rd.format_version() == RUNDIR_FORMAT and rd.stored_config()["campaign"]["rounds"] == 4
    older_version(run)
    rd.write_config(cfg)
    assert rd.format_version() is None and FORMAT_KEY not in load_json(run / "config.json")
    fresh = RunDir(tmp_path / "fresh")
    fresh.write_config(cfg)
    assert fresh.format_version() == RUNDIR_FORMAT


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_record_without_a_checksum_is_refused_in_a_run_directory_of_this_version(copy, name):
    config, run = copy
    _prepare(run, name)
    before = tree_digest(run)
    what = r"checksum \(__sha256__ array\)" if name.endswith(".npz") else r"checksum \(__sha256__ key\)"
    with pytest.raises(RunDirError, match=rf"{name} carries no {what}, but .*created by a latentbias version that "
                                          r"writes one for every record \(run-directory format 2, stored in "
                                          r".*config\.json\).*edited by hand or replaced.*restore it from a backup, "
                                          r"or start the campaign again in a new --rundir") as err:
        READERS[name](config, run)
    assert str(err.value).count("new --rundir") == 1  # the fix once, not repeated by each wrapper
    assert tree_digest(run) == before


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_record_without_a_checksum_is_read_with_a_warning_in_an_older_run_directory(copy, name, caplog):
    config, run = copy
    older_version(run)
    _prepare(run, name)
    with caplog.at_level(logging.WARNING, logger="latentbias"):
        READERS[name](config, run)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and name in r.getMessage()]
    assert warned and "carries no checksum" in warned[0] and "read unverified" in warned[0], warned


def test_a_checkpoint_without_its_checksum_record_is_refused_in_a_run_directory_of_this_version(copy):
    _, run = copy
    rd = RunDir(run)
    meta = run / "round_002" / "chk_00001.json"
    assert rd.read_checkpoint(2, 1, "Reference")[0] == "checkpoint"
    meta.unlink()
    with pytest.raises(RunDirError, match=r"round_002/chk_00001\.chk carries no checksum record \(chk_00001\.json "
                                          r"is missing\).*run-directory format 2.*restore chk_00001\.json from a "
                                          r"backup, or start the campaign again in a new --rundir"):
        rd.read_checkpoint(2, 1, "Reference")
    older_version(run)  # an older directory: loaded with a warning (test_issue9_records.py)
    assert rd.read_checkpoint(2, 1, "Reference")[1] == (run / "round_002" / "chk_00001.chk").read_bytes()


def test_a_resumed_round_refuses_a_bias_state_without_a_checksum(copy):
    """The campaign's own resume path: round 2 (metadynamics) resumed after segment 0, whose bias state record
    lost its checksum key (the state of segment 1 used as segment 0's, as in test_campaign_extend)."""
    config, run = copy
    resume_round_2_after_segment_0(run)
    without_checksum(run / "round_002" / "bias_00000.json", lambda d: None)
    with pytest.raises(RunDirError, match=r"round 2: the bias state after segment 0 cannot be restored \(.*"
                                          r"bias_00000\.json carries no checksum.*run-directory format 2"):
        Campaign(load_config(config), run, progress=False).run()
    assert not (run / "round_002" / "seg_00002.npz").exists()


def test_config_json_without_its_checksum_is_refused_but_not_a_hand_downgraded_one(copy, caplog):
    """The documented limit: the format lives in config.json, so removing both the checksum and the format key from
    config.json makes the directory an older one, read with a warning naming config.json."""
    config, run = copy
    without_checksum(run / "config.json", lambda d: d.pop(FORMAT_KEY))
    with caplog.at_level(logging.WARNING, logger="latentbias"):
        Campaign(load_config(config), run, progress=False)
    assert any("config.json carries no checksum" in r.getMessage() for r in caplog.records)
