"""The 19 corruptions on one uint8 RGB image, with Hendrycks' formulas (NumPy / SciPy / OpenCV).

Each ``f(x, c, rng)`` takes a uint8 (H, W, 3) image, the severity's parameters ``c`` and a
``numpy.random.Generator``, and returns float values on the 0..255 scale; the caller truncates
to uint8 as the generators do (``np.uint8``). Where the reference used a library call we use
the one with the same semantics: scikit-image's ``gaussian`` is SciPy's ``gaussian_filter``
(``mode='nearest'``, ``truncate=4``, per channel), ``rgb2hsv`` / ``hsv2rgb`` are written out
below with scikit-image's formulas, and the motion blur is imagecorruptions' NumPy version of
ImageMagick's (the original called ImageMagick through Wand). Differences from the reference
that remain are listed in docs/corruptions.md: frost textures are synthesised (the photographs
are not ours to ship), and the random draws come from our per-image generator.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["OPS", "rgb2hsv", "hsv2rgb", "plasma_fractal", "frost_texture"]


def _f(x):
    return np.asarray(x, dtype=np.float64) / 255.0


def _blur(x, sigma, mode="nearest", truncate=4.0):
    """scikit-image ``gaussian(x, sigma, channel_axis=-1)``: per-channel Gaussian."""
    s = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return ndimage.gaussian_filter(x, sigma=s, mode=mode, truncate=truncate)


# --- noise ------------------------------------------------------------------------------------

def gaussian_noise(x, c, rng):
    x = _f(x)
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, c, rng):
    x = _f(x)
    return np.clip(rng.poisson(x * c) / float(c), 0, 1) * 255


def impulse_noise(x, c, rng):
    """scikit-image ``random_noise(mode='s&p', amount=c)``: each value replaced with probability
    ``c``, by 1 or 0 with equal odds."""
    x = _f(x).copy()
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    x[hit & salt] = 1.0
    x[hit & ~salt] = 0.0
    return np.clip(x, 0, 1) * 255


def speckle_noise(x, c, rng):
    x = _f(x)
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


# --- blur -------------------------------------------------------------------------------------

def gaussian_blur(x, c, rng):
    return np.clip(_blur(_f(x), c), 0, 1) * 255


def glass_blur(x, c, rng):
    """Blur, then ``iterations`` sweeps over the pixels (bottom-right to top-left), each taking
    the value of a random neighbour within ``max_delta``, then blur again.

    The reference writes a swap, ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``, but both sides are
    NumPy views, so the second assignment copies back the value just written: each step is a
    copy ``x[h, w] = x[h', w']``, which is what we do (on a list of pixel indices: the same
    sequential result as moving the pixels, much faster)."""
    sigma, delta, iterations = c
    y = np.uint8(_blur(_f(x), sigma) * 255)
    h, w = y.shape[:2]
    index = list(range(h * w))
    for _ in range(iterations):
        rows = range(h - delta, delta, -1)
        cols = range(w - delta, delta, -1)
        offsets = rng.integers(-delta, delta, size=(len(rows), len(cols), 2))  # (dx, dy)
        for i, r in enumerate(rows):
            base = r * w
            for j, col in enumerate(cols):
                dx, dy = offsets[i, j]
                index[base + col] = index[(r + dy) * w + col + dx]
    y = y.reshape(h * w, -1)[np.asarray(index)].reshape(x.shape)
    return np.clip(_blur(y / 255.0, sigma), 0, 1) * 255


def _disk(radius, alias_blur=0.1):
    import cv2

    if radius <= 8:
        grid, ksize = np.arange(-8, 9), (3, 3)
    else:
        grid, ksize = np.arange(-radius, radius + 1), (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx ** 2 + yy ** 2) <= radius ** 2, dtype=np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def defocus_blur(x, c, rng):
    import cv2

    kernel = _disk(*c)
    x = _f(x)
    out = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], axis=2)
    return np.clip(out, 0, 1) * 255


def _shift(img, dx, dy):
    """Translate by (dx, dy), repeating the edge row/column into the uncovered strip."""
    out = img
    if dx < 0:
        out = np.roll(out, img.shape[1] + dx, axis=1)
        out[:, dx:] = out[:, dx - 1:dx]
    elif dx > 0:
        out = np.roll(out, dx, axis=1)
        out[:, :dx] = out[:, dx:dx + 1]
    if dy < 0:
        out = np.roll(out, img.shape[0] + dy, axis=0)
        out[dy:, :] = out[dy - 1:dy, :]
    elif dy > 0:
        out = np.roll(out, dy, axis=0)
        out[:dy, :] = out[dy:dy + 1, :]
    return out


def _motion(x, radius, sigma, angle):
    """Sum of shifted copies along ``angle`` weighted by a one-sided Gaussian of width
    2 radius + 1 (imagecorruptions' NumPy version of ImageMagick's motion blur)."""
    width = 2 * radius + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    py, px = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(py, px)
    out = np.zeros_like(x, dtype=np.float32)
    for i in range(width):
        dy = -math.ceil(i * py / hyp - 0.5)
        dx = -math.ceil(i * px / hyp - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break
        out = out + k[i] * _shift(x, dx, dy)
    return out


def motion_blur(x, c, rng):
    angle = rng.uniform(-45, 45)
    return np.clip(_motion(np.asarray(x), c[0], c[1], angle), 0, 255)


def _clipped_zoom(img, factor):
    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    z = ndimage.zoom(img[top:top + ch, left:left + cw], (factor, factor, 1), order=1)
    ty, tx = (z.shape[0] - h) // 2, (z.shape[1] - w) // 2  # centred trim, as make_imagenet_c
    return z[ty:ty + h, tx:tx + w]


def zoom_blur(x, c, rng):
    x = _f(x).astype(np.float32)
    out = np.zeros_like(x)
    for factor in c:
        layer = _clipped_zoom(x, factor)
        out[:layer.shape[0], :layer.shape[1]] += layer
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


# --- weather ----------------------------------------------------------------------------------

def plasma_fractal(rng, mapsize=256, wibbledecay=3.0):
    """Diamond-square height map in [0, 1] (mapsize a power of two)."""
    m = np.empty((mapsize, mapsize))
    m[0, 0] = 0
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corner = m[0:mapsize:step, 0:mapsize:step]
        sq = corner + np.roll(corner, -1, axis=0)
        sq = sq + np.roll(sq, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = wibbled(sq)
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        m[0:mapsize:step, half:mapsize:step] = wibbled(dr + np.roll(dr, 1, axis=0)
                                                       + ul + np.roll(ul, -1, axis=1))
        m[half:mapsize:step, 0:mapsize:step] = wibbled(dr + np.roll(dr, 1, axis=1)
                                                       + ul + np.roll(ul, -1, axis=0))
        step //= 2
        wibble /= wibbledecay
    m -= m.min()
    return m / m.max()


def fog(x, c, rng):
    x = _f(x)
    h, w = x.shape[:2]
    size = 1 << max(1, (max(h, w) - 1).bit_length())
    top = x.max()
    x = x + c[0] * plasma_fractal(rng, size, c[1])[:h, :w][..., None]
    return np.clip(x * top / (top + c[0]), 0, 1) * 255


def frost_texture(rng, h, w):
    """A synthetic frost layer (uint8 RGB, 0..255): the original blends one of five frost
    photographs; we draw ice: branching bright crystal strokes over a cold, grainy haze."""
    canvas = np.zeros((h, w), np.float64)
    n_seeds = max(6, (h * w) // 900)
    for _ in range(n_seeds):
        y, x0 = rng.uniform(0, h), rng.uniform(0, w)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(20, 60))):
            length = rng.uniform(1.0, 3.0)
            y += length * math.sin(angle)
            x0 += length * math.cos(angle)
            angle += rng.normal(0, 0.35)
            iy, ix = int(y) % h, int(x0) % w
            canvas[iy, ix] += rng.uniform(0.6, 1.0)
    crystals = _blur(canvas, 0.7, mode="wrap") * 6 + _blur(canvas, 2.5, mode="wrap") * 10
    haze = _blur(rng.random((h, w)), 6, mode="wrap")
    haze = (haze - haze.min()) / (np.ptp(haze) + 1e-12)
    grain = rng.random((h, w)) * 0.15
    v = np.clip(0.25 + 0.45 * haze + crystals + grain, 0, 1)
    tint = np.array([0.85, 0.93, 1.0])  # cold blue-white
    return (v[..., None] * tint * 255).astype(np.uint8)


def frost(x, c, rng):
    texture = frost_texture(rng, *np.asarray(x).shape[:2]).astype(np.float64)
    return np.clip(c[0] * np.asarray(x, np.float64) + c[1] * texture, 0, 255)


def _gray(x):
    """OpenCV's RGB2GRAY on float32: 0.299 R + 0.587 G + 0.114 B."""
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def snow(x, c, rng):
    x = np.asarray(x, np.float32) / 255.0
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = _clipped_zoom(layer[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = np.clip(layer.squeeze(-1), 0, 1)
    layer = _motion(layer, c[4], c[5], rng.uniform(-135, -45))
    layer = (np.round(layer * 255).astype(np.uint8) / 255.0)[..., None][:x.shape[0], :x.shape[1]]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def spatter(x, c, rng):
    import cv2

    x = np.asarray(x, np.float32) / 255.0
    liquid = _blur(rng.normal(size=x.shape[:2], loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:  # water: pale turquoise ripples along the droplets' edges
        liquid_u8 = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid_u8, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.filter2D(dist, cv2.CV_8U, ker)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = liquid_u8.astype(np.float32) * dist
        m = np.repeat(m[..., None], 3, axis=2)
        peak = m.max()
        m = m / peak if peak > 0 else m
        m *= c[4]
        # (175, 238, 238) on channels 0, 1, 2 (the reference's "BGR" calls leave the channel
        # order alone): pale turquoise on an RGB image.
        colour = np.array([175, 238, 238], np.float32) / 255.0
        return np.clip(x + m * colour, 0, 1) * 255
    m = np.where(liquid > c[3], 1.0, 0.0)  # mud: brown blotches
    m = _blur(m.astype(np.float32), c[4])
    m[m < 0.8] = 0
    colour = np.array([63, 42, 20], np.float32) / 255.0 * m[..., None]
    return np.clip(x * (1 - m[..., None]) + colour, 0, 1) * 255


# --- digital ----------------------------------------------------------------------------------

def rgb2hsv(rgb, xp=np):
    """scikit-image's ``rgb2hsv`` for float RGB in [0, 1] (H in [0, 1)); ``xp``: numpy or cupy."""
    rgb = xp.asarray(rgb, dtype=xp.float64)
    v = rgb.max(-1)
    delta = rgb.max(-1) - rgb.min(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = xp.where(v == 0, 0.0, delta / xp.where(v == 0, 1.0, v))
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        safe = xp.where(delta == 0, 1.0, delta)
        h = xp.where(r == v, (g - b) / safe, 0.0)
        h = xp.where(g == v, 2.0 + (b - r) / safe, h)
        h = xp.where(b == v, 4.0 + (r - g) / safe, h)
    h = xp.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return xp.stack([h, s, v], axis=-1)


def hsv2rgb(hsv, xp=np):
    """scikit-image's ``hsv2rgb``; ``xp``: numpy or cupy."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = xp.floor(h * 6.0).astype(xp.int64)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    i = i % 6
    choices = [xp.stack(c, axis=-1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v),
                                              (t, p, v), (v, p, q))]
    out = xp.zeros(hsv.shape, dtype=xp.float64)
    for k in range(6):
        out = xp.where((i == k)[..., None], choices[k], out)
    return out


def brightness(x, c, rng):
    hsv = rgb2hsv(_f(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def saturate(x, c, rng):
    hsv = rgb2hsv(_f(x))
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def contrast(x, c, rng):
    x = _f(x)
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def jpeg_compression(x, c, rng):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(x, np.uint8)).save(buf, "JPEG", quality=int(c))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float64)


def pixelate(x, c, rng):
    img = Image.fromarray(np.asarray(x, np.uint8))
    w, h = img.size
    small = img.resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX), np.float64)


def elastic_transform(x, c, rng):
    """The original ImageNet-C elastic transform: a random affine warp of three control points
    (reflect-101 border), then a smooth random displacement field, bilinear, reflected."""
    import cv2

    image = np.asarray(x, np.float32) / 255.0
    shape = image.shape
    size = shape[:2]
    centre = np.float32(size) // 2
    square = min(size) // 3
    pts1 = np.float32([centre + square, [centre[0] + square, centre[1] - square],
                       centre - square])
    pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), size[::-1],
                           borderMode=cv2.BORDER_REFLECT_101)
    dx = (_blur(rng.uniform(-1, 1, size=size), c[1], mode="reflect", truncate=3) * c[0]
          ).astype(np.float32)[..., None]
    dy = (_blur(rng.uniform(-1, 1, size=size), c[1], mode="reflect", truncate=3) * c[0]
          ).astype(np.float32)[..., None]
    xx, yy, zz = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    coords = (np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)), np.reshape(zz, (-1, 1)))
    out = ndimage.map_coordinates(image, coords, order=1, mode="reflect").reshape(shape)
    return np.clip(out, 0, 1) * 255


OPS = {name: globals()[name] for name in (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
    "pixelate", "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")}
