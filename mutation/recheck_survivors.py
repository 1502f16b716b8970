"""Re-run the survivors of a cosmic-ray session against tests written afterwards, one mutant at a time.

    python mutation/recheck_survivors.py SESSION.sqlite -- PYTEST_ARGS [--then PYTEST_ARGS ...]

Run it in a copy of the tree (it edits the mutated files in place and restores them after each mutant). For every
mutant that SURVIVED in the session, the stored diff is applied with ``patch``, the pytest stages are run
(in forks of this process, which imported torch/OpenMM once: ``mutation/fork_exec.py``'s ``run_stages``), and the
file is restored byte for byte; one line per mutant says KILLED (with the first failing test, or a crash), SURVIVED, or
UNCLEAR (a non-zero status without a failing test, e.g. a usage error: look at it by hand). Finally the clean tree is
run once more: the tests must pass on it. Exit status 1 if any mutant was not killed or the clean run failed.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fork_exec import parse_stages, preload, run_stages  # noqa: E402

TIMEOUT_S = 600.0


def _run(stages: list[list[str]]) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "out.txt"
        rc = run_stages(stages, log, TIMEOUT_S)
        out = log.read_text(errors="replace") if log.exists() else ""
    return (124, out + "\ntimeout") if rc is None else (rc, out)


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    cut = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("session")
    opts = parser.parse_args(argv[:cut])
    stages = parse_stages(argv[cut + 1:])
    preload()
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
            applied = subprocess.run(["patch", "-p1", "--silent", "--no-backup-if-mismatch"], input=patch,
                                     text=True).returncode == 0
            # a stored diff that patch cannot apply (e.g. a mutant of a last line without a newline): say so
            rc, out = _run(stages) if applied else (2, "patch did not apply: check this mutant by hand")
        finally:
            path.write_bytes(original)
        first = re.search(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
        # a non-zero status without a failing test (a usage error) is not a kill: say so
        verdict = "SURVIVED" if rc == 0 else ("KILLED" if first or "Fatal Python error" in out else "UNCLEAR")
        failed |= verdict != "KILLED"
        change = " || ".join(line for line in patch.splitlines()
                             if line[:1] in "+-" and not line.startswith(("+++", "---")))
        print(f"{verdict:8s} {module}:{row} {definition} {operator.split('/')[-1]} | {change}"
              + (f" | {first.group(1)}" if first else ("" if rc == 0 else f" | exit {rc}")), flush=True)
    rc, out = _run(stages)
    print(f"clean tree: {'passes' if rc == 0 else 'FAILS'} ({len(rows)} survivors re-checked)")
    if rc != 0:
        print(out[-3000:])
    return 1 if failed or rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
