"""The native CPU path: LayerMix's geometric ops run as the GPU's warp kernel compiled for the host.

The NumPy twin of the warp (``layermix_ops._warp_bilinear``) reproduces torch's float32 fused
multiply-adds with float64 products, in ~30 NumPy passes over each image: ~45 % of the CPU
executor's LayerMix time, and the reason its CPU stage was barely faster than the torch
reference. ``kernels/layermix_ops.cu``'s ``layermix_affine_bilinear`` computes the same thing
(the emulator tests assert it equals the twin bit for bit) in one pass. Here it is compiled
with g++ (``ipmix_dali.kernels.host``: no contraction, IEEE semantics; ``-O3`` and, where the
CPU has it, ``-mfma``, which turns the kernel's explicit ``fma`` into one instruction, the same
single rounding) and run as one host thread over the batch, as its per-row twin
``layermix_affine_bilinear_rows`` (the same pixel functions, vectorisable loops over chunks
of a row): 4-5x faster than the twin (docs/cpu_stage.md), the same pixels.

``IPMIX_DALI_NATIVE=0`` turns it off (the twin runs). Without a C++ compiler it is off too,
with one warning per process; the pixels do not change either way, only the speed. The library
is cached in the temp directory (built once per machine, ~2 s).
"""
from __future__ import annotations

import logging
import os

import numpy as np

__all__ = ["enabled", "module", "geometric", "host_flags"]

log = logging.getLogger("ipmix_dali.native")

ENV = "IPMIX_DALI_NATIVE"
_SOURCE = "layermix_ops.cu"
_state = {"module": None, "error": None}
# The GPU path's kernel -> its per-row form (the same pixel functions; for one host thread, in
# loops the compiler vectorises)
_HOST_KERNELS = {"layermix_affine_bilinear": "layermix_affine_bilinear_rows"}
_warned = set()


def enabled() -> bool:
    """Whether the native path is asked for: ``IPMIX_DALI_NATIVE`` unset, "1" (on) or "0"
    (off); any other value keeps it on, with one warning naming the variable."""
    value = os.environ.get(ENV, "1").strip()
    if value not in ("0", "1", "") and value not in _warned:
        _warned.add(value)
        log.warning("%s=%r: use 0 (the NumPy twin) or 1 (the native warp); kept on", ENV, value)
    return value != "0"


def _cpu_has_fma() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "fma" in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


def host_flags():
    """g++ flags on top of the emulator's (they keep its arithmetic)."""
    return ("-O3", "-mfma") if _cpu_has_fma() else ("-O3",)


def module():
    """The compiled kernels, or None (turned off, or no working compiler: warned once)."""
    if not enabled():
        return None
    if _state["module"] is None and _state["error"] is None:
        from ..kernels.host import HostModule

        try:
            _state["module"] = HostModule(_SOURCE, extra_flags=host_flags())
        except (RuntimeError, OSError) as exc:  # no compiler, or no writable temp directory
            _state["error"] = (str(exc).splitlines() or [type(exc).__name__])[0]
            log.warning("the native CPU warp is unavailable (%s): LayerMix's geometric ops run "
                        "as NumPy (the same pixels, slower); install g++ to speed them up",
                        _state["error"])
    return _state["module"]


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
    from .cupy_ops import execute_plan

    src = np.ascontiguousarray(images)
    out = np.empty_like(src)
    plan = prepare_layermix_op(op_id, src.shape, params)

    def launch(kl, args):  # one host thread walks every row (the kernel's grid-stride loop)
        mod.launch(_HOST_KERNELS.get(kl.name, kl.name), grid=(1, 1, 1), block=(1, 1, 1),
                   args=args)

    return execute_plan(plan, src, out, to_device=np.ascontiguousarray, zeros=np.zeros,
                        launch=launch)
