"""What every executor shares: the input checks and the output array.

Every executor has ``apply(images, mixing_pictures, plan, out=None, dtype="float32")`` returning
the normalised views (V, N, H, W, 3), and ``normalize(images, config, out=None,
dtype="float32")`` returning JSD's clean view (N, H, W, 3). ``out``, when given, receives the
result in its own dtype (float32 or float16) and strides, e.g. a channels-first view of a
buffer laid out for DALI: the GPU executor's final kernels write it directly, the CPU executors
assign into it (NumPy rounds float32 to float16 to nearest even, as the GPU's conversion).
"""
from __future__ import annotations

import numpy as np

from ..config import MIXING_METHODS
from ..plans import PARTNER_AUGMENTED

__all__ = ["check_inputs", "output_array", "OUTPUT_DTYPES", "ipmix_schedule", "pixmix_schedule",
           "layermix_schedule", "augmented_partners"]

OUTPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def check_inputs(images, mixing_pictures, plan):
    """One-line errors for images and mixing pictures that do not fit ``plan``."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    size = plan.config.image_size
    if images.shape[1:3] != (size, size):
        raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} but the plan was drawn "
                         f"for image_size {size}: crop to {size} or pass image_size=...")
    if images.shape[0] != plan.n:
        raise ValueError(f"{images.shape[0]} images for a plan of {plan.n} samples")
    if plan.method in MIXING_METHODS:
        if mixing_pictures is None or mixing_pictures.shape != images.shape:
            got = None if mixing_pictures is None else mixing_pictures.shape
            raise ValueError(f"{plan.method} needs mixing_pictures of shape {images.shape}, "
                             f"got {got}")


def output_array(xp, out, shape, dtype="float32"):
    """``out`` checked against ``shape`` (float32 or float16), or a new ``dtype`` array."""
    if out is None:
        if np.dtype(dtype) not in OUTPUT_DTYPES:
            raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
        return xp.empty(shape, dtype=np.dtype(dtype))
    if tuple(out.shape) != tuple(shape) or np.dtype(out.dtype) not in OUTPUT_DTYPES:
        raise ValueError(f"out must be float32 or float16 of shape {tuple(shape)}, got "
                         f"{out.dtype} {tuple(out.shape)}")
    return out


# --- the methods' schedules, shared by the batch executors -----------------------------------
# The batch executors work on *rows*: every (sample, view, chain) of a plan is one image row,
# sample-major (row = (i * V + v) * K + k), and each step touches some of the rows. These
# functions turn a plan into that form once, for the NumPy and CuPy executors alike.
IPMIX_STEP_FIELDS = ("op", "param", "mix_op", "left", "top", "width", "height", "a", "b",
                     "mask_p", "mask_seed", "partner", "partner_op", "partner_param")
PIXMIX_ROUND_FIELDS = ("mix_op", "partner_aug", "partner_op", "partner_param", "a", "b")


def ipmix_schedule(plan):
    """(sample of each chain row, {field: (N * V * K, T) array}) of an IPMix plan."""
    n, v, k, t = plan.op.shape
    sample = np.repeat(np.arange(n), v * k)
    return sample, {name: plan.arrays[name].reshape(n * v * k, t) for name in IPMIX_STEP_FIELDS}


def pixmix_schedule(plan):
    """(sample of each view row, {field: (N * V, R) array}) of a PixMix plan."""
    n, v = plan.rounds.shape
    r_max = plan.mix_op.shape[2]
    sample = np.repeat(np.arange(n), v)
    return sample, {name: plan.arrays[name].reshape(n * v, r_max)
                    for name in PIXMIX_ROUND_FIELDS}


def layermix_schedule(plan):
    """(sample of each view row, {field: per-row array}) of a LayerMix plan: op and steps
    (N * V,), param (N * V, 3), blend, a, b, mask_p, mask_seed (N * V, 2)."""
    n, v = plan.steps.shape
    rows = n * v
    fields = {"op": plan.op.reshape(rows), "steps": plan.steps.reshape(rows),
              "param": plan.param.reshape(rows, 3), "blend": plan.blend_op.reshape(rows, 2),
              "a": plan.a.reshape(rows, 2), "b": plan.b.reshape(rows, 2),
              "mask_p": plan.mask_p.reshape(rows, 2),
              "mask_seed": plan.mask_seed.reshape(rows, 2)}
    return np.repeat(np.arange(n), v), fields


def augmented_partners(method: str, fields, rows, step):
    """Which of ``rows`` mix, at ``step``, with one op on the clean input instead of the
    mixing picture (IPMix's ImageNet variant, PixMix's augmented partners)."""
    if method == "ipmix":
        return fields["partner"][rows, step] == PARTNER_AUGMENTED
    return fields["partner_aug"][rows, step] == 1
