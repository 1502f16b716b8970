"""Compile LatentBiasForce's device kernels for CUDA offline, the way OpenMM's CudaContext does at run time.

No GPU is needed: only a CUDA compiler (NVRTC, which OpenMM's CUDA platform itself uses, and/or nvcc) and OpenMM's
CUDA platform library (libOpenMMCUDA.so from the openmm-cuda-12/-13 wheel), from which the CUDA preamble that
CudaContext puts in front of every kernel (the common-compute macros KERNEL, DEVICE, GLOBAL, LOCAL_ID, SYNC_THREADS,
mm_long, realToFixedPoint, ... and the vector operations) is read, so that the check follows the installed OpenMM.

What is compiled (each for single, mixed and double precision):

* ``latentBiasNative`` (plugin/platforms/common/src/kernels/latentBiasNative.cc), assembled as
  ``CudaContext::compileProgram`` does: ``// Compilation Options``, the context's defines (precision, math
  functions, periodic-box macros), the ``real``/``mixed`` typedefs, the common-compute preamble, the program's
  defines (those CommonLatentBiasKernels.cpp sets: LB_NUM_ATOMS, LB_GRID_DIMS, ...), the vector operations, the
  kernel source. Variants cover periodic / non-periodic and bias grids of 0-3 dimensions with and without restraints.
* the libtorch path's two helper kernels (the ``R"CUDA(...)CUDA"`` string in CudaLatentBiasKernels.cpp), assembled as
  ``CudaContext::createModule`` does (no vector operations).

Checks: the source compiles to PTX (warnings are printed), every kernel the host asks for is an ``.entry`` with C
linkage, and its parameter list (pointer / int / real4 by value, with real4's size for the precision) matches what the
host code passes (KERNEL_SIGNATURES below, kept next to the addArg/args lists of the host files). Nothing is run:
the kernels' results on a GPU are tested by plugin/tests/TestCudaLatentBiasForce.cpp and benchmarks/gpu/cuda_check.py.

Usage::

    python plugin/tools/check_cuda_kernels.py [--openmm-cuda-lib PATH] [--compiler nvrtc|nvcc|all] [--arch 75,90]

Exit status: 0 all compiled and matched, 1 a kernel failed, 77 skipped (no compiler or no libOpenMMCUDA; the reason
is printed).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1]
NATIVE_KERNEL = PLUGIN / "platforms" / "common" / "src" / "kernels" / "latentBiasNative.cc"
COMMON_HOST = PLUGIN / "platforms" / "common" / "src" / "CommonLatentBiasKernels.cpp"
CUDA_HOST = PLUGIN / "platforms" / "cuda" / "src" / "CudaLatentBiasKernels.cpp"
SKIP = 77

# Parameter lists the host code passes: p = device pointer, i = int, v = real4 by value.
#   CommonLatentBiasKernels.cpp (initializeNative): gatherKernel/forwardKernel/backwardKernel/applyKernel->addArg(...)
#   CudaLatentBiasKernels.cpp: args[] of copyInputs() and addForces()
KERNEL_SIGNATURES = {
    "native": {
        "gatherPositions": "pppp",
        "forwardModel": "p" * 15 + "vvv" + "p" * 10,
        "backwardModel": "p" * 14,
        "applyForces": "p" * 8,
    },
    "torch": {
        "copyInputs": "ppppivvv",
        "addForces": "pppii",
    },
}

# Program defines of latentBiasNative: (name, periodic, grid dims, restraints, OPES log transform of the grid). Sizes
# as for a 22-atom model with 45 distance features, 3 layers, d = 2 (d = 3 for the 3-D grid).
NATIVE_VARIANTS = [
    ("periodic_grid2_restraint", True, 2, 1, False),
    ("nonperiodic_nogrid_restraint", False, 0, 1, False),
    ("nonperiodic_grid1_norestraint", False, 1, 0, False),
    ("periodic_grid3_restraints", True, 3, 2, False),
    ("nonperiodic_grid1_log", False, 1, 0, True),
    ("periodic_grid3_log_restraints", True, 3, 2, True),
    # the log transform of a Hermite table's nodes (LatentBiasForce::setGridInterpolation("hermite") + OPES)
    ("nonperiodic_grid1_lognodes", False, 1, 0, "nodes"),
    ("nonperiodic_grid2_lognodes", False, 2, 0, "nodes"),
    ("periodic_grid3_lognodes_restraints", True, 3, 2, "nodes"),
]


def log(*args) -> None:
    print(*args, flush=True)


# ------------------------------------------------------------------------------------------------- OpenMM's preamble
def find_openmm_cuda_library(explicit: str | None) -> Path | None:
    """libOpenMMCUDA.so: --openmm-cuda-lib, $LATENTBIAS_OPENMM_CUDA_LIB, or the installed openmm's plugins folder."""
    for candidate in (explicit, os.environ.get("LATENTBIAS_OPENMM_CUDA_LIB")):
        if candidate:
            p = Path(candidate)
            if p.is_dir():
                hits = sorted(p.rglob("libOpenMMCUDA.so"))
                p = hits[0] if hits else p / "libOpenMMCUDA.so"
            return p
    try:
        import openmm.version  # noqa: PLC0415

        p = Path(openmm.version.openmm_library_path) / "plugins" / "libOpenMMCUDA.so"
        return p if p.exists() else None
    except Exception:  # openmm not importable here: the library must be named explicitly
        return None


def embedded_string(data: bytes, marker: bytes, what: str) -> str:
    """The NUL-terminated string literal of `data` that contains `marker` (one of CudaKernelSources' sources)."""
    i = data.find(marker)
    if i < 0 or data.find(marker, i + 1) >= 0:
        raise RuntimeError(f"cannot find exactly one copy of OpenMM's {what} in libOpenMMCUDA.so "
                           f"(looked for {marker!r}); has CudaKernelSources changed?")
    start = data.rfind(b"\0", 0, i) + 1
    return data[start:data.find(b"\0", i)].decode()


class CudaPreamble:
    """What CudaContext (OpenMM 8.x) puts in front of a kernel, read from libOpenMMCUDA.so where it is embedded."""

    def __init__(self, library: Path):
        data = library.read_bytes()
        self.common = embedded_string(data, b"#define KERNEL extern \"C\" __global__", "common-compute preamble")
        self.vector_ops = embedded_string(data, b"inline __device__ int2 make_int2(int a)", "vector operations")
        for needed in ("realToFixedPoint", "LOCAL_ID", "SYNC_THREADS", "mm_long", "GLOBAL_ID"):
            if needed not in self.common:
                raise RuntimeError(f"OpenMM's common-compute preamble in {library} has no {needed}")

    @staticmethod
    def context_defines(precision: str) -> dict[str, str]:
        """CudaContext's compilationDefines (as in its constructor) for a rectangular periodic box."""
        double = precision == "double"
        d = {"SYNC_WARPS": "__syncwarp();", "SHFL(var, srcLane)": "__shfl_sync(0xffffffff, var, srcLane);",
             "BALLOT(var)": "__ballot_sync(0xffffffff, var);"}
        real, mixed = ("double", "double") if double else ("float", "double" if precision == "mixed" else "float")
        for n in (2, 3, 4):
            d[f"make_real{n}"] = f"make_{real}{n}"
            d[f"make_mixed{n}"] = f"make_{mixed}{n}"
        if double:
            d["USE_DOUBLE_PRECISION"] = "1"
        elif precision == "mixed":
            d["USE_MIXED_PRECISION"] = "1"
        for name, fn in (("SQRT", "sqrt"), ("RSQRT", "rsqrt"), ("EXP", "exp"), ("LOG", "log"), ("POW", "pow"),
                         ("COS", "cos"), ("SIN", "sin"), ("TAN", "tan"), ("ACOS", "acos"), ("ASIN", "asin"),
                         ("ATAN", "atan"), ("ERF", "erf"), ("ERFC", "erfc")):
            d[name] = fn if double else fn + "f"
        d["RECIP"] = "1.0/" if double else "1.0f/"
        d["APPLY_PERIODIC_TO_DELTA(delta)"] = (
            "{delta.x -= floor(delta.x*invPeriodicBoxSize.x+0.5f)*periodicBoxSize.x; "
            "delta.y -= floor(delta.y*invPeriodicBoxSize.y+0.5f)*periodicBoxSize.y; "
            "delta.z -= floor(delta.z*invPeriodicBoxSize.z+0.5f)*periodicBoxSize.z;}")
        return d

    def assemble(self, source: str, defines: dict[str, str], precision: str, vector_ops: bool) -> str:
        """CudaContext::createModule's text (compileProgram passes vectorOps + source)."""
        out = ["// Compilation Options: --use_fast_math", ""]
        out += [f"#define {k} {v}".rstrip() for k, v in sorted(self.context_defines(precision).items())]
        out.append("")
        real = "double" if precision == "double" else "float"
        mixed = "float" if precision == "single" else "double"
        out += [f"typedef {real}{n} real{n};" for n in ("", "2", "3", "4")]
        out += [f"typedef {mixed}{n} mixed{n};" for n in ("", "2", "3", "4")]
        out.append("typedef unsigned int tileflags;")
        out.append(self.common)
        out += [f"#define {k} {v}".rstrip() for k, v in sorted(defines.items())]
        if defines:
            out.append("")
        out.append((self.vector_ops if vector_ops else "") + source)
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------- compilers
class Nvrtc:
    """NVRTC through ctypes (what OpenMM's CUDA platform compiles with: -arch=compute_XX --use_fast_math)."""

    name = "nvrtc"

    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        self.version = f"{major.value}.{minor.value}"
        self.path = path
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def compile(self, source: str, arch: int) -> tuple[bool, str, str]:
        prog = ctypes.c_void_p()
        rc = self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"latentbias.cu", 0, None, None)
        if rc != 0:
            return False, f"nvrtcCreateProgram: {self.lib.nvrtcGetErrorString(rc).decode()}", ""
        opts = [f"-arch=compute_{arch}".encode(), b"--use_fast_math"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = self.lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        self.lib.nvrtcGetProgramLog(prog, buf)
        text = buf.value.decode(errors="replace").strip()
        ptx = ""
        if rc == 0:
            self.lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            pbuf = ctypes.create_string_buffer(size.value)
            self.lib.nvrtcGetPTX(prog, pbuf)
            ptx = pbuf.value.decode()
        else:
            text = f"{self.lib.nvrtcGetErrorString(rc).decode()}\n{text}"
        self.lib.nvrtcDestroyProgram(ctypes.byref(prog))
        return rc == 0, text, ptx


class Nvcc:
    """nvcc --ptx (OpenMM's optional external compiler path: --ptx -arch=sm_XX --use_fast_math)."""

    name = "nvcc"

    def __init__(self, path: str):
        self.path = path
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release ([0-9.]+)", out)
        self.version = m.group(1) if m else "?"

    def compile(self, source: str, arch: int) -> tuple[bool, str, str]:
        with tempfile.TemporaryDirectory() as tmp:
            src, ptx = Path(tmp) / "latentbias.cu", Path(tmp) / "latentbias.ptx"
            src.write_text(source)
            r = subprocess.run([self.path, "--ptx", "--machine", "64", f"-arch=sm_{arch}", "--use_fast_math",
                                "-o", str(ptx), str(src)], capture_output=True, text=True)
            text = (r.stdout + r.stderr).strip()
            return r.returncode == 0, text, ptx.read_text() if r.returncode == 0 else ""


def find_nvrtc(explicit: str | None) -> str | None:
    """libnvrtc: --nvrtc, the CUDA toolkit's, or the one pip's nvidia packages (torch's dependencies) install."""
    if explicit:
        return explicit
    roots = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parents[1]))
    patterns = [f"{r}/lib64/libnvrtc.so*" for r in roots if r] + [f"{r}/lib/libnvrtc.so*" for r in roots if r]
    for p in sys.path:
        patterns += [f"{p}/nvidia/cu13/lib/libnvrtc.so*", f"{p}/nvidia/cuda_nvrtc/lib/libnvrtc.so*"]
    for pattern in patterns:
        for hit in sorted(glob.glob(pattern)):
            if "builtins" not in hit and ".alt." not in hit:
                return hit
    return None


# ------------------------------------------------------------------------------------------------------------ checks
def ptx_entries(ptx: str) -> dict[str, list[str]]:
    """{kernel: [p|i|v16|v32 ...]} from the .entry declarations of a PTX module."""
    entries = {}
    for m in re.finditer(r"\.entry\s+(\w+)\s*\((.*?)\)", ptx, re.S):
        kinds = []
        for param in re.findall(r"\.param\s+([^,]+)", m.group(2)):
            if ".u64" in param or ".b64" in param:
                kinds.append("p")
            elif ".u32" in param or ".s32" in param or ".b32" in param:
                kinds.append("i")
            else:
                size = re.search(r"\[(\d+)\]", param)
                kinds.append(f"v{size.group(1)}" if size else "?" + param)
        entries[m.group(1)] = kinds
    return entries


def check_signatures(ptx: str, expected: dict[str, str], precision: str) -> list[str]:
    problems = []
    real4 = "v32" if precision == "double" else "v16"
    entries = ptx_entries(ptx)
    for kernel, sig in expected.items():
        if kernel not in entries:
            problems.append(f"no .entry {kernel} (C linkage?) in the PTX; entries: {sorted(entries)}")
            continue
        want = [real4 if c == "v" else c for c in sig]
        if entries[kernel] != want:
            problems.append(f"{kernel}: parameters {entries[kernel]} but the host passes {want}")
    return problems


def host_define_names() -> set[str]:
    return set(re.findall(r'defines\["(\w+)"\]', COMMON_HOST.read_text()))


def native_defines(periodic: bool, grid_dims: int, restraints: int, precision: str,
                   log_transform: bool | str = False) -> dict[str, str]:
    d = {"LB_NUM_ATOMS": "22", "LB_PADDED_NUM_ATOMS": "32", "LB_NUM_BLOCKS": "1", "LB_NUM_LAYERS": "3",
         "LB_NUM_FEATURES": "45", "LB_LATENT_DIM": str(max(2, grid_dims)),
         "LB_EPS": "1e-17" if precision == "double" else "1e-7f", "LB_GRID_DIMS": str(grid_dims),
         "LB_GRID_TOTAL": str(41 ** grid_dims if grid_dims else 0), "LB_NUM_RESTRAINTS": str(restraints)}
    if periodic:
        d["LB_PERIODIC"] = "1"
    if log_transform == "nodes":
        d["LB_GRID_LOG_NODES"] = "1"
    elif log_transform:
        d["LB_GRID_LOG"] = "1"
    return d


def torch_source() -> str:
    m = re.search(r'R"CUDA\((.*?)\)CUDA"', CUDA_HOST.read_text(), re.S)
    if not m:
        raise RuntimeError(f"no R\"CUDA(...)CUDA\" kernel string in {CUDA_HOST}")
    return m.group(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--openmm-cuda-lib", help="libOpenMMCUDA.so, or a folder (e.g. an unzipped openmm-cuda wheel)")
    ap.add_argument("--compiler", choices=["nvrtc", "nvcc", "all"], default="all")
    ap.add_argument("--nvrtc", help="path of libnvrtc.so to use")
    ap.add_argument("--arch", default="75,90", help="compute capabilities, comma-separated (default 75,90)")
    ap.add_argument("--keep", help="write each assembled source and its PTX into this folder")
    args = ap.parse_args(argv)

    lib = find_openmm_cuda_library(args.openmm_cuda_lib)
    if lib is None or not lib.exists():
        log(f"SKIP: OpenMM's CUDA platform library (libOpenMMCUDA.so) not found ({lib or 'openmm has none'}); "
            "pass --openmm-cuda-lib or unzip the openmm-cuda-13 (or -12) wheel of your openmm version "
            "(`make cuda-check` downloads it)")
        return SKIP
    compilers = []
    if args.compiler in ("nvrtc", "all"):
        path = find_nvrtc(args.nvrtc)
        if path:
            try:
                compilers.append(Nvrtc(path))
            except OSError as exc:
                log(f"nvrtc at {path} cannot be loaded: {exc}")
    if args.compiler in ("nvcc", "all") and shutil.which("nvcc"):
        compilers.append(Nvcc(shutil.which("nvcc")))
    if not compilers:
        log("SKIP: no CUDA compiler (neither libnvrtc nor nvcc found); install a CUDA toolkit or "
            "nvidia-cuda-nvrtc, or pass --nvrtc")
        return SKIP
    preamble = CudaPreamble(lib)
    log(f"OpenMM CUDA library: {lib}")
    for c in compilers:
        log(f"compiler: {c.name} {c.version} ({c.path})")

    # The variants must set exactly the defines the host sets.
    used = set(native_defines(True, 2, 1, "double", True)) | set(native_defines(True, 2, 1, "double", "nodes"))
    if used != host_define_names():
        log(f"FAIL: the host sets defines {sorted(host_define_names())}; this check sets {sorted(used)}: update "
            "native_defines()")
        return 1

    native_src, torch_src = NATIVE_KERNEL.read_text(), torch_source()
    jobs = []
    for precision in ("single", "mixed", "double"):
        for name, periodic, dims, restraints, log_transform in NATIVE_VARIANTS:
            text = preamble.assemble(native_src, native_defines(periodic, dims, restraints, precision, log_transform),
                                     precision, True)
            jobs.append((f"latentBiasNative[{name}]", precision, text, KERNEL_SIGNATURES["native"]))
        jobs.append(("libtorch helpers", precision, preamble.assemble(torch_src, {}, precision, False),
                     KERNEL_SIGNATURES["torch"]))
    archs = [int(a) for a in args.arch.split(",") if a]
    failures = 0
    for compiler in compilers:
        for job, precision, text, signature in jobs:
            for arch in archs:
                t0 = time.perf_counter()
                ok, messages, ptx = compiler.compile(text, arch)
                problems = check_signatures(ptx, signature, precision) if ok else []
                status = "ok" if ok and not problems else "FAIL"
                seconds = time.perf_counter() - t0
                log(f"{status:4s} {compiler.name:5s} sm_{arch} {precision:6s} {job}  ({seconds:.1f} s)")
                if messages:
                    log("     " + messages.replace("\n", "\n     "))
                for p in problems:
                    log("     " + p)
                if status != "ok":
                    failures += 1
                if args.keep:
                    keep = Path(args.keep)
                    keep.mkdir(parents=True, exist_ok=True)
                    stem = re.sub(r"\W+", "_", f"{job}_{precision}_{compiler.name}_{arch}").strip("_")
                    (keep / f"{stem}.cu").write_text(text)
                    if ptx:
                        (keep / f"{stem}.ptx").write_text(ptx)
    log(f"{'FAILED' if failures else 'PASSED'}: {failures} failure(s) in "
        f"{len(jobs) * len(archs) * len(compilers)} compilations")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
