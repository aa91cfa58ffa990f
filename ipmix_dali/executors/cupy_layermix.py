"""LayerMix's 12 float ops on the GPU: CuPy raw kernels (``kernels/layermix_ops.cu``) that
reproduce the NumPy twin :mod:`ipmix_dali.executors.layermix_ops` bit for bit.

:func:`apply_layermix_op_cupy` has the semantics of :func:`layermix_ops.apply_layermix_op_np`
(``exact=True``) on CuPy arrays, and :func:`to_float_cupy` those of :func:`layermix_ops.to_float_np`.
As in :mod:`.cupy_ops` (whose :class:`~.cupy_ops.OpPlan`, :class:`~.cupy_ops.KernelLaunch` and
:func:`~.cupy_ops.execute_plan` are reused), the work is split in two:

* :func:`prepare_layermix_op` / :func:`prepare_to_float` (plain NumPy, no GPU) turn (op id, batch
  shape, parameters) into an ``OpPlan``: the small per-image tables, built with the twin's own
  expressions (posterize's ``params.astype(int64)`` bits and float32 levels, solarize's float32
  threshold, the geometric ops' float32 matrices from ``layermix_ops._matrices`` divided by the
  float32 half sizes, rotate's ``p % 360`` fast-path test), the zero-initialised scratch buffers
  (histograms, LUTs) and the kernel launches. The float32 constants of the twin (1/255, 255.999,
  the grey weights) are passed to the kernels as float arguments.
* ``execute_plan`` runs the plan with injected array and launch functions: CuPy here, the CPU
  emulator of ``ipmix_dali/testing/emulator.py`` in ``tests/test_kernels_emulated_layermix.py``.

The GPU path stays on the current CuPy stream and never waits for the GPU: tables go to the
device with ``cupy.asarray``, scratch buffers with ``cupy.zeros``. CuPy is imported inside the
functions, so this module imports on machines without a GPU (and without CuPy).
"""
from __future__ import annotations

import numpy as np

from ..ops.table import LAYERMIX_OPS
from . import layermix_ops as lm
from .cupy_ops import BLOCK, MAX_GRID, KernelLaunch, OpPlan, execute_plan, grid_geometry

__all__ = ["apply_layermix_op_cupy", "to_float_cupy", "prepare_layermix_op", "prepare_to_float",
           "BLOCK", "MAX_GRID", "MINMAX_PIXELS_PER_LANE"]

MINMAX_PIXELS_PER_LANE = 64  # autocontrast's min/max: pixels one thread reduces before its atomics

# layermix_affine_bilinear's per-image modes
AFFINE_GENERAL, AFFINE_COPY, AFFINE_ROT180, AFFINE_ROT90, AFFINE_ROT270 = 0, 1, 2, 3, 4

_FILE = "layermix_ops.cu"
_INT32_MAX = np.iinfo(np.int32).max
_INT32_MIN = np.iinfo(np.int32).min


def _launch(name: str, count: int, *args) -> KernelLaunch:
    grid, block = grid_geometry(count)
    return KernelLaunch(_FILE, name, grid, block, tuple(args))


def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"images must be (n, H, W, 3), got shape {shape}")
    return shape


def _check_size(n: int, h: int, w: int):
    if max(n, h, w) > _INT32_MAX:
        raise ValueError(f"batch shape {(n, h, w)} does not fit the kernels' int arguments")


def prepare_to_float(shape) -> OpPlan:
    """Plan of ``to_float`` (uint8 -> float32 times float32(1/255)) on a (n, H, W, 3) batch."""
    n, h, w, _ = _check_shape(shape)
    _check_size(n, h, w)
    plan = OpPlan(-1, (n, h, w, 3))
    if n * h * w:
        plan.launches.append(_launch("layermix_to_float", n * h * w * 3, "images", "out",
                                     np.int32(n), np.int32(h), np.int32(w), lm._INV255))
    return plan


def _posterize_table(params: np.ndarray) -> np.ndarray:
    """float32 (n, 3): (levels, levels - 1, 1 / levels) per image, as posterize_np."""
    bits = params.astype(np.int64)
    if np.any((bits < 0) | (bits > 8)):
        raise ValueError("posterize bits must be in [0, 8]")
    levels = (np.int64(1) << bits).astype(np.float32)
    table = np.stack([levels, levels - lm._ONE, lm._ONE / levels], axis=1)
    return np.ascontiguousarray(table, dtype=np.float32)


def _affine_tables(name: str, params: np.ndarray, h: int, w: int):
    """(coef float32 (n, 6), mode int32 (n,)) of a geometric op, as the twin's _geometric and
    _warp_bilinear build them: rotate's fast paths on ``p % 360`` (Python float modulo), the
    float32 theta of ``_matrices`` for the others, rescaled ``theta^T / [w / 2, h / 2]``."""
    n = params.shape[0]
    mode = np.full(n, AFFINE_GENERAL, dtype=np.int32)
    if name == "rotate":
        for i, p in enumerate(params.tolist()):
            angle = p % 360
            if angle == 0:
                mode[i] = AFFINE_COPY
            elif angle == 180:
                mode[i] = AFFINE_ROT180
            elif h == w and angle == 90:
                mode[i] = AFFINE_ROT90
            elif h == w and angle == 270:
                mode[i] = AFFINE_ROT270
    coef = np.zeros((n, 6), dtype=np.float32)
    todo = mode == AFFINE_GENERAL
    if todo.any():
        theta = lm._matrices(name, params[todo])  # float32 (m, 2, 3)
        r = np.transpose(theta, (0, 2, 1)) / np.array([0.5 * w, 0.5 * h], dtype=np.float32)
        coef[todo] = r.reshape(-1, 6)  # r[i, k, j] at coef[i, 2 * k + j]
    return np.ascontiguousarray(coef), mode


def prepare_layermix_op(op_id: int, shape, params) -> OpPlan:
    """The host side of LayerMix op ``op_id`` on a float32 batch of ``shape`` (n, H, W, 3):
    tables, scratch buffers and launches (plain NumPy; nothing touches a GPU).

    params: float64 (n,) (or a scalar, broadcast), already mapped as ``layermix_param`` returns
    them, as ``apply_layermix_op_np`` receives them.
    """
    if not 0 <= int(op_id) < len(LAYERMIX_OPS):
        raise ValueError(f"unknown LayerMix op id {op_id}")
    op_id = int(op_id)
    n, h, w, _ = _check_shape(shape)
    _check_size(n, h, w)
    params = np.asarray(params, dtype=np.float64)
    try:  # as apply_layermix_op_np: a scalar (or one value) is broadcast
        params = np.ascontiguousarray(np.broadcast_to(params, (n,)))
    except ValueError:
        raise ValueError(f"params of shape {params.shape} for {n} images") from None
    plan = OpPlan(op_id, (n, h, w, 3))
    name = LAYERMIX_OPS[op_id]
    if name in ("posterize", "posterize_increasing"):
        table = _posterize_table(params)  # validates even an empty batch, like the twin
    else:
        table = None
    if n * h * w == 0:
        return plan
    sn, sh, sw = np.int32(n), np.int32(h), np.int32(w)
    npix = n * h * w

    if name == "equalize":
        plan.scratch["hist"] = ((n, 3, 256), np.dtype(np.int32))
        plan.scratch["lut"] = ((n, 3, 256), np.dtype(np.float32))
        plan.launches += [
            _launch("layermix_equalize_hist", npix, "images", "hist", sn, sh, sw, lm._TO_U8),
            _launch("layermix_equalize_lut", n * 3, "hist", "lut", sn, sh, sw, lm._INV255),
            _launch("layermix_equalize_apply", npix, "images", "out", "lut", sn, sh, sw,
                    lm._TO_U8),
        ]
    elif name in ("posterize", "posterize_increasing"):
        plan.arrays["post"] = table
        plan.launches.append(_launch("layermix_posterize", npix * 3, "images", "out", "post", sn,
                                     sh, sw))
    elif name in ("solarize", "solarize_increasing"):
        plan.arrays["thr"] = np.ascontiguousarray(params.astype(np.float32))
        plan.launches.append(_launch("layermix_solarize", npix * 3, "images", "out", "thr", sn,
                                     sh, sw))
    elif name == "autocontrast":
        keys = np.empty((n, 3, 2), dtype=np.int32)
        keys[..., 0] = _INT32_MAX
        keys[..., 1] = _INT32_MIN
        plan.arrays["keys"] = keys
        lanes = max(1, min(h * w, -(-(h * w) // MINMAX_PIXELS_PER_LANE)))
        plan.launches += [
            _launch("layermix_minmax", n * lanes, "images", "keys", sn, sh, sw, np.int32(lanes)),
            _launch("layermix_autocontrast_apply", npix, "images", "out", "keys", sn, sh, sw),
        ]
    elif name == "grayscale":
        plan.launches.append(_launch("layermix_grayscale", npix, "images", "out", sn, sh, sw,
                                     lm._GRAY_R, np.float32(lm._GRAY_G),
                                     np.float32(lm._GRAY_B)))
    else:  # rotate, shear_x, shear_y, translate_x, translate_y
        coef, mode = _affine_tables(name, params, h, w)
        plan.arrays["coef"] = coef
        plan.arrays["mode"] = mode
        halfw = np.float32(w) / np.float32(2)
        halfh = np.float32(h) / np.float32(2)
        plan.launches.append(_launch("layermix_affine_bilinear", npix, "images", "out", "coef",
                                     "mode", sn, sh, sw, halfw, halfh))
    return plan


def _run(plan: OpPlan, images, out):
    import cupy

    from ..kernels.build import get_function

    def launch(kl: KernelLaunch, args):
        get_function(kl.file, kl.name)(kl.grid, kl.block, args)

    return execute_plan(plan, images, out, to_device=cupy.asarray, zeros=cupy.zeros,
                        launch=launch)


def _describe(a) -> str:
    return f"{type(a).__name__} {getattr(a, 'dtype', None)} {getattr(a, 'shape', None)}"


def to_float_cupy(images_u8):
    """``ToDtype(float32, scale=True)`` of a cupy uint8 (n, H, W, 3) batch: a new float32 array,
    bit-identical to ``layermix_ops.to_float_np`` (uint8 times float32(1/255))."""
    import cupy

    if not isinstance(images_u8, cupy.ndarray) or images_u8.dtype != np.uint8 \
            or images_u8.ndim != 4 or images_u8.shape[3] != 3:
        raise ValueError(f"images must be a cupy uint8 (n, H, W, 3) array, got "
                         f"{_describe(images_u8)}")
    plan = prepare_to_float(images_u8.shape)
    images_u8 = cupy.ascontiguousarray(images_u8)
    out = cupy.empty(images_u8.shape, dtype=cupy.float32)
    return _run(plan, images_u8, out)


def apply_layermix_op_cupy(op_id: int, images, params):
    """Apply LayerMix op ``op_id`` (index into ``LAYERMIX_OPS``) to every image with its own
    parameter.

    images: cupy float32 (n, H, W, 3); params: float64 (n,) (NumPy, host side; a scalar is
    broadcast), already mapped by ``layermix_param``. Returns a new cupy float32 (n, H, W, 3)
    array equal bit for bit to ``layermix_ops.apply_layermix_op_np(op_id, cupy.asnumpy(images),
    params)`` (NaN payloads aside); the input is not modified. Everything is enqueued on the
    current CuPy stream; nothing waits for the GPU (unless params is given as a CuPy array,
    which has to be fetched to the host first).
    """
    import cupy

    if not isinstance(images, cupy.ndarray) or images.dtype != np.float32 or images.ndim != 4 \
            or images.shape[3] != 3:
        raise ValueError(f"images must be a cupy float32 (n, H, W, 3) array, got "
                         f"{_describe(images)}")
    if isinstance(params, cupy.ndarray):  # accepted, but fetching it waits for the GPU
        params = params.get()
    plan = prepare_layermix_op(op_id, images.shape, params)
    images = cupy.ascontiguousarray(images)
    out = cupy.empty(images.shape, dtype=cupy.float32)
    return _run(plan, images, out)
