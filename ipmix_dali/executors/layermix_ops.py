"""LayerMix's 12 image ops: the torchvision v2 reference and a batched NumPy twin.

LayerMix (ahmadmughees/LayerMix, docs/augmentations.md §5.2) runs its ops with
``torchvision.transforms.v2.functional`` on float32 CHW tensors in [0, 1] (images enter as
``ToImage()`` + ``ToDtype(float32, scale=True)`` of uint8 RGB). :func:`apply_layermix_op_torch` is
that reference, one image at a time, calling torchvision exactly as LayerMix's op wrappers do.
:func:`apply_layermix_op_np` is the CPU executor path: pure NumPy, vectorised over a NHWC batch with
one parameter per image, reproducing torchvision's float32 arithmetic step by step:

* ``ToDtype(float32, scale=True)``: ``u8.to(float32).mul_(1.0 / 255)`` -- a multiplication by
  float32(1/255), *not* a division by 255 (v1 ``ToTensor`` divides; the two differ by one ulp for
  126 of the 256 grey levels).
* equalize: float -> uint8 as ``x.mul(255 + 1 - 1e-3).to(uint8)`` (truncation; out-of-range values
  wrap like a C int cast), PIL's LUT (``(cum_hist[k-1] + step // 2) // step``, ``step`` = pixels
  outside the last non-empty bin // 255, channels with ``step == 0`` unchanged), back with the
  float32(1/255) multiplication.
* autocontrast: per channel ``(x - min) / (max - min)`` (true float32 division), ``min = 0`` and
  divisor 1 where ``max == min``, then clamp to [0, 1].
* grayscale: ``r * 0.2989`` then two ``add_(.., alpha=..)``, each of which torch's CPU kernel
  evaluates as a fused multiply-add (single rounding); result replicated to 3 channels.
* posterize: ``floor(x * 2^bits)`` clamped to [0, 2^bits - 1], times 2^-bits (exact).
* solarize: ``x >= float32(threshold) ? 1 - x : x`` (the comparison happens in float32).
* rotate / shear / translate: ``_get_inverse_affine_matrix`` in Python doubles (rotate passes
  ``-(angle % 360)``, both use the image centre, i.e. ``center_f = [0, 0]``; rotate's exact
  0/90/180/270 fast paths are kept), theta cast to float32, torchvision's ``_affine_grid``
  (base grid of exact half-integers, ``theta^T / [w/2, h/2]`` in float32, then the batched matmul,
  which MKL evaluates as ``fma(y, r1, x * r0) + r2``), and ``grid_sample`` (bilinear, zeros,
  ``align_corners=False``) as ATen's vectorised CPU kernel computes it: ``fma(g + 1, size / 2,
  -0.5)``, floor, weights ``(1 - dy)(1 - dx)`` etc., and the corner sum as a chain of fused
  multiply-adds ``fma(se_v, se, fma(sw_v, sw, fma(ne_v, ne, nw_v * nw)))``. The fused
  multiply-adds are emulated exactly in float64 (a product of two float32 is exact in float64;
  the one extra rounding can differ from a true FMA only on a double-rounding tie, ~2^-29 per op).

The FMA contractions are what this torch build (GCC-compiled AVX2/AVX512 kernels, MKL sgemm)
does on an Intel machine; MKL's sgemm on an AMD EPYC does not contract (``GRID_MATMUL_FMA``
below); a torch build whose kernels are not contracted would differ from this twin
by 1-2 ulp in grayscale and by up to ~1e-5 in the geometric ops (sampling coordinates off by an
ulp move the bilinear weights). ``exact=False`` (geometric ops only) replaces the
emulated FMAs of the corner sum by plain float32 multiplies and adds: about 40% faster, max abs
difference to torch ~2e-7 (1-2 ulp) on ~20% of the values. Measured agreement and the test
matrix: tests/test_layermix_ops.py.

Parameters are the already-mapped values of ``ops.table.layermix_param``: bits (posterizes),
threshold (solarizes), degrees (rotate, shears), pixels (translations); 0 for ops without one.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np

from ..ops.table import LAYERMIX_OPS

_F32 = np.float32
_ONE = np.float32(1.0)
_INV255 = np.float32(1.0 / 255.0)        # ToDtype's mul_(1.0 / 255), scalar cast to float32
_TO_U8 = np.float32(255.0 + 1.0 - 1e-3)  # to_dtype_image float -> uint8 multiplier
_GRAY_R = np.float32(0.2989)
_GRAY_G = np.float64(np.float32(0.587))  # float64 copies: used inside the emulated FMAs
_GRAY_B = np.float64(np.float32(0.114))

# How the affine grid's batched matmul rounds ``x * r0 + y * r1``: one fused multiply-add (True,
# the canonical form, which kernels/layermix_ops.cu computes too) or two float32 roundings (False).
# Torch's own CPU bmm does either, by CPU: MKL contracts on the Intel AVX512 machine the twin was
# written on and does not on an AMD EPYC (AVX512) one, measured with torch 2.14. The executor keeps
# the canonical form so that a plan gives the same pixels on every machine; tests that compare
# with the machine's torch bit for bit set this to what torch does there
# (tests/test_layermix_ops.py: torch_grid_matmul_fma).
GRID_MATMUL_FMA = True

# Output pixels per chunk in the geometric ops (one 224x224 image, or 64 32x32 images, a chunk).
_GEOM_CHUNK_PIXELS = 1 << 16
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


# --------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------
def to_float_torch(img_u8_hwc: np.ndarray):
    """``T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])`` of a uint8 HWC image."""
    import torch
    from torchvision.transforms import v2 as T

    tf = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])
    return tf(np.asarray(img_u8_hwc)).as_subclass(torch.Tensor)


def to_float_np(images_u8: np.ndarray) -> np.ndarray:
    """The same conversion for a uint8 NHWC batch: float32 NHWC, bit-identical to the torch one."""
    out = np.asarray(images_u8).astype(np.float32)
    out *= _INV255
    return out


# --------------------------------------------------------------------------------------------
# torch reference (one CHW image), exactly LayerMix's calls
# --------------------------------------------------------------------------------------------
def apply_layermix_op_torch(op_id: int, img, param: float):
    """LayerMix op ``LAYERMIX_OPS[op_id]`` on one float32 (3, H, W) tensor, as LayerMix calls it."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    name = LAYERMIX_OPS[int(op_id)]
    bilinear = InterpolationMode.BILINEAR
    if name == "equalize":
        return F.equalize(img)
    if name == "autocontrast":
        return F.autocontrast(img)
    if name == "grayscale":
        return F.rgb_to_grayscale(img, num_output_channels=3)
    if name in ("posterize", "posterize_increasing"):
        return F.posterize(img, int(param))
    if name in ("solarize", "solarize_increasing"):
        return F.solarize(img, float(param))
    if name == "rotate":
        return F.rotate(img, float(param), interpolation=bilinear)
    p = float(param)
    if name == "shear_x":
        return F.affine(img, angle=0, translate=[0, 0], scale=1, shear=[p, 0],
                        interpolation=bilinear)
    if name == "shear_y":
        return F.affine(img, angle=0, translate=[0, 0], scale=1, shear=[0, p],
                        interpolation=bilinear)
    if name == "translate_x":
        return F.affine(img, angle=0, translate=[p, 0], scale=1, shear=[0, 0],
                        interpolation=bilinear)
    if name == "translate_y":
        return F.affine(img, angle=0, translate=[0, p], scale=1, shear=[0, 0],
                        interpolation=bilinear)
    raise ValueError(f"unknown LayerMix op {name!r}")


# --------------------------------------------------------------------------------------------
# NumPy twin: colour ops
# --------------------------------------------------------------------------------------------
def _row_tile(per_channel: np.ndarray, w: int) -> np.ndarray:
    """(n, c) per-channel values tiled along an image row: (n, 1, w * c) (contiguous loops)."""
    n, c = per_channel.shape
    return np.tile(per_channel, (1, w)).reshape(n, 1, w * c)


def equalize_np(images: np.ndarray, params=None) -> np.ndarray:
    """``F.equalize`` on float images: uint8 round trip with PIL's equalization LUT."""
    n, h, w, c = images.shape
    if images.size == 0:
        return images.copy()
    # float -> uint8: mul(255 + 1 - 1e-3) then a C cast (truncation; out-of-range values wrap).
    scaled = images.reshape(n, h, w * c) * _TO_U8
    idx = scaled.astype(np.intp)
    del scaled
    idx &= 255
    # One histogram per (image, channel): offset each channel's values into its own 256 bins.
    idx += _row_tile((np.arange(n * c, dtype=np.intp) * 256).reshape(n, c), w)
    hist = np.bincount(idx.ravel(), minlength=n * c * 256).reshape(n * c, 256)
    cum = np.cumsum(hist, axis=1)
    last = np.argmax(cum, axis=1)  # last non-empty bin = first bin where the count is complete
    num_non_max = h * w - hist[np.arange(n * c), last]
    step = num_non_max // 255
    valid = step != 0
    lut = np.empty((n * c, 256), dtype=np.int64)
    lut[:, 0] = 0
    lut[:, 1:] = (cum[:, :-1] + (step // 2)[:, None]) // np.maximum(step, 1)[:, None]
    np.clip(lut, 0, 255, out=lut)
    lut[~valid] = np.arange(256)  # step == 0: the channel is returned as is
    lut_f = lut.astype(np.float32)
    lut_f *= _INV255                 # uint8 -> float: mul_(1.0 / 255)
    return lut_f.ravel().take(idx).reshape(n, h, w, c)


def autocontrast_np(images: np.ndarray, params=None) -> np.ndarray:
    """``F.autocontrast`` on float images: per image and channel (x - min) / (max - min), clamped.
    """
    n, h, w, c = images.shape
    if images.size == 0:
        return images.copy()
    rows = images.reshape(n, h, w * c)
    mn = rows.min(axis=1).reshape(n, w, c).min(axis=1)
    mx = rows.max(axis=1).reshape(n, w, c).max(axis=1)
    eq = mx == mn
    scale = mx - mn                  # (max - min) * (1.0 / bound), bound = 1
    mn[eq] = 0.0
    scale[eq] = 1.0
    out = rows - _row_tile(mn, w)
    out /= _row_tile(scale, w)
    np.clip(out, _F32(0), _ONE, out=out)
    return out.reshape(n, h, w, c)


def grayscale_np(images: np.ndarray, params=None) -> np.ndarray:
    """``F.rgb_to_grayscale(num_output_channels=3)``: 0.2989 R (+) 0.587 G (+) 0.114 B, FMAs."""
    if images.size == 0:
        return images.copy()
    l_img = images[..., 0] * _GRAY_R
    tmp = np.empty(l_img.shape, dtype=np.float64)
    for ch, weight in ((1, _GRAY_G), (2, _GRAY_B)):
        np.multiply(images[..., ch], weight, out=tmp)  # exact product in float64
        tmp += l_img
        l_img[...] = tmp                                # one rounding: fused multiply-add
    return np.repeat(l_img[..., None], 3, axis=-1)


def posterize_np(images: np.ndarray, params) -> np.ndarray:
    """``F.posterize(img, bits)`` on float images: floor(x * 2^b) clamped to [0, 2^b - 1], / 2^b."""
    bits = np.asarray(params).astype(np.int64).reshape(-1)
    if np.any((bits < 0) | (bits > 8)):
        raise ValueError("posterize bits must be in [0, 8]")
    levels = (np.int64(1) << bits).astype(np.float32).reshape(-1, 1, 1, 1)
    out = images * levels
    np.floor(out, out=out)
    np.clip(out, _F32(0), levels - _ONE, out=out)
    out *= _ONE / levels  # 1 / 2^b is exact
    return out


def solarize_np(images: np.ndarray, params) -> np.ndarray:
    """``F.solarize(img, threshold)`` on float images: x >= float32(thr) -> 1 - x."""
    thr = np.asarray(params, dtype=np.float64).astype(np.float32).reshape(-1, 1, 1, 1)
    return np.where(images >= thr, _ONE - images, images)


# --------------------------------------------------------------------------------------------
# NumPy twin: geometric ops
# --------------------------------------------------------------------------------------------
def torch_grid_matmul_fma() -> bool:
    """Whether this machine's torch contracts the affine grid's matmul into an FMA.

    Runs torchvision's ``_affine_grid`` once on a 64x64 probe and compares it with both forms of
    the twin; the answer is what :data:`GRID_MATMUL_FMA` must be for bit-exact agreement here.
    """
    import torch
    from torchvision.transforms.v2.functional._geometry import _affine_grid

    theta = np.array([[[0.9, -0.43, 3.1], [0.37, 1.07, -2.3]]], dtype=np.float32)
    side = 64
    grid = _affine_grid(torch.from_numpy(theta.copy()), side, side, side, side).numpy()
    r = (theta[0].T / np.float32(0.5 * side)).astype(np.float32)
    b = (np.arange(side, dtype=np.float64) - (side - 1) * 0.5).astype(np.float32)
    xr = b[None, :] * r[0, 0]
    yr64 = b[:, None].astype(np.float64) * np.float64(r[1, 0])
    fused = np.add(yr64, xr).astype(np.float32) + r[2, 0]
    plain = (xr + yr64.astype(np.float32)) + r[2, 0]
    if np.array_equal(grid[0, ..., 0], fused):
        return True
    if np.array_equal(grid[0, ..., 0], plain):
        return False
    raise RuntimeError("torch's affine grid matches neither rounding of the twin "
                       "(ipmix_dali.executors.layermix_ops.GRID_MATMUL_FMA)")


def _inverse_affine_matrix(angle: float, translate, shear) -> list:
    """torchvision's ``_get_inverse_affine_matrix`` with center [0, 0] and scale 1 (doubles)."""
    rot = math.radians(angle)
    sx = math.radians(shear[0])
    sy = math.radians(shear[1])
    cx, cy = 0.0, 0.0
    tx, ty = translate
    cos_sy = math.cos(sy)
    tan_sx = math.tan(sx)
    rot_minus_sy = rot - sy
    cx_plus_tx = cx + tx
    cy_plus_ty = cy + ty
    a = math.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot_minus_sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    scale = 1.0
    m = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0]
    m[2] += cx - m[0] * cx_plus_tx - m[1] * cy_plus_ty
    m[5] += cy - m[3] * cx_plus_tx - m[4] * cy_plus_ty
    return m


def _matrices(name: str, params: np.ndarray) -> np.ndarray:
    """float32 theta (n, 2, 3) per image, as torchvision builds it for LayerMix's call."""
    mats = []
    for p in np.asarray(params, dtype=np.float64).reshape(-1).tolist():
        if name == "rotate":
            m = _inverse_affine_matrix(-(p % 360), [0.0, 0.0], [0.0, 0.0])
        elif name == "shear_x":
            m = _inverse_affine_matrix(0.0, [0.0, 0.0], [p, 0.0])
        elif name == "shear_y":
            m = _inverse_affine_matrix(0.0, [0.0, 0.0], [0.0, p])
        elif name == "translate_x":
            m = _inverse_affine_matrix(0.0, [p, 0.0], [0.0, 0.0])
        elif name == "translate_y":
            m = _inverse_affine_matrix(0.0, [0.0, p], [0.0, 0.0])
        else:
            raise ValueError(name)
        mats.append(m)
    return np.asarray(mats, dtype=np.float64).astype(np.float32).reshape(-1, 2, 3)


def _warp_bilinear(images: np.ndarray, theta: np.ndarray, exact: bool = True) -> np.ndarray:
    """``_affine_grid`` + ``grid_sample(bilinear, zeros, align_corners=False)`` for a NHWC batch.

    ``theta`` is the float32 (n, 2, 3) inverse matrix per image. Images are processed in chunks
    of about ``_GEOM_CHUNK_PIXELS`` output pixels, channels planar inside a chunk.
    """
    n, h, w, c = images.shape
    out = np.empty_like(images)
    if images.size == 0:
        return out
    # rescaled theta = theta^T / [w/2, h/2] in float32; r[i, k, j] feeds output coordinate j.
    r = np.transpose(theta, (0, 2, 1)) / np.array([0.5 * w, 0.5 * h], dtype=np.float32)
    r64 = r.astype(np.float64)
    # Base grid: linspace((1 - s) / 2, (s - 1) / 2, s), exact half-integers.
    bx = (np.arange(w, dtype=np.float64) - (w - 1) * 0.5).astype(np.float32)
    by64 = np.arange(h, dtype=np.float64) - (h - 1) * 0.5
    half = (np.float64(np.float32(w) / np.float32(2)), np.float64(np.float32(h) / np.float32(2)))
    # Zero border of 2 px: a corner outside the image reads 0 once floor(x) is clipped to
    # [-2, size] (both corners of a clipped pair are then outside, as before clipping).
    row = w + 4
    plane = (h + 4) * row
    k = max(1, min(n, _GEOM_CHUNK_PIXELS // (h * w)))
    # Planar padded source stored as horizontal pairs: pairs_src[..., yy, xx, :] holds
    # (pad[yy, xx], pad[yy, xx + 1]), so one 8-byte gather fetches a west/east corner pair.
    pairs_src = np.zeros((k, c, h + 4, w + 4, 2), dtype=np.float32)
    pair_items = pairs_src.reshape(-1, 2).view("V8").reshape(-1)
    for i0 in range(0, n, k):
        i1 = min(n, i0 + k)
        m = i1 - i0
        npix = m * h * w
        chw = images[i0:i1].transpose(0, 3, 1, 2)
        pairs_src[:m, :, 2:h + 2, 2:w + 2, 0] = chw
        pairs_src[:m, :, 2:h + 2, 1:w + 1, 1] = chw
        rr = r[i0:i1, :, :, None, None]
        rr64 = r64[i0:i1, :, :, None, None]
        coords = []
        for j in (0, 1):
            # grid_j = fma(y, r[1, j], x * r[0, j]) + r[2, j]  (the bmm as MKL evaluates it on
            # some CPUs; (x * r[0, j] + y * r[1, j]) + r[2, j] with GRID_MATMUL_FMA off).
            # A zero coefficient makes the coordinate depend on one axis only (translations,
            # and one axis of each shear): computed on that axis and broadcast, same values.
            if not rr[:, 0, j].any():
                g = (by64[None, :, None] * rr64[:, 1, j]).astype(np.float32)  # (m, h, 1)
            elif not rr[:, 1, j].any():
                g = bx[None, None, :] * rr[:, 0, j]                            # (m, 1, w)
            else:
                xr = bx[None, None, :] * rr[:, 0, j]
                if GRID_MATMUL_FMA:
                    g = np.add(by64[None, :, None] * rr64[:, 1, j], xr).astype(np.float32)
                else:
                    g = xr + (by64[None, :, None] * rr64[:, 1, j]).astype(np.float32)
            g += rr[:, 2, j]
            # grid_sample's unnormalize: fma(g + 1, size / 2, -0.5)
            g += _ONE
            g64 = np.multiply(g, half[j], dtype=np.float64)
            np.subtract(g64, 0.5, out=g, casting="same_kind")
            coords.append(g)
        x, y = coords
        x0 = np.floor(x)
        y0 = np.floor(y)
        we = x
        we -= x0                 # distance to the west column
        ea = _ONE - we
        no = y
        no -= y0                 # distance to the north row
        so = _ONE - no
        # Weights interleaved as the gathered corner pairs: [[nw, ne], [sw, se]] per pixel.
        wts = np.empty((2, 1, m, h, w, 2), dtype=np.float32)
        np.multiply(so, ea, out=wts[0, 0, ..., 0])
        np.multiply(so, we, out=wts[0, 0, ..., 1])
        np.multiply(no, ea, out=wts[1, 0, ..., 0])
        np.multiply(no, we, out=wts[1, 0, ..., 1])
        wts = wts.reshape(2, 1, npix, 2)
        np.clip(x0, -2, w, out=x0)
        np.clip(y0, -2, h, out=y0)
        y_off = y0.astype(np.intp)
        y_off += 2
        y_off *= row
        base = np.add(y_off, x0.astype(np.intp), out=np.empty((m, h, w), dtype=np.intp))
        base += (np.arange(m, dtype=np.intp) * (c * plane) + 2)[:, None, None]
        base = base.ravel()
        # Gather the north pair (nw, ne) at base and the south pair one padded row below.
        pairs = np.empty((2, c, npix), dtype="V8")
        for ch in range(c):
            src = pair_items[ch * plane:]
            np.take(src, base, out=pairs[0, ch], mode="clip")
            np.take(src[row:], base, out=pairs[1, ch], mode="clip")
        vals = pairs.view(np.float32).reshape(2, c, npix, 2)
        # ((nw_v * nw (+) ne_v * ne) (+) sw_v * sw) (+) se_v * se, (+) = fused multiply-add
        if exact:
            acc = vals[0, :, :, 0] * wts[0, :, :, 0]
            tmp = np.empty((c, npix), dtype=np.float64)
            for a, b in ((0, 1), (1, 0), (1, 1)):
                np.multiply(vals[a, :, :, b], wts[a, :, :, b], out=tmp, dtype=np.float64)
                tmp += acc     # exact product + float32 accumulator, rounded once below
                acc[...] = tmp
        else:
            vals *= wts
            acc = vals[0, :, :, 0] + vals[0, :, :, 1]
            acc += vals[1, :, :, 0]
            acc += vals[1, :, :, 1]
        out[i0:i1] = acc.reshape(c, m, h, w).transpose(1, 2, 3, 0)
    return out


def _rotate_fast_path(img: np.ndarray, angle: float):
    """rotate_image's exact shortcuts (angle already reduced mod 360); None when not taken."""
    h, w = img.shape[:2]
    if angle == 0:
        return img.copy()
    if angle == 180:
        return np.rot90(img, k=2, axes=(0, 1)).copy()
    if h == w:
        if angle == 90:
            return np.rot90(img, k=1, axes=(0, 1)).copy()
        if angle == 270:
            return np.rot90(img, k=3, axes=(0, 1)).copy()
    return None


def _geometric(name: str):
    def fn(images: np.ndarray, params, exact: bool = True) -> np.ndarray:
        params = np.asarray(params, dtype=np.float64).reshape(-1)
        out = np.empty_like(images)
        todo = np.ones(len(params), dtype=bool)
        if name == "rotate":
            for i, p in enumerate(params.tolist()):
                fast = _rotate_fast_path(images[i], p % 360)
                if fast is not None:
                    out[i] = fast
                    todo[i] = False
        if todo.all():
            return _warp_bilinear(images, _matrices(name, params), exact)
        if todo.any():
            out[todo] = _warp_bilinear(images[todo], _matrices(name, params[todo]), exact)
        return out

    fn.__name__ = f"{name}_np"
    fn.__doc__ = f"torchvision {name} (bilinear, fill 0) on a float NHWC batch, param per image."
    return fn


rotate_np = _geometric("rotate")
shear_x_np = _geometric("shear_x")
shear_y_np = _geometric("shear_y")
translate_x_np = _geometric("translate_x")
translate_y_np = _geometric("translate_y")

LAYERMIX_OP_FUNCS_NP: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "equalize": equalize_np,
    "posterize": posterize_np,
    "posterize_increasing": posterize_np,
    "solarize": solarize_np,
    "solarize_increasing": solarize_np,
    "autocontrast": autocontrast_np,
    "grayscale": grayscale_np,
    "rotate": rotate_np,
    "shear_x": shear_x_np,
    "shear_y": shear_y_np,
    "translate_x": translate_x_np,
    "translate_y": translate_y_np,
}
assert set(LAYERMIX_OP_FUNCS_NP) == set(LAYERMIX_OPS)


def apply_layermix_op_np(op_id: int, images: np.ndarray, params, exact: bool = True,
                         native: bool = True) -> np.ndarray:
    """Apply ``LAYERMIX_OPS[op_id]`` to a float32 NHWC batch (n, H, W, 3), one param per image.

    ``params``: float64 (n,) (or a scalar, broadcast) as mapped by ``layermix_param``; ignored by
    equalize, autocontrast and grayscale. ``exact`` (geometric ops only): True reproduces the
    fused multiply-adds of torch's bilinear corner sum bit for bit; False uses plain float32
    multiplies and adds there (about 40% faster, a few ulp off; see the module docstring).
    ``native`` (geometric ops, exact only): run the warp as the GPU kernel compiled for the host
    (:mod:`.native`, the same pixels bit for bit, 2-3x faster) when it is available,
    ``IPMIX_DALI_NATIVE`` is not "0" and :data:`GRID_MATMUL_FMA` is on (the kernel rounds the
    affine grid as the fused form; set to a non-fusing torch's rounding, the twin runs); False
    always runs the NumPy twin.
    Returns a new float32 (n, H, W, 3) array; ``images`` is not modified.
    """
    images = np.asarray(images)
    if images.dtype != np.float32 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected float32 (n, H, W, 3), got {images.dtype} {images.shape}")
    params = np.broadcast_to(np.asarray(params, dtype=np.float64), (images.shape[0],))
    name = LAYERMIX_OPS[int(op_id)]
    if name in _GEOMETRIC:
        if exact and native:
            from . import native as native_path

            out = native_path.geometric(int(op_id), images, params)
            if out is not None:
                return out
        return LAYERMIX_OP_FUNCS_NP[name](images, params, exact=exact)
    return LAYERMIX_OP_FUNCS_NP[name](images, params)
