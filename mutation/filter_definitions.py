"""Restrict a cosmic-ray session to some functions/classes of its module (a cosmic-ray work-db filter).

    python mutation/filter_definitions.py <session.sqlite> <config.toml>

Reads ``include = [...]`` (definition names as cosmic-ray records them: the innermost function or class name,
e.g. ``energy`` for ``BiasState.energy``) from the ``[cosmic-ray.filters.definitions-filter]`` table of the config
and marks every pending mutant outside those definitions as SKIPPED, the way ``cr-filter-operators`` does for
operators. Without that table it does nothing. Used by ``mutation/run.sh`` to split a large module into sessions
that fit a sitting (TESTING.md, "Mutation testing").
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from cosmic_ray.work_db import use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    session, config = Path(argv[0]), Path(argv[1])
    with open(config, "rb") as f:
        table = tomllib.load(f).get("cosmic-ray", {}).get("filters", {}).get("definitions-filter")
    if not table:
        return 0
    include = set(table.get("include", ()))
    if not include:
        print(f"{config}: [cosmic-ray.filters.definitions-filter] has no 'include' list", file=sys.stderr)
        return 2
    skipped = 0
    with use_db(str(session)) as db:
        for item in list(db.pending_work_items):
            if not any(m.definition_name in include for m in item.mutations):
                db.set_result(item.job_id, WorkResult(output="Outside the session's definitions-filter",
                                                      worker_outcome=WorkerOutcome.SKIPPED))
                skipped += 1
    print(f"definitions-filter: {skipped} mutants outside {sorted(include)} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
