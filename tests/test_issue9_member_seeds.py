"""Issue 9 item 7c (audit row 13): the systems' seeds of a multi-system campaign come from numpy's SeedSequence in
new run directories; run directories of earlier versions keep the old derivation (their members' config.json store
those seeds) and stay resumable. multi.json stores the run-directory format that tells them apart."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import numpy as np
import pytest

from latentbias.campaign import RunDirError
from latentbias.campaign.multi import MultiCampaign
from latentbias.campaign.multiconfig import MEMBER_STREAM, load_multi_config, member_seed
from latentbias.campaign.rundir import RunDir
from latentbias.campaign.rundirformat import FORMAT_KEY, RUNDIR_FORMAT
from latentbias.campaign.seeds import MAX_SEED
from latentbias.io import load_json, write_json

from test_multi_campaign import ALA, GLY, SHARED_SECTIONS

SEED = 11  # SHARED_SECTIONS' [md] seed


def test_member_seeds_are_seedsequence_streams_and_the_legacy_ones_are_kept_apart():
    for seed in (1, 2024, MAX_SEED):
        seeds = [member_seed(seed, i) for i in range(6)]
        assert len(set(seeds)) == 6 and all(1 <= s <= MAX_SEED for s in seeds)
        assert seeds == [member_seed(seed, i) for i in range(6)]  # reproducible
        state = np.random.SeedSequence(seed, spawn_key=(MEMBER_STREAM, 3)).generate_state(1, np.uint64)[0]
        assert seeds[3] == int(state % MAX_SEED) + 1
    # why the old derivation was replaced: base seeds 1_000_003 apart shared their systems' seeds
    assert member_seed(5, 1, legacy=True) == member_seed(5 + 1_000_003, 0, legacy=True)
    assert member_seed(5, 1) != member_seed(5 + 1_000_003, 0)
    assert member_seed(2024, 0, legacy=True) == 2024 and member_seed(2024, 1, legacy=True) == 2024 + 1_000_003


def _config(folder: Path) -> Path:
    """Two systems given as pdb + force field (no mutant to build): Ace-Ala-Nme and Ace-Gly-Nme."""
    text = textwrap.dedent(f"""
        [systems.ala]
        pdb = "{ALA}"
        forcefield = ["amber14-all.xml"]

        [systems.gly]
        pdb = "{GLY}"
        forcefield = ["amber14-all.xml"]
    """) + SHARED_SECTIONS
    path = folder / "multi.toml"
    path.write_text(text)
    return path


def _as_older_version(run: Path) -> None:
    """What a version before run-directory formats wrote: multi.json without the format, and member config.json
    files with the old seeds (checksummed: that version wrote checksums too)."""
    doc = load_json(run / "multi.json")
    doc.pop(FORMAT_KEY)
    write_json(run / "multi.json", doc, checksum=True)
    for i, name in enumerate(("ala", "gly")):
        path = run / "systems" / name / "config.json"
        cfg = load_json(path)
        cfg.pop(FORMAT_KEY)
        cfg["md"]["seed"] = member_seed(SEED, i, legacy=True)
        write_json(path, cfg, checksum=True)


def test_new_run_directories_use_seedsequence_and_older_ones_keep_their_seeds(tmp_path):
    config = load_multi_config(_config(tmp_path))
    run = tmp_path / "run"
    multi = MultiCampaign(config, run, progress=False)
    assert load_json(run / "multi.json")[FORMAT_KEY] == RUNDIR_FORMAT
    assert [m.cfg.md.seed for m in multi.members] == [member_seed(SEED, 0), member_seed(SEED, 1)]
    for m in multi.members:
        m.begin()  # stores the member's config (with its seed), as a run does first
    assert load_json(run / "systems" / "gly" / "config.json")["md"]["seed"] == member_seed(SEED, 1)
    again = MultiCampaign(config, run, progress=False)  # resumes: the same seeds
    assert [m.cfg.md.seed for m in again.members] == [m.cfg.md.seed for m in multi.members]
    for m in again.members:
        m.begin()

    _as_older_version(run)
    older = MultiCampaign(config, run, progress=False)
    assert [m.cfg.md.seed for m in older.members] == [SEED, member_seed(SEED, 1, legacy=True)]
    for m in older.members:
        m.begin()  # resumable: the stored seeds are the ones it derives
    assert FORMAT_KEY not in load_json(run / "multi.json")  # and it stays a directory of the older version
    # with the new derivation the stored members would have been refused as a different campaign
    new_seed = json.loads(json.dumps(older.members[1].cfg.to_dict()))
    new_seed["md"]["seed"] = member_seed(SEED, 1)
    with pytest.raises(ValueError, match=r"different configuration \(sections \['md'\]\)"):
        RunDir(run / "systems" / "gly").check_config(new_seed)


def test_multi_json_without_a_checksum_is_refused_in_a_new_run_directory(tmp_path, caplog):
    config = load_multi_config(_config(tmp_path))
    run = tmp_path / "run"
    MultiCampaign(config, run, progress=False)
    doc = load_json(run / "multi.json")
    (run / "multi.json").write_text(json.dumps(doc))  # checksum key removed, format kept
    with pytest.raises(RunDirError, match=r"multi\.json carries no checksum, but this run directory was created by a "
                                          r"latentbias version .*run-directory format 2.*new --rundir"):
        MultiCampaign(config, run, progress=False)
    doc.pop(FORMAT_KEY)
    (run / "multi.json").write_text(json.dumps(doc))  # an older version's file, unverified: read with a warning
    with caplog.at_level(logging.WARNING, logger="latentbias"):
        MultiCampaign(config, run, progress=False)
    assert any("multi.json carries no checksum" in r.getMessage() for r in caplog.records)
