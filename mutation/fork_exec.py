"""Run the pending mutants of a cosmic-ray session in forked children of one warm process (a faster ``exec``).

    python mutation/fork_exec.py <session.sqlite> <config.toml> [--max-minutes M] [--shard i/n]

``cosmic-ray exec`` starts a fresh ``python -m pytest`` for every mutant; importing torch, OpenMM and the package
is most of that (10-40 s per mutant on a shared 2-core machine). This runner imports them **once**, then for each
pending mutant of the session forks a child that

1. builds the mutant with cosmic-ray's own operator (``cosmic_ray.mutating.mutate_code``: the same mutant, same
   occurrence numbering as ``cosmic-ray exec``) and writes it to the module file (so ``inspect``/TorchScript see
   it);
2. executes the mutated source in the already imported module's namespace and rebinds every name other loaded
   modules imported from it (``from .fes import free_energy_surface``: same name, same old object) to the new
   object, so callers anywhere reach the mutant;
3. runs ``pytest.main`` with the arguments of the config's ``test-command`` (test modules are imported fresh in
   the child, after the rebinding).

The parent restores the original source after each child and records the outcome in the session database with
cosmic-ray's semantics (exit status 0: survived; anything else, a crash at import or a timeout included: killed),
so ``cr-report`` reads it like any session. Run it from the root of the tree to mutate, with that tree first on
PYTHONPATH, and not in a tree you are editing (the module file is rewritten while a mutant runs). ``--shard i/n``
splits a session over n processes, each in its own copy of the tree, sharing the session database.
Limitation: the warm process keeps the *original* module's objects that exist before the fork (none of the
package's objects are created at import time by the physics modules mutated here); a mutant of a module whose
import-time side effects matter elsewhere must be run with ``cosmic-ray exec``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shlex
import signal
import sys
import tempfile
import time
import tomllib
from pathlib import Path


def _preload() -> None:
    import torch  # noqa: F401  (before openmm, as latentbias does)

    import latentbias

    for info in pkgutil.walk_packages(latentbias.__path__, "latentbias."):
        try:
            importlib.import_module(info.name)
        except Exception:  # noqa: BLE001  (optional extras; the child imports what it needs)
            pass
    for name in ("pytest", "mdtraj", "pymbar", "scipy.stats", "scipy.optimize", "openmm.app", "matplotlib"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001
            pass


def _child(module_name: str, path: Path, mutated: str, pytest_args: list[str], log: Path) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.setsid()
    try:
        path.write_text(mutated)
        mod = sys.modules[module_name]
        old = dict(vars(mod))
        exec(compile(mutated, str(path), "exec"), mod.__dict__)  # noqa: S102
        new = vars(mod)
        for other in list(sys.modules.values()):
            d = getattr(other, "__dict__", None)
            if other is mod or not isinstance(d, dict):
                continue
            for key, value in list(d.items()):
                if key in old and old[key] is value and key in new and new[key] is not value:
                    d[key] = new[key]
        import pytest

        rc = pytest.main(pytest_args)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        rc = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(rc))


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
        print(f"{args.config}: test-command must start with 'python -m pytest'", file=sys.stderr)
        return 2
    pytest_args = command[3:]
    timeout = float(cfg.get("timeout", 300.0))
    path = Path(cfg["module-path"])
    module_name = ".".join(path.with_suffix("").parts)
    original = path.read_text()

    from cosmic_ray import plugins
    from cosmic_ray.mutating import _make_diff, mutate_code
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    _preload()
    if module_name not in sys.modules:
        importlib.import_module(module_name)
    start = time.monotonic()
    done = 0
    with use_db(args.session, WorkDB.Mode.open) as db, tempfile.TemporaryDirectory() as tmp:
        shard, n_shards = (int(v) for v in args.shard.split("/"))
        for item in sorted(db.pending_work_items, key=lambda it: it.job_id)[shard::n_shards]:
            if args.max_minutes is not None and time.monotonic() - start > 60 * args.max_minutes:
                break
            (spec,) = item.mutations
            if Path(spec.module_path) != path:
                print(f"skipping {item.job_id}: mutates {spec.module_path}, not {path}", file=sys.stderr)
                continue
            operator = plugins.get_operator(spec.operator_name)(**(spec.operator_args or {}))
            mutated = mutate_code(original, operator, spec.occurrence)
            if mutated is None:
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.NO_TEST))
                continue
            log = Path(tmp) / "out.txt"
            t0 = time.monotonic()
            pid = os.fork()
            if pid == 0:
                _child(module_name, path, mutated, pytest_args, log)
            status = None
            while time.monotonic() - t0 < timeout:
                waited, status = os.waitpid(pid, os.WNOHANG)
                if waited:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
            path.write_text(original)
            output = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            if status is None:
                outcome, output = TestOutcome.KILLED, "timeout"
            else:
                rc = os.waitstatus_to_exitcode(status)
                outcome = TestOutcome.SURVIVED if rc == 0 else TestOutcome.KILLED
                output = f"exit status {rc}\n{output}"
            diff = "\n".join(_make_diff(original, mutated, path))
            db.set_result(item.job_id, WorkResult(output=output, diff=diff, test_outcome=outcome,
                                                  worker_outcome=WorkerOutcome.NORMAL))
            done += 1
            line = next((ln for ln in diff.splitlines() if ln.startswith("@@")), "")
            print(f"{time.strftime('%H:%M:%S')} {outcome.value:9s} {time.monotonic() - t0:6.1f}s "
                  f"{spec.operator_name} #{spec.occurrence} {line}", flush=True)
    if path.read_text() != original:
        path.write_text(original)
    print(f"{done} mutants run in {(time.monotonic() - start) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
