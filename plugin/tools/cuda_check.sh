#!/bin/bash
# `make cuda-check`: what can be checked of LatentBiasForce's CUDA platform without a GPU.
#   1. fetch OpenMM's CUDA platform (the openmm-cuda-13 wheel of the installed openmm version, from PyPI, with
#      `pip download`; nothing is installed into the Python environment) and unzip it under $BUILD/wheel;
#   2. compile the device kernels offline as OpenMM's CudaContext would (plugin/tools/check_cuda_kernels.py:
#      NVRTC and nvcc, single/mixed/double, kernel parameter lists against the host code);
#   3. (CUDA_CHECK_HOST=1, the default) configure and build the CUDA platform plugin libLatentBiasCUDA.so and
#      TestCudaLatentBiasForce with -DLATENTBIAS_BUILD_CUDA=ON against it, and check that every symbol the plugin
#      needs is defined by the libraries it links (or is a CUDA driver symbol, resolved through libOpenMMCUDA's
#      libcuda.so.1 at load time);
#   4. run TestCudaLatentBiasForce: it runs the CUDA tests where a GPU is usable and prints SKIP otherwise.
# Each step prints SKIP with the reason where its tools are absent (no nvcc/nvrtc, no network for the wheel).
# Nothing here runs a kernel on a GPU unless step 4 finds one. Usage (from the repository root):
#   make cuda-check [PY=.venv/bin/python] [OPENMM_CUDA_WHEEL=openmm-cuda-12] [CUDA_CHECK_HOST=0]
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
BUILD=${BUILD:-$ROOT/build-cuda}
WHEEL=${OPENMM_CUDA_WHEEL:-openmm-cuda-13}
HOST=${CUDA_CHECK_HOST:-1}
JOBS=${JOBS:-2}
status=0
skipped=""

step() { echo; echo "== cuda-check: $*"; }

if ! "$PY" -c "import openmm" 2>/dev/null; then
    echo "cuda-check: SKIP: $PY cannot import openmm (make install first, or pass PY=...)"; exit 0
fi
version=$("$PY" -c "import importlib.metadata as m; print(m.version('openmm'))")

step "1. OpenMM's CUDA platform: $WHEEL==$version (pip download into $BUILD/wheel)"
mkdir -p "$BUILD/wheel"
lib=$(find "$BUILD/wheel/unz" -name libOpenMMCUDA.so 2>/dev/null | head -1)
if [ -z "$lib" ]; then
    rm -f "$BUILD"/wheel/*.whl
    if "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$BUILD/wheel" "$WHEEL==$version" 2>&1 \
            | grep -v "^WARNING: Location" ; then :; fi
    whl=$(ls "$BUILD"/wheel/*.whl 2>/dev/null | head -1)
    if [ -n "$whl" ]; then
        "$PY" -m zipfile -e "$whl" "$BUILD/wheel/unz"
        lib=$(find "$BUILD/wheel/unz" -name libOpenMMCUDA.so | head -1)
    fi
fi
if [ -z "$lib" ]; then
    echo "cuda-check: SKIP: could not get $WHEEL==$version (no network or no such wheel); nothing checked"; exit 0
fi
echo "libOpenMMCUDA: $lib"

step "2. device kernels, compiled offline (NVRTC / nvcc)"
"$PY" "$ROOT/plugin/tools/check_cuda_kernels.py" --openmm-cuda-lib "$lib" ${CUDA_CHECK_ARGS:-}
rc=$?
if [ $rc = 77 ]; then skipped="$skipped kernels"; elif [ $rc != 0 ]; then status=1; fi

if [ "$HOST" = 1 ]; then
    step "3. host code: configure and build libLatentBiasCUDA.so (-DLATENTBIAS_BUILD_CUDA=ON)"
    if ! command -v nvcc >/dev/null 2>&1 && [ ! -e /usr/local/cuda/include/cuda.h ]; then
        echo "cuda-check: SKIP host build: no CUDA toolkit (nvcc, cuda.h) here"; skipped="$skipped host"
    elif ! cmake -S "$ROOT" -B "$BUILD" -DPython3_EXECUTABLE="$PY" -DLATENTBIAS_BUILD_CUDA=ON \
            -DOPENMM_CUDA_LIBRARY="$lib" -DCMAKE_INSTALL_PREFIX="$BUILD/install" > "$BUILD/configure.log" 2>&1; then
        echo "cuda-check: FAIL: configure (see $BUILD/configure.log)"; tail -20 "$BUILD/configure.log"; status=1
    elif ! cmake --build "$BUILD" -j"$JOBS" --target LatentBiasCUDA TestCudaLatentBiasForce > "$BUILD/build.log" 2>&1; then
        echo "cuda-check: FAIL: build (see $BUILD/build.log)"; grep -E "error|FAILED" "$BUILD/build.log" | head -30
        status=1
    else
        plugin=$(find "$BUILD" -name libLatentBiasCUDA.so -path "*platforms/cuda*" | head -1)
        echo "built $plugin"
        # shared libraries may link with undefined symbols: list those no linked library defines
        needed=$(ldd "$plugin" | awk '/=> \// {print $3}')
        nm -D --undefined-only "$plugin" | awk '{print $2}' | sed 's/@.*//' | sort -u > "$BUILD/undefined.txt"
        for f in $needed; do nm -D --defined-only "$f" 2>/dev/null | awk '{print $3}' | sed 's/@.*//'; done \
            | sort -u > "$BUILD/defined.txt"
        missing=$(comm -23 "$BUILD/undefined.txt" "$BUILD/defined.txt" | grep -v -E "^(cu[A-Z]|_ITM_|__gmon_start__|_Jv_)" )
        driver=$(comm -23 "$BUILD/undefined.txt" "$BUILD/defined.txt" | grep -E "^cu[A-Z]" | tr '\n' ' ')
        if [ -n "$missing" ]; then
            echo "cuda-check: FAIL: symbols no linked library defines:"; echo "$missing" | head -20; status=1
        else
            echo "symbols: all resolved by the linked libraries; CUDA driver API (from libcuda.so.1): $driver"
        fi
        step "4. TestCudaLatentBiasForce (runs on a GPU; SKIP without one)"
        (cd "$BUILD" && ctest -R "make_test_models|TestCudaLatentBiasForce" -V > "$BUILD/ctest_cuda.log" 2>&1) || status=1
        grep -E ": (SKIP|FAIL|CUDA device)|Test +#|tests passed|tests failed|^[0-9]+: (PASS|FAIL|ok)" "$BUILD/ctest_cuda.log" \
            | sed 's/^[0-9]*: //' | head -40
    fi
fi

echo
if [ $status != 0 ]; then
    echo "cuda-check: FAILED"
else
    echo "cuda-check: passed${skipped:+ (skipped:$skipped)}"
fi
exit $status
