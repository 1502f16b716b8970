#!/bin/bash
# Stage everything the one GPU-machine call needs into the git-ignored folders .gpu/ and .whl/ of a checkout.
# Usage (from this worktree): bash benchmarks/gpu/stage.sh /work/main
# Needs latentbias + its native plugin (for the models and the serialized forces) and pip (for the wheels).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${1:?checkout to stage into}
PY=${PY:-/work/main/.venv/bin/python}
G=$DEST/.gpu
rm -rf "$G" && mkdir -p "$G/data" "$DEST/.whl"
cp -r "$SRC/plugin" "$G/plugin"
rm -rf "$G/plugin/build"
cp "$SRC/benchmarks/gpu/run.sh" "$SRC/benchmarks/gpu/cuda_check.py" "$SRC/examples/reference/phipsi_metadynamics.py" "$G/"
cp "$SRC/examples/reference/inputs/"*.pdb "$G/data/"
OMP_NUM_THREADS=1 PYTHONPATH=$SRC $PY "$SRC/benchmarks/gpu/prepare_device_inputs.py" "$G/prep"
cp "$G/prep/ala2.prmtop" "$G/data/alanine-dipeptide.prmtop"
cp "$G/prep/ala2.crd" "$G/data/alanine-dipeptide.crd"
P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_34_x86_64
   --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
   --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux1_x86_64"
for w in openmm==8.5.2 openmm-cuda-13==8.5.2 swig==4.5.1; do
    $PY -m pip download -q $P -d "$DEST/.whl" "$w" 2>&1 | grep -v "^WARNING: Location" || true
done
du -sh "$G" "$DEST/.whl"; ls "$DEST/.whl"
