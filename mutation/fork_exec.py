"""Run the pending mutants of a cosmic-ray session, each in a forked child of one warm process.

    python mutation/fork_exec.py <session.sqlite> <config.toml> [--max-minutes M] [--shard i/n]

The one runner of ``mutation/run.sh`` (``make mutation``). ``cosmic-ray exec`` starts a fresh
``python -m pytest`` for every mutant; importing torch, OpenMM, mdtraj and scipy is most of that (10-40 s per
mutant on a shared 2-core machine). This runner imports those third-party packages **once** (never ``latentbias``)
and, for each pending mutant of the session,

1. builds the mutant with cosmic-ray's own operator (``cosmic_ray.mutating.mutate_code``: the same mutant, same
   occurrence numbering as ``cosmic-ray exec``) and writes it to the module file;
2. forks a child that imports ``latentbias`` **fresh from the files on disk** (the parent never imported it, so
   the mutant is seen everywhere: by importers, registries, ``inspect`` and TorchScript alike) and runs
   ``pytest.main`` on each stage of the config's ``test-command`` in turn — stages are separated by ``--then``
   (a small exact-test file first: most mutants die there in seconds, before the big selection is collected);
   a stage runs in its own child, so nothing of one stage or mutant leaks into the next;
3. restores the original source and records the outcome in the session database with cosmic-ray's semantics
   (every stage passes: survived; anything else, a crash at import or a timeout of the whole selection included:
   killed), so ``cr-report`` reads it like any session.

``test-command`` must read ``python -m pytest ARGS [--then ARGS ...]``. Bytecode is never written, so a mutant's
``.pyc`` cannot be picked up later. Run it from the root of the tree to mutate, with that tree first on PYTHONPATH
(``run.sh`` does both), and not in a tree you are editing (the module file is rewritten while a mutant runs).
``--shard i/n`` splits a session over n processes, each in its own copy of the tree, sharing the session database.
``mutation/recheck_survivors.py`` uses :func:`run_stages` to re-run survivors against tests written later.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import signal
import sys
import tempfile
import time
import tomllib
from pathlib import Path

_PRELOAD = ("numpy", "scipy.linalg", "scipy.optimize", "scipy.special", "scipy.stats", "torch", "openmm",
            "openmm.app", "openmm.unit", "mdtraj", "openmmtorch", "pymbar", "pytest", "_pytest.python")


def preload() -> None:
    """Import the slow third-party packages once (before any fork); never ``latentbias``."""
    sys.dont_write_bytecode = True
    for name in _PRELOAD:  # torch before openmm, as latentbias does
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  (optional extras; the child imports what it needs)
            pass
    loaded = [m for m in sys.modules if m == "latentbias" or m.startswith("latentbias.")]
    if loaded:
        raise RuntimeError(f"latentbias was imported before the fork ({loaded[:3]}): a mutant would not be seen")


def parse_stages(args: list[str]) -> list[list[str]]:
    """Split pytest arguments at ``--then`` into stages."""
    stages: list[list[str]] = [[]]
    for a in args:
        if a == "--then":
            stages.append([])
        else:
            stages[-1].append(a)
    return [s for s in stages if s]


def _child(pytest_args: list[str], log: Path) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.setsid()
    try:
        import pytest

        rc = pytest.main(pytest_args)
    except BaseException:  # noqa: BLE001  (report, never return into the parent's loop)
        import traceback

        traceback.print_exc()
        rc = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(rc))


def run_stages(stages: list[list[str]], log: Path, timeout: float) -> int | None:
    """Run each stage in a fresh fork, stopping at the first failure.

    Returns the first non-zero exit status (a child killed by a signal gives 128 + signal), 0 if every stage
    passed, or None if the stages together ran past ``timeout`` seconds (the child's process group is killed).
    The children's output is appended to ``log``.
    """
    t0 = time.monotonic()
    for stage in stages:
        pid = os.fork()
        if pid == 0:
            _child(stage, log)
        while True:
            waited, status = os.waitpid(pid, os.WNOHANG)
            if waited:
                break
            if time.monotonic() - t0 > timeout:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            time.sleep(0.05)
        rc = os.waitstatus_to_exitcode(status)
        rc = 128 - rc if rc < 0 else rc
        if rc != 0:
            return rc
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("session")
    parser.add_argument("config")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop starting mutants after this")
    parser.add_argument("--shard", default="0/1", help="i/n: run only pending mutants i, i+n, ... (one tree each)")
    args = parser.parse_args(argv)
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)["cosmic-ray"]
    command = shlex.split(cfg["test-command"])
    if command[:3] != ["python", "-m", "pytest"]:
        print(f"{args.config}: test-command must read 'python -m pytest ARGS [--then ARGS ...]'", file=sys.stderr)
        return 2
    stages = parse_stages(command[3:])
    timeout = float(cfg.get("timeout", 300.0))
    paths = cfg["module-path"]
    paths = [Path(p) for p in ([paths] if isinstance(paths, str) else paths)]
    originals = {p: p.read_text() for p in paths}

    from cosmic_ray import plugins
    from cosmic_ray.mutating import _make_diff, mutate_code
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    preload()
    start = time.monotonic()
    done = 0
    with use_db(args.session, WorkDB.Mode.open) as db, tempfile.TemporaryDirectory() as tmp:
        shard, n_shards = (int(v) for v in args.shard.split("/"))
        for item in sorted(db.pending_work_items, key=lambda it: it.job_id)[shard::n_shards]:
            if args.max_minutes is not None and time.monotonic() - start > 60 * args.max_minutes:
                break
            (spec,) = item.mutations
            path = Path(spec.module_path)
            if path not in originals:
                print(f"skipping {item.job_id}: mutates {spec.module_path}, not in {paths}", file=sys.stderr)
                continue
            original = originals[path]
            operator = plugins.get_operator(spec.operator_name)(**(spec.operator_args or {}))
            mutated = mutate_code(original, operator, spec.occurrence)
            if mutated is None:
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.NO_TEST))
                continue
            log = Path(tmp) / "out.txt"
            log.unlink(missing_ok=True)
            t0 = time.monotonic()
            try:
                path.write_text(mutated)
                rc = run_stages(stages, log, timeout)
            finally:
                path.write_text(original)
            output = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            if rc is None:
                outcome, output = TestOutcome.KILLED, f"timeout after {timeout:.0f} s\n{output}"
            else:
                outcome = TestOutcome.SURVIVED if rc == 0 else TestOutcome.KILLED
                output = f"exit status {rc}\n{output}"
            diff = "\n".join(_make_diff(original, mutated, path))
            db.set_result(item.job_id, WorkResult(output=output, diff=diff, test_outcome=outcome,
                                                  worker_outcome=WorkerOutcome.NORMAL))
            done += 1
            line = next((ln for ln in diff.splitlines() if ln.startswith("@@")), "")
            print(f"{time.strftime('%H:%M:%S')} {outcome.value:9s} {time.monotonic() - t0:6.1f}s "
                  f"{path.name} {spec.operator_name} #{spec.occurrence} {line}", flush=True)
    for p, text in originals.items():
        if p.read_text() != text:
            p.write_text(text)
    print(f"{done} mutants run in {(time.monotonic() - start) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
