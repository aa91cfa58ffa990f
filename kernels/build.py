"""The one place that reads ``kernels/*.cu``: compile options, GPU modules, and an NVRTC check.

* :func:`get_function` returns the kernel ``name`` of a kernel file on the current device. The
  file is compiled with NVRTC on first use (never at import time), cached on disk
  (:func:`kernel_cache_dir`), and loaded with ``cupy.RawModule(path=...)``; the kernel object is
  cached per (CuPy module, device, file, name), so a launch costs one dictionary lookup.
* Which NVRTC (:func:`nvrtc_candidates`): the one whose CUDA major equals min(the driver's,
  CuPy's runtime's). A CUBIN from a newer NVRTC than the driver does not load, and one venv can
  hold several (``nvidia-cuda-nvrtc-cu12`` beside torch's CUDA 13 wheel): the newest is not the
  right one. Every ``sys.path`` entry is searched for ``nvidia/*/lib/libnvrtc.so*`` (an
  ``nvidia/__init__.py`` in one site folder hides the others from ``find_spec("nvidia")``), and
  its ``libnvrtc-builtins`` is loaded from beside it.
* For which architecture (:func:`choose_target`): the highest that this NVRTC lists
  (``nvrtcGetSupportedArchs``) at or below the device's, as a CUBIN when it has the device's
  major (CUBINs run on later minors of their major), else as PTX, which the driver compiles for
  the device (a GPU newer than every listed arch, e.g. sm_120 with NVRTC 12.6).
* :func:`nvrtc_compile` compiles a kernel file with NVRTC alone (pip ``nvidia-cuda-nvrtc-cu12``),
  no GPU and no CuPy needed: CI uses it to compile every ``.cu`` file for sm_80 and sm_90.

Why NVRTC here and not ``cupy.RawModule(code=...)``: CuPy appends ``-ftz=true`` to every
source it compiles, and NVRTC takes the last of two conflicting flags, so a kernel built by CuPy
would flush subnormal floats to zero whatever we ask for. The executors reproduce NumPy's and
Pillow's float arithmetic, which keeps subnormals (IEEE), and so does the CPU emulator. One set
of options, :data:`COMPILE_OPTIONS`, is what the GPU runs, what CI compiles, and what
:data:`EMULATOR_CXXFLAGS` mirrors on the host:

====================  ===============================  ========================================
NVRTC                 g++ (kernels/host.py)            why
====================  ===============================  ========================================
``--fmad=false``      ``-ffp-contract=off``            one rounding per operation, as NumPy
``--ftz=false``       (no ``-ffast-math``: no DAZ/FTZ)  subnormals kept, as NumPy
``--prec-div=true``   IEEE ``/`` (SSE)                 correctly rounded division
``--prec-sqrt=true``  IEEE ``sqrt``                    correctly rounded square root
====================  ===============================  ========================================
"""
from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import re
import sys
import threading
from pathlib import Path

from ..atomic import atomic_write, cache_root
from . import KERNEL_DIR

COMPILE_OPTIONS = ("-std=c++17", "--fmad=false", "--ftz=false", "--prec-div=true",
                   "--prec-sqrt=true")
EMULATOR_CXXFLAGS = ("-O2", "-std=c++17", "-ffp-contract=off", "-fno-fast-math")
_FUNCTIONS = {}
_LOCK = threading.Lock()


def kernel_path(filename: str) -> Path:
    path = KERNEL_DIR / filename
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {path} is missing: reinstall ipmix-dali "
                                f"(kernels ship as package data of ipmix_dali.kernels)")
    return path


def read_source(filename: str) -> str:
    """Kernel source with ``#include "common.cuh"`` inlined (the GPU build, NVRTC checks and the
    emulator all see the same text)."""
    text = kernel_path(filename).read_text()
    common = (KERNEL_DIR / "common.cuh").read_text()
    return text.replace('#include "common.cuh"', common)


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: ``kernels/`` under :func:`~ipmix_dali.atomic.cache_root`."""
    return cache_root() / "kernels"


def compiled_kernel(filename: str, arch: str, nvrtc_major=None, driver_version: int = 0) -> Path:
    """The compiled ``kernels/filename`` for a device of architecture ``arch`` (e.g. "sm_90")
    with COMPILE_OPTIONS: a CUBIN, or PTX where the NVRTC of ``nvrtc_major`` (None: the newest
    found) cannot target the device (:func:`choose_target`). From the disk cache or compiled now
    (written atomically, so processes can share the cache); the key holds the source, target,
    options, NVRTC and driver versions."""
    source = read_source(filename)
    lib = _find_libnvrtc(nvrtc_major)
    target, output = choose_target(int(arch.split("_")[1]), supported_archs(lib))
    key = hashlib.sha1("\n".join([source, target, output, *COMPILE_OPTIONS, _nvrtc_version(lib),
                                  str(driver_version)]).encode()).hexdigest()[:16]
    # The stem comes first: the CuPy stand-in finds a module's source by it.
    path = kernel_cache_dir() / f"{Path(filename).stem}.{target}.{key}.{output}"
    if not path.is_file():
        binary = nvrtc_compile(filename, target, output=output, nvrtc_major=nvrtc_major)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(binary if output == "cubin" else binary.encode())
    return path


def nvrtc_major_for(cupy) -> int:
    """The CUDA major whose NVRTC builds for this process: min(driver, CuPy's runtime)."""
    driver = int(cupy.cuda.runtime.driverGetVersion())
    runtime = int(cupy.cuda.runtime.runtimeGetVersion())
    return min(driver, runtime) // 1000


def get_function(filename: str, name: str):
    """The ``extern "C"`` kernel ``name`` of ``kernels/filename`` on the current CUDA device,
    callable as ``kernel(grid, block, args)`` on the current stream."""
    import cupy

    device = cupy.cuda.Device()
    key = (id(cupy), device.id, filename, name)
    function = _FUNCTIONS.get(key)
    if function is None:
        with _LOCK:
            function = _FUNCTIONS.get(key)
            if function is None:
                module_key = (id(cupy), device.id, filename)
                module = _FUNCTIONS.get(module_key)
                if module is None:
                    arch = "sm_" + str(device.compute_capability)
                    path = compiled_kernel(filename, arch, nvrtc_major_for(cupy),
                                           int(cupy.cuda.runtime.driverGetVersion()))
                    module = cupy.RawModule(path=str(path))
                    _FUNCTIONS[module_key] = module
                function = _FUNCTIONS[key] = module.get_function(name)
    return function


def choose_target(capability: int, supported) -> tuple:
    """(target, output) for a device of compute capability ``capability`` (e.g. 90) given the
    architectures an NVRTC supports: ("sm_XY", "cubin") for the highest listed at or below the
    device with the device's major, else ("compute_XY", "ptx") for the highest at or below it
    (the driver JIT-compiles PTX for newer GPUs)."""
    supported = sorted(int(a) for a in supported)
    below = [a for a in supported if a <= capability]
    if not below:
        raise RuntimeError(f"this NVRTC supports sm_{supported[0]} to sm_{supported[-1]}, the "
                           f"GPU is sm_{capability}: install an NVRTC that supports it (pip "
                           f"install nvidia-cuda-nvrtc-cu12 of an older CUDA 12)")
    best = below[-1]
    if best // 10 == capability // 10:
        return f"sm_{best}", "cubin"
    return f"compute_{best}", "ptx"


# --- NVRTC without a GPU ---------------------------------------------------------------------
def _library_version(path: str):
    m = re.search(r"\.so\.(\d+)", os.path.basename(path))
    return int(m.group(1)) if m else 0


def nvrtc_candidates(want_major=None, paths=None) -> list:
    """libnvrtc files of the pip wheels under every entry of ``paths`` (default ``sys.path``):
    ``nvidia/cuda_nvrtc/lib`` (CUDA 12) and ``nvidia/cu13/lib`` (CUDA 13) alike. With
    ``want_major``, those of that CUDA major first, then older majors (a newer NVRTC's output
    would not load on the driver), never newer; without it, the newest first. System library
    names follow."""
    found = []
    for root in (sys.path if paths is None else paths):
        for cand in sorted(glob.glob(os.path.join(root or ".", "nvidia", "*", "lib",
                                                  "libnvrtc.so*"))):
            base = os.path.basename(cand)
            if "builtins" not in base and ".alt." not in base and cand not in found:
                found.append(cand)
    majors = sorted({_library_version(c) for c in found}, reverse=True)
    if want_major is not None:
        majors = [want_major] + [m for m in majors if m < want_major]
    ordered = [c for m in majors for c in found if _library_version(c) == m]
    system = [f"libnvrtc.so.{m}" for m in (majors or [13, 12])] + ["libnvrtc.so"]
    return ordered + [name for name in system if name not in ordered]


@functools.lru_cache(maxsize=None)
def _find_libnvrtc(want_major=None):
    """The first loadable of :func:`nvrtc_candidates`, its ``libnvrtc-builtins`` loaded from
    beside it first (NVRTC 13 opens it by its soname)."""
    for cand in nvrtc_candidates(want_major):
        try:
            folder = os.path.dirname(cand)
            for builtins in glob.glob(os.path.join(folder, "libnvrtc-builtins.so*")) if folder \
                    else []:
                if ".alt." not in builtins:
                    ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            lib = ctypes.CDLL(cand)
        except OSError:
            continue
        if want_major is None or int(_nvrtc_version(lib).split(".")[0]) <= want_major:
            return lib  # (a system libnvrtc.so of a newer CUDA is passed over)
    cuda = want_major or 12
    raise OSError(f"libnvrtc{f' for CUDA {want_major}' if want_major else ''} not found: pip "
                  f"install nvidia-cuda-nvrtc-cu{cuda}" + (" (or the CUDA 13 nvidia-cuda-nvrtc "
                                                            "wheel)" if not want_major else ""))


def supported_archs(lib) -> list:
    """The compute capabilities (e.g. [75, 80, ..., 120]) this NVRTC can compile for."""
    count = ctypes.c_int()
    if lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)) != 0 or count.value <= 0:
        raise RuntimeError("nvrtcGetNumSupportedArchs failed")
    archs = (ctypes.c_int * count.value)()
    if lib.nvrtcGetSupportedArchs(archs) != 0:
        raise RuntimeError("nvrtcGetSupportedArchs failed")
    return list(archs)


def _nvrtc_version(lib) -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


def nvrtc_compile(filename: str, arch: str = "sm_80", output: str = "ptx", nvrtc_major=None):
    """Compile ``kernels/filename`` with COMPILE_OPTIONS for ``arch`` ("sm_80" or
    "compute_80"): PTX text for the virtual architecture (``output="ptx"``) or a CUBIN for the
    real one (``output="cubin"``, bytes), with the NVRTC of CUDA ``nvrtc_major`` (None: the
    newest found). Raises RuntimeError with NVRTC's log."""
    if output not in ("ptx", "cubin"):
        raise ValueError(f"output must be 'ptx' or 'cubin', got {output!r}")
    lib = _find_libnvrtc(nvrtc_major)
    src = read_source(filename).encode()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src, filename.encode(), 0, None, None)
    if rc != 0:
        raise RuntimeError(f"nvrtcCreateProgram failed ({rc}) for {filename}")
    try:
        number = arch.split("_")[1]
        target = f"compute_{number}" if output == "ptx" else f"sm_{number}"
        opts = [f"--gpu-architecture={target}".encode()]
        opts += [o.encode() for o in COMPILE_OPTIONS]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        if rc != 0:
            raise RuntimeError(f"NVRTC failed to compile kernels/{filename} for {arch}:\n"
                               f"{log.value.decode(errors='replace')}")
        if output == "ptx":
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            ptx = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, ptx)
            return ptx.value.decode()
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, cubin)
        return cubin.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
