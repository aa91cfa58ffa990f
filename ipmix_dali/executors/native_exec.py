"""LayerMix's whole chain on the CPU as the GPU executor's program, its kernels compiled for the host.

The NumPy executor runs LayerMix as ~40 NumPy passes per chain (each op, the masks, the mixing,
the clips, the gathers and scatters between them): its CPU stage was the slowest against the
torch reference (docs/cpu_stage.md). The CuPy executor already expresses the chain as one
:class:`~.cupy_exec.Program` of kernel launches on whole batches, and the kernel emulator tests
prove each launch equal to the NumPy twin. :class:`NativeExecutor` builds that same program and
runs it with NumPy arrays, each launch one call into the kernel file compiled for the host
(:func:`.native.load`), as its host form where one exists (:data:`.native.HOST_KERNELS`: one
thread per row or image, no division per element).

One step differs from the GPU's program: the multiply blend's powers. The GPU evaluates
``pow`` per element in double precision; on the CPU glibc's scalar ``pow`` costs ~17 ns a call
against ~4.5 ns for NumPy's vectorised one, so rows whose blend is multiply run as a host step,
the NumPy executor's own :func:`.float_ops.mix_multiply` (the same floats by construction).

The same programs serve the other methods' float stages: "none"'s views and JSD's clean view
(:func:`normalize`), PixMix's last step (:func:`normalize_views`) and AugMix / IPMix's
combination (:func:`combine`), each one pass straight into the stage's buffer layout.

The pixels are the NumPy executor's bit for bit (tests/test_native_exec.py); ``IPMIX_DALI_NATIVE=0``
or no C++ compiler leaves them on the NumPy path. Used by :class:`.numpy_exec.NumpyExecutor`.
"""
from __future__ import annotations

import threading

import numpy as np

from ..ops.table import MIX_OP_ID
from . import float_ops as fo
from . import native
from .cupy_exec import CupyExecutor, Program

_ADD, _MUL = MIX_OP_ID["add"], MIX_OP_ID["multiply"]  # mixing.cu's numbers (cupy_exec checks)

__all__ = ["NativeExecutor", "available", "apply", "normalize", "normalize_views", "combine",
           "mix_add_u8"]


def available(method: str = "layermix") -> bool:
    """Whether ``method`` (LayerMix, or "none" and JSD's clean view: only the normalisation)
    can run natively here: its kernel files build (or are cached) and the native path is on;
    for LayerMix also the affine grid rounds as the kernels do (``GRID_MATMUL_FMA``)."""
    from . import layermix_ops

    if method == "layermix" and not (layermix_ops.GRID_MATMUL_FMA
                                     and native.module() is not None):
        return False
    return native.mix_module() is not None


def _launch(file, name, grid, block, args):
    native.load(file).launch(native.HOST_KERNELS.get(name, name), grid=(1, 1, 1),
                             block=(1, 1, 1), args=args)


def _multiply_rows(z, partner, rows, prow, a, b):
    """z[rows] = clip01(mix_multiply(z[rows], partner[prow], a, b)): the NumPy executor's
    multiply blend, one row at a time (its float64 temporaries then stay in the cache)."""
    for r, q, ar, br in zip(rows.tolist(), prow.tolist(), a, b):
        z[r] = fo.clip01(fo.mix_multiply(z[r], partner[q], ar, br))


class NativeExecutor(CupyExecutor):
    """:class:`~.cupy_exec.CupyExecutor`'s programs on NumPy arrays, launched on the host."""

    name = "native"

    def __init__(self):
        self._local = threading.local()  # NumpyExecutor(threads=k) runs chunks on k threads

    @property
    def xp(self):
        return np

    def _run(self, prog: Program):
        prog.run(np, launch=_launch, arena=self._arena)

    def _arena(self, nbytes: int) -> np.ndarray:
        """The program's buffers: one block per thread, grown as needed and kept (a fresh
        block of ~100 MB would fault in every page on every batch)."""
        local = self._local
        if getattr(local, "block", None) is None or local.block.nbytes < nbytes:
            local.block = None  # the old block goes before the new one is made
            local.block = np.empty(nbytes, dtype=np.uint8)
        return local.block[:nbytes]

    def _mix_full(self, prog, z, rows, partner_a, partner_b, partner_f, prow, ops, a, b,
                  p=None, seeds=None):
        """Float partners (LayerMix): the multiply rows as a NumPy host step, the rest as the
        GPU's kernel; uint8 partners (PixMix) read multiply's powers from tables already."""
        mul = np.asarray(ops) == _MUL
        if partner_f is None or not mul.any():
            return super()._mix_full(prog, z, rows, partner_a, partner_b, partner_f, prow, ops,
                                     a, b, p, seeds)
        def pick(values, which):
            return None if values is None else np.asarray(values)[which]

        rest = ~mul
        if rest.any():
            super()._mix_full(prog, z, pick(rows, rest), partner_a, partner_b, partner_f,
                              pick(prow, rest), pick(ops, rest), pick(a, rest), pick(b, rest),
                              pick(p, rest), pick(seeds, rest))
        prog.host_step(_multiply_rows, z, partner_f, pick(rows, mul), pick(prow, mul),
                       pick(a, mul), pick(b, mul))


_EXECUTOR = NativeExecutor()


def apply(images, mixing_pictures, plan, out=None):
    """The views of ``plan`` (LayerMix or "none") computed natively (see the module
    docstring)."""
    return _EXECUTOR.apply(images, mixing_pictures, plan, out)


def normalize_views(z, n: int, views: int, config, out):
    """``out`` (views, n, H, W, 3), any strides, float32 or float16: the normalised rows of
    float32 ``z`` (n * views, H, W, 3), row i * views + v being view v of sample i (PixMix's
    last step: one pass into the stage's layout instead of NumPy's passes and a transposing
    copy)."""
    prog = Program()
    _EXECUTOR._emit_normalize(prog, np.ascontiguousarray(z, dtype=np.float32), n, views, views,
                              out, config)
    _EXECUTOR._run(prog)
    return out


def combine(images, chains, plan, config, out):
    """``out`` (V, N, H, W, 3), any strides, float32 or float16: AugMix's / IPMix's
    ``(1 - m) * pre(x) + m * sum_c w_c * pre(y_c)`` of uint8 ``images`` (N, H, W, 3) and
    ``chains`` (N, V, K, H, W, 3) with the plan's weights and m (``mix_combine``)."""
    prog = Program()
    _EXECUTOR._emit_combine(prog, np.ascontiguousarray(images), np.ascontiguousarray(chains),
                            plan, config, out)
    _EXECUTOR._run(prog)
    return out


def mix_add_u8(z, rows, partner, prow, a, b):
    """z[rows[j]] = clip01(add(z[rows[j]], partner[prow[j]] / 255, a[j], b[j])) in place: PixMix's
    add blends of a round with their uint8 partners (float32 ``z`` rows, contiguous)."""
    if len(rows) == 0:
        return z
    prog = Program()
    _EXECUTOR._mix_full(prog, z, np.asarray(rows), np.ascontiguousarray(partner),
                        prog.dummy(np.uint8), None, np.asarray(prow),
                        np.full(len(rows), _ADD, dtype=np.int32), a, b)
    _EXECUTOR._run(prog)
    return z


def normalize(images, config, out=None):
    """JSD's clean view, (images / 255 - mean) / std, computed natively (one pass)."""
    return _EXECUTOR.normalize(images, config, out)
