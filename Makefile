# latentbias: `make test` (install + test suite) and `make demo` (install + main job on a default).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.latentbias-installed

.PHONY: install native test test-slow demo quickstart benchmark mutation clean cuda-check
NATIVE := latentbias/_native/plugins/libLatentBiasReference.so

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[test]"
	$(PY) -m pip install --no-deps "pykvfinder==0.9.6"   # extra pocket-check: GPL-3 reference, tests only
	$(PY) -c "import latentbias; print('latentbias', latentbias.__version__, 'imports fine')"
	touch $(STAMP)

# the native OpenMM plugin (LatentBiasForce): C++ against the pip-installed OpenMM and libtorch, built with cmake
$(NATIVE): $(STAMP) CMakeLists.txt $(shell find plugin -type f 2>/dev/null)
	$(PY) -m pip install swig
	cmake -S . -B build -DPython3_EXECUTABLE=$(abspath $(PY))
	cmake --build build -j2
	cmake --install build
	$(PY) -c "import latentbias.native as n; assert n.is_available(), n.unavailable_reason(); print('LatentBiasForce plugin loads')"
	$(PY) -c "import openmm, latentbias.native as n; n.load(); names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]; print('LatentBiasForce kernels on:', [p for p in names if openmm.Platform.getPlatformByName(p).supportsKernels([n.KERNEL_NAME])])"

native: $(NATIVE)

install: $(STAMP) $(NATIVE)

# pytest-xdist: TEST_WORKERS processes, each test file on one of them (module fixtures run once); 0 = in this process
TEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: install
	ctest --test-dir build --output-on-failure
	$(PY) -m pytest -m "not slow" -q $(PYTEST_PARALLEL)

test-slow: install
	$(PY) -m pytest -m slow -q

demo: install
	$(PY) examples/ala2_campaign.py --rundir runs/ala2

quickstart: install
	$(PY) examples/ala2_quickstart.py

benchmark: install
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/native_overhead.py
	-POCL_MAX_PTHREAD_COUNT=1 $(PY) benchmarks/opencl_overhead.py   # exits with the reason where OpenCL is absent
	$(PY) benchmarks/protein_overhead.py   # CPU, and OpenCL where present
	OMP_NUM_THREADS=1 $(PY) benchmarks/pocket_measure.py

# CUDA without a GPU (plugin/tools/cuda_check.sh): fetch OpenMM's CUDA platform with `pip download` (the
# openmm-cuda-13 wheel, unzipped into build-cuda/, not installed), compile the device kernels offline as OpenMM's
# CudaContext does (NVRTC and nvcc; single/mixed/double), build the CUDA plugin against it and check its symbols; on
# a machine with a GPU TestCudaLatentBiasForce then runs. Each part prints SKIP and the reason where nvcc/nvrtc or
# the wheel are missing. CUDA_CHECK_HOST=0: kernels only (~20 s); OPENMM_CUDA_WHEEL=openmm-cuda-12 for CUDA 12.
cuda-check: $(STAMP)
	PY=$(abspath $(PY)) bash plugin/tools/cuda_check.sh

# mutation testing of the physics modules with cosmic-ray (slow; not part of CI). Mutates sources IN PLACE, one
# mutant at a time: run on a clean tree and leave it alone meanwhile. MUTATION_MODULES picks sessions from
# mutation/*.toml (default: all); sessions resume from build/mutation/*.sqlite. Results: TESTING.md.
MUTATION_MODULES ?=
mutation: install
	$(PY) -m pip install -e ".[mutation]"
	PATH="$(abspath $(VENV))/bin:$$PATH" mutation/run.sh $(MUTATION_MODULES)

clean:
	rm -rf $(VENV) build build-cuda *.egg-info latentbias/_native
