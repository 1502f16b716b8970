"""Adaptive campaigns on a 2-D toy: discovery of unvisited wells, cross-round reweighting, resume after SIGKILL,
config validation, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latentbias.analysis import free_energy_surface, kt_kjmol
from latentbias.campaign import Campaign, ConfigError, load_config
from latentbias.campaign.alignment import apply_alignment, fit_alignment
from latentbias.campaign.config import from_dict
from latentbias.campaign.frontier import frontier_targets

from campaign_toy import nearest_well, toy_config_text, write_toy_system
from test_metadynamics import rmse_below
from toy import multi_well_2d

TESTS = Path(__file__).resolve().parent


def make_toy(folder: Path, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_toy_system(folder)
    (folder / "toy.toml").write_text(toy_config_text(**kw))
    return folder / "toy.toml"


def weights_table(rundir: Path) -> dict[str, np.ndarray]:
    lines = (rundir / "weights.csv").read_text().splitlines()
    header = lines[1].split(",")
    data = np.loadtxt(rundir / "weights.csv", delimiter=",", skiprows=2, ndmin=2)
    return {h: data[:, i] for i, h in enumerate(header)}


@pytest.fixture(scope="module", params=["metadynamics", "frontier"])
def toy_run(request, tmp_path_factory):
    """metadynamics: 4 rounds, estimate = cross-round MBAR; frontier (whose frames are no equilibrium samples):
    4 rounds + an OPES converge phase that gives the estimate."""
    folder = tmp_path_factory.mktemp(f"toy_{request.param}")
    config = make_toy(folder, strategy=request.param, converge_steps=150000 if request.param == "frontier" else 0)
    campaign = Campaign(load_config(config), folder / "run", progress=False)
    campaign.run()
    return request.param, campaign, folder / "run"


def test_round_numbering_in_the_log_is_zero_based_and_consistent(toy_run):
    """Issue 9 item 6 ("round 1/3 done" was printed after round 0): every round's line names the round by its
    0-based index and the range of rounds, once per round, in order."""
    import re

    kind, campaign, rundir = toy_run
    text = (rundir / "campaign.log").read_text()
    rounds = campaign.cfg.campaign.rounds
    done = [int(m) for m in re.findall(rf"round (\d+) \(rounds 0-{rounds - 1}\) done", text)]
    assert done == list(range(rounds)), done
    assert not re.search(r"round \d+/\d+", text)


def test_loop_discovers_wells_never_visited_in_round_0(toy_run):
    strategy, campaign, rundir = toy_run
    frames = campaign.all_frames(campaign.last_round)
    wells = nearest_well(frames["positions"][:, 0, :2].astype(float))
    assert set(wells[frames["round"] == 0]) == {"A"}  # round 0 stays in its well
    later = wells[frames["round"] >= 1]
    assert (later == "B").sum() >= 10 and (later == "C").sum() >= 10, strategy  # both unseen wells reached
    progress = json.loads((rundir / "progress.json").read_text())
    assert progress["finished"] and progress["round"] == campaign.last_round


def test_cross_round_weights_recover_the_analytic_fes(toy_run):
    """FES along x from all rounds' frames with MBAR log-weights: RMSE <= 1.5 kJ/mol where F < 10 kJ/mol."""
    strategy, campaign, rundir = toy_run
    frames = campaign.all_frames(campaign.last_round)
    table = weights_table(rundir)
    assert len(table["logweight"]) == len(frames["step"])
    np.testing.assert_array_equal(table["step"], frames["step"])
    used = np.isfinite(table["logweight"])
    np.testing.assert_array_equal(used, table["excluded"] == 0)
    assert not used[frames["round"] == 0].any()  # round 0: confined to well A, not an equilibrium sample
    if strategy == "frontier":  # the estimate is the converge phase's
        assert set(frames["round"][used]) == {campaign.converge_round}
    x = frames["positions"][used, 0, 0].astype(float)
    fes = free_energy_surface(x, table["logweight"][used], bins=12, range=(-1.0, 1.0), temperature=300.0)
    kt = kt_kjmol(300.0)
    ys = np.linspace(-1.5, 1.5, 301)
    ref = []
    for a, b in zip(fes.edges[0][:-1], fes.edges[0][1:]):
        gx, gy = np.meshgrid(np.linspace(a, b, 50), ys)
        ref.append(-kt * np.log(np.mean(np.exp(-multi_well_2d(gx, gy) / kt))))
    ref = np.array(ref) - min(ref)
    assert rmse_below(fes.free_energy, ref, 10.0) <= 1.5


def test_round_artifacts_and_report(toy_run):
    import mdtraj as md

    from latentbias import load_model
    from latentbias.campaign.report import parse_cv_spec, write_report

    _, campaign, rundir = toy_run
    for r in range(campaign.last_round + 1):
        d = rundir / f"round_{r:03d}"
        traj = md.load(str(d / "frames.dcd"), top=str(d / "topology.pdb"))
        rows = np.loadtxt(d / "frames.csv", delimiter=",", skiprows=2, ndmin=2)
        planned = json.loads((d / "plan.json").read_text())["segments"]  # 20 frames per segment
        # converge attempts (round 4, and 5 when the first went back to retraining) share a 75-segment budget
        assert planned == (5 if r == 0 else 10 if r < 4
                           else 75 - sum(campaign.run_dir.round_segments(q) for q in range(4, r)))
        ended = json.loads((d / "end.json").read_text())["segments"] if (d / "end.json").is_file() else planned
        assert len(traj) == len(rows) == 20 * ended
        header = (d / "frames.csv").read_text().splitlines()[1]
        assert header == "step,time_ps,z0,z1,bias_kjmol,logweight,round,ood,excluded,walker"
        assert np.all(rows[:, -1] == 0)  # one walker
        if r == campaign.converge_round:
            assert not (d / "model.pt").exists()
            continue
        assert load_model(d / "model.pt").latent_dim == 2
        info = json.loads((d / "model.json").read_text())
        if r > 0:
            assert info["alignment"]["r2"] > 0.5
    report = write_report(rundir, cvs=[parse_cv_spec("x0:distance:0,1"), parse_cv_spec("x1:distance:0,2")])
    text = report.read_text()
    assert "| 3 |" in text and "cv_fes_x0_x1.png" in text
    for name in ("coverage.png", "training_losses.png", "latent_fes_round_003.png", "cv_fes_x0.png"):
        assert (rundir / "report" / name).stat().st_size > 1000


# ------------------------------------------------------------------------------------------------ resume

RUNNER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
if len(sys.argv) > 3:  # die (SIGKILL) inside the atomic write of the named file, before the rename: the
    _replace = os.replace  # interrupted write leaves its temporary file behind, as a real kill there would
    def replace(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)) == sys.argv[3]:
            os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)
    os.replace = replace
from latentbias.campaign import Campaign, load_config
Campaign(load_config(sys.argv[1]), sys.argv[2], progress=False).run()
"""


def frame_signature(rundir: Path) -> list[tuple[int, list[int]]]:
    progress = json.loads((rundir / "progress.json").read_text())
    out = []
    for r in range(progress["round"] + 1):
        rows = np.loadtxt(rundir / f"round_{r:03d}" / "frames.csv", delimiter=",", skiprows=2, ndmin=2)
        out.append((r, rows[:, 0].astype(int).tolist()))
    return out


#: the first kills, each inside the atomic write of the named file: all in round 0, first and last write of its
#: train phase (model_state.npz, model.json), then of its weights phase (weights.json, round_000/frames.csv);
#: then kills at random moments until the run finishes
TARGETED_KILLS = ["model_state.npz", "model.json", "weights.json", "frames.csv"]
KILLED_IN = ["train", "train", "weights", "weights"]


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path):
    """Kill the campaign process (SIGKILL) at random moments and inside the train and weights phases' writes,
    rerun the same command each time: the finished run has exactly the rounds and frames (steps) of an
    uninterrupted run, and no temporary file is left."""
    config = make_toy(tmp_path, rounds=3, steps=8000, round0=8000, checkpoint=1000)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(TESTS)))
    cmd = [sys.executable, str(script), str(config)]

    straight = tmp_path / "straight"
    t0 = time.perf_counter()
    subprocess.run(cmd + [str(straight)], check=True, capture_output=True, timeout=600)
    duration = time.perf_counter() - t0  # start-up included, so kill times scale with this machine's speed

    killed = tmp_path / "killed"
    rng = np.random.default_rng(12)
    kills, targeted = 0, 0
    for attempt in range(80):
        target = TARGETED_KILLS[attempt] if attempt < len(TARGETED_KILLS) else None
        proc = subprocess.Popen(cmd + [str(killed)] + ([target] if target else []), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            # after 12 random kills the next attempt runs to the end, so a loaded machine (slower start-up than
            # during the straight run) cannot keep every attempt from committing anything
            random_kill = target is None and kills - targeted < 12
            proc.wait(timeout=float(rng.uniform(0.25, 0.6)) * duration if random_kill else None)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        if target and proc.returncode == -signal.SIGKILL:
            progress = json.loads((killed / "progress.json").read_text())
            assert (progress["round"], progress["phase"]) == (0, KILLED_IN[attempt]), target
            assert list(killed.rglob(f".{target}.*.tmp")), target  # the torn write's temporary file is there
            kills += 1
            targeted += 1
            continue
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        break
    else:
        pytest.fail("campaign did not finish after 80 attempts")
    assert targeted == 4 and kills >= 5  # every targeted kill landed, and at least one random one
    assert frame_signature(killed) == frame_signature(straight)
    assert sorted(p.name for p in killed.glob("round_*")) == sorted(p.name for p in straight.glob("round_*"))
    assert not list(killed.rglob(".*.tmp")) and not list(killed.rglob(".*.partial"))  # no leftovers anywhere
    for r in range(3):  # no leftovers of interrupted commits
        assert len(list((killed / f"round_{r:03d}").glob("seg_*.npz"))) == 8


def test_rerun_of_a_finished_campaign_does_nothing(tmp_path):
    config = make_toy(tmp_path, rounds=1, steps=2000, round0=2000, checkpoint=1000)
    Campaign(load_config(config), tmp_path / "run", progress=False).run()
    stamp = (tmp_path / "run" / "weights.csv").stat().st_mtime_ns
    Campaign(load_config(config), tmp_path / "run", progress=False).run()
    assert (tmp_path / "run" / "weights.csv").stat().st_mtime_ns == stamp
    other = make_toy(tmp_path / "b", rounds=2, steps=2000, round0=2000, checkpoint=1000)
    other.write_text(other.read_text().replace('kind = ["distances"]', 'kind = ["contacts"]'))
    with pytest.raises(ValueError, match=r"different configuration(?s:.*)\[features\] kind"):  # more rounds alone
        Campaign(load_config(other), tmp_path / "run", progress=False)  # would extend it (test_campaign_extend.py)


# ------------------------------------------------------------------------------------------------ config

@pytest.mark.parametrize(
    "raw, match",
    [
        ({"sytem": {}}, r"unknown section\(s\) \['sytem'\]"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum", "colour": 1}}, r"unknown key\(s\) \['colour'\] in \[system\]"),
        ({"system": {"testsystem": "lysozyme"}}, "testsystem = 'lysozyme' is not allowed; choose one of alanine-dipeptide-vacuum"),
        ({"system": {}}, "must give exactly one of"),
        ({"system": {"prmtop": "x.prmtop", "coordinates": "x.crd"}}, "file not found"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "md": {"platform": "GPU"}}, r"\[md\] platform = 'GPU'.*Reference"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "md": {"temperature": "hot"}}, r"\[md\] temperature must be a number"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "campaign": {"strategy": "random"}}, "strategy = 'random'.*metadynamics, frontier, opes"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "campaign": {"checkpoint_interval": 300}}, "multiple of save_interval"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "campaign": {"round0_steps": 1000, "save_interval": 500, "checkpoint_interval": 500}}, r"saves 2 frames in round 0.*at least 10: raise round0_steps"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "model": {"latent_dim": 5}}, "latent_dim must be 1, 2 or 3"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "metadynamics": {"bias_factor": 1.0}}, "bias_factor must be > 1"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "features": {"kind": ["pca"]}}, r"\[features\] kind = 'pca'"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "ood": {"action": "panic"}}, r"\[ood\] action = 'panic'.*retrain, cap, off"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "ood": {"retrain_fraction": 1.5}}, r"\[ood\] retrain_fraction must be in \(0, 1\]"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "converge": {"method": "replica-exchange"}}, r"\[converge\] method = 'replica-exchange'.*opes, metadynamics, umbrella"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "campaign": {"strategy": ["metadynamics", "pocket"]}, "converge": {"enabled": True, "method": "umbrella"}}, r'method = "umbrella" is not available with \[campaign\] strategy "pocket"'),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "converge": {"burn_in": 1.0}}, r"\[converge\] burn_in must be a fraction"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "converge": {"max_steps": 1000, "min_steps": 0}}, r"\[converge\] max_steps must be a multiple"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "converge": {"min_steps": 10**9}}, r"\[converge\] min_steps must be in"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "converge": {"speed": 1}}, r"unknown key\(s\) \['speed'\] in \[converge\]"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "campaign": {"strategy": "opes"}, "opes": {"pace": 300}}, r"\[opes\] pace and \[campaign\] save_interval"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "opes": {"barrier": -1.0}}, r"\[opes\] barrier must be positive"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "opes": {"bias_factor": 1.0}}, r"\[opes\] bias_factor must be > 1 \(or 0: barrier/kT\)"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "opes": {"max_temperature": 250.0}}, r"\[opes\] max_temperature must be above \[md\] temperature"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "opes": {"temperatures": 1}}, r"\[opes\] temperatures must be >= 2"),
        ({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "opes": {"max_temperature": 600.0}}, r"\[opes\] max_temperature acts in an OPES converge phase only"),
    ],
)
def test_config_errors_name_the_key_and_allowed_values(raw, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        from_dict(raw, base_dir=tmp_path)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[system\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_cli_run_reports_config_errors(tmp_path):
    from latentbias.cli import main

    (tmp_path / "c.toml").write_text('[system]\ntestsystem = "alanine-dipeptide-vacuum"\n[md]\nfriction = -1\n')
    with pytest.raises(SystemExit, match=r"\[md\] friction must be positive"):
        main(["run", str(tmp_path / "c.toml")])


# ------------------------------------------------------------------------------------------- building blocks

def test_alignment_recovers_a_similarity_transform_and_folds_into_the_model():
    import torch

    from latentbias.models import FeatureAutoencoder

    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 2))
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    ref = 2.5 * z @ rot.T + [1.0, -3.0]
    a = fit_alignment(z, ref)
    assert a.r2 > 1 - 1e-12 and a.scale == pytest.approx(2.5)
    ae = FeatureAutoencoder(5, 2, hidden=(8,)).double()
    x = torch.as_tensor(rng.standard_normal((10, 5)))
    with torch.no_grad():
        z0 = ae.encode(x).numpy()
        rec0 = ae.decode(ae.encode(x)).numpy()
    apply_alignment(ae, a)
    with torch.no_grad():
        np.testing.assert_allclose(ae.encode(x).numpy(), a(z0), atol=1e-10)
        np.testing.assert_allclose(ae.decode(ae.encode(x)).numpy(), rec0, atol=1e-10)


def test_frontier_targets_lie_beyond_the_sparse_edge():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2000, 2))
    targets, nearest = frontier_targets(z, 4, bins=20)
    assert targets.shape == (4, 2) and nearest.shape == (4,)
    assert np.all(np.linalg.norm(targets, axis=1) > 2.0)  # beyond where most samples are
    assert np.min(np.linalg.norm(targets[:, None] - targets[None], axis=2) + np.eye(4) * 99) > 1.0  # spread out
