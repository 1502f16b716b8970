"""Parallel walkers on Dask (issue 14): deterministic results, one shared bias, a lost worker costs one segment.

The toy campaign (tests/campaign_toy.py) runs round 0 and one metadynamics round with 2 walkers. Each run starts
Dask worker processes (a few seconds each on a loaded 2-core machine); every cluster is closed by the test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from campaign_toy import toy_config_text, write_toy_system
from latentbias.campaign.config import ConfigError, from_dict, load_config
from latentbias.campaign.loop import Campaign
from latentbias.campaign.plan import walker_frontier_schedules
from latentbias.campaign.records import load_frames
from latentbias.campaign.rundir import RunDir
from latentbias.io import load_npz
from latentbias.campaign.seeds import RoundSeeds

STEPS, ROUND0, CHECKPOINT = 4000, 2000, 1000


OPES = """
[opes]
barrier = 15.0
pace = 100
sigma = 0.05
grid_points = 50
"""


def make(folder: Path, execution: str = "", strategy: str = "metadynamics") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_toy_system(folder)
    text = toy_config_text(rounds=2, steps=STEPS, round0=ROUND0, checkpoint=CHECKPOINT, strategy=strategy,
                           extra=OPES if strategy == "opes" else "")
    (folder / "config.toml").write_text(text + "\n[execution]\nwalkers = 2\n" + execution)
    return folder / "config.toml"


def run(folder: Path, execution: str = "", strategy: str = "metadynamics") -> Path:
    Campaign(load_config(make(folder, execution, strategy)), folder / "run", progress=False).run()
    return folder / "run"


def frames(rundir: Path) -> dict[str, np.ndarray]:
    rd = RunDir(rundir)
    return load_frames((r, k, rd.read_segment(r, k)) for r in (0, 1) for k in range(rd.round_segments(r)))


def no_dask_processes_left() -> bool:
    import psutil

    left = [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and "resource_tracker" not in " ".join(p.cmdline())]  # multiprocessing's tracker lives until we exit
    return not left


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes owned by the tests (campaigns reach it with executor = "dask")."""
    import dask
    from distributed import Client, LocalCluster

    # Dask's nannies would also export MALLOC_TRIM_THRESHOLD_ into this process (slowing later subprocesses)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    rundir = run(tmp_path_factory.mktemp("walkers") / "straight")
    assert no_dask_processes_left()  # the campaign stopped the LocalCluster it started
    return rundir


def test_two_walker_runs_give_identical_frames(straight, tmp_path):
    again = run(tmp_path / "again")
    a, b = frames(straight), frames(again)
    assert a["positions"].tobytes() == b["positions"].tobytes()
    for key in ("bias_kjmol", "ct_kjmol", "walker", "step"):
        np.testing.assert_array_equal(a[key], b[key])
    # 2 walkers x frames per segment, walker 0 first in every segment
    per_seg = CHECKPOINT // 100
    np.testing.assert_array_equal(a["walker"][a["round"] == 1],
                                  np.tile(np.repeat([0, 1], per_seg), STEPS // CHECKPOINT))
    w = a["walker"]
    assert not np.array_equal(a["positions"][w == 0], a["positions"][w == 1])  # two distinct trajectories


def test_frames_csv_names_the_walker_of_every_frame(straight):
    """Run-directory contract: each round's frames.csv carries the walker of every frame as its last column, in
    the order of the segment files (round 0 too: it also runs with 2 walkers)."""
    f = frames(straight)
    for r in (0, 1):
        path = straight / f"round_{r:03d}" / "frames.csv"
        header = path.read_text().splitlines()[1].split(",")
        assert header[-1] == "walker" and header[:2] == ["step", "time_ps"]
        rows = np.loadtxt(path, delimiter=",", skiprows=2, ndmin=2)
        sel = f["round"] == r
        np.testing.assert_array_equal(rows[:, -1].astype(int), f["walker"][sel])
        np.testing.assert_array_equal(rows[:, 0].astype(int), f["step"][sel])
        assert set(rows[:, -1].astype(int)) == {0, 1}


def test_walker_segments_hold_the_one_frame_schema(straight):
    """Issue 9 item 7b for parallel walkers: every segment the walkers commit holds exactly SEGMENT_COLUMNS,
    ``walker`` included, with its dtypes and per-frame shapes (test_issue9_records.py checks the single-walker
    segments and the imported-frame record against the same schema)."""
    from latentbias.campaign.records import SEGMENT_COLUMNS, _SEGMENT_EXTRAS

    want = {c.name: np.dtype(c.dtype) for c in SEGMENT_COLUMNS}
    files = sorted(straight.glob("round_*/seg_*.npz"))
    assert len(files) >= 2 and {p.parent.name for p in files} == {"round_000", "round_001"}
    for path in files:
        seg = load_npz(path)
        assert set(seg) - set(_SEGMENT_EXTRAS) == set(want), path
        n = len(seg["step"])
        for name, dtype in want.items():
            assert seg[name].dtype == dtype and len(seg[name]) == n, (path, name)
        assert set(np.unique(seg["walker"])) == {0, 1}, path
        assert seg["positions"].shape[2:] == (3,) and seg["box"].shape[1:] == (3, 3)


def test_walkers_share_one_bias_and_each_frame_keeps_its_own_state(straight):
    rd = RunDir(straight)
    n_seg = rd.round_segments(1)
    assert n_seg == STEPS // CHECKPOINT
    previous = None
    for k in range(n_seg):
        seg = rd.read_segment(1, k)
        start, end, merged = seg["walker_grid_start"], seg["walker_grid_end"], seg["grid_end"]
        assert start.shape[0] == end.shape[0] == 2
        own = end - start  # each walker's own deposits of segment k
        assert np.all(own.max(axis=(1, 2)) > 0)  # both walkers deposited
        if previous is None:
            np.testing.assert_allclose(start, 0.0, atol=1e-12)  # no carried bias into round 1
        else:  # every walker started segment k under everything deposited before it, the other walker's included
            for w in range(2):
                np.testing.assert_allclose(start[w], previous, rtol=1e-12, atol=1e-9)
        # the shared bias after the exchange = before + both walkers' deposits
        np.testing.assert_allclose(merged, (previous if previous is not None else 0.0) + own.sum(axis=0),
                                   rtol=1e-12, atol=1e-9)
        previous = merged
    # the reweighting sees one piecewise-static state per walker and segment
    import json

    info = json.loads((straight / "weights.json").read_text())
    assert info["after_round"] == 1 and info["n_states"] == 2 * n_seg


def test_every_walker_state_reproduces_the_bias_recorded_on_its_frames(straight):
    """What makes the MBAR weights right with walkers (as tests/test_campaign_states.py for one walker): the state
    of walker w in segment k, through its encoder, brackets the bias recorded on w's frames by the simulation:
    between the walker's own grid at the segment's start and end (Gaussians only add; 0.2 kJ/mol for cubic
    splines in the Context vs multilinear interpolation here)."""
    import dataclasses

    campaign = Campaign(load_config(straight.parent / "config.toml"), straight, progress=False)
    f = campaign.all_frames(1)
    states, state_of = campaign.bias_states(f)
    z = campaign.model(0).file.encode(f["positions"].astype(float))
    checked = set()
    for s in np.unique(state_of[state_of >= 0]):
        sel = state_of == s
        (k,), (w,) = np.unique(f["segment"][sel]), np.unique(f["walker"][sel])  # one walker, one segment
        seg = campaign.run_dir.read_segment(1, int(k))
        state = states[s]
        v0 = dataclasses.replace(state, grid=seg["walker_grid_start"][w]).energy(z[sel])
        v1 = dataclasses.replace(state, grid=seg["walker_grid_end"][w]).energy(z[sel])
        recorded = f["bias_kjmol"][sel]
        assert np.all(recorded >= v0 - 0.2) and np.all(recorded <= v1 + 0.2)
        assert np.all(np.abs(state.energy(z[sel]) - recorded) <= (v1 - v0) + 0.2)
        checked.add((int(k), int(w)))
    assert checked == {(k, w) for k in range(STEPS // CHECKPOINT) for w in (0, 1)}
    assert f["bias_kjmol"][f["round"] == 1].max() > 1.0  # not vacuous


def test_opes_walkers_start_every_segment_from_the_merged_bias(cluster, tmp_path):
    """OPES walkers: each segment starts from the bias of all kernels deposited before it (the driver's merged
    estimate), not from their own kernels counted twice or the others' missing."""
    rundir = run(tmp_path / "opes", f'executor = "dask"\nscheduler = "{cluster.scheduler.address}"\n', "opes")
    rd = RunDir(rundir)
    previous = None
    for k in range(rd.round_segments(1)):
        seg = rd.read_segment(1, k)
        assert np.all(seg["kind"] == 3)  # KIND_OPES
        if previous is not None:
            for w in range(2):
                np.testing.assert_allclose(seg["walker_grid_start"][w], previous, rtol=0, atol=1e-9)
            # the walkers' own views at the end differ (each has only its own kernels of the segment)
            assert np.abs(seg["walker_grid_end"][0] - seg["walker_grid_end"][1]).max() > 1e-3
        previous = seg["grid_end"]
    f = frames(rundir)
    assert np.all(f["ct_kjmol"][f["round"] == 1] != 0.0)  # every frame carries the c(t) of its own bias


def _kill_a_worker_mid_segment(client, pids: dict[str, int], pattern: re.Pattern, done: threading.Event,
                               killed: dict) -> None:
    while not done.is_set():
        for address, keys in client.processing().items():
            hit = [str(k) for k in keys if pattern.search(str(k))]
            if hit and address in pids:
                # kill at once: on an idle machine a toy segment can finish within tens of ms
                os.kill(pids[address], signal.SIGKILL)
                killed.update(pid=pids[address], key=hit[0])
                return
        time.sleep(0.01)


def test_worker_killed_mid_segment_costs_only_that_segment(straight, cluster, tmp_path):
    client = cluster
    done, killed = threading.Event(), {}
    try:
        pids = client.run(os.getpid)
        # a segment after the first of round 1: its rerun starts from a committed checkpoint and bias state
        pattern = re.compile(r"latentbias-r001-k0000[12]-w0[01]-")
        killer = threading.Thread(target=_kill_a_worker_mid_segment, args=(client, pids, pattern, done, killed))
        killer.start()
        rundir = run(tmp_path / "killed", f'executor = "dask"\nscheduler = "{client.scheduler.address}"\n')
        done.set()
        killer.join()
        assert killed, "the worker was not killed during a segment (the round finished first)"
        assert killed["pid"] not in client.run(os.getpid).values()  # it is gone (the nanny started a new one)
    finally:
        done.set()
    a, b = frames(straight), frames(rundir)
    assert a["positions"].tobytes() == b["positions"].tobytes()  # nothing lost, nothing repeated, same frames
    for key in ("bias_kjmol", "ct_kjmol", "walker", "step", "segment"):
        np.testing.assert_array_equal(a[key], b[key])
    # the killed segment was committed from another process than the one killed
    k, w = (int(x) for x in re.search(r"k(\d{5})-w(\d{2})", killed["key"]).groups())
    log = (rundir / "campaign.log").read_text()
    line = re.search(rf"round 1 segment {k + 1}/\d+: 2 walkers committed \((.*)\)", log).group(1)
    assert f":{killed['pid']}" not in line.split(",")[w]


RUNNER = """
import sys
from latentbias.campaign.config import load_config
from latentbias.campaign.loop import Campaign
if __name__ == "__main__":
    Campaign(load_config(sys.argv[1]), sys.argv[2], progress=False).run()
"""


def test_driver_killed_mid_round_resumes_to_the_same_frames(straight, cluster, tmp_path):
    """SIGKILL the campaign process (the driver) in the middle of round 1, rerun the same command: the finished
    run holds exactly the frames of the uninterrupted one and no file of the interrupted commit."""
    config = make(tmp_path, f'executor = "dask"\nscheduler = "{cluster.scheduler.address}"\n')
    (tmp_path / "runner.py").write_text(RUNNER)
    rundir = tmp_path / "run"
    cmd = [sys.executable, str(tmp_path / "runner.py"), str(config), str(rundir)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress_file, at = rundir / "progress.json", None
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            progress = json.loads(progress_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            progress = {}
        if progress.get("round") == 1 and progress.get("phase") == "simulate" and progress.get("segments", 0) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            at = progress["segments"]
            break
        time.sleep(0.01)
    proc.wait()
    assert at is not None and at < STEPS // CHECKPOINT, f"not killed mid-round: {proc.stderr.read().decode()[-2000:]}"
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    a, b = frames(straight), frames(rundir)
    assert a["positions"].tobytes() == b["positions"].tobytes()
    np.testing.assert_array_equal(a["segment"], b["segment"])
    assert "resuming" in (rundir / "campaign.log").read_text()
    names = sorted(p.name for p in (rundir / "round_001").iterdir())
    last = STEPS // CHECKPOINT - 1  # only the last segment's walker files remain
    assert [n for n in names if re.match(r"(chk|bias|share)_", n)] == sorted(
        [f"bias_{last:05d}_w0{w}.{x}" for w in (0, 1) for x in ("json", "npz")]
        + [f"chk_{last:05d}_w0{w}.{x}" for w in (0, 1) for x in ("chk", "json")] + [f"share_{last:05d}.npz"])


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def test_walker_checkpoints_and_bias_states_are_verified_on_load(straight, tmp_path):
    """Each walker's checkpoint carries the run directory's checkpoint scheme (``chk_KKKKK_wWW.json``: SHA-256 and
    platform, RunDir.write_checkpoint) and its bias state the SHA-256 of its npz; the driver verifies both before a
    segment runs (read_walker_state), and one flipped byte is an error naming the file and what to do."""
    import shutil

    from latentbias.campaign.rundir import RunDirError
    from latentbias.campaign.walkers import read_walker_state

    platform = load_config(straight.parent / "config.toml").md.platform
    last = STEPS // CHECKPOINT - 1
    for w in (0, 1):
        info = json.loads((straight / "round_001" / f"chk_{last:05d}_w0{w}.json").read_text())
        assert info["platform"] == platform
    copy = tmp_path / "run"
    shutil.copytree(straight, copy)
    rd = RunDir(copy)
    chk = copy / "round_001" / f"chk_{last:05d}_w01.chk"
    checkpoint, bias = read_walker_state(rd, 1, last, 1, platform)
    assert checkpoint == chk.read_bytes() and set(bias) == {".npz", ".json"}

    _flip_byte(chk, len(chk.read_bytes()) // 2)
    with pytest.raises(RunDirError, match=rf"{re.escape(str(chk))} does not match the SHA-256 stored in "
                                          rf".*chk_{last:05d}_w01\.json.*new --rundir"):
        read_walker_state(rd, 1, last, 1, platform)
    read_walker_state(rd, 1, last, 0, platform)  # the other walker's files are intact

    npz = copy / "round_001" / f"bias_{last:05d}_w00.npz"
    _flip_byte(npz, 100)
    with pytest.raises(RunDirError, match=rf"{re.escape(str(npz))} does not match the SHA-256 stored in .*"
                                          rf"bias_{last:05d}_w00\.json"):
        read_walker_state(rd, 1, last, 0, platform)
    other = "CPU" if platform != "CPU" else "Reference"
    with pytest.raises(RunDirError, match=rf"written by the {platform} platform and cannot be loaded on {other}"):
        read_walker_state(rd, 1, last, 0, other)


def test_walker_seeds_are_distinct_and_leave_one_walker_streams_unchanged():
    s = RoundSeeds(9, 1)
    w0, w1 = s.for_walker(0), s.for_walker(1)
    assert len({s.integrator, w0.integrator, w1.integrator, s.velocities, w0.velocities, w1.velocities}) == 6
    assert len({s.restart_velocities(2), w0.restart_velocities(2), w1.restart_velocities(2)}) == 3
    assert RoundSeeds(9, 1).integrator == s.integrator and w1.integrator == RoundSeeds(9, 1, 1).integrator


def test_frontier_targets_are_dealt_to_the_walkers():
    sched = walker_frontier_schedules(n_segments=4, n_targets=3, n_walkers=2, pull_fraction=0.5)
    assert [sorted({t for t, _ in s}) for s in sched] == [[0, 2], [1]]
    assert sched[1] == [[1, "pull"], [1, "pull"], [1, "release"], [1, "release"]]
    assert walker_frontier_schedules(2, 1, 3, 0.5)[2] == [[0, "pull"], [0, "release"]]  # more walkers than targets


BASE = {"system": {"testsystem": "alanine-dipeptide-vacuum"}}


@pytest.mark.parametrize("execution, match", [
    ({"walkers": 0}, r"\[execution\] walkers must be >= 1"),
    ({"executor": "slurm"}, r"executor = 'slurm' is not allowed; choose one of local, dask, jobqueue"),
    ({"executor": "dask"}, r'needs scheduler = "tcp://HOST:PORT"'),
    ({"executor": "jobqueue", "cluster_class": "Slurm"}, r"cluster_class = 'Slurm' is not allowed"),
    ({"devices": [0, 1]}, r"devices = \['0', '1'\] needs a GPU platform"),
    ({"threads_per_walker": 0}, r"threads_per_walker must be >= 1"),
    ({"cores": 4}, r"unknown key\(s\) \['cores'\] in \[execution\]"),
])
def test_execution_config_errors_name_the_key(execution, match):
    with pytest.raises(ConfigError, match=match):
        from_dict({**BASE, "execution": execution})


def test_only_the_number_of_walkers_is_part_of_the_stored_config():
    assert "execution" not in from_dict(BASE).to_dict()  # one walker: config.json as before walkers existed
    cfg = from_dict({**BASE, "execution": {"walkers": 3, "executor": "dask", "scheduler": "tcp://h:8786"}})
    assert cfg.to_dict()["execution"] == {"walkers": 3}
    cfg = from_dict({**BASE, "md": {"platform": "CUDA"},
                     "execution": {"walkers": 2, "devices": [0, 1], "cluster": {"cores": 4, "processes": 1}}})
    assert cfg.execution.devices == ["0", "1"] and cfg.execution.cluster == {"cores": 4, "processes": 1}
    from latentbias.campaign.execution import walker_platform_properties

    assert walker_platform_properties(cfg.execution, "CUDA", {"Precision": "mixed"}, 3) == {
        "Precision": "mixed", "DeviceIndex": "1"}


def test_missing_dask_jobqueue_is_a_clear_error(monkeypatch):
    import importlib

    from latentbias.campaign.execution import WalkerPool

    real = importlib.import_module

    def no_jobqueue(name, *args):
        if name == "dask_jobqueue":
            raise ImportError("No module named 'dask_jobqueue'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_jobqueue)
    cfg = from_dict({**BASE, "execution": {"walkers": 2, "executor": "jobqueue"}})
    with pytest.raises(ImportError, match="pip install dask-jobqueue"):
        WalkerPool(cfg.execution).client()


def test_readme_slurm_example_config_builds_the_job_script():
    """examples/ala2_campaign_slurm.toml (the README's SLURM config) loads and gives a job script with one GPU and
    one walker slot per job (dask-jobqueue builds the script without a batch system; nothing is submitted)."""
    pytest.importorskip("dask_jobqueue")
    from latentbias.campaign.execution import _jobqueue_cluster

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "examples" / "ala2_campaign_slurm.toml")
    assert cfg.md.platform == "CUDA" and cfg.execution.walkers == 8 and cfg.execution.executor == "jobqueue"
    assert "[execution.cluster]" in (root / "README.md").read_text()
    cluster = _jobqueue_cluster(cfg.execution)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu" in script
    assert "--resources walker=1" in script


def test_converge_drift_orders_walker_frames_by_simulated_time(tmp_path):
    """The converge phase's drift compares the estimate with and without the last part of the run *in time*.
    Two walkers, each stationary (walker 0 in a basin at z = -1.5, walker 1 at z = +1.5, independent samples, no
    bias): the run has no drift at all, only noise. In the segment files' order (walker 0's frames of a segment,
    then walker 1's) the last 1/8 of the frames is walker 1's second half of the last segment; leaving it out
    changes the basins' balance from 1:1 to 4:3 and gives a spurious drift of ~0.36 kJ/mol (kT ln(8/7) and
    kT ln(6/7) in the two basins at 300 K, offset removed)."""
    from latentbias.campaign.converge import convergence_history, latent_fes_drift
    from latentbias.campaign.weights import converge_logweights

    cfg = from_dict({**BASE, "md": {"platform": "Reference"},
                     "converge": {"enabled": True, "burn_in": 0.0, "window": 0.125, "fes_bins": 30,
                                  "fes_cutoff": 25.0}})
    rd = RunDir(tmp_path / "run")
    variables = [{"index": 0, "minValue": -3.0, "maxValue": 3.0}]
    rd.write_plan(0, {"round": 0, "strategy": "opes", "converge": True, "segments": 2, "variables": variables})
    rng = np.random.default_rng(11)
    n, save = 2000, 2  # frames per walker and segment, MD steps between frames
    for k in range(2):
        steps = k * n * save + save * np.arange(1, n + 1)
        cols = {c: np.concatenate([v, v]) for c, v in {"step": steps, "time_ps": 0.002 * steps}.items()}
        z = np.concatenate([rng.normal(-1.5, 0.4, n), rng.normal(1.5, 0.4, n)])[:, None]  # walker 0, walker 1
        rd.save_npz(rd.segment_file(0, k), z=z,
                    bias_kjmol=np.zeros(2 * n), ct_kjmol=np.zeros(2 * n), scale=np.ones(2 * n),
                    walker=np.repeat([0, 1], n), ood=np.zeros(2 * n, bool), target=np.full(2 * n, -1), **cols)
    drift = convergence_history(rd, cfg, 0)["drift_kjmol"][-1]

    segs = [rd.read_segment(0, k) for k in range(2)]
    z = np.concatenate([s["z"] for s in segs])
    walker = np.concatenate([s["walker"] for s in segs])
    step = np.concatenate([s["step"] for s in segs])
    logw = converge_logweights({"bias_kjmol": np.zeros(len(z)), "ct_kjmol": np.zeros(len(z))}, 300.0)

    def drift_of(order):
        return latent_fes_drift(z[order], logw[order], 0.125, 30, 25.0, [(-3.0, 3.0)], 300.0)

    in_time = np.array([i for s in np.unique(step) for i in np.flatnonzero(step == s)])  # walkers interleaved
    assert drift == pytest.approx(drift_of(in_time), rel=1e-12)
    assert drift < 0.15  # noise of 2 x 4000 independent samples; the run is stationary
    in_files = np.arange(len(z))
    assert drift_of(in_files) > 0.3  # what file order measured: the spurious walker-imbalance drift
    assert set(walker[in_time][-500:]) == {0, 1}
