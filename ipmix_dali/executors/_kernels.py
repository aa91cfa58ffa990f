"""The one place that reads ``kernels/*.cu``: compile options, GPU modules, and an NVRTC check.

* :func:`get_function` returns the kernel ``name`` of a kernel file on the current device. The
  file is compiled with NVRTC on first use (never at import time) to a CUBIN for the device's
  architecture, cached on disk (:func:`kernel_cache_dir`), and loaded with
  ``cupy.RawModule(path=...)``; the kernel object is cached per (CuPy module, device, file, name),
  so a launch costs one dictionary lookup.
* :func:`nvrtc_compile` compiles a kernel file with NVRTC alone (pip ``nvidia-cuda-nvrtc-cu12``),
  no GPU and no CuPy needed: CI uses it to compile every ``.cu`` file for sm_80 and sm_90.

Why NVRTC here and not ``cupy.RawModule(code=...)``: CuPy appends ``-ftz=true`` to every
source it compiles, and NVRTC takes the last of two conflicting flags, so a kernel built by CuPy
would flush subnormal floats to zero whatever we ask for. The executors reproduce NumPy's and
Pillow's float arithmetic, which keeps subnormals (IEEE), and so does the CPU emulator. One set
of options, :data:`COMPILE_OPTIONS`, is what the GPU runs, what CI compiles, and what
:data:`EMULATOR_CXXFLAGS` mirrors on the host:

====================  ===============================  ========================================
NVRTC                 g++ (kernels/emulator.py)        why
====================  ===============================  ========================================
``--fmad=false``      ``-ffp-contract=off``            one rounding per operation, as NumPy
``--ftz=false``       (no ``-ffast-math``: no DAZ/FTZ)  subnormals kept, as NumPy
``--prec-div=true``   IEEE ``/`` (SSE)                 correctly rounded division
``--prec-sqrt=true``  IEEE ``sqrt``                    correctly rounded square root
====================  ===============================  ========================================
"""
from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import re
import threading
from pathlib import Path

from ..atomic import atomic_write, cache_root
from ..kernels import KERNEL_DIR

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


def compiled_kernel(filename: str, arch: str) -> Path:
    """The CUBIN of ``kernels/filename`` for ``arch`` (e.g. "sm_90") with COMPILE_OPTIONS, from
    the disk cache or compiled now (written atomically, so processes can share the cache)."""
    source = read_source(filename)
    lib = _find_libnvrtc()
    key = hashlib.sha1("\n".join([source, arch, *COMPILE_OPTIONS, _nvrtc_version(lib)])
                       .encode()).hexdigest()[:16]
    # The stem comes first: the CuPy stand-in finds a module's source by it.
    path = kernel_cache_dir() / f"{Path(filename).stem}.{arch}.{key}.cubin"
    if not path.is_file():
        binary = nvrtc_compile(filename, arch, output="cubin")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(binary)
    return path


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
                    module = cupy.RawModule(path=str(compiled_kernel(filename, arch)))
                    _FUNCTIONS[module_key] = module
                function = _FUNCTIONS[key] = module.get_function(name)
    return function


# --- NVRTC without a GPU ---------------------------------------------------------------------
def _library_version(path: str):
    m = re.search(r"\.so\.(\d+)", os.path.basename(path))
    return int(m.group(1)) if m else 0


def _find_libnvrtc():
    """libnvrtc from the pip wheels (cu12: nvidia/cuda_nvrtc/lib, cu13: nvidia/cu13/lib), the
    newest first, then the system's."""
    import importlib.util

    candidates = []
    spec = importlib.util.find_spec("nvidia")
    if spec and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidates += glob.glob(os.path.join(root, "cuda_nvrtc", "lib", "libnvrtc.so*"))
            candidates += glob.glob(os.path.join(root, "cu1*", "lib", "libnvrtc.so*"))
    candidates = sorted(candidates, key=_library_version, reverse=True)
    candidates += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    for cand in candidates:
        if "builtins" in os.path.basename(cand) or ".alt." in os.path.basename(cand):
            continue
        try:
            # NVRTC 13 opens libnvrtc-builtins by its soname: load the wheel's copy first.
            folder = os.path.dirname(cand)
            for builtins in glob.glob(os.path.join(folder, "libnvrtc-builtins.so*")) if folder \
                    else []:
                if ".alt." not in builtins:
                    ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(cand)
        except OSError:
            continue
    raise OSError("libnvrtc not found: pip install nvidia-cuda-nvrtc-cu12 (or the CUDA 13 "
                  "nvidia-cuda-nvrtc wheel)")


def _nvrtc_version(lib) -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


def nvrtc_compile(filename: str, arch: str = "sm_80", output: str = "ptx"):
    """Compile ``kernels/filename`` with COMPILE_OPTIONS for ``arch``: PTX text for the virtual
    architecture (``output="ptx"``) or a CUBIN for the real one (``output="cubin"``, bytes).
    Raises RuntimeError with NVRTC's log."""
    if output not in ("ptx", "cubin"):
        raise ValueError(f"output must be 'ptx' or 'cubin', got {output!r}")
    lib = _find_libnvrtc()
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
