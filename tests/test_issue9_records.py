"""Issue 9: run-directory and bias-state records that are missing or incomplete give errors naming the file, the
key or value and the fix, never a bare KeyError or a silently different run (regression tests for the Why's
"deleted config.json" and "bias.json/plan.json KeyError" reproducers)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from latentbias.bias import LatentMetadynamics, LatentOPES, LatentVariable
from latentbias.campaign import Campaign, RunDirError, load_config
from latentbias.campaign.rundir import RunDir
from latentbias.campaign.rundirformat import FORMAT_KEY
from latentbias.io import load_json, load_npz, require_choice, require_keys, write_json

from test_campaign_rundir import copy, finished  # noqa: F401 (fixtures: a finished toy campaign and a private copy)
from toy import DOUBLE_WELL_1D, identity_model, particle_simulation, particle_system


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("campaign.log", "run.lock")}


def without_checksum(path: Path, edit) -> None:
    """Rewrite a JSON record with ``edit`` applied and no checksum key (as a hand edit, or an older version)."""
    data = load_json(path)
    edit(data)
    path.write_text(json.dumps(data))


def edited(path: Path, edit) -> None:
    """Rewrite a JSON record with ``edit`` applied and a valid checksum (a record as another version wrote it)."""
    data = load_json(path)
    edit(data)
    write_json(path, data, checksum=True)


def older_version(run: Path) -> None:
    """Make ``run`` a run directory of a version before run-directory formats (config.json without the format)."""
    edited(run / "config.json", lambda d: d.pop(FORMAT_KEY))


# ------------------------------------------------------------------------------------------ config.json

@pytest.mark.parametrize("seed", [None, 7])
def test_deleted_config_json_is_refused_naming_the_evidence_and_changes_nothing(copy, seed):
    """With config.json gone, neither another temperature nor a newly drawn seed may continue the rounds."""
    config, run = copy
    (run / "config.json").unlink()
    text = Path(config).read_text()
    assert "temperature = 300.0" in text and "seed = 9" in text
    text = text.replace("temperature = 300.0", "temperature = 310.0")
    text = text.replace("seed = 9", "" if seed is None else f"seed = {seed}")
    changed = Path(config).with_name("changed.toml")
    changed.write_text(text)
    before = tree_digest(run)
    with pytest.raises(RunDirError, match=r"config\.json is missing but .* already holds a campaign: found "
                                          r"progress\.json \(round 2, phase done\), round_000/ \(\d+ files, 2 "
                                          r"segment\(s\)\).*nothing was changed.*Restore config\.json.*new --rundir"):
        Campaign(load_config(changed), run, progress=False).run()
    assert tree_digest(run) == before and not (run / "config.json").exists()


def test_deleted_config_json_of_an_interrupted_round_is_refused(copy):
    """Rounds without progress.json or with only a plan still count as earlier work."""
    config, run = copy
    (run / "config.json").unlink()
    (run / "progress.json").unlink()
    for d in ("round_001", "round_002"):
        shutil.rmtree(run / d)
    with pytest.raises(RunDirError, match=r"found round_000/ \(\d+ files, 2 segment\(s\)\)"):
        Campaign(load_config(config), run, progress=False)


def test_a_new_run_directory_has_no_evidence_and_no_stored_config(tmp_path):
    rd = RunDir(tmp_path / "new")
    (tmp_path / "new" / "round_000").mkdir()  # an empty round folder is not work
    assert rd.work_evidence() == [] and rd.stored_config() is None


# ------------------------------------------------------------------------------------------- plan.json

def test_unknown_plan_strategy_names_the_file_the_value_and_the_fix(copy):
    """Resuming round 2's simulation with a misspelt strategy in its plan (no checksum key: a hand edit)."""
    config, run = copy
    edited(run / "round_002" / "plan.json", lambda d: d.update(strategy="metadynamcs"))
    write_json(run / "progress.json", {"round": 2, "phase": "simulate", "segments": 0, "finished": False},
               checksum=True)
    with pytest.raises(RunDirError, match=r"round_002/plan\.json: strategy 'metadynamcs' is not one of 'unbiased', "
                                          r"'metadynamics', 'frontier', 'opes'.*new --rundir"):
        Campaign(load_config(config), run, progress=False).run()


@pytest.mark.parametrize("key", ["variables", "strategy"])
def test_plan_without_a_key_its_strategy_reads_names_the_key(copy, key):
    config, run = copy
    edited(run / "round_002" / "plan.json", lambda d: d.pop(key))
    campaign = Campaign(load_config(config), run, progress=False)
    with pytest.raises(RunDirError, match=rf"round_002/plan\.json lacks the key\(s\) \['{key}'\].*new --rundir"):
        campaign.bias_states(campaign.all_frames(2))


def test_require_helpers_refuse_non_objects_and_unhashable_values(tmp_path):
    with pytest.raises(ValueError, match=r"x\.json does not hold a JSON object.*list.*; do this"):
        require_keys([1, 2], ("a",), tmp_path / "x.json", fix="do this")
    with pytest.raises(ValueError, match=r"x\.json: kind \['a'\] is not one of 'a', 'b'.*; do that"):
        require_choice(["a"], {"a": 1, "b": 2}, tmp_path / "x.json", "kind", fix="do that")
    assert require_choice("b", ("a", "b"), "x", "kind", fix="") == "b"


# ------------------------------------------------------------------------------------- bias.json states

def _metad(folder: Path) -> LatentMetadynamics:
    model = folder / "x.pt"
    if not model.exists():
        identity_model(model, 1, 1)
    return LatentMetadynamics(particle_system(DOUBLE_WELL_1D), model,
                              [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=101)], 300.0, biasFactor=6.0, height=0.5,
                              frequency=100)


def _opes(folder: Path) -> LatentOPES:
    model = folder / "x.pt"
    if not model.exists():
        identity_model(model, 1, 1)
    return LatentOPES(particle_system(DOUBLE_WELL_1D), model, [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=101)],
                      300.0, barrier=20.0, pace=100)


def _state(tmp_path: Path, make):
    bias = make(tmp_path)
    bias._nDeposits = 3  # the state's content is not what these tests check; its files are
    bias.saveState(tmp_path / "s")
    return tmp_path / "s"


@pytest.mark.parametrize("make", [_metad, _opes], ids=["metadynamics", "opes"])
def test_bias_json_that_is_not_json_names_the_file_and_the_fix(tmp_path, make):
    prefix = _state(tmp_path, make)
    (tmp_path / "s.json").write_text('{"format": "latentbias-')
    with pytest.raises(ValueError, match=r"s\.json is not valid JSON.*restore .*s\.npz and .*s\.json together"):
        make(tmp_path).loadState(prefix)


@pytest.mark.parametrize("key", ["settings", "otherWalkers", "numDeposits", "npz_sha256", "walkerId"])
@pytest.mark.parametrize("make", [_metad, _opes], ids=["metadynamics", "opes"])
def test_bias_json_without_a_key_names_the_file_the_key_and_the_fix(tmp_path, make, key):
    prefix = _state(tmp_path, make)
    without_checksum(tmp_path / "s.json", lambda d: d.pop(key))
    with pytest.raises(ValueError, match=rf"s\.json lacks the key\(s\) \['{key}'\].*restore .*together"):
        make(tmp_path).loadState(prefix)


@pytest.mark.parametrize("make", [_metad, _opes], ids=["metadynamics", "opes"])
def test_bias_npz_without_an_array_names_the_file_and_the_array(tmp_path, make):
    """Both files edited consistently (the .json's SHA-256 of the .npz updated): the missing array is named."""
    prefix = _state(tmp_path, make)
    npz = tmp_path / "s.npz"
    arrays = load_npz(npz)
    name = "selfBias" if make is _metad else "kde_grid_sum"
    arrays.pop(name)
    np.savez(npz, **arrays)
    without_checksum(tmp_path / "s.json", lambda d: d.update(npz_sha256=hashlib.sha256(npz.read_bytes()).hexdigest()))
    with pytest.raises(ValueError, match=rf"s\.npz lacks the key\(s\) \['{name}'\].*restore"):
        make(tmp_path).loadState(prefix)


def test_deleted_multi_json_with_member_campaigns_is_refused(tmp_path):
    """The multi-system campaign stores its seed in multi.json: without it the systems would continue as a different
    run. Refused before any member is built (nothing is changed)."""
    from latentbias.campaign.multi import MultiCampaign
    from latentbias.campaign.multiconfig import load_multi_config

    from test_multi_campaign import tiny_toml

    config = load_multi_config(tiny_toml(tmp_path))
    member = tmp_path / "run" / "systems" / "ala" / "round_000"
    member.mkdir(parents=True)
    (member / "plan.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"multi\.json is missing but .* holds a multi-system campaign \(found "
                                          r"systems/ala/\); nothing was changed.*new --rundir"):
        MultiCampaign(config, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["systems"]


# ------------------------------------------------------------------------- records read without a checksum

def test_run_directory_records_without_a_checksum_are_read_with_a_warning_naming_them(copy, caplog):
    """Deleting the checksum key (or a record of an older version) no longer disables the check silently; in a run
    directory of an older version the record is read with a warning (this version's refuse it:
    test_issue9_rundir_format.py)."""
    import logging

    config, run = copy
    older_version(run)
    plan = run / "round_001" / "plan.json"
    without_checksum(plan, lambda d: None)
    campaign = Campaign(load_config(config), run, progress=False)
    with caplog.at_level(logging.WARNING, logger="latentbias"):
        assert campaign.run_dir.read_plan(1)["strategy"] == "metadynamics"
        campaign.run_dir.read_plan(2)  # checksummed: no warning
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(plan) in warned[0] and "carries no checksum" in warned[0]
    assert "read unverified" in warned[0]


def test_a_checkpoint_without_its_checksum_record_is_loaded_with_a_warning(copy, caplog):
    import logging

    config, run = copy
    older_version(run)
    rd = RunDir(run)
    meta = next(run.glob("round_002/chk_*.json"))
    k = int(meta.stem.split("_")[1])
    assert rd.read_checkpoint(2, k, "Reference")[0] == "checkpoint"
    meta.unlink()
    with caplog.at_level(logging.WARNING, logger="latentbias"):
        kind, data = rd.read_checkpoint(2, k, "Reference")
    assert kind == "checkpoint" and data == meta.with_suffix(".chk").read_bytes()
    assert any(f"{meta} is missing, so {meta.with_suffix('.chk')} is loaded unverified" in r.getMessage()
               for r in caplog.records)


# ------------------------------------------------------------------------------ one frame-record schema

def test_simulated_and_imported_segments_hold_the_one_schema(finished):
    """Item 7b: the segments the simulation writes (rounds 0-2 of the finished campaign) and the imported-frame
    record (``unbiased_frames``) carry exactly SEGMENT_COLUMNS (``walker`` only with parallel walkers) with its
    dtypes and per-frame shapes; per-segment extras are only the declared ones."""
    from latentbias.campaign.records import SEGMENT_COLUMNS, _SEGMENT_EXTRAS, unbiased_frames

    _, run = finished
    want = {c.name: np.dtype(c.dtype) for c in SEGMENT_COLUMNS if c.name != "walker"}
    files = sorted(run.glob("round_*/seg_*.npz"))
    assert len(files) == 6
    n_atoms = None
    for path in files:
        seg = load_npz(path)
        assert set(seg) - set(_SEGMENT_EXTRAS) == set(want), path
        n = len(seg["step"])
        n_atoms = seg["positions"].shape[1]
        for name, dtype in want.items():
            assert seg[name].dtype == dtype and len(seg[name]) == n, (path, name)
        assert seg["positions"].shape[2:] == (3,) and seg["box"].shape[1:] == (3, 3)
        assert seg["z"].shape[1] == (0 if path.parent.name == "round_000" else 2)
    imported = unbiased_frames(np.zeros((4, n_atoms, 3)))
    assert {k: v.dtype for k, v in imported.items()} == want
