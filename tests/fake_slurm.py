"""A fake SLURM for tests: ``sbatch``, ``squeue`` and ``scancel`` executables that run batch jobs as local
background processes.

:func:`install` writes the three commands into a folder (put it first on ``PATH``); each is a two-line shell
wrapper around this file, run with the test's Python. What they do, as SLURM does on one node:

``sbatch SCRIPT``
    checks that every ``#SBATCH`` line of the script is an option (``-X value``, ``--opt=value`` or ``--opt``),
    copies the script (dask-jobqueue deletes its file once ``sbatch`` returns, as SLURM allows), starts it with
    ``bash`` as a background process in its own session (the job's process group) with the caller's environment
    (``--export=ALL``, SLURM's default) plus ``SLURM_JOB_ID``, ``SLURM_JOB_NAME``, ``SLURM_CPUS_PER_TASK``,
    and prints ``Submitted batch job N``. The job's ``#SBATCH`` directives, command and pid are recorded in
    ``STATE/job_N.json``, its output in ``STATE/job_N.out`` / ``.err``.
``squeue [-h] [-j N[,M...]] [-u USER]``
    one line per running job (``JOBID PARTITION NAME STATE``); finished jobs are not listed (as once SLURM's
    ``MinJobAge`` has passed).
``scancel N [M...]``
    SIGTERM to the job's process group (what SLURM sends first); an unknown job id is an error (exit code 1).

Not modelled: queueing, resource limits (``--mem``, ``--gres``, walltime), several nodes, job arrays.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE_ENV = "FAKE_SLURM_STATE"
_DIRECTIVE = re.compile(r"^#SBATCH\s+(-[A-Za-z](\s+\S+)?|--[a-z][a-z-]*(=\S+|\s+\S+)?)\s*$")


def install(bin_dir: Path, state_dir: Path) -> dict[str, str]:
    """Write ``sbatch``, ``squeue`` and ``scancel`` into ``bin_dir``; returns the environment variables to set
    (``PATH`` with ``bin_dir`` first, the state folder)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in ("sbatch", "squeue", "scancel"):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" {name} "$@"\n')
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", STATE_ENV: str(state_dir)}


def _state() -> Path:
    return Path(os.environ[STATE_ENV])


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # an unreaped zombie has ended


def jobs(state: Path | None = None) -> dict[int, dict]:
    """All jobs ever submitted (id -> record with ``pid``, ``directives``, ``running``)."""
    state = state or _state()
    out = {}
    for path in sorted(state.glob("job_*.json")):
        record = json.loads(path.read_text())
        record["running"] = _alive(record["pid"])
        out[int(record["id"])] = record
    return out


def _next_id(state: Path) -> int:
    n = 1000
    while True:
        n += 1
        try:  # atomic: two concurrent sbatch calls never get the same id
            os.close(os.open(state / f"job_{n}.lock", os.O_CREAT | os.O_EXCL))
            return n
        except FileExistsError:
            continue


def sbatch(args: list[str]) -> int:
    if not args or not Path(args[-1]).is_file():
        print("sbatch: error: Unable to open file " + (args[-1] if args else ""), file=sys.stderr)
        return 1
    script = Path(args[-1])
    text = script.read_text()
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    bad = [line for line in directives if not _DIRECTIVE.match(line)]
    if bad:
        print(f"sbatch: error: invalid directive(s) {bad}", file=sys.stderr)
        return 1
    state = _state()
    job = _next_id(state)
    copy = state / f"job_{job}.sh"
    shutil.copyfile(script, copy)
    name = next((line.split()[2] for line in directives if line.split()[1] == "-J"), script.name)
    cpus = next((line.split("=", 1)[1] for line in directives if line.startswith("#SBATCH --cpus-per-task=")), "1")
    env = {**os.environ, "SLURM_JOB_ID": str(job), "SLURM_JOB_NAME": name, "SLURM_CPUS_PER_TASK": cpus}
    env.pop(STATE_ENV, None)
    with open(state / f"job_{job}.out", "wb") as out, open(state / f"job_{job}.err", "wb") as err:
        proc = subprocess.Popen(["bash", str(copy)], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                cwd=os.getcwd(), start_new_session=True)
    record = {"id": job, "pid": proc.pid, "name": name, "directives": directives, "script": text,
              "submitted": time.time()}
    tmp = state / f".job_{job}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, state / f"job_{job}.json")
    print(f"Submitted batch job {job}")
    return 0


def squeue(args: list[str]) -> int:
    header, wanted = True, None
    it = iter(args)
    for a in it:
        if a in ("-h", "--noheader"):
            header = False
        elif a in ("-j", "--jobs"):
            wanted = {int(j) for j in next(it).split(",")}
        elif a.startswith("--jobs="):
            wanted = {int(j) for j in a.split("=", 1)[1].split(",")}
        elif a in ("-u", "--user"):
            next(it)
    if header:
        print(f"{'JOBID':>8} {'PARTITION':>9} {'NAME':>12} STATE")
    for job, record in jobs().items():
        if record["running"] and (wanted is None or job in wanted):
            partition = next((d.split()[2] for d in record["directives"] if d.split()[1] == "-p"), "debug")
            print(f"{job:>8} {partition:>9} {record['name'][:12]:>12} RUNNING")
    return 0


def scancel(args: list[str]) -> int:
    known, rc = jobs(), 0
    for a in args:
        job = int(a)
        if job not in known:
            print(f"scancel: error: Kill job error on job id {job}: Invalid job id specified", file=sys.stderr)
            rc = 1
            continue
        if known[job]["running"]:
            try:
                os.killpg(known[job]["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
    return rc


def kill_all(state: Path) -> list[int]:
    """SIGKILL every job still running (test cleanup); returns their ids."""
    killed = []
    for job, record in jobs(state).items():
        if record["running"]:
            try:
                os.killpg(record["pid"], signal.SIGKILL)
                killed.append(job)
            except ProcessLookupError:
                pass
    return killed


if __name__ == "__main__":
    sys.exit({"sbatch": sbatch, "squeue": squeue, "scancel": scancel}[sys.argv[1]](sys.argv[2:]))
