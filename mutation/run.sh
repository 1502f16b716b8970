#!/usr/bin/env bash
# Mutation testing with cosmic-ray, one session per module (mutation/<name>.toml), resumable.
#
#   mutation/run.sh [name ...]      # default: every mutation/*.toml
#   MUTATION_ARGS="--max-minutes 30" mutation/run.sh features   # extra arguments of mutation/fork_exec.py
#
# cosmic-ray builds the sessions (init + operator filter + definitions filter); mutation/fork_exec.py runs them,
# writing each mutant to the source file IN PLACE (one at a time, restored after each test run): run it on a
# clean tree, do not edit or test in the same tree meanwhile, and check `git status` afterwards. Sessions are kept
# in build/mutation/<name>.sqlite; rerunning continues a session, delete the file to start afresh. The python of
# the environment you run it from is used (`make mutation` puts the project venv first on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
# PYTHONPATH puts this tree first (a git worktree's sources win over the venv's editable install);
# no bytecode is written, so a mutant's .pyc can never be picked up by a later run
export OMP_NUM_THREADS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OPENMM_DEFAULT_PLATFORM=Reference \
  PYTHONDONTWRITEBYTECODE=1
mkdir -p build/mutation
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in mutation/*.toml; do names+=("$(basename "$f" .toml)"); done
fi
for name in "${names[@]}"; do
  cfg="mutation/$name.toml"
  db="build/mutation/$name.sqlite"
  [ -f "$cfg" ] || { echo "no $cfg" >&2; exit 2; }
  if [ ! -f "$db" ]; then
    cosmic-ray init "$cfg" "$db"
    cr-filter-operators "$db" "$cfg"
    python mutation/filter_definitions.py "$db" "$cfg"
  fi
  echo "== $name: $(date -u +%H:%M:%S) start"
  # every mutant runs in a fork of one process that imported torch/OpenMM/mdtraj once (mutation/fork_exec.py)
  python mutation/fork_exec.py "$db" "$cfg" ${MUTATION_ARGS:-}
  cr-report --show-pending "$db" | tail -n 4
  git diff --quiet -- latentbias || { echo "WARNING: latentbias/ differs from git after $name" >&2; git diff --stat; }
done
