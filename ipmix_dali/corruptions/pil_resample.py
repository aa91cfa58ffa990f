"""Pillow's ``Image.resize(size, Image.BOX)`` and ``Image.BILINEAR`` for a whole uint8 batch,
pixel for pixel.

The "pixelate" corruption is ``img.resize((int(w*c), int(h*c)), BOX).resize((w, h), BOX)``
with PIL, one image at a time on the host. :func:`box_resize` gives the same bytes for an
(N, H, W, C) batch with the array module ``xp`` (NumPy on the CPU, CuPy on the GPU), so the GPU
pixelate matches the PIL-made images exactly instead of approximately. :func:`resize` with
``"bilinear"`` is the twin of the CPU stage's crop resize (``ipmix_dali.crop_resize``:
torchvision's RandomResizedCrop on a PIL image).

What is reproduced (Pillow's ``libImaging/Resample.c``, 8-bit path, ``box=None``,
``reducing_gap=None``):

* The resize is separable: one pass along each axis, the first into an intermediate uint8
  image. The horizontal pass goes first unless the height shrinks by more than twice as many
  pixels as the width (Pillow 13; see :func:`vertical_pass_first`). An axis whose size does
  not change is not resampled at all.
* For output coordinate ``i`` along an axis of ``n_in`` -> ``n_out`` pixels,
  ``scale = n_in / n_out``, the filter is widened by ``max(scale, 1)`` (support
  ``0.5 * max(scale, 1)``, bilinear ``1 * max(scale, 1)``) around ``center = (i + 0.5) *
  scale``. The filter is evaluated at the *centres* of the input pixels (the box filter: every
  tap weighs 1 or 0, not the covered area; bilinear: ``1 - |d|`` for ``|d| < 1``), and the
  taps are normalised to sum 1 in double precision.
* Weights become fixed point with ``PRECISION_BITS = 22`` bits, rounded half away from zero;
  sums start at ``1 << 21`` (round half up), are shifted right by 22 and clipped to 0..255.

The coefficient tables are tiny and built on the host with the same double-precision operations
in the same order as Pillow; the per-pixel work is a gather of the few taps per output pixel,
accumulated in int64 (exact on CPU and GPU alike).
"""
from __future__ import annotations

import functools

import numpy

__all__ = ["box_resize", "box_taps", "resize", "taps", "vertical_pass_first"]

PRECISION_BITS = 32 - 8 - 2       # Pillow: 8 bits of pixel, 2 bits of headroom in a 32-bit int
ROUNDING_OFFSET = 1 << (PRECISION_BITS - 1)


def _box_filter(x: float) -> float:
    # Half-open on the left, as Pillow's: a pixel centre exactly on the left edge is out.
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _bilinear_filter(x: float) -> float:
    if x < 0.0:
        x = -x
    return 1.0 - x if x < 1.0 else 0.0


# name -> (filter, support): Pillow's filters (libImaging/Resample.c)
FILTERS = {"box": (_box_filter, 0.5), "bilinear": (_bilinear_filter, 1.0)}


def _to_fixed_point(weight: float) -> int:
    # Pillow rounds half away from zero by adding +-0.5 and truncating towards zero (C's (int)).
    scaled = weight * (1 << PRECISION_BITS)
    return int(scaled - 0.5) if weight < 0 else int(scaled + 0.5)


def box_taps(in_size: int, out_size: int):
    """Pillow's BOX taps for one axis (:func:`taps`)."""
    return taps(in_size, out_size, "box")


@functools.lru_cache(maxsize=1024)
def taps(in_size: int, out_size: int, filter: str = "box"):
    """Pillow's taps of ``filter`` for one axis: (indices, weights), both int64 arrays
    (out_size, n_taps).

    Row ``i`` lists the input pixels that output pixel ``i`` reads and their fixed-point weights
    (which sum to about ``1 << 22``). Rows with fewer taps than ``n_taps`` are padded with
    weight 0 on a valid index, so the padding adds nothing.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {sorted(FILTERS)}, got {filter!r}")
    kernel, filter_support = FILTERS[filter]
    # All in Python floats (IEEE doubles) and in Pillow's order of operations, so that the
    # window bounds and the normalised weights are the very same doubles.
    scale = float(in_size) / out_size
    filter_scale = max(scale, 1.0)
    support = filter_support * filter_scale
    inverse_filter_scale = 1.0 / filter_scale
    rows = []
    for out_index in range(out_size):
        center = (out_index + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        stop = min(int(center + support + 0.5), in_size)
        raw = [kernel((x - center + 0.5) * inverse_filter_scale) for x in range(first, stop)]
        total = 0.0
        for w in raw:                      # sequential sum, as in C
            total += w
        normalised = [w / total for w in raw] if total != 0.0 else raw
        rows.append((first, [_to_fixed_point(w) for w in normalised]))
    n_taps = max(1, max(len(weights) for _, weights in rows))
    indices = numpy.empty((out_size, n_taps), numpy.int64)
    weights = numpy.zeros((out_size, n_taps), numpy.int64)
    for out_index, (first, row_weights) in enumerate(rows):
        count = len(row_weights)
        indices[out_index, :count] = numpy.arange(first, first + count)
        indices[out_index, count:] = min(first, in_size - 1)
        weights[out_index, :count] = row_weights
    indices.setflags(write=False)
    weights.setflags(write=False)
    return indices, weights


def _resample_axis(images, axis: int, out_size: int, xp, filter="box"):
    """One Pillow pass along ``axis`` (1: rows, 2: columns) of a uint8 (N, H, W, C) batch."""
    indices, weights = taps(int(images.shape[axis]), out_size, filter)
    if indices.shape[1] == 1 and (weights == 1 << PRECISION_BITS).all():
        # Every output pixel copies one input pixel with weight exactly 1 (any BOX upscale):
        # (v * 2**22 + 2**21) >> 22 == v, so the pass is a plain gather.
        return xp.take(images, xp.asarray(indices[:, 0]), axis=axis)
    # Weights broadcast over every axis except the resampled one.
    weight_shape = [1, 1, 1, 1]
    weight_shape[axis] = out_size
    accumulator = None
    for tap in range(indices.shape[1]):
        gathered = xp.take(images, xp.asarray(indices[:, tap]), axis=axis)
        # uint8 times the int64 weights is computed in int64: exact, no overflow.
        term = gathered * xp.asarray(weights[:, tap].reshape(weight_shape))
        accumulator = term if accumulator is None else accumulator + term
    accumulator = xp.right_shift(accumulator + ROUNDING_OFFSET, PRECISION_BITS)
    # Pillow clips through a lookup table; with box or bilinear weights (all >= 0, summing to
    # ~1) the clip only guards the top end against the rounding of the weights.
    return xp.clip(accumulator, 0, 255).astype(xp.uint8)


def box_resize(images, size, xp=numpy):
    """Resize a uint8 (N, H, W, C) batch to ``size = (width, height)`` exactly as Pillow's
    ``Image.resize(size, Image.BOX)`` does each (RGB) image (:func:`resize`)."""
    return resize(images, size, xp, "box")


def resize(images, size, xp=numpy, filter="box"):
    """Resize a uint8 (N, H, W, C) batch to ``size = (width, height)`` exactly as Pillow's
    ``Image.resize(size, filter)`` does each (RGB) image; returns uint8 (N, height, width, C)
    in ``xp``'s arrays.

    ``size`` is in PIL's order, width first. ``xp`` is ``numpy`` or ``cupy``; ``filter`` "box"
    or "bilinear".
    """
    out_width, out_height = (int(s) for s in size)
    if out_width < 1 or out_height < 1:
        raise ValueError(f"size must be positive, got {size}")
    images = xp.asarray(images)
    if images.ndim != 4 or images.dtype != xp.uint8:
        raise ValueError(f"expected a uint8 (N, H, W, C) batch, got {images.dtype} "
                         f"{tuple(images.shape)}")
    in_height, in_width = int(images.shape[1]), int(images.shape[2])
    # The two passes go through a uint8 intermediate, whose rounding is part of Pillow's result,
    # so they must run in Pillow's order. An axis that keeps its size is not touched.
    passes = [(2, out_width), (1, out_height)]
    if vertical_pass_first(in_width, in_height, out_width, out_height):
        passes.reverse()
    resized = False
    for axis, out_size in passes:
        if out_size != images.shape[axis]:
            images = _resample_axis(images, axis, out_size, xp, filter)
            resized = True
    return images if resized else images.copy()    # same size: a copy, as Pillow returns


def vertical_pass_first(in_width: int, in_height: int, out_width: int, out_height: int) -> bool:
    """Whether Pillow (13.0) runs the vertical pass before the horizontal one.

    Pillow 13 resizes vertically first when the height shrinks and loses more than twice as
    many pixels as the width (python-pillow/Pillow#9549, a speed-up for tall images); Pillow 12
    and earlier always go horizontally first. The condition was measured on Pillow 13.0.0 (the
    C source of that release was not at hand): BILINEAR resizes of ~3,000 random sizes
    whose two orders give different bytes, and every size within a few pixels of the boundary
    (tests/test_crop_resize.py). A height that grows keeps the horizontal pass first whatever
    the width does (an earlier form of this condition, measured with BOX resizes only, where an
    upscale is a plain gather in either order, missed that).
    """
    return in_height > out_height and in_height - out_height > 2 * (in_width - out_width)
