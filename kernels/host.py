"""CUDA kernels compiled for the host: a kernels/*.cu file as C++, every thread in a loop.

Two uses. The **emulator** (``ipmix_dali.testing.emulator.EmulatedModule``) lets CI (no GPU)
check what the kernels compute, not only that they compile. The **native CPU path**
(``ipmix_dali.executors.native``) runs the warp kernels (LayerMix's, and the PIL ops' rotate
and shears) on the CPU stage: the kernels' arithmetic is the NumPy twins', bit for bit
(tested), in one compiled pass instead of ~20-30 NumPy passes.

A kernel file is compiled with g++ and ``build.EMULATOR_CXXFLAGS``, the host twins of the NVRTC
options the GPU build uses (``build.COMPILE_OPTIONS``: no multiply-add contraction, no flush of
subnormals to zero, IEEE division and square root), plus any ``extra_flags`` that keep those
semantics (``-O3``, ``-mfma``: an explicit ``fma`` becomes one instruction, still one rounding),
after a small header that defines the CUDA qualifiers away, provides
``blockIdx``/``threadIdx``/``blockDim``/``gridDim``, sequential ``atomicAdd`` and the ``__*_rn``
intrinsics. For every ``extern "C" __global__`` kernel a wrapper ``emu_<name>`` runs the kernel
once per (block, thread) in order. The library is cached by a digest of source and flags
(written to a temp name, then renamed: concurrent builders do not clash).

What it cannot emulate, and kernels therefore must not use: ``__syncthreads``, ``__shared__``,
warp intrinsics, inline PTX, CUDA headers. Differences it cannot see: device ``pow``/``exp``
accuracy (glibc here), and races between threads (it runs them one after another). The
``blockIdx``/``threadIdx`` globals make an emulating module usable from one Python thread at a
time; a ``serial=True`` module (the native path: indices are constants, one launch is one
kernel thread) has no mutable state, so several Python threads may launch it at once
(``NumpyExecutor(threads=k)``; ctypes releases the GIL during a call).

    mod = HostModule("smoke.cu")
    mod.launch("smoke_mul", grid=(g, 1, 1), block=(256, 1, 1), args=(x, y, out, np.int32(n)))
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import re
import subprocess
import tempfile

import numpy as np

from .build import EMULATOR_CXXFLAGS, read_source

HEADER = r"""
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
struct dim3 { unsigned int x, y, z; };
#ifdef IPMIX_HOST_SERIAL
static const dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0};
static const dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#else
static dim3 blockIdx, threadIdx, blockDim, gridDim;
#endif
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#ifdef IPMIX_HOST_SERIAL
#define __restrict__ __restrict
#else
#define __restrict__
#endif
using std::min; using std::max; using std::isfinite; using std::isnan; using std::isinf;
static inline int atomicAdd(int* p, int v) { int o = *p; *p += v; return o; }
static inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { unsigned int o = *p; *p += v; return o; }
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { unsigned long long o = *p; *p += v; return o; }
static inline float atomicAdd(float* p, float v) { float o = *p; *p += v; return o; }
static inline int atomicMin(int* p, int v) { int o = *p; if (v < o) *p = v; return o; }
static inline int atomicMax(int* p, int v) { int o = *p; if (v > o) *p = v; return o; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
static inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)std::floor(x); }
static inline int __double2int_rz(double x) { return (int)x; }
static inline int __double2int_rd(double x) { return (int)std::floor(x); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline unsigned int __float_as_uint(float x) { unsigned int u; std::memcpy(&u, &x, 4); return u; }
static inline float __uint_as_float(unsigned int u) { float x; std::memcpy(&x, &u, 4); return x; }
static inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
"""

# ``serial=True``: the module is only launched as one thread (the native CPU path). The grid
# and thread indices become constants, so a kernel's grid-stride loop is a plain unit-stride
# loop the compiler can see through (vectorise, keep indices in registers).
SERIAL_DEFINE = "#define IPMIX_HOST_SERIAL 1\n"

_KERNEL_RE = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)', re.S)
_CTYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.uint32): ctypes.c_uint32,
           np.dtype(np.int64): ctypes.c_int64, np.dtype(np.uint64): ctypes.c_uint64,
           np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}
_SCALAR_TYPES = {"int": np.int32, "unsigned int": np.uint32, "unsigned": np.uint32,
                 "float": np.float32, "double": np.float64, "long long": np.int64,
                 "unsigned long long": np.uint64, "int32_t": np.int32, "uint32_t": np.uint32,
                 "int64_t": np.int64, "uint64_t": np.uint64}


def _parse_params(params: str):
    out = []
    for p in [p.strip() for p in params.split(",") if p.strip()]:
        m = re.match(r"(.*?)([A-Za-z_]\w*)$", p.replace("__restrict__", "").strip())
        ctype, name = m.group(1).strip(), m.group(2)
        out.append((ctype, name))
    return out


class HostModule:
    """A kernels/*.cu file compiled for the CPU; ``launch`` runs one of its kernels.

    ``extra_flags``: g++ flags after ``EMULATOR_CXXFLAGS`` (they must not change the
    arithmetic). ``compiler``: the C++ compiler (default g++). Raises RuntimeError when
    the compiler is missing or fails."""

    def __init__(self, filename: str, extra_flags=(), compiler=None, serial=False):
        source = read_source(filename)
        self.kernels = {name: _parse_params(params) for name, params in _KERNEL_RE.findall(source)}
        if not self.kernels:
            raise ValueError(f"no extern \"C\" __global__ kernels in {filename}")
        self.serial = serial
        wrappers = []
        for name, params in self.kernels.items():
            decl = ", ".join(f"{t} {n}" for t, n in params)
            names = ", ".join(n for _, n in params)
            if serial:
                wrappers.append(
                    f'extern "C" void emu_{name}(unsigned, unsigned, unsigned, unsigned, '
                    f'unsigned, unsigned{", " + decl if decl else ""}) {{ {name}({names}); }}\n')
                continue
            wrappers.append(
                f'extern "C" void emu_{name}(unsigned emu_gx, unsigned emu_gy, unsigned emu_gz, '
                f'unsigned emu_bx, unsigned emu_by, unsigned emu_bz{", " + decl if decl else ""})'
                f" {{\n  gridDim = {{emu_gx, emu_gy, emu_gz}};"
                f" blockDim = {{emu_bx, emu_by, emu_bz}};\n"
                f"  for (unsigned emu_k = 0; emu_k < emu_gz; ++emu_k)"
                f" for (unsigned emu_j = 0; emu_j < emu_gy; ++emu_j)"
                f" for (unsigned emu_i = 0; emu_i < emu_gx; ++emu_i)\n"
                f"  for (unsigned emu_c = 0; emu_c < emu_bz; ++emu_c)"
                f" for (unsigned emu_b = 0; emu_b < emu_by; ++emu_b)"
                f" for (unsigned emu_a = 0; emu_a < emu_bx; ++emu_a) {{\n"
                f"    blockIdx = {{emu_i, emu_j, emu_k}}; threadIdx = {{emu_a, emu_b, emu_c}};\n"
                f"    {name}({names});\n  }}\n}}\n")
        text = ((SERIAL_DEFINE if serial else "") + HEADER + source + "\n"
                + "\n".join(wrappers))
        flags = tuple(EMULATOR_CXXFLAGS) + tuple(extra_flags)
        compiler = compiler or "g++"
        digest = hashlib.sha1((" ".join(flags) + compiler + text).encode()).hexdigest()[:16]
        cache = os.path.join(tempfile.gettempdir(), "ipmix_dali_kernel_emu")
        os.makedirs(cache, exist_ok=True)
        lib = os.path.join(cache, f"{os.path.splitext(filename)[0]}_{digest}.so")
        if not os.path.exists(lib):
            src = lib[:-3] + ".cpp"
            with open(src, "w") as f:
                f.write(text)
            tmp = lib + f".{os.getpid()}.tmp"
            try:
                proc = subprocess.run([compiler, *flags, "-x", "c++", "-fPIC", "-shared",
                                       "-o", tmp, src], capture_output=True, text=True)
            except OSError as exc:
                raise RuntimeError(f"no C++ compiler for {filename}: {compiler}: {exc}") from None
            if proc.returncode != 0:
                raise RuntimeError(f"{compiler} could not compile {filename} for the host:\n"
                                   f"{proc.stderr[-4000:]}")
            os.replace(tmp, lib)
        self._lib = ctypes.CDLL(lib)
        self.filename = filename

    def launch(self, name, grid, block, args):
        if name not in self.kernels:
            raise KeyError(f"{self.filename} has no kernel {name!r}: {sorted(self.kernels)}")
        params = self.kernels[name]
        if self.serial and (math.prod(grid) != 1 or math.prod(block) != 1):
            raise ValueError(f"{self.filename} was built serial (one thread): launch {name} "
                             f"with grid and block (1, 1, 1), got {grid} {block}")
        if len(args) != len(params):
            raise TypeError(f"{name} takes {len(params)} arguments, got {len(args)}")
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        cargs = [ctypes.c_uint(int(v)) for v in grid + block]
        for (ctype, pname), arg in zip(params, args):
            if "*" in ctype:
                # The address of the first element, as CuPy passes ``a.data.ptr``: kernels that
                # take a strided view (the executors' outputs) get its strides as arguments.
                if not isinstance(arg, np.ndarray):
                    raise TypeError(f"{name}: {pname} ({ctype}) needs an ndarray")
                cargs.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                want = _SCALAR_TYPES.get(ctype.replace("const", "").strip())
                if want is None:
                    raise TypeError(f"{name}: unsupported parameter type {ctype!r}")
                if not isinstance(arg, np.generic) or arg.dtype != np.dtype(want):
                    raise TypeError(f"{name}: {pname} ({ctype}) needs np.{np.dtype(want).name}, "
                                    f"got {type(arg).__name__}")
                cargs.append(_CTYPES[arg.dtype](arg.item()))
        getattr(self._lib, f"emu_{name}")(*cargs)
