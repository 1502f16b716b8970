#!/bin/bash
# One call on a lent GPU machine (no network, no OpenMM; python3 with torch + CUDA, nvcc, cmake, ninja; 16 cores).
# Prepared by benchmarks/gpu/stage.sh into .gpu/ (plugin sources, scripts, inputs) and .whl/ (openmm, openmm-cuda-13,
# swig wheels). Runs concurrently:
#   A. compile the device kernels offline (plugin/tools/check_cuda_kernels.py: NVRTC/nvcc, single/mixed/double), build
#      the plugin with CUDA against the machine's torch, ctest (TestCudaLatentBiasForce: the libtorch path), then
#      cuda_check.py: CUDA vs Reference, finite differences and the benchmark for BOTH evaluation paths ("native":
#      the common-compute kernels, "torch": libtorch on OpenMM's context)
#   B. (RUN_META=1, the default) well-tempered metadynamics φ/ψ references: 3 systems x META_SEEDS (4) seeds on the CPU
#      cores (Reference platform); RUN_META=0 leaves the cores to A
# and writes to $OUT: run_log.txt build_log.txt kernel_check.txt gpu_check.json gpu_check.md reference_runs.tar.gz
# reference_summary.tar.gz. Every part keeps going when another fails. Ends within ~7.2 min (timeout_s 540).
set -u
T0=$(date +%s)
OUT=${OUT:-/tmp/lb_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run_log.txt") 2>&1
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
ROOT=$(pwd)
G=$ROOT/.gpu
PY=${PY:-python3}
META_NS=${META_NS:-20}
META_WALL=${META_WALL:-360}
META_SEEDS=${META_SEEDS:-"1 2 3 4"}
RUN_META=${RUN_META:-1}
A_DEADLINE=${A_DEADLINE:-420}
BUILD_JOBS=${BUILD_JOBS:-6}
export PYTHONUNBUFFERED=1

el "install carried wheels"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || el "pip install FAILED"
export PYTHONPATH=/tmp/site
export PATH=/tmp/site/bin:$PATH
SP=$($PY -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
# libOpenMMCUDA's RUNPATH is $ORIGIN/../../../nvidia/cu13/lib, i.e. <site>/nvidia: point it at torch's nvidia libs.
[ -e /tmp/site/nvidia ] || ln -s "$SP/nvidia" /tmp/site/nvidia
export LD_LIBRARY_PATH=$(ls -d "$SP"/nvidia/*/lib 2>/dev/null | tr '\n' ':')/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
el "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | head -3
nproc; which nvcc cmake ninja swig; nvcc --version | tail -2
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
$PY -c "import torch, openmm as o; print('openmm', o.__version__, [o.Platform.getPlatform(i).getName() for i in range(o.Platform.getNumPlatforms())], o.Platform.getPluginLoadFailures())"

# ---------------------------------------------------------------------------------------------------------- B
mkdir -p /tmp/meta
META_PIDS=""
[ "$RUN_META" = 1 ] && el "B: starting metadynamics ($META_SEEDS) x 3 systems, ${META_NS} ns or ${META_WALL} s each"
[ "$RUN_META" = 1 ] && for sys in ala2_ff96 ala_amber14 gly_amber14; do
    for seed in $META_SEEDS; do
        OMP_NUM_THREADS=1 $PY "$G/phipsi_metadynamics.py" run --system $sys --seed $seed --ns "$META_NS" \
            --max-wall "$META_WALL" --platform Reference --data-dir "$G/data" --outdir /tmp/meta \
            > /tmp/meta/${sys}_s${seed}.log 2>&1 &
        META_PIDS="$META_PIDS $!"
    done
done

# ---------------------------------------------------------------------------------------------------------- A
job_a() {
    local B=$OUT/build_log.txt
    el "A: device kernels compiled offline (as CudaContext would; before the build so that errors show even if it fails)"
    $PY "$G/plugin/tools/check_cuda_kernels.py" --openmm-cuda-lib /tmp/site --arch "${KERNEL_ARCH:-90}" 2>&1 \
        | tee "$OUT/kernel_check.txt" | grep -E "^(FAIL|PASSED|FAILED|SKIP|compiler)|error" | head -40
    el "A: configure (CUDA on)" | tee -a "$B"
    rm -rf /tmp/lbbuild
    local common=(-S "$G/plugin" -B /tmp/lbbuild -G Ninja -DPython3_EXECUTABLE="$(command -v $PY)"
                  -DLATENTBIAS_BUILD_CUDA=ON -DCMAKE_INSTALL_PREFIX=/tmp/lbinst ${CMAKE_EXTRA:-})
    if ! cmake "${common[@]}" >> "$B" 2>&1; then
        el "A: configure with the Python wrapper failed; retrying without it (z is then not compared)" | tee -a "$B"
        rm -rf /tmp/lbbuild
        cmake "${common[@]}" -DLATENTBIAS_BUILD_PYTHON=OFF >> "$B" 2>&1 || { el "A: configure FAILED"; tail -30 "$B"; return 1; }
    fi
    el "A: build -j$BUILD_JOBS" | tee -a "$B"
    if ! cmake --build /tmp/lbbuild -j"$BUILD_JOBS" >> "$B" 2>&1; then
        el "A: build FAILED"; grep -E "error|FAILED" "$B" | head -30; return 1
    fi
    cmake --install /tmp/lbbuild >> "$B" 2>&1
    ls -la /tmp/lbinst /tmp/lbinst/plugins | tee -a "$B"
    el "A: ctest" | tee -a "$B"
    (cd /tmp/lbbuild && LATENTBIAS_REQUIRE_CUDA=1 OMP_NUM_THREADS=1 ctest --output-on-failure -j4 --timeout 200) >> "$B" 2>&1
    grep -E "tests passed|tests failed|Passed|Failed|\*\*\*" "$B" | tail -12
    el "A: TestCudaLatentBiasForce output"
    [ -x /tmp/lbbuild/tests/TestCudaLatentBiasForce ] && LATENTBIAS_REQUIRE_CUDA=1 \
        timeout 120 /tmp/lbbuild/tests/TestCudaLatentBiasForce /tmp/lbbuild/tests/models 2>&1 | tee -a "$B"
    el "A: CUDA check + benchmark"
    OMP_NUM_THREADS=2 $PY "$G/cuda_check.py" "$G/prep" /tmp/lbinst "$OUT"
    el "A: done (rc $?)"
}
job_a &
A_PID=$!

while kill -0 $A_PID 2>/dev/null; do
    if [ $(( $(date +%s) - T0 )) -gt "$A_DEADLINE" ]; then
        el "A: past ${A_DEADLINE}s, stopping it (results written so far are kept)"
        pkill -TERM -P $A_PID 2>/dev/null; kill $A_PID 2>/dev/null
        break
    fi
    sleep 2
done

if [ "$RUN_META" != 1 ]; then
    ls -la "$OUT"; el "all done (B skipped)"; sleep 1; exit 0
fi
el "B: waiting for metadynamics"
for p in $META_PIDS; do wait $p; done
el "B: runs ended"
tail -n 1 /tmp/meta/*.log
$PY "$G/phipsi_metadynamics.py" summary /tmp/meta/*_fes.npz --outdir /tmp/meta_summary 2>&1 | tee /tmp/meta_summary.txt
mkdir -p /tmp/meta_summary && cp /tmp/meta_summary.txt /tmp/meta_summary/summary.txt
tar -czf "$OUT/reference_runs.tar.gz" -C /tmp meta
tar -czf "$OUT/reference_summary.tar.gz" -C /tmp meta_summary
ls -la "$OUT"
el "all done"
sleep 1  # let tee flush run_log.txt
