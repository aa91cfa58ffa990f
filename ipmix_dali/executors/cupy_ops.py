"""The 15 PIL ops on the GPU: CuPy raw kernels (``kernels/lut_ops.cu``, ``affine.cu``,
``enhance.cu``) that reproduce :mod:`ipmix_dali.executors.np_ops` bit for bit.

:func:`apply_pil_op_cupy` has the semantics of :func:`np_ops.apply_pil_op` on CuPy arrays. It
works in two steps that are kept apart on purpose:

* :func:`prepare_pil_op` (plain NumPy, no GPU) turns (op id, batch shape, parameters) into an
  :class:`OpPlan`: the small host-built tables (per-image LUTs, affine coefficients and modes,
  float32 blend factors, autocontrast cuts), the zero-initialised scratch buffers (histograms,
  grey sums) and the kernel launch sequence with its geometry. Every per-image parameter is
  derived here with the same Python / NumPy expressions np_ops uses (``np_ops.rotate_matrix``,
  ``int(p) % 360.0``, ``int(npix * cutoff // 100)``, ``params.astype(np.float32)``, and the LUT ops
  evaluated by np_ops itself on a ramp image).
* :func:`execute_plan` runs a plan with injected array and launch functions: CuPy here, the CPU
  emulator of ``ipmix_dali/testing/emulator.py`` in ``tests/test_kernels_emulated_ops.py``, so the emulated
  test exercises exactly the launch sequence the GPU runs.

The GPU path stays on the current CuPy stream and never synchronises with the host: tables go to
the device with ``cupy.asarray`` (asynchronous copies), scratch buffers with ``cupy.zeros``.
CuPy is imported inside the functions, so this module imports on machines without a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import numpy as np

from ..ops.table import PIL_OPS
from . import np_ops

__all__ = ["apply_pil_op_cupy", "prepare_pil_op", "execute_plan", "OpPlan", "KernelLaunch",
           "BLOCK", "MAX_GRID", "grid_geometry"]

BLOCK = 256  # threads per block of every launch
MAX_GRID = 8192  # grid-stride loops: at most this many blocks per launch

# affine.cu's per-image modes
AFFINE_GENERAL, AFFINE_ROWS, AFFINE_COLS, AFFINE_SHIFT = 0, 1, 2, 3
AFFINE_ROT180, AFFINE_ROT90, AFFINE_ROT270 = 4, 5, 6

_LUT_FILE, _AFFINE_FILE, _ENHANCE_FILE = "lut_ops.cu", "affine.cu", "enhance.cu"


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel launch. ``args`` items are buffer names (``"images"``, ``"out"`` or a key of
    the plan's ``arrays`` / ``scratch``) or NumPy scalars of the kernel's parameter types."""

    file: str
    name: str
    grid: Tuple[int, int, int]
    block: Tuple[int, int, int]
    args: tuple


@dataclass
class OpPlan:
    """Everything one PIL op on one batch needs besides the images.

    arrays: host-built constant tables (C-contiguous NumPy arrays) to copy to the device.
    scratch: name -> (shape, dtype) of zero-initialised device buffers.
    launches: the kernels to run, in order, on one stream.
    """

    op_id: int
    shape: Tuple[int, int, int, int]
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    scratch: Dict[str, Tuple[tuple, np.dtype]] = field(default_factory=dict)
    launches: List[KernelLaunch] = field(default_factory=list)


def grid_geometry(count: int):
    """(grid, block) of a grid-stride launch over ``count`` work items."""
    blocks = max(1, min(MAX_GRID, -(-int(count) // BLOCK)))
    return (blocks, 1, 1), (BLOCK, 1, 1)


def _launch(file: str, name: str, count: int, *args) -> KernelLaunch:
    grid, block = grid_geometry(count)
    return KernelLaunch(file, name, grid, block, tuple(args))


def _check_shape(shape) -> Tuple[int, int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"images must be uint8 (n, H, W, 3), got shape {shape}")
    return shape


_LUT_CACHE = {}  # (np_ops function, distinct parameter values) -> (m, 3, 256) uint8 LUTs


def _ramp_lut(func, params: np.ndarray) -> np.ndarray:
    """The (n, 3, 256) LUT of a per-value op, computed by np_ops itself on a ramp image
    (image i: one row holding the values 0..255 in every channel)."""
    # Rows with the same parameter share a LUT, and the levels repeat from batch to batch (a
    # few dozen distinct values): each (op, value) is evaluated once per process.
    values, inverse = np.unique(params, return_inverse=True)
    key = (func, values.tobytes())
    table = _LUT_CACHE.get(key)
    if table is None:
        ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :, None],
                               (len(values), 1, 256, 3))
        mapped = func(np.ascontiguousarray(ramp), values)  # (distinct, 1, 256, 3)
        table = np.ascontiguousarray(mapped[:, 0].transpose(0, 2, 1))
        if len(_LUT_CACHE) > 4096:
            _LUT_CACHE.clear()
        _LUT_CACHE[key] = table
    return table[inverse.reshape(-1)]


def _autocontrast_cuts(params: np.ndarray, npix: int) -> np.ndarray:
    """Pillow's ``cut = int(n * cutoff // 100)`` per image (0 when cutoff is 0), as np_ops, then
    clamped to [-1, npix + 1], which changes no LUT (see lut_ops.cu) and fits an int32."""
    cuts = [int(npix * float(p) // 100) if p else 0 for p in params]
    return np.array([max(-1, min(npix + 1, c)) for c in cuts], dtype=np.int32)


def prepare_pil_op(op_id: int, shape, params) -> OpPlan:
    """The host side of PIL op ``op_id`` on a batch of ``shape`` (n, H, W, 3): tables, scratch
    buffers and launches (plain NumPy; nothing touches a GPU).

    params: float64 (n,), already-mapped parameters as np_ops receives them.
    """
    if not 0 <= int(op_id) < len(PIL_OPS):
        raise ValueError(f"unknown PIL op id {op_id}")
    op_id = int(op_id)
    n, h, w, _ = _check_shape(shape)
    params = np.asarray(params, dtype=np.float64).reshape(-1)
    if params.shape[0] != n:
        raise ValueError(f"{params.shape[0]} params for {n} images")
    plan = OpPlan(op_id, (n, h, w, 3))
    if n * h * w == 0:
        return plan
    name = PIL_OPS[op_id]
    sn, sh, sw = np.int32(n), np.int32(h), np.int32(w)
    npix = n * h * w

    if name in ("posterize", "solarize", "invert"):
        plan.arrays["lut"] = _ramp_lut(np_ops.PIL_OP_FUNCS[name], params)
        plan.launches.append(_launch(_LUT_FILE, "lut_apply", npix * 3,
                                     "images", "out", "lut", sn, sh, sw))
    elif name == "mirror":
        plan.launches.append(_launch(_LUT_FILE, "lut_mirror", npix * 3, "images", "out", sn, sh,
                                     sw))
    elif name in ("equalize", "autocontrast"):
        plan.scratch["hist"] = ((n, 3, 256), np.dtype(np.int32))
        plan.scratch["lut"] = ((n, 3, 256), np.dtype(np.uint8))
        plan.launches.append(_launch(_LUT_FILE, "lut_histogram", npix, "images", "hist", sn, sh,
                                     sw))
        if name == "equalize":
            plan.launches.append(_launch(_LUT_FILE, "lut_equalize_build", n * 3, "hist", "lut",
                                         sn))
        else:
            plan.arrays["cuts"] = _autocontrast_cuts(params, h * w)
            plan.launches.append(_launch(_LUT_FILE, "lut_autocontrast_build", n * 3, "hist",
                                         "cuts", "lut", sn))
        plan.launches.append(_launch(_LUT_FILE, "lut_apply", npix * 3,
                                     "images", "out", "lut", sn, sh, sw))
    elif name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        coef = np.zeros((n, 6), dtype=np.float64)
        mode = np.zeros(n, dtype=np.int32)
        if name == "rotate":
            # int(p) % 360.0 as np_ops.rotate (truncation, then a floor modulo like Python's);
            # whole-degree angles repeat, so each distinct one is resolved once.
            angles, inverse = np.unique(np.mod(np.trunc(params), 360.0), return_inverse=True)
            modes = np.empty(len(angles), dtype=np.int32)
            coefs = np.zeros((len(angles), 6), dtype=np.float64)
            for j, angle in enumerate(angles.tolist()):
                if angle == 0.0:
                    modes[j] = AFFINE_SHIFT  # shift by (0, 0): a copy
                elif angle == 180.0:
                    modes[j] = AFFINE_ROT180
                elif angle == 90.0 and w == h:
                    modes[j] = AFFINE_ROT90
                elif angle == 270.0 and w == h:
                    modes[j] = AFFINE_ROT270
                else:
                    modes[j] = AFFINE_GENERAL
                    coefs[j] = np_ops.rotate_matrix(angle, w, h)
            inverse = inverse.reshape(-1)
            mode[:] = modes[inverse]
            coef[:] = coefs[inverse]
        elif name == "shear_x":
            mode[:] = AFFINE_ROWS
            coef[:, 1] = params
        elif name == "shear_y":
            mode[:] = AFFINE_COLS
            coef[:, 3] = params
        else:  # integer translations, int(p); |shift| >= size leaves only fill
            mode[:] = AFFINE_SHIFT
            t = np.trunc(params)
            if name == "translate_x":
                coef[:, 2] = np.clip(t, -w, w)
            else:
                coef[:, 5] = np.clip(t, -h, h)
        plan.arrays["coef"] = coef
        plan.arrays["mode"] = mode
        plan.launches.append(_launch(_AFFINE_FILE, "affine_bilinear", npix,
                                     "images", "out", "coef", "mode", sn, sh, sw))
    else:  # enhance
        plan.arrays["alpha"] = np.ascontiguousarray(params.astype(np.float32))
        if name == "contrast":
            if 255 * h * w >= 1 << 32:
                raise ValueError(f"contrast: {h}x{w} images are too large for the uint32 sums")
            plan.scratch["sums"] = ((n,), np.dtype(np.uint32))
            plan.launches.append(_launch(_ENHANCE_FILE, "enhance_grey_sum", n * h,
                                         "images", "sums", sn, sh, sw))
            plan.launches.append(_launch(_ENHANCE_FILE, "enhance_contrast", npix,
                                         "images", "out", "sums", "alpha", sn, sh, sw))
        else:
            plan.launches.append(_launch(_ENHANCE_FILE, f"enhance_{name}", npix,
                                         "images", "out", "alpha", sn, sh, sw))
    return plan


def execute_plan(plan: OpPlan, images, out, *, to_device: Callable, zeros: Callable,
                 launch: Callable[[KernelLaunch, tuple], None]):
    """Run ``plan`` on ``images`` into ``out`` (both C-contiguous device arrays).

    to_device(numpy array) -> device array; zeros(shape, dtype) -> zeroed device array;
    launch(kernel_launch, resolved_args) runs one kernel. Returns ``out``.
    """
    buffers = {"images": images, "out": out}
    for key, value in plan.arrays.items():
        buffers[key] = to_device(value)
    for key, (shape, dtype) in plan.scratch.items():
        buffers[key] = zeros(shape, dtype)
    for kl in plan.launches:
        args = tuple(buffers[a] if isinstance(a, str) else a for a in kl.args)
        launch(kl, args)
    return out


def apply_pil_op_cupy(op_id: int, images, params):
    """Apply PIL op ``op_id`` (index into ``PIL_OPS``) to every image with its own parameter.

    images: cupy uint8 (n, H, W, 3); params: float64 (n,) (NumPy, host side), already mapped.
    Returns a new cupy uint8 (n, H, W, 3) array, equal bit for bit to
    ``np_ops.apply_pil_op(op_id, cupy.asnumpy(images), params)``; the input is not modified.
    Everything is enqueued on the current CuPy stream; nothing waits for the GPU (unless params
    is given as a CuPy array, which has to be fetched to the host first).
    """
    import cupy

    from ..kernels.build import get_function

    if not isinstance(images, cupy.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[3] != 3:
        raise ValueError(f"images must be a cupy uint8 (n, H, W, 3) array, got "
                         f"{type(images).__name__} {getattr(images, 'dtype', None)} "
                         f"{getattr(images, 'shape', None)}")
    if isinstance(params, cupy.ndarray):  # accepted, but fetching it waits for the GPU
        params = params.get()
    plan = prepare_pil_op(op_id, images.shape, params)
    images = cupy.ascontiguousarray(images)
    out = cupy.empty(images.shape, dtype=cupy.uint8)

    def launch(kl: KernelLaunch, args):
        get_function(kl.file, kl.name)(kl.grid, kl.block, args)

    return execute_plan(plan, images, out, to_device=cupy.asarray, zeros=cupy.zeros,
                        launch=launch)
