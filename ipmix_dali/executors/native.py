"""The native CPU path: kernels/*.cu compiled for the host and run as one thread.

LayerMix: the NumPy twin of its warp (``layermix_ops._warp_bilinear``) reproduces torch's
float32 fused multiply-adds with float64 products, in ~30 NumPy passes over each image: ~45 % of
the CPU executor's LayerMix time, and the reason its CPU stage was barely faster than the torch
reference. ``kernels/layermix_ops.cu``'s ``layermix_affine_bilinear`` computes the same thing
(the emulator tests assert it equals the twin bit for bit) in one pass. The rest of LayerMix's
chain (its other ops, the blends, the clips, the normalisation: ``kernels/mixing.cu``) runs
natively too, as the GPU executor's program (:mod:`.native_exec`).

The PIL ops of AugMix, PixMix and IPMix: rotate, shear_x and shear_y are Pillow's bilinear
``transform`` (``np_ops._warp``: a neighbour table and ~20 float64 NumPy passes per block,
~30-45 % of the executor's AugMix and IPMix time); ``kernels/affine.cu``'s ``affine_bilinear``
is its GPU twin, bit for bit. The translations (whole-pixel slices in NumPy) stay NumPy, which
is faster there.

The files are compiled with g++ (``ipmix_dali.kernels.host``: no contraction, IEEE semantics;
``-O3``, ``-fno-trapping-math`` and the CPU's ``-mfma`` / ``-mavx2``, see :func:`host_flags`)
as serial modules (one thread: the grid-stride loops become plain loops) and run over the
batch as the kernels' host forms where they have one (:data:`HOST_KERNELS`: the same element
functions, one thread per row or image, no division per element): 2-5x faster than the twins
(docs/cpu_stage.md), the same pixels.

``IPMIX_DALI_NATIVE=0`` turns it off (the twins run). Without a C++ compiler it is off too,
with one warning per kernel file and process; the pixels do not change either way, only the
speed. The libraries are cached in the temp directory (built once per machine, ~2 s each).
"""
from __future__ import annotations

import logging
import os

import numpy as np

__all__ = ["enabled", "load", "error", "module", "pil_module", "mix_module", "HOST_KERNELS",
           "geometric", "pil_geometric", "host_flags", "PIL_NATIVE_OPS"]

log = logging.getLogger("ipmix_dali.native")

ENV = "IPMIX_DALI_NATIVE"
_SOURCE = "layermix_ops.cu"    # LayerMix's kernels
_PIL_SOURCE = "affine.cu"       # the PIL ops' warp
_MIX_SOURCE = "mixing.cu"       # the float stages (LayerMix's whole chain runs natively)
_states = {}  # kernel file -> {"module": HostModule or None, "error": first line or None}
# The GPU path's kernel -> its host form (the same pixel functions, one thread per row or per
# image: no division per pixel, loops the compiler may vectorise)
HOST_KERNELS = {"layermix_affine_bilinear": "layermix_affine_bilinear_rows",
                "affine_bilinear": "affine_bilinear_rows",
                "layermix_equalize_apply": "layermix_equalize_apply_images",
                "layermix_posterize": "layermix_posterize_images",
                "layermix_solarize": "layermix_solarize_images",
                "copy_rows": "copy_whole_rows",
                "mix_rows_full": "mix_rows_full_rows",
                "mix_normalize": "mix_normalize_rows",
                "mix_combine": "mix_combine_rows"}
# The PIL ops that run natively: the bilinear warps (the translations are whole-pixel slices,
# faster in NumPy: 0.02 against 0.07 ms per 224 px image)
PIL_NATIVE_OPS = ("rotate", "shear_x", "shear_y")
_warned = set()


def enabled() -> bool:
    """Whether the native path is asked for: ``IPMIX_DALI_NATIVE`` unset, "1" (on) or "0"
    (off); any other value keeps it on, with one warning naming the variable."""
    value = os.environ.get(ENV, "1").strip()
    if value not in ("0", "1", "") and value not in _warned:
        _warned.add(value)
        log.warning("%s=%r: use 0 (the NumPy twin) or 1 (the native warp); kept on", ENV, value)
    return value != "0"


def _cpu_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def host_flags():
    """g++ flags on top of the emulator's (they keep its arithmetic). ``-fno-trapping-math``
    lets g++ assume that no floating-point operation traps (Python never unmasks the FP
    exceptions): each operation still rounds as IEEE says, but the float-to-int conversions
    and ``floorf`` of LayerMix's per-row source loop may then run as vector instructions
    (that loop's warp 1.04 -> 0.83 ms per 224 px image, docs/cpu_stage.md; the same bits).
    ``-mfma`` makes the kernels' explicit ``fma`` one instruction (the same single rounding);
    ``-mavx2`` widens the integer loops (the masks' hash) to 8 lanes. Both only where
    /proc/cpuinfo lists them: the cached library's name is a digest of the flags, so a
    machine without them never loads one built with them."""
    cpu = _cpu_flags()
    return (("-O3", "-fno-trapping-math") + (("-mfma",) if "fma" in cpu else ())
            + (("-mavx2",) if "avx2" in cpu else ()))


def load(source: str):
    """The compiled kernel file ``source`` (one host thread: ``HostModule(serial=True)``), or
    None (turned off, or no working compiler: warned once per file)."""
    if not enabled():
        return None
    state = _states.setdefault(source, {"module": None, "error": None})
    if state["module"] is None and state["error"] is None:
        from ..kernels.host import HostModule

        try:
            state["module"] = HostModule(source, extra_flags=host_flags(), serial=True)
        except (RuntimeError, OSError) as exc:  # no compiler, or no writable temp directory
            state["error"] = (str(exc).splitlines() or [type(exc).__name__])[0]
            log.warning("the native CPU warp is unavailable (%s): the geometric ops of "
                        "kernels/%s run as NumPy (the same pixels, slower); install g++ to "
                        "speed them up", state["error"], source)
    return state["module"]


def error(source: str):
    """Why the kernel file ``source`` is not available (the first line of its build error), or
    None (built, or not tried yet)."""
    return _states.get(source, {}).get("error")


def module():
    """LayerMix's compiled kernels, or None (turned off, or no working compiler: warned once)."""
    return load(_SOURCE)


def mix_module():
    """The float stages' compiled kernels (``mixing.cu``), or None (as :func:`module`)."""
    return load(_MIX_SOURCE)


def pil_module():
    """The PIL ops' compiled warp, or None (turned off, or no working compiler: warned once)."""
    return load(_PIL_SOURCE)


def _run(mod, prepare, op_id: int, images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """The GPU path's plan (``prepare(op_id, shape, params)``) run on the host by ``mod``: one
    host thread walks every row (the kernel's grid-stride loop), in the per-row kernel."""
    from .cupy_ops import execute_plan

    src = np.ascontiguousarray(images)
    out = np.empty_like(src)

    def launch(kl, args):
        mod.launch(HOST_KERNELS.get(kl.name, kl.name), grid=(1, 1, 1), block=(1, 1, 1),
                   args=args)

    return execute_plan(prepare(op_id, src.shape, params), src, out,
                        to_device=np.ascontiguousarray, zeros=np.zeros, launch=launch)


def geometric(op_id: int, images: np.ndarray, params: np.ndarray):
    """LayerMix geometric op ``op_id`` on float32 (n, H, W, 3) ``images``, one mapped param per
    image, by the compiled kernel: ``apply_layermix_op_np(op_id, images, params)`` bit for bit.
    The host side (matrices, rotate's exact fast paths) is the GPU path's
    (``cupy_layermix.prepare_layermix_op``). None when the native path is unavailable, or when
    ``layermix_ops.GRID_MATMUL_FMA`` is off: the kernel rounds the affine grid's matmul as the
    fused form only, and the twin's other rounding is then the one that matches torch."""
    from . import layermix_ops

    mod = module() if layermix_ops.GRID_MATMUL_FMA else None
    if mod is None:
        return None
    from .cupy_layermix import prepare_layermix_op

    return _run(mod, prepare_layermix_op, op_id, images, params)


def pil_geometric(op_id: int, images: np.ndarray, params: np.ndarray):
    """PIL op ``op_id`` (one of :data:`PIL_NATIVE_OPS`) on uint8 (n, H, W, 3) ``images``, one
    mapped param per image, by the compiled ``affine_bilinear``: ``np_ops.apply_pil_op(op_id,
    images, params, native=False)`` bit for bit. The host side (matrices, rotate's exact fast
    paths) is the GPU path's (``cupy_ops.prepare_pil_op``). None when the native path is
    unavailable."""
    mod = pil_module()
    if mod is None:
        return None
    from .cupy_ops import prepare_pil_op

    return _run(mod, prepare_pil_op, op_id, images, params)
