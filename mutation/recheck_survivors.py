"""Re-run the survivors of a cosmic-ray session against tests written afterwards, one mutant at a time.

    python mutation/recheck_survivors.py SESSION.sqlite [--socket SOCK] -- PYTEST_ARGS

Run it in a copy of the tree (it edits the mutated files in place and restores them after each mutant). For every
mutant that SURVIVED in the session, the stored diff is applied with ``patch``, the pytest arguments are run
(through ``mutation/forkserver.py run SOCK`` when a socket is given, else ``python -m pytest``), and the file is
restored byte for byte; one line per mutant says KILLED (with the first failing test, or a crash), SURVIVED, or
UNCLEAR (a non-zero status without a failing test, e.g. no server: look at it by hand). Finally the clean tree is
run once more: the tests must pass on it. Exit status 1 if any mutant was not killed or the clean run failed.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
import sys
from pathlib import Path


def _run(args: list[str], socket: str | None) -> tuple[int, str]:
    cmd = ([sys.executable, "mutation/forkserver.py", "run", socket] if socket else
           [sys.executable, "-m", "pytest"]) + args
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    cut = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("session")
    parser.add_argument("--socket")
    opts = parser.parse_args(argv[:cut])
    pytest_args = argv[cut + 1:]
    db = sqlite3.connect(opts.session)
    rows = db.execute(
        "select m.module_path, m.start_pos_row, m.definition_name, m.operator_name, r.diff from work_results r "
        "join mutation_specs m on m.job_id = r.job_id where r.test_outcome = 'SURVIVED' "
        "order by m.module_path, m.start_pos_row").fetchall()
    failed = False
    for module, row, definition, operator, diff in rows:
        path = Path(module)
        original = path.read_bytes()
        patch = diff.split("\n", 1)[1] if diff.startswith("--- mutation diff ---") else diff
        patch = patch if patch.endswith("\n") else patch + "\n"
        try:
            subprocess.run(["patch", "-p1", "--silent", "--no-backup-if-mismatch"], input=patch, text=True,
                           check=True)
            rc, out = _run(pytest_args, opts.socket)
        finally:
            path.write_bytes(original)
        first = re.search(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
        # a non-zero status without a failing test (no server, a client error) is not a kill: say so
        verdict = "SURVIVED" if rc == 0 else ("KILLED" if first or "Fatal Python error" in out else "UNCLEAR")
        failed |= verdict != "KILLED"
        change = " || ".join(line for line in patch.splitlines()
                             if line[:1] in "+-" and not line.startswith(("+++", "---")))
        print(f"{verdict:8s} {module}:{row} {definition} {operator.split('/')[-1]} | {change}"
              + (f" | {first.group(1)}" if first else ("" if rc == 0 else f" | exit {rc}")), flush=True)
    rc, out = _run(pytest_args, opts.socket)
    print(f"clean tree: {'passes' if rc == 0 else 'FAILS'} ({len(rows)} survivors re-checked)")
    if rc != 0:
        print(out[-3000:])
    return 1 if failed or rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
