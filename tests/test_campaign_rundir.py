"""Run-directory integrity: the lock, damaged or missing records, unknown phases, checksums, leftover temporary
files on every resume path, and seeds (regression tests for the reproducers of issues 9 and 15)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latentbias.campaign import Campaign, ConfigError, RunDirError, RunDirLocked, load_config
from latentbias.campaign.config import from_dict
from latentbias.campaign.rundir import PHASES, RunDir
from latentbias.campaign.seeds import MAX_SEED, RoundSeeds
from latentbias.io import ChecksumError, load_npz, save_npz, write_json

from campaign_toy import toy_config_text, write_toy_system

TESTS = Path(__file__).resolve().parent
SMALL = dict(rounds=3, steps=2000, round0=2000, checkpoint=1000)  # metadynamics; round 2 carries round 1's bias


def make_toy(folder: Path, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_toy_system(folder)
    (folder / "toy.toml").write_text(toy_config_text(**kw))
    return folder / "toy.toml"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(config path, run directory) of a small finished 3-round metadynamics campaign (do not modify)."""
    folder = tmp_path_factory.mktemp("finished")
    config = make_toy(folder, **SMALL)
    Campaign(load_config(config), folder / "run", progress=False).run()
    return config, folder / "run"


@pytest.fixture
def copy(finished, tmp_path):
    """A private copy of the finished campaign: (config path, run directory)."""
    config, run = finished
    shutil.copytree(run, tmp_path / "run")
    return config, tmp_path / "run"


def segment_files(rundir: Path) -> list[str]:
    return sorted(str(p.relative_to(rundir)) for p in rundir.glob("round_*/seg_*.npz"))


# ------------------------------------------------------------------------------------------------------- lock

HOLDER = """
import sys
from latentbias.campaign.rundir import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_second_run_on_one_directory_fails_at_once_naming_the_holder(copy):
    from latentbias.cli import main

    config, run = copy
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().decode().strip() == "locked"
        t0 = time.perf_counter()
        with pytest.raises(RunDirLocked, match=rf"pid {holder.pid} on host .*run\.lock"):
            Campaign(load_config(config), run, progress=False).run()
        with pytest.raises(SystemExit, match=rf"in use by another campaign run \(pid {holder.pid}"):
            main(["run", str(config), "--rundir", str(run), "--quiet"])
        assert time.perf_counter() - t0 < 10.0  # refused at once, never waits for the holder
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the lock of the killed holder: the directory is usable again
    assert Campaign(load_config(config), run, progress=False).run()["finished"]


# ------------------------------------------------------------------------------------------- damaged records

def test_deleted_progress_json_is_an_error_and_deletes_nothing(copy):
    config, run = copy
    before = segment_files(run)
    (run / "progress.json").unlink()
    with pytest.raises(RunDirError, match=r"progress\.json is missing but .* already holds rounds"):
        Campaign(load_config(config), run, progress=False).run()
    assert segment_files(run) == before and len(before) == 6


def test_unknown_phase_is_a_clear_error_not_a_hang(copy):
    config, run = copy
    write_json(run / "progress.json", {"round": 1, "phase": "trian", "segments": 0, "finished": False}, checksum=True)
    runner = f"from latentbias.campaign import Campaign, load_config\nCampaign(load_config({str(config)!r}), " \
             f"{str(run)!r}, progress=False).run()\n"
    out = subprocess.run([sys.executable, "-c", runner], capture_output=True, timeout=120)
    assert out.returncode != 0
    err = out.stderr.decode()
    assert "RunDirError" in err and "progress.json: phase 'trian' is not one of " + ", ".join(PHASES) in err


@pytest.mark.parametrize("name", ["progress.json", "config.json", "round_001/plan.json", "round_001/model.json"])
@pytest.mark.parametrize("content", ['{"round": 1, "pha', "{}"])
def test_corrupt_json_records_name_the_file(copy, name, content):
    config, run = copy
    if content == "{}":  # an object without the keys, with a valid checksum (another version's record)
        write_json(run / name, {}, checksum=True)
    else:
        (run / name).write_text(content)
    what = "is not valid JSON" if content != "{}" else r"lacks the key\(s\)"
    with pytest.raises(RunDirError, match=rf"{name}.* {what}.*new --rundir"):
        campaign = Campaign(load_config(config), run, progress=False)
        if name == "progress.json":
            campaign.run()
        elif name.endswith("plan.json"):
            campaign.all_frames(2)
        else:
            campaign.model(1)


def test_missing_carried_bias_is_an_error(copy):
    config, run = copy
    campaign = Campaign(load_config(config), run, progress=False)
    assert json.loads((run / "round_002" / "plan.json").read_text())["initial_bias"] == "initial_bias.npz"
    assert campaign.initial_bias(2) is not None
    (run / "round_002" / "initial_bias.npz").unlink()
    with pytest.raises(RunDirError, match=r"round_002/initial_bias\.npz is missing but .*plan\.json says round 2"):
        campaign.bias_states(campaign.all_frames(2))
    # resuming the round's simulation must not silently drop the bias either
    write_json(run / "progress.json", {"round": 2, "phase": "simulate", "segments": 1, "finished": False},
               checksum=True)
    with pytest.raises(RunDirError, match=r"initial_bias\.npz is missing"):
        Campaign(load_config(config), run, progress=False).run()


def test_corrupt_segment_is_detected_on_load(copy):
    config, run = copy
    seg = run / "round_001" / "seg_00001.npz"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the positions
    seg.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match=r"round_001/seg_00001\.npz cannot be read"):
        Campaign(load_config(config), run, progress=False).all_frames(2)


def test_npz_checksum_catches_changed_arrays(tmp_path):
    """A record whose arrays changed but whose zip is intact (rewritten with the old checksum) is refused."""
    path = tmp_path / "a.npz"
    save_npz(path, checksum=True, x=np.arange(5.0))
    np.testing.assert_array_equal(load_npz(path)["x"], np.arange(5.0))
    with np.load(path) as f:
        stored = f["__sha256__"]
    np.savez(path, x=np.arange(5.0) + 1e-12, __sha256__=stored)
    with pytest.raises(ChecksumError, match=r"a\.npz: its arrays do not match the checksum"):
        load_npz(path)
    save_npz(path, y=np.ones(2))  # files without a checksum still load
    assert set(load_npz(path)) == {"y"}


# ----------------------------------------------------------------------------------------- leftover temp files

@pytest.mark.parametrize("phase", ["train", "weights"])
def test_leftover_temporary_files_are_removed_when_resuming_train_and_weights(copy, phase):
    config, run = copy
    frames_csv = (run / "round_000" / "frames.csv").read_text()
    write_json(run / "progress.json", {"round": 2, "phase": phase, "segments": 2, "finished": False}, checksum=True)
    leftovers = [run / "round_000" / ".frames.csv.k3j2.tmp", run / ".weights.csv.x81.tmp",
                 run / "round_002" / ".model.json.abc.tmp", run / "round_002" / ".frames.dcd.partial"]
    for p in leftovers:
        p.write_text("torn")
    progress = Campaign(load_config(config), run, progress=False).run()
    assert progress == {"round": 2, "phase": "done", "segments": 0, "finished": True}
    assert not any(p.exists() for p in leftovers)
    assert not list(run.rglob(".*.tmp")) and not list(run.rglob(".*.partial"))
    if phase == "weights":  # the weights phase alone is deterministic: identical tables
        assert (run / "round_000" / "frames.csv").read_text() == frames_csv


# ------------------------------------------------------------------------------------------------------ seeds

def test_seed_zero_is_refused_and_a_missing_seed_is_drawn_stored_and_reused(tmp_path):
    base = {"system": {"testsystem": "alanine-dipeptide-vacuum"}}
    for bad in (0, -3, MAX_SEED + 1):
        with pytest.raises(ConfigError, match=r"\[md\] seed must be an integer in \[1, 2147483647\].*omit"):
            from_dict({**base, "md": {"seed": bad}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"\[md\] seed must be an integer"):
        from_dict({**base, "md": {"seed": 1.5}}, base_dir=tmp_path)
    assert from_dict(base, base_dir=tmp_path).md.seed is None

    text = toy_config_text(rounds=1, steps=1000, round0=1000, checkpoint=1000).replace("seed = ", "# seed = ")
    make_toy(tmp_path)
    (tmp_path / "toy.toml").write_text(text)
    first = Campaign(load_config(tmp_path / "toy.toml"), tmp_path / "run", progress=False)
    seed = first.cfg.md.seed
    assert 1 <= seed <= MAX_SEED
    first.run()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["md"]["seed"] == seed
    assert f"seed {seed} (drawn at random" in (tmp_path / "run" / "campaign.log").read_text()
    again = Campaign(load_config(tmp_path / "toy.toml"), tmp_path / "run", progress=False)
    assert again.cfg.md.seed == seed  # the resume adopts the stored seed, so its config matches
    other = Campaign(load_config(tmp_path / "toy.toml"), tmp_path / "other", progress=False)
    assert other.cfg.md.seed != seed  # a new directory draws its own


def test_round_seeds_are_reproducible_distinct_and_valid_openmm_seeds():
    a, b = RoundSeeds(7, 2), RoundSeeds(7, 2)
    assert (a.integrator, a.velocities, a.training, a.restart_velocities(3)) == \
           (b.integrator, b.velocities, b.training, b.restart_velocities(3))
    seeds = [s for r in range(5) for s in (RoundSeeds(7, r).integrator, RoundSeeds(7, r).velocities,
                                            RoundSeeds(7, r).training, *(RoundSeeds(7, r).restart_velocities(k)
                                                                         for k in range(5)))]
    assert len(set(seeds)) == len(seeds) and all(1 <= s <= MAX_SEED for s in seeds)
    assert RoundSeeds(8, 0).integrator != RoundSeeds(7, 0).integrator
    # the documented derivation
    expected = int(np.random.SeedSequence(7, spawn_key=(2, 0)).generate_state(1, np.uint64)[0] % MAX_SEED) + 1
    assert a.integrator == expected
    with pytest.raises(ValueError, match="seed must be in"):
        RoundSeeds(0, 0)
