"""The README's SLURM configuration (examples/ala2_campaign_slurm.toml) through a fake SLURM (issue 14).

No SLURM cluster here: ``sbatch``, ``squeue`` and ``scancel`` are the fakes of tests/fake_slurm.py, first on
``PATH``; ``sbatch`` runs the job script that dask-jobqueue's ``SLURMCluster`` generates as a local background
process. What this tests: the ``[execution]`` section as written (``executor = "jobqueue"``, the
``[execution.cluster]`` keyword arguments) gives job scripts that ``sbatch`` accepts, that start the driver's
Python with the walker slot, whose workers connect to the campaign's scheduler and run its segments; jobs are
cancelled when the campaign returns; cancelled jobs are resubmitted and their segments rerun. What it
cannot test: a real SLURM (queueing, ``--gres``/``--mem``/walltime enforcement, several nodes, a shared
filesystem, CUDA).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import fake_slurm
from latentbias.campaign.config import CampaignConfig, from_dict, load_config, read_toml

pytest.importorskip("dask_jobqueue")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ala2_campaign_slurm.toml"


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """The fake SLURM on PATH; its state folder. Every job still running at the end is killed (and reported)."""
    state = tmp_path / "slurm"
    for key, value in fake_slurm.install(tmp_path / "bin", state).items():
        monkeypatch.setenv(key, value)
    try:
        yield state
    finally:
        left = fake_slurm.kill_all(state)
        assert not left, f"jobs {left} were still running after the test"


def squeue() -> list[int]:
    out = subprocess.run(["squeue", "-h"], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()]


def wait_no_jobs(timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while squeue() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not squeue(), f"jobs still running {timeout:.0f} s after the campaign returned: {squeue()}"


def check_job_script(record: dict) -> None:
    """What the README's [execution.cluster] asks of every job, as sbatch received it."""
    assert record["directives"] == ["#SBATCH -J dask-worker", "#SBATCH -p gpu", "#SBATCH -A myproject",
                                    "#SBATCH -n 1", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8G",
                                    "#SBATCH -t 04:00:00", "#SBATCH --gres=gpu:1"]
    command = record["script"].strip().splitlines()[-1].split()
    assert command[:3] == [sys.executable, "-m", "distributed.cli.dask_worker"]  # the driver's Python
    assert command[command.index("--nthreads") + 1] == "2" and "walker=1" in command
    assert "export MALLOC_TRIM_THRESHOLD_=1073741824" in record["script"]


def test_readme_slurm_config_submits_jobs_whose_worker_connects(slurm):
    """Fast check (default suite): the README's config as written, one job: sbatch accepts its script, its worker
    connects with one walker slot, runs a task inside the job and is cancelled when the pool closes."""
    from latentbias.campaign.execution import WalkerPool

    cfg = load_config(EXAMPLE)
    cfg.execution.jobs = 1
    pool = WalkerPool(cfg.execution)
    try:
        client = pool.client()
        client.wait_for_workers(1, timeout=180)
        (info,) = client.scheduler_info()["workers"].values()
        assert info["resources"] == {"walker": 1} and info["nthreads"] == 2
        job_id = pool.submit(os.getenv, "SLURM_JOB_ID", key="job-id").result(timeout=60)
        trim = pool.submit(os.getenv, "MALLOC_TRIM_THRESHOLD_", key="trim").result(timeout=60)
        jobs = fake_slurm.jobs(slurm)
        assert list(jobs) == [int(job_id)] and squeue() == [int(job_id)]  # the task ran inside the job
        assert trim == "1073741824"
        check_job_script(jobs[int(job_id)])
    finally:
        pool.close()
    wait_no_jobs()


def tiny(executor: str) -> CampaignConfig:
    """examples/ala2_campaign_slurm.toml shrunk to a tiny campaign with 2 walkers: Reference platform (no GPU
    here), round 0 + 1 metadynamics round + the OPES converge phase, 2 segments of 500 steps each; the
    [execution] section as written except walkers = jobs = 2 ("local": the same walkers on a LocalCluster)."""
    raw = read_toml(EXAMPLE)
    raw["md"]["platform"] = "Reference"
    del raw["md"]["platform_properties"]
    raw["campaign"].update(rounds=2, round0_steps=1000, steps_per_round=1000, save_interval=50,
                           checkpoint_interval=500)
    raw["model"].update(epochs=5, patience=5)
    raw["ood"]["min_frames"] = 10
    raw["converge"].update(max_steps=1000, min_steps=500)
    raw["execution"].update(walkers=2, jobs=2)
    if executor == "local":
        raw["execution"] = {"walkers": 2, "threads_per_walker": raw["execution"]["threads_per_walker"]}
    return from_dict(raw, base_dir=EXAMPLE.parent)


def run_frames(cfg: CampaignConfig, rundir: Path) -> dict[str, np.ndarray]:
    from latentbias.campaign.loop import Campaign

    campaign = Campaign(cfg, rundir, progress=False)
    campaign.run()
    return campaign.all_frames(campaign.last_round)


def _cancel_the_jobs_in_round_0(rundir: Path, state: Path, done: threading.Event, out: dict) -> None:
    while not done.is_set():
        try:
            progress = json.loads((rundir / "progress.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            progress = {}
        running = sorted(j for j, rec in fake_slurm.jobs(state).items() if rec["running"])
        if progress.get("round") == 0 and progress.get("segments", 0) >= 1 and len(running) == 2:
            out["jobs"], out["time"] = running, time.time()
            out["rc"] = subprocess.run(["scancel", *map(str, running)], capture_output=True).returncode
            return
        time.sleep(0.02)


@pytest.mark.slow
def test_readme_slurm_config_runs_a_campaign_through_fake_slurm(slurm, tmp_path):
    """End to end (~2 min on 2 loaded cores): the tiny campaign through the fake SLURM gives exactly the frames of
    the local executor with the same seeds, although both jobs are cancelled (scancel) after round 0's first
    segment: the campaign can only finish on replacement jobs; every job is gone when it returns."""
    import dask

    local = run_frames(tiny("local"), tmp_path / "local")
    rundir = tmp_path / "slurm_run"
    done, cancelled = threading.Event(), {}
    canceller = threading.Thread(target=_cancel_the_jobs_in_round_0, args=(rundir, slurm, done, cancelled))
    canceller.start()
    try:  # replace a lost job after 1 s instead of 15 s
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}):
            frames = run_frames(tiny("jobqueue"), rundir)
    finally:
        done.set()
        canceller.join()
    wait_no_jobs()
    assert cancelled.get("rc") == 0, f"the jobs were not cancelled during round 0: {cancelled}"
    jobs = fake_slurm.jobs(slurm)
    replacements = [j for j, rec in jobs.items() if rec["submitted"] > cancelled["time"]]
    assert len(replacements) >= 2 and sorted(set(jobs) - set(replacements)) == cancelled["jobs"]
    for record in jobs.values():
        check_job_script(record)
    assert any("Registered to:" in (slurm / f"job_{j}.err").read_text() for j in replacements)
    assert local["positions"].tobytes() == frames["positions"].tobytes()
    assert set(local) == set(frames)
    for key in local:
        np.testing.assert_array_equal(local[key], frames[key], err_msg=key)
    assert set(frames["walker"]) == {0, 1} and set(frames["round"]) == {0, 1, 2}
    table = (rundir / "round_001" / "frames.csv").read_text().splitlines()
    assert table[1].split(",")[-1] == "walker"
