"""The one place that reads ``kernels/*.cu``: compile options, CuPy modules, and an NVRTC check.

* :func:`get_function` compiles a kernel file with ``cupy.RawModule`` on first use (never at
  import time) and caches the module per device; CuPy also caches the binary on disk.
* :func:`nvrtc_compile` compiles a kernel file to PTX with NVRTC alone (pip
  ``nvidia-cuda-nvrtc-cu12``), no GPU and no CuPy needed: CI uses it to compile every ``.cu``
  file for sm_80 and sm_90.

Compile options are shared by both paths. ``--fmad=false`` matters: the kernels reproduce
Pillow's and NumPy's float arithmetic step by step, and a contracted multiply-add rounds
differently.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading
from pathlib import Path

from ..kernels import KERNEL_DIR

COMPILE_OPTIONS = ("-std=c++17", "--fmad=false")
_MODULES = {}
_LOCK = threading.Lock()


def kernel_path(filename: str) -> Path:
    path = KERNEL_DIR / filename
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {path} is missing: reinstall ipmix-dali "
                                f"(kernels ship as package data of ipmix_dali.kernels)")
    return path


def read_source(filename: str) -> str:
    """Kernel source with ``#include "common.cuh"`` inlined (CuPy and NVRTC see the same text)."""
    text = kernel_path(filename).read_text()
    common = (KERNEL_DIR / "common.cuh").read_text()
    return text.replace('#include "common.cuh"', common)


def get_function(filename: str, name: str):
    """A ``cupy.RawKernel`` of ``extern "C"`` kernel ``name`` in ``kernels/filename``."""
    import cupy

    key = (filename, cupy.cuda.Device().id)
    with _LOCK:
        module = _MODULES.get(key)
        if module is None:
            module = cupy.RawModule(code=read_source(filename), options=COMPILE_OPTIONS)
            _MODULES[key] = module
    return module.get_function(name)


# --- NVRTC without a GPU ---------------------------------------------------------------------
def _find_libnvrtc():
    import importlib.util

    candidates = []
    spec = importlib.util.find_spec("nvidia")
    if spec and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidates += sorted(glob.glob(os.path.join(root, "cuda_nvrtc", "lib", "libnvrtc.so*")))
            candidates += sorted(glob.glob(os.path.join(root, "cu1*", "lib", "libnvrtc.so*")))
    candidates += ["libnvrtc.so.12", "libnvrtc.so"]
    for cand in candidates:
        if "builtins" in os.path.basename(cand) or ".alt." in os.path.basename(cand):
            continue
        try:
            return ctypes.CDLL(cand)
        except OSError:
            continue
    raise OSError("libnvrtc not found: pip install nvidia-cuda-nvrtc-cu12")


def nvrtc_compile(filename: str, arch: str = "sm_80") -> str:
    """Compile ``kernels/filename`` to PTX for ``arch``; raise RuntimeError with NVRTC's log."""
    lib = _find_libnvrtc()
    src = read_source(filename).encode()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src, filename.encode(), 0, None, None)
    if rc != 0:
        raise RuntimeError(f"nvrtcCreateProgram failed ({rc}) for {filename}")
    try:
        opts = [f"--gpu-architecture={'compute_' + arch.split('_')[1]}".encode()]
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
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
