"""The offline CUDA kernel check (plugin/tools/check_cuda_kernels.py) and, where it can run, the check itself.

* The check must be able to fail: a kernel whose parameter list differs from what the host passes, a missing kernel
  and a source that does not compile are reported (NVRTC, the compiler OpenMM's CUDA platform uses; torch's CUDA
  wheel brings libnvrtc, so this runs on machines without a GPU or a CUDA toolkit).
* With OpenMM's CUDA platform library available (the openmm-cuda-13/-12 wheel unzipped, named by
  $LATENTBIAS_OPENMM_CUDA_LIB, or installed next to openmm; `make cuda-check` downloads it), LatentBiasForce's device
  kernels compile for single/mixed/double precision and match the host's argument lists. Skips otherwise.

Nothing here runs a kernel on a GPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "plugin" / "tools" / "check_cuda_kernels.py"


def _tool():
    spec = importlib.util.spec_from_file_location("check_cuda_kernels", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ck = _tool()

PTX = """
.visible .entry good(
	.param .u64 good_param_0,
	.param .u32 good_param_1,
	.param .align 16 .b8 good_param_2[16]
)
{
	ret;
}
"""


def test_ptx_parameter_lists_are_read():
    assert ck.ptx_entries(PTX) == {"good": ["p", "i", "v16"]}


def test_signature_mismatch_and_missing_kernel_are_reported():
    assert ck.check_signatures(PTX, {"good": "piv"}, "single") == []
    # double precision: real4 is 32 bytes, the PTX above passes 16
    assert ck.check_signatures(PTX, {"good": "piv"}, "double")
    problems = ck.check_signatures(PTX, {"good": "ppv", "other": "p"}, "mixed")
    assert len(problems) == 2
    assert any("other" in p and "C linkage" in p for p in problems)


def test_host_defines_are_the_ones_the_check_sets():
    assert ck.host_define_names() == (set(ck.native_defines(True, 2, 1, "single", True))
                                      | set(ck.native_defines(True, 2, 1, "single", "nodes")))
    assert "LB_PERIODIC" not in ck.native_defines(False, 2, 1, "single")
    assert "LB_GRID_LOG" not in ck.native_defines(True, 2, 1, "single")  # only with the OPES log transform
    # the log transform of a Hermite table's nodes replaces LB_GRID_LOG
    nodes = ck.native_defines(True, 2, 1, "single", "nodes")
    assert "LB_GRID_LOG_NODES" in nodes and "LB_GRID_LOG" not in nodes


def test_libtorch_kernel_string_is_found():
    src = ck.torch_source()
    assert "copyInputs" in src and "addForces" in src


def _nvrtc():
    path = ck.find_nvrtc(None)
    if path is None:
        pytest.skip("no libnvrtc (CUDA toolkit or torch's nvidia-cuda-nvrtc) on this machine")
    try:
        return ck.Nvrtc(path)
    except OSError as exc:
        pytest.skip(f"libnvrtc at {path} does not load: {exc}")


def test_nvrtc_rejects_a_broken_kernel_and_accepts_a_good_one():
    nvrtc = _nvrtc()
    good = 'extern "C" __global__ void k(float* x, int n) { if (threadIdx.x < n) x[threadIdx.x] = 1.0f; }\n'
    ok, log, ptx = nvrtc.compile(good, 75)
    assert ok, log
    assert ck.ptx_entries(ptx) == {"k": ["p", "i"]}
    ok, log, _ = nvrtc.compile(good.replace("1.0f", "undefinedName"), 75)
    assert not ok and "undefinedName" in log


def test_device_kernels_compile_for_cuda(capsys):
    lib = ck.find_openmm_cuda_library(None)
    if lib is None or not lib.exists():
        pytest.skip("OpenMM's CUDA platform library is not here: set LATENTBIAS_OPENMM_CUDA_LIB to an unzipped "
                    "openmm-cuda-13/-12 wheel (`make cuda-check` does it)")
    _nvrtc()
    rc = ck.main(["--compiler", "nvrtc", "--arch", "75"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASSED" in out and "FAIL " not in out
