"""OpenCV's bilinear ``warpAffine`` on a whole batch, bit for bit, with NumPy or CuPy.

The ImageNet-C elastic transform warps each float32 image with

    cv2.warpAffine(image, M, (w, h), borderMode=cv2.BORDER_REFLECT_101)

(``M`` from ``cv2.getAffineTransform``, close to the identity). :func:`warp_affine` reproduces
those pixels exactly (``np.array_equal``) for a batch ``(N, H, W, 3)`` with one matrix per image,
using only array operations of the module ``xp``, so the elastic transform can run on the GPU
(``xp=cupy``) and still give OpenCV's images.

What OpenCV 5 does for float32 images (``warpAffineLinearInvoker_32FC3`` in
``modules/imgproc/src/warp_kernels.simd.hpp``; every point below was checked against cv2 5.0.0):

* ``M`` (destination -> source is wanted, so ``M`` is inverted first, in double, by the
  closed form in ``imgwarp.cpp``) is rounded to float32; all coordinate arithmetic is float32.
  There is no fixed-point 1/32-pixel weight table (older releases had one): the weights are the
  exact float fractional parts of the source coordinates.
* Each row is cut into blocks of 16 columns that the SIMD kernel (AVX2 + FMA) handles, and a
  remainder of ``W % 16`` columns that the scalar loop handles. The two compute the source
  coordinate differently, rounding at different points:
  SIMD ``sx = fma(M0, x, float(y*M1 + M2))``; scalar ``sx = float(fma(x, M0, y*M1) + M2)``.
  (The scalar tail's fused multiply-add is, by all appearances, the compiler contracting
  ``x*M0 + y*M1``; the source writes plain float arithmetic.)
* ``ix = floor(sx)``, weight ``a = sx - ix``; likewise ``iy``, ``b``.
* Neighbours outside the image are mirrored with BORDER_REFLECT_101 (repeatedly, so samples
  more than one image away still land inside); an image 1 pixel wide or high replicates instead.
* Both paths interpolate the same way, per channel, with fused multiply-adds:
  ``v0 = fma(a, p01 - p00, p00)``, ``v1 = fma(a, p11 - p10, p10)``, ``out = fma(b, v1 - v0, v0)``.

Neither NumPy nor CuPy has a float32 fma, so :func:`_fma_f32` builds one from float64 (the
product of two float32 is exact in float64) plus a correction for the rare sums where rounding
twice (to float64, then to float32) would differ from rounding once.

Scope: the 16-column split and the fused multiply-adds are OpenCV's AVX2 kernel, which the
opencv 5.0.0 build this was checked with dispatches to on x86-64 (on an AVX-512 machine too); a
build without AVX2/FMA (SSE-only, ARM) splits and rounds differently. Coordinates are assumed
finite and well inside the int32 range (any sane affine map of an image). CuPy flushes float32
subnormals to zero, so on the GPU pixel values below ~1.2e-38 may differ from OpenCV.
"""
from __future__ import annotations

import numpy

__all__ = ["warp_affine", "invert_affine"]

# Columns per block of OpenCV's AVX2 kernel: two vectors of 8 float32 lanes. Columns from
# (W // 16) * 16 on go through the scalar loop, whose coordinate rounding differs.
SIMD_BLOCK_COLUMNS = 16

# Low 29 bits of a float64 that sits exactly halfway between two float32 (normal range): the
# float32 rounding bit set, everything below it clear.
_FLOAT32_TIE_BITS = 0x10000000
_BELOW_FLOAT32_MASK = 0x1FFFFFFF


def invert_affine(matrices) -> numpy.ndarray:
    """Inverse maps of (N, 2, 3) affine matrices, in float64, as OpenCV's warpAffine inverts them.

    The closed form of ``imgwarp.cpp`` (not ``np.linalg.inv``), operation for operation, so that
    the float32 rounding that follows sees OpenCV's exact doubles. A singular matrix maps to 0.
    (After that rounding it agrees with ``cv2.invertAffineTransform``; the warp's own pixels are
    what pin it down.)
    """
    m = numpy.array(matrices, dtype=numpy.float64).reshape(-1, 6)
    m0, m1, m2, m3, m4, m5 = (m[:, i] for i in range(6))
    det = m0 * m4 - m1 * m3
    with numpy.errstate(divide="ignore"):
        inv_det = numpy.where(det != 0, 1.0 / det, 0.0)
    a11, a22 = m4 * inv_det, m0 * inv_det
    a12, a21 = m1 * -inv_det, m3 * -inv_det
    b1 = -a11 * m2 - a12 * m5
    b2 = -a21 * m2 - a22 * m5
    return numpy.stack([a11, a12, b1, a21, a22, b2], axis=1).reshape(-1, 2, 3)


def _fma_f32(a, b, c, xp):
    """float32 ``a*b + c`` rounded once, like the hardware fma, for float32 inputs (broadcast).

    ``a*b`` is exact in float64; ``a*b + c`` in float64 may not be, and rounding that to float32
    is then a second rounding. It only changes the result when the float64 sum lands exactly on
    a float32 halfway point while the exact sum is off it; the error term of the sum (TwoSum,
    exact) says which way, and one float64 step that way makes the float32 rounding right.
    Halfway sums are a small share (mostly exact ones, which need nothing), so only they are
    gathered and checked, instead of a dozen more passes over the whole batch.
    """
    product = a.astype(xp.float64) * b.astype(xp.float64)
    total = product + c.astype(xp.float64)
    on_tie = xp.nonzero((total.view(xp.uint64) & _BELOW_FLOAT32_MASK) == _FLOAT32_TIE_BITS)
    if on_tie[0].size:
        tie_total = total[on_tie]
        tie_product = xp.broadcast_to(product, total.shape)[on_tie]
        tie_addend = xp.broadcast_to(c, total.shape)[on_tie].astype(xp.float64)
        # TwoSum: tie_product + tie_addend == tie_total + error exactly.
        addend_part = tie_total - tie_product
        product_part = tie_total - addend_part
        error = (tie_product - product_part) + (tie_addend - addend_part)
        total[on_tie] = xp.where(error != 0, xp.nextafter(tie_total, xp.copysign(xp.inf, error)),
                                 tie_total)
    return total.astype(xp.float32)


def _reflect_101(index, size, xp):
    """OpenCV's BORDER_REFLECT_101 for any integer index: mirror about 0 and size-1, repeated.

    Reflections repeat with period 2*size - 2; size 1 falls back to replicate (as OpenCV does).
    """
    if size == 1:
        return xp.zeros_like(index)
    period = 2 * size - 2
    folded = xp.mod(index, period)
    return xp.where(folded >= size, period - folded, folded)


def warp_affine(images, matrices, xp=numpy):
    """``cv2.warpAffine(img, M, (W, H), flags=INTER_LINEAR, borderMode=BORDER_REFLECT_101)``
    for every image of a batch, with OpenCV 5's exact float32 pixels.

    images: float32 (N, H, W, 3) array of ``xp``; matrices: (N, 2, 3) forward maps (source ->
    destination, as ``cv2.getAffineTransform`` gives), NumPy or ``xp``. Returns float32
    (N, H, W, 3) of ``xp``, the destination the size of the source.
    """
    if images.dtype != xp.float32 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected float32 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    n, height, width, channels = images.shape
    host_matrices = matrices.get() if hasattr(matrices, "get") else matrices
    if numpy.shape(host_matrices) != (n, 2, 3):
        raise ValueError(f"expected ({n}, 2, 3) matrices, got {numpy.shape(host_matrices)}")

    # The inverse map, rounded to float32 as the kernel holds it: inv[k] = (m0..m5) per image.
    inv = invert_affine(host_matrices).reshape(n, 6).astype(numpy.float32)
    rows = numpy.arange(height, dtype=numpy.float32)
    # Per-row parts of the source coordinates, on the host, (N, H), each step rounded to float32:
    # the SIMD kernel adds y*M1 + M2 to M0*x in its fma; the scalar loop fuses y*M1 into its fma
    # and adds M2 afterwards.
    row_x_simd = rows[None, :] * inv[:, 1:2] + inv[:, 2:3]
    row_y_simd = rows[None, :] * inv[:, 4:5] + inv[:, 5:6]
    row_x_tail = rows[None, :] * inv[:, 1:2]
    row_y_tail = rows[None, :] * inv[:, 4:5]

    simd_width = (width // SIMD_BLOCK_COLUMNS) * SIMD_BLOCK_COLUMNS
    coeff = xp.asarray(inv)[:, :, None, None]  # (N, 6, 1, 1): broadcasts over (N, H, W)
    columns = xp.arange(width, dtype=xp.float32)[None, None, :]
    src_x_parts, src_y_parts = [], []
    if simd_width:
        x = columns[..., :simd_width]
        src_x_parts.append(_fma_f32(coeff[:, 0], x, xp.asarray(row_x_simd)[:, :, None], xp))
        src_y_parts.append(_fma_f32(coeff[:, 3], x, xp.asarray(row_y_simd)[:, :, None], xp))
    if simd_width < width:
        x = columns[..., simd_width:]
        src_x_parts.append(_fma_f32(x, coeff[:, 0], xp.asarray(row_x_tail)[:, :, None], xp)
                           + coeff[:, 2])
        src_y_parts.append(_fma_f32(x, coeff[:, 3], xp.asarray(row_y_tail)[:, :, None], xp)
                           + coeff[:, 5])
    src_x = src_x_parts[0] if len(src_x_parts) == 1 else xp.concatenate(src_x_parts, axis=2)
    src_y = src_y_parts[0] if len(src_y_parts) == 1 else xp.concatenate(src_y_parts, axis=2)

    floor_x, floor_y = xp.floor(src_x), xp.floor(src_y)
    # Weights: exact fractional parts in float32 (the kernel subtracts the floored value).
    alpha = (src_x - floor_x)[..., None]
    beta = (src_y - floor_y)[..., None]
    ix, iy = floor_x.astype(xp.int64), floor_y.astype(xp.int64)
    x0, x1 = _reflect_101(ix, width, xp), _reflect_101(ix + 1, width, xp)
    y0, y1 = _reflect_101(iy, height, xp), _reflect_101(iy + 1, height, xp)

    # Gather whole pixels from the batch flattened to (N*H*W, 3).
    flat = images.reshape(n * height * width, channels)
    image_base = (xp.arange(n, dtype=xp.int64) * (height * width))[:, None, None]
    row0, row1 = image_base + y0 * width, image_base + y1 * width
    p00, p01 = xp.take(flat, row0 + x0, axis=0), xp.take(flat, row0 + x1, axis=0)
    p10, p11 = xp.take(flat, row1 + x0, axis=0), xp.take(flat, row1 + x1, axis=0)

    top = _fma_f32(alpha, p01 - p00, p00, xp)
    bottom = _fma_f32(alpha, p11 - p10, p10, xp)
    return _fma_f32(beta, bottom - top, top, xp)
