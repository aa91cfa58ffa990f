"""NumPy batch versions of the 15 PIL ops of AugMix / PixMix / IPMix (docs/augmentations.md §1.3).

Every function takes ``images`` (uint8, (n, H, W, 3), the reference uses H == W == S) and
``params`` (float64, (n,), already mapped by :mod:`ipmix_dali.ops.table`) and returns a NEW uint8
array of the same shape; the input is never modified. Row ``i`` of the result is what the PIL call
of docs/augmentations.md §1.3 (see :func:`ipmix_dali.executors.reference.pil_apply`) gives for image ``i`` and
parameter ``params[i]``, reproduced from Pillow's C semantics rather than approximated:

* LUT ops (posterize, solarize, invert, mirror) and histogram ops (autocontrast, equalize) are
  integer computations, bit-exact by construction.
* Geometry (rotate, shear_x/y, translate_x/y) follows ``ImagingGenericTransform`` with the
  bilinear filter of ``libImaging/Geometry.c``: output pixel (x, y) samples the input at
  ``(a0*(x+.5) + a1*(y+.5) + a2, a3*(x+.5) + a4*(y+.5) + a5)`` computed in float64 in that order,
  fills 0 when the sample point is outside ``[0, W) x [0, H)``, otherwise interpolates the 2x2
  neighbourhood of ``(xs-.5, ys-.5)`` with edge-clamped indices as
  ``v = a + (b-a)*dx`` (float64, row then column) and truncates. ``Image.rotate``'s matrix is built
  with the same Python float expressions as Pillow (``round(cos, 15)``, centre translation) and
  its transpose fast paths (0, 90, 180, 270 degrees) are honoured.
* Enhance ops use ``ImagingBlend``'s float32 arithmetic ``in1 + alpha*(in2 - in1)`` (alpha is the
  factor rounded to a C float), clipped to [0, 255] and truncated. Their degenerate images are
  computed as Pillow does: ``convert("L")`` with the fixed-point ITU-R 601 weights
  ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16`` (color, contrast), the integer mean
  ``int(sum/count + 0.5)`` of that grey image (contrast), and the 3x3 SMOOTH filter evaluated in
  float32 with Pillow's kernel constants (1/13, 5/13 as C floats), summation order (row y+1, y,
  y-1; left, centre, right), +0.5 rounding offset and untouched border pixels (sharpness).

The float emulation assumes IEEE binary32/binary64 arithmetic without fused multiply-add, which is
how Pillow's x86-64 wheels are built; the test-suite checks bit-exactness against the installed
Pillow. Known intentional deviation: ``ImageOps.posterize`` raises for bits outside 1..8 in
Pillow >= 10; here bits <= 0 gives 0 (what ``v & ~(2**(8-bits)-1)`` gave in older Pillow) and
bits >= 8 is the identity.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np

from ..ops.table import PIL_OPS
from . import native as native_path

__all__ = [
    "apply_pil_op", "PIL_OP_FUNCS", "autocontrast", "equalize", "posterize", "rotate", "solarize",
    "shear_x", "shear_y", "translate_x", "translate_y", "color", "contrast", "brightness",
    "sharpness", "mirror", "invert", "rotate_matrix",
]

# Work in chunks of about this many pixels so temporaries stay small (a few MB).
_CHUNK_PIXELS = 1 << 16


def _check(images: np.ndarray, params: np.ndarray):
    """Validate; returns C-contiguous images (the input itself when it already is) and params."""
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 (n, H, W, 3), got {images.dtype} {images.shape}")
    params = np.asarray(params, dtype=np.float64).reshape(-1)
    if params.shape[0] != images.shape[0]:
        raise ValueError(f"{params.shape[0]} params for {images.shape[0]} images")
    return images, params


def _chunks(n: int, h: int, w: int):
    """Slices over the batch so that each chunk holds about _CHUNK_PIXELS pixels."""
    step = max(1, _CHUNK_PIXELS // max(1, h * w))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


# ----------------------------------------------------------------------------------------------
# Histogram / LUT helpers
# ----------------------------------------------------------------------------------------------

def _lut_op(images: np.ndarray, make_lut: Callable[[np.ndarray, slice], np.ndarray]):
    """Per image, per channel histogram -> LUT (built by ``make_lut(hist (m,3,256), sl)``) -> map.

    The histogram (``bincount``) and the lookup (``take``) share one flat index
    ``(i*3 + c)*256 + v`` per chunk of images.
    """
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    if n == 0:
        return out
    step = min(n, max(1, _CHUNK_PIXELS // (h * w)))
    offsets = ((np.arange(step, dtype=np.intp) * 768)[:, None]
               + np.tile(np.array([0, 256, 512], dtype=np.intp), h * w)[None, :])
    idx_buf = np.empty_like(offsets)
    flat_in, flat_out = images.reshape(n, -1), out.reshape(n, -1)
    for i0 in range(0, n, step):
        sl = slice(i0, min(n, i0 + step))
        m = sl.stop - sl.start
        idx = idx_buf[:m]
        np.add(flat_in[sl], offsets[:m], out=idx)
        hist = np.bincount(idx.reshape(-1), minlength=m * 768).reshape(m, 3, 256)
        lut = make_lut(hist, sl).reshape(-1)
        lut.take(idx, out=flat_out[sl], mode="clip")
    return out


def _equalize_lut(hist: np.ndarray) -> np.ndarray:
    """``ImageOps.equalize``'s LUT for histograms (..., 256) (int64), as uint8 (CLIP8 of point)."""
    nonzero = hist > 0
    count = nonzero.sum(-1)
    last = 255 - np.argmax(nonzero[..., ::-1], axis=-1)
    hlast = np.take_along_axis(hist, last[..., None], axis=-1)[..., 0]
    step = (hist.sum(-1) - hlast) // 255
    ident = (count <= 1) | (step == 0)
    safe = np.where(ident, 1, step)[..., None]
    cum_excl = np.cumsum(hist, axis=-1) - hist
    lut = (safe // 2 + cum_excl) // safe
    lut = np.where(ident[..., None], np.arange(256), lut)
    return np.minimum(lut, 255).astype(np.uint8)


def _autocontrast_lut(hist: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """``ImageOps.autocontrast``'s LUT for histograms (m, 3, 256) and per-image cuts (m,) (int).

    ``cut`` is ``int(n * cutoff // 100)`` (0 when cutoff is 0). The low-end loop of Pillow leaves
    ``clip(cumsum - cut, 0, h)`` in each bin (cut > 0) or adds ``-cut`` to bin 0 (cut < 0); the
    high end does the same from the top on the result.
    """
    c = cut.astype(np.int64)[:, None, None]
    pos = c > 0
    h = hist.astype(np.int64)
    # low end
    h1 = np.where(pos, np.clip(np.cumsum(h, -1) - c, 0, h), h)
    h1[..., 0] += np.where(c[..., 0] < 0, -c[..., 0], 0)
    # high end
    suffix = np.cumsum(h1[..., ::-1], -1)[..., ::-1]
    h2 = np.where(pos, np.clip(suffix - c, 0, h1), h1)
    h2[..., 255] += np.where(c[..., 0] < 0, -c[..., 0], 0)
    nz = h2 > 0
    anynz = nz.any(-1)
    lo = np.where(anynz, np.argmax(nz, -1), 255)
    hi = np.where(anynz, 255 - np.argmax(nz[..., ::-1], -1), 0)
    ident = hi <= lo
    span = np.where(ident, 1, hi - lo).astype(np.float64)
    scale = 255.0 / span
    offset = (-lo).astype(np.float64) * scale
    ix = np.arange(256, dtype=np.float64)
    lut = np.trunc(ix * scale[..., None] + offset[..., None])
    lut = np.clip(lut, 0, 255)
    lut = np.where(ident[..., None], ix, lut)
    return lut.astype(np.uint8)


def autocontrast(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageOps.autocontrast(img, cutoff=p)`` (p in percent; 0: no cutoff)."""
    images, params = _check(images, params)
    npix = images.shape[1] * images.shape[2]
    # Pillow: ``if cutoff:`` then ``cut = int(n * cutoff // 100)`` in Python float arithmetic.
    cuts = np.array([int(npix * float(p) // 100) if p else 0 for p in params], dtype=np.int64)
    return _lut_op(images, lambda hist, sl: _autocontrast_lut(hist, cuts[sl]))


def equalize(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageOps.equalize(img)`` (param ignored)."""
    images, params = _check(images, params)
    return _lut_op(images, lambda hist, sl: _equalize_lut(hist))


def posterize(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageOps.posterize(img, int(p))``: ``v & ~(2**(8-bits) - 1)``.

    bits <= 0 gives 0 and bits >= 8 the identity (Pillow >= 10 raises outside 1..8).
    """
    images, params = _check(images, params)
    bits = np.clip(np.trunc(params), 0, 8).astype(np.int64)
    mask = (~((1 << (8 - bits)) - 1) & 0xFF).astype(np.uint8)
    return images & mask[:, None, None, None]


def solarize(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageOps.solarize(img, int(p))``: ``v if v < thr else 255 - v`` (= ``v ^ 255``)."""
    images, params = _check(images, params)
    thr = np.trunc(params)
    t8 = np.clip(thr, 0, 255).astype(np.uint8)[:, None, None, None]
    flip = np.where(thr >= 256, 0, 255).astype(np.uint8)[:, None, None, None]
    mask = np.greater_equal(images, t8).view(np.uint8)
    mask *= flip
    return np.bitwise_xor(images, mask, out=mask)


def invert(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageOps.invert(img)``: 255 - v."""
    images, params = _check(images, params)
    return np.subtract(255, images, dtype=np.uint8)


def mirror(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageOps.mirror(img)``: left-right flip."""
    images, params = _check(images, params)
    out = np.empty_like(images)
    for c in range(3):  # per channel: a 3-byte inner loop is much slower
        out[..., c] = images[:, :, ::-1, c]
    return out


# ----------------------------------------------------------------------------------------------
# Geometry: Pillow's bilinear affine transform (ImagingGenericTransform + bilinear_filter32RGB)
# ----------------------------------------------------------------------------------------------
#
# Implementation: each image is padded by one replicated pixel on every side (this realises
# Pillow's XCLIP/YCLIP clamping: the neighbours of a sample with floor coordinate -1 or size-1 are
# the edge pixels) and packed as RGBX uint32. A neighbour table holds, for every possible floor
# coordinate, the 2x2 (rotate) or 1x2 / 2x1 (shear_x / shear_y) RGBX neighbours in one 16- or
# 8-byte item, so one ``take`` gathers all neighbours of all channels of a pixel. They are split
# into contiguous per-channel planes and interpolated in float64 with preallocated buffers (fresh
# allocations per block cost more in page faults than the arithmetic). Work is done in blocks of
# about _BLOCK output pixels: several small images, or a band of rows of a large one.

_BLOCK = 1 << 15


class _WarpWorkspace:
    """Buffers of one ``_warp`` call, allocated once and reused for every block."""

    def __init__(self, m: int, h: int, w: int, rows: int, mode: str):
        self.m, self.h, self.w, self.mode = m, h, w, mode
        self.ext8 = np.zeros((m, h + 2, w + 2, 4), dtype=np.uint8)  # byte 3 (X) stays 0
        self.ext = self.ext8.view(np.uint32)[..., 0]
        if mode == "affine":
            self.table = np.empty((m, h + 1, w + 1, 4), dtype=np.uint32)
            self.row_len, self.per_image = w + 1, (h + 1) * (w + 1)
        elif mode == "rows":
            self.table = np.empty((m, h, w + 1, 2), dtype=np.uint32)
            self.row_len, self.per_image = w + 1, h * (w + 1)
        else:
            self.table = np.empty((m, h + 1, w, 2), dtype=np.uint32)
            self.row_len, self.per_image = w, (h + 1) * w
        self.nb = self.table.shape[-1]
        self.item = np.complex128 if self.nb == 4 else np.uint64  # one table entry
        size = m * rows * w
        self.f64 = {k: np.empty(size, dtype=np.float64) for k in ("xs", "ys", "fx", "fy", "idx")}
        self.lerp = np.empty((self.nb // 2, size), dtype=np.float64)
        self.idx = np.empty(size, dtype=np.intp)
        self.gather = np.empty(size, dtype=self.item)
        self.planes = np.empty((3, 2, self.nb // 2, size), dtype=np.uint8)
        self.k16 = np.empty((self.nb // 2, size), dtype=np.int16)
        self.v8 = np.empty(size, dtype=np.uint8)
        self.ok = np.empty(size, dtype=bool)
        self.tmp = np.empty(size, dtype=bool)

    def load(self, images: np.ndarray) -> np.ndarray:
        """Fill the neighbour table from ``images`` (m' <= m images); returns its flat view.

        The images are padded by one replicated pixel on every side (Pillow's XCLIP/YCLIP: the
        neighbours of floor coordinate -1 or size-1 are edge pixels) and packed as RGBX uint32.
        affine: entry (j, i) holds the pixels (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1),
        clamped, for y0 = j - 1, x0 = i - 1. rows: entry (y, i) holds (y, x0), (y, x0+1).
        cols: entry (j, x) holds (y0, x), (y0+1, x).
        """
        m = images.shape[0]
        ext8, e, q = self.ext8[:m], self.ext[:m], self.table[:m]
        for c in range(3):
            ext8[:, 1:-1, 1:-1, c] = images[..., c]
        e[:, 0] = e[:, 1]
        e[:, -1] = e[:, -2]
        e[:, :, 0] = e[:, :, 1]
        e[:, :, -1] = e[:, :, -2]
        if self.mode == "affine":
            q[..., 0] = e[:, :-1, :-1]
            q[..., 1] = e[:, :-1, 1:]
            q[..., 2] = e[:, 1:, :-1]
            q[..., 3] = e[:, 1:, 1:]
        elif self.mode == "rows":
            q[..., 0] = e[:, 1:-1, :-1]
            q[..., 1] = e[:, 1:-1, 1:]
        else:
            q[..., 0] = e[:, :-1, 1:-1]
            q[..., 1] = e[:, 1:, 1:-1]
        return q.view(self.item).reshape(-1)


def _warp(images: np.ndarray, mode: str, coef: np.ndarray) -> np.ndarray:
    """Pillow's ``transform(size, AFFINE, data, BILINEAR)`` (output size = input size, fill 0).

    mode "affine": coef (n, 6) is the affine data. mode "rows": coef (n,) is s of
    (1, s, 0, 0, 1, 0): ys = y + .5 exactly, so dy = 0 and only the horizontal interpolation
    remains. mode "cols": coef (n,) is s of (1, 0, 0, s, 1, 0): xs = x + .5 exactly (dx = 0).
    Work is done in blocks of about _BLOCK output pixels (several small images, or a band of
    rows of a large one); all neighbours of a pixel come from one ``take`` of the table.
    """
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    if n == 0:
        return out
    if h * w >= _BLOCK:
        m_step, r_step = 1, max(1, _BLOCK // w)
    else:
        m_step, r_step = min(n, max(1, _BLOCK // (h * w))), h
    r_step = min(r_step, h)
    ws = _WarpWorkspace(m_step, h, w, r_step, mode)
    flat_out = out.reshape(-1, 3)
    nb, row_len = ws.nb, ws.row_len
    xin = np.arange(w, dtype=np.float64) + 0.5
    yin = np.arange(h, dtype=np.float64) + 0.5

    for i0 in range(0, n, m_step):
        i1 = min(n, i0 + m_step)
        m = i1 - i0
        table = ws.load(images[i0:i1])
        first = (np.arange(m, dtype=np.float64) * ws.per_image)[:, None, None]
        if mode == "affine":
            a = [coef[i0:i1, k, None, None] for k in range(6)]
            ax, dxx = a[0] * xin, a[3] * xin  # (m, 1, w)
        else:
            s = coef[i0:i1, None, None]
        for r0 in range(0, h, r_step):
            r1 = min(h, r0 + r_step)
            bshape = (m, r1 - r0, w)
            cnt = m * (r1 - r0) * w
            v = {k: b[:cnt].reshape(bshape) for k, b in ws.f64.items()}
            ok, tm = ws.ok[:cnt].reshape(bshape), ws.tmp[:cnt].reshape(bshape)
            yy = yin[None, r0:r1, None]
            if mode != "cols":
                xs = v["xs"]
                if mode == "affine":  # (a0*xin + a1*yin) + a2, as affine_transform()
                    np.add(ax, a[1] * yy, out=xs)
                    xs += a[2]
                else:  # (1*xin + s*yin) + 0
                    np.add(xin, s * yy, out=xs)
                np.greater_equal(xs, 0.0, out=ok)  # bilinear_filter: outside [0, w) -> fill
                np.less(xs, w, out=tm)
                ok &= tm
                xs -= 0.5
                fx = np.floor(xs, out=v["fx"])
                np.subtract(xs, fx, out=xs)  # xs now holds dx
            if mode != "rows":
                ys = v["ys"]
                if mode == "affine":  # (a3*xin + a4*yin) + a5
                    np.add(dxx, a[4] * yy, out=ys)
                    ys += a[5]
                else:  # (s*xin + 1*yin) + 0
                    np.add(s * xin, yy, out=ys)
                if mode == "affine":
                    np.greater_equal(ys, 0.0, out=tm)
                    ok &= tm
                else:
                    np.greater_equal(ys, 0.0, out=ok)
                np.less(ys, h, out=tm)
                ok &= tm
                ys -= 0.5
                fy = np.floor(ys, out=v["fy"])
                np.subtract(ys, fy, out=ys)  # ys now holds dy
            # Flat table index, computed exactly in float64, then one gather.
            fidx = v["idx"]
            if mode == "affine":  # (fy + 1) * row_len + (fx + 1)
                np.multiply(v["fy"], row_len, out=fidx)
                fidx += v["fx"]
                fidx += first + (row_len + 1)
            elif mode == "rows":  # y * row_len + (fx + 1)
                rows = np.arange(r0, r1, dtype=np.float64)[None, :, None]
                np.add(v["fx"], first + (rows * row_len + 1), out=fidx)
            else:  # (fy + 1) * row_len + x
                np.multiply(v["fy"], row_len, out=fidx)
                fidx += first + (np.arange(w, dtype=np.float64) + row_len)
            # Valid points have fx in [-1, w-1] and fy in [-1, h-1], hence an index inside their
            # image's table; invalid ones (masked below) are only kept inside the table by
            # take's "clip" mode (which is also faster than its bounds-checking default).
            idx = ws.idx[:cnt]
            with np.errstate(invalid="ignore"):  # absurd coordinates of invalid points
                np.copyto(idx, fidx.reshape(-1), casting="unsafe")
            g = table.take(idx, out=ws.gather[:cnt], mode="clip")
            g = g.view(np.uint8).reshape(cnt, nb, 4)
            # planes[c, j, r]: channel c of the neighbour in column x0 + j and row y0 + r
            # (rows/cols modes: the two neighbours are j = 0, 1 and r = 0).
            nr = nb // 2
            pl = ws.planes[:, :, :, :cnt]
            for c in range(3):
                for r in range(nr):
                    for j in range(2):
                        pl[c, j, r] = g[:, 2 * r + j, c]
            d1 = v["ys" if mode == "cols" else "xs"].reshape(-1)
            dy = v["ys"].reshape(-1)
            lerp, k16 = ws.lerp[:, :cnt], ws.k16[:, :cnt]
            v8, ok = ws.v8[:cnt], ws.ok[:cnt]
            start = (i0 * h + r0) * w  # a block is whole images or rows of one image
            dst = flat_out[start:start + cnt]
            for c in range(3):
                # Pillow's BILINEAR(v, a, b, d) = a + (b - a) * d with an int difference, in
                # float64, on both rows at once; then v1 + (v2 - v1) * dy across the rows.
                np.subtract(pl[c, 1], pl[c, 0], out=k16[:nr], dtype=np.int16)
                top = lerp[:nr]
                np.copyto(top, k16[:nr])
                top *= d1
                np.add(top, pl[c, 0], out=top)
                top = lerp[0]
                if mode == "affine":
                    bot = lerp[1]
                    bot -= top
                    bot *= dy
                    top += bot
                np.copyto(v8, top, casting="unsafe")  # (UINT8) truncation; values in [0, 255]
                v8 *= ok
                dst[:, c] = v8
    return out


def _shift(images: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """AFFINE (1, 0, tx, 0, 1, ty) with integer tx, ty: output(x, y) = input(x+tx, y+ty), fill 0.

    With integer offsets the sample point is exactly a pixel centre (dx = dy = 0), so Pillow's
    bilinear result is the source pixel itself.
    """
    n, h, w, _ = images.shape
    out = np.zeros_like(images)
    for i in range(n):
        x, y = int(tx[i]), int(ty[i])
        if abs(x) >= w or abs(y) >= h:
            continue
        out[i, max(0, -y):h - max(0, y), max(0, -x):w - max(0, x)] = \
            images[i, max(0, y):h - max(0, -y), max(0, x):w - max(0, -x)]
    return out


def rotate_matrix(angle: float, w: int, h: int):
    """The affine data ``Image.rotate(angle)`` passes to ``transform`` (centre, no expand)."""
    cx, cy = w / 2, h / 2
    a = -math.radians(angle)
    m = [round(math.cos(a), 15), round(math.sin(a), 15), 0.0,
         round(-math.sin(a), 15), round(math.cos(a), 15), 0.0]
    m2 = m[0] * -cx + m[1] * -cy + m[2]
    m5 = m[3] * -cx + m[4] * -cy + m[5]
    m[2] = m2 + cx
    m[5] = m5 + cy
    return m


def rotate(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``img.rotate(int(p), resample=BILINEAR)``: CCW about the centre, same size, fill 0."""
    images, params = _check(images, params)
    n, h, w, _ = images.shape
    angles = np.array([int(p) % 360.0 for p in params])
    out = np.empty_like(images)
    general = np.ones(n, dtype=bool)
    for ang, fn in ((0.0, lambda x: x), (180.0, lambda x: x[:, ::-1, ::-1]),
                    (90.0, lambda x: np.rot90(x, 1, axes=(1, 2))),
                    (270.0, lambda x: np.rot90(x, -1, axes=(1, 2)))):
        if ang in (90.0, 270.0) and w != h:
            continue
        sel = angles == ang
        if sel.any():
            out[sel] = fn(images[sel])
            general &= ~sel
    if general.any():
        idx = np.nonzero(general)[0]
        mats = np.array([rotate_matrix(angles[i], w, h) for i in idx], dtype=np.float64)
        out[idx] = _warp(images[idx], "affine", mats)
    return out


def shear_x(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``img.transform(size, AFFINE, (1, p, 0, 0, 1, 0), BILINEAR)``."""
    images, params = _check(images, params)
    return _warp(images, "rows", params)


def shear_y(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``img.transform(size, AFFINE, (1, 0, 0, p, 1, 0), BILINEAR)``."""
    images, params = _check(images, params)
    return _warp(images, "cols", params)


def translate_x(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``img.transform(size, AFFINE, (1, 0, int(p), 0, 1, 0), BILINEAR)``."""
    images, params = _check(images, params)
    return _shift(images, np.trunc(params), np.zeros_like(params))


def translate_y(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``img.transform(size, AFFINE, (1, 0, 0, 0, 1, int(p)), BILINEAR)``."""
    images, params = _check(images, params)
    return _shift(images, np.zeros_like(params), np.trunc(params))


# ----------------------------------------------------------------------------------------------
# Enhance: ImagingBlend(degenerate, image, factor) in float32
# ----------------------------------------------------------------------------------------------

def _blend(degenerate: np.ndarray, images: np.ndarray, alpha: np.ndarray, out: np.ndarray):
    """``Image.blend(degenerate, image, alpha)`` written into ``out``.

    ImagingBlend computes ``in1 + alpha*(in2 - in1)`` in C float (alpha is the factor rounded to
    float32; the int difference and the sum are float32 operations) and truncates to UINT8;
    outside alpha in [0, 1] it clips to [0, 255] first (inside, the value cannot leave the range).
    ``degenerate`` (in1) and ``alpha`` broadcast against ``images`` (in2) along leading axes.
    """
    d = np.subtract(images, degenerate, dtype=np.float32)
    d *= alpha
    np.add(d, degenerate, out=d)
    if np.any((alpha < 0) | (alpha > 1)):
        np.clip(d, 0.0, 255.0, out=d)
    np.copyto(out, d, casting="unsafe")


def _grey(images: np.ndarray) -> np.ndarray:
    """``convert("L")``: (19595 R + 38470 G + 7471 B + 0x8000) >> 16 (Convert.c L24), as
    uint32 (n, H, W)."""
    v = np.multiply(images[..., 0], 19595, dtype=np.uint32)
    t = np.multiply(images[..., 1], 38470, dtype=np.uint32)
    v += t
    np.multiply(images[..., 2], 7471, out=t, dtype=np.uint32)
    v += t
    v += 0x8000
    v >>= 16
    return v


def _alpha(params: np.ndarray, ndim: int) -> np.ndarray:
    """The blend factor as a C float, shaped (n, 1, ...) for ``ndim``-dimensional images."""
    return params.astype(np.float32).reshape((-1,) + (1,) * (ndim - 1))


def color(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageEnhance.Color(img).enhance(p)``: blend(RGB->L->RGB, img, p)."""
    images, params = _check(images, params)
    out = np.empty_like(images)
    n, h, w, _ = images.shape
    for sl in _chunks(n, h, w):
        grey = _grey(images[sl]).astype(np.uint8)
        alpha = _alpha(params[sl], 3)
        for c in range(3):  # per channel: long inner loops
            _blend(grey, images[sl, ..., c], alpha, out[sl, ..., c])
    return out


def contrast(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageEnhance.Contrast(img).enhance(p)``: blend(grey mean constant, img, p).

    The constant is ``int(ImageStat.Stat(img.convert("L")).mean[0] + 0.5)``, where the mean is
    the exact integer sum over the pixel count (a correctly rounded float64 division).
    """
    images, params = _check(images, params)
    out = np.empty_like(images)
    n, h, w, _ = images.shape
    for sl in _chunks(n, h, w):
        total = _grey(images[sl]).sum(axis=(1, 2), dtype=np.uint64)
        mean = np.floor(total / (h * w) + 0.5).astype(np.uint8)
        _blend(mean[:, None, None, None], images[sl], _alpha(params[sl], 4), out[sl])
    return out


def brightness(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageEnhance.Brightness(img).enhance(p)``: blend(black, img, p) = alpha * v (float32)."""
    images, params = _check(images, params)
    out = np.empty_like(images)
    n, h, w, _ = images.shape
    for sl in _chunks(n, h, w):
        alpha = _alpha(params[sl], 4)
        d = np.multiply(images[sl], alpha, dtype=np.float32)
        if np.any((alpha < 0) | (alpha > 1)):
            np.clip(d, 0.0, 255.0, out=d)
        np.copyto(out[sl], d, casting="unsafe")
    return out


_K1 = np.float32(1.0) / np.float32(13.0)
_K5 = np.float32(5.0) / np.float32(13.0)
_HALF = np.float32(0.5)


def _smooth(images: np.ndarray) -> np.ndarray:
    """``img.filter(ImageFilter.SMOOTH)`` (Filter.c ImagingFilter3x3, float32 arithmetic)."""
    out = images.copy()
    n, h, w, _ = images.shape
    if h < 3 or w < 3:
        return out
    f = images.astype(np.float32)
    p1 = f * _K1
    p5 = f * _K5
    # KERNEL1x3 on a row: (left*k0 + centre*k1) + right*k2, each product rounded to float32.
    outer = p1[:, :, :-2] + p1[:, :, 1:-1]
    outer += p1[:, :, 2:]
    centre = p1[:, 1:-1, :-2] + p5[:, 1:-1, 1:-1]
    centre += p1[:, 1:-1, 2:]
    # ss = 0.5; ss += row(y+1); ss += row(y); ss += row(y-1)
    ss = _HALF + outer[:, 2:]
    ss += centre
    ss += outer[:, :-2]
    np.clip(ss, 0.0, 255.0, out=ss)
    out[:, 1:-1, 1:-1] = ss.astype(np.uint8)
    return out


def sharpness(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``ImageEnhance.Sharpness(img).enhance(p)``: blend(SMOOTH(img), img, p)."""
    images, params = _check(images, params)
    out = np.empty_like(images)
    n, h, w, _ = images.shape
    for sl in _chunks(n, h, w):
        _blend(_smooth(images[sl]), images[sl], _alpha(params[sl], 4), out[sl])
    return out


PIL_OP_FUNCS: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "autocontrast": autocontrast, "equalize": equalize, "posterize": posterize, "rotate": rotate,
    "solarize": solarize, "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x,
    "translate_y": translate_y, "color": color, "contrast": contrast, "brightness": brightness,
    "sharpness": sharpness, "mirror": mirror, "invert": invert,
}
assert tuple(PIL_OP_FUNCS) == PIL_OPS

_BY_ID = tuple(PIL_OP_FUNCS[name] for name in PIL_OPS)


_NATIVE_IDS = frozenset(PIL_OPS.index(name) for name in native_path.PIL_NATIVE_OPS)


def apply_pil_op(op_id: int, images: np.ndarray, params: np.ndarray,
                 native: bool = True) -> np.ndarray:
    """Apply PIL op ``op_id`` (index into ``PIL_OPS``) to every image with its own parameter.

    images: uint8 (n, H, W, 3); params: float64 (n,) already-mapped parameters. Returns a new
    uint8 (n, H, W, 3) array; the input is not modified. ``native`` (rotate, shear_x, shear_y):
    run the bilinear warp as the GPU kernel compiled for the host (:mod:`.native`, the same
    pixels bit for bit, 2-3x faster) when it is available and ``IPMIX_DALI_NATIVE`` is not
    "0"; False always runs the NumPy twin below.
    """
    if not 0 <= int(op_id) < len(_BY_ID):
        raise ValueError(f"unknown PIL op id {op_id}")
    if native and int(op_id) in _NATIVE_IDS:
        images, params = _check(images, params)
        out = native_path.pil_geometric(int(op_id), images, params)
        if out is not None:
            return out
    return _BY_ID[int(op_id)](images, params)
