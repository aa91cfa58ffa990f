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


def blur_batch(x, sigma, ndi=ndimage, mode="nearest", truncate=4.0):
    """The Gaussian of each image of a batch (N, H, W[, C]): axes 1 and 2 only, as
    :func:`_blur` does per image; ``ndi``: scipy.ndimage or cupyx.scipy.ndimage."""
    sigmas = (0, sigma, sigma) + (0,) * (x.ndim - 3)
    return ndi.gaussian_filter(x, sigma=sigmas, mode=mode, truncate=truncate)


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


def glass_offsets(rng, h, w, delta, iterations):
    """The random neighbour offsets (dx, dy) of every sweep, drawn as the reference draws them:
    one (rows, cols, 2) block per sweep over the pixels ``delta`` away from the border."""
    rows, cols = max(0, h - 2 * delta), max(0, w - 2 * delta)
    return np.stack([rng.integers(-delta, delta, size=(rows, cols, 2))
                     for _ in range(iterations)])


def glass_sources(offsets, h, w, delta, xp=np):
    """For a batch of glass-blur offsets (N, iterations, rows, cols, 2), the flat pixel each
    pixel's value comes from after the sweeps, (N, h * w).

    The reference sweeps the pixels bottom-right to top-left, each taking the value of a random
    neighbour (see :func:`glass_blur`): a sequential loop, since a neighbour already swept in
    this pass passes on its new value. Every such link points to a pixel earlier in the sweep,
    so the links form chains ending at a pixel not yet swept (which still holds its value from
    before the pass); pointer jumping follows all chains at once in about log2(longest chain)
    rounds of array operations, with exactly the loop's result."""
    n, iterations = offsets.shape[:2]
    rows_n, cols_n = max(0, h - 2 * delta), max(0, w - 2 * delta)
    source = xp.broadcast_to(xp.arange(h * w), (n, h * w)).copy()
    if rows_n == 0 or cols_n == 0:
        return source
    rows = xp.arange(h - delta, delta, -1)[:, None]  # sweep order: bottom-up, right to left
    cols = xp.arange(w - delta, delta, -1)[None, :]
    swept = (rows * w + cols).ravel()
    position = xp.arange(rows_n * cols_n).reshape(rows_n, cols_n)  # place in the sweep
    for it in range(iterations):
        target_row = rows + offsets[:, it, :, :, 1]
        target_col = cols + offsets[:, it, :, :, 0]
        target_position = (h - delta - target_row) * cols_n + (w - delta - target_col)
        swept_before = ((target_row > delta) & (target_row <= h - delta)
                        & (target_col > delta) & (target_col <= w - delta)
                        & (target_position < position))
        value = xp.take_along_axis(source, (target_row * w + target_col).reshape(n, -1), 1)
        link = xp.where(swept_before, target_position, -1).reshape(n, -1)
        while True:
            open_ = link >= 0
            if not bool(open_.any()):
                break
            hop = xp.where(open_, link, 0)
            value = xp.where(open_, xp.take_along_axis(value, hop, 1), value)
            link = xp.where(open_, xp.take_along_axis(link, hop, 1), link)
        source[:, swept] = value
    return source


def glass_blur(x, c, rng):
    """Blur, then ``iterations`` sweeps over the pixels (bottom-right to top-left), each taking
    the value of a random neighbour within ``max_delta``, then blur again.

    The reference writes a swap, ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``, but both sides are
    NumPy views, so the second assignment copies back the value just written: each step is a
    copy ``x[h, w] = x[h', w']``, which is what we do (as a map of source pixels,
    :func:`glass_sources`: the same sequential result, without the per-pixel Python loop)."""
    sigma, delta, iterations = c
    y = np.uint8(_blur(_f(x), sigma) * 255)
    h, w = y.shape[:2]
    offsets = glass_offsets(rng, h, w, delta, iterations)
    y = y.reshape(h * w, -1)[glass_sources(offsets[None], h, w, delta)[0]].reshape(x.shape)
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


def motion_taps(radius, sigma, angle, h, w):
    """The (weights, dx, dy) of the shifted copies that make the motion blur along ``angle``:
    a one-sided Gaussian of width 2 radius + 1 (imagecorruptions' NumPy version of ImageMagick's
    motion blur), cut where a shift leaves an (h, w) image."""
    width = 2 * radius + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    py, px = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(py, px)
    weights, dxs, dys = [], [], []
    for i in range(width):
        dy = -math.ceil(i * py / hyp - 0.5)
        dx = -math.ceil(i * px / hyp - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break
        weights.append(k[i])
        dxs.append(dx)
        dys.append(dy)
    return weights, dxs, dys


def shifted(x, dx, dy, xp=np):
    """Each image of the batch ``x`` (N, H, W, ...) moved by its own (dx[n], dy[n]), repeating
    the edge rows and columns into the uncovered strips (the reference's roll-and-fill)."""
    n, h, w = x.shape[:3]
    if xp is np:  # slice copies per image: several times faster than a gather in NumPy
        return np.stack([_shifted_one(x[k], int(dx[k]), int(dy[k])) for k in range(n)])
    r = xp.clip(xp.arange(h)[None, :] - dy[:, None], 0, h - 1)
    c = xp.clip(xp.arange(w)[None, :] - dx[:, None], 0, w - 1)
    return x[xp.arange(n)[:, None, None], r[:, :, None], c[:, None, :]]  # one kernel per tap


def _shifted_one(img, dx, dy):
    """``img[clip(y - dy), clip(x - dx)]`` by slices: the moved block, then the edge fill."""
    h, w = img.shape[:2]
    # a shift by the whole size or more fills with the edge, as one by size - 1 does
    dx, dy = min(max(dx, 1 - w), w - 1), min(max(dy, 1 - h), h - 1)
    out = np.empty_like(img)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    if dy > 0:
        out[:dy] = out[dy]
    elif dy < 0:
        out[h + dy:] = out[h + dy - 1]
    if dx > 0:
        out[:, :dx] = out[:, dx:dx + 1]
    elif dx < 0:
        out[:, w + dx:] = out[:, w + dx - 1:w + dx]
    return out


def motion_blur_batch(x, radius, sigma, angles, xp=np):
    """Motion blur of a batch (N, H, W[, C]) with one angle per image: the float64 sum of the
    shifted copies in the reference's order (an image whose taps end early adds zeros, which
    leaves its sum unchanged)."""
    h, w = x.shape[1:3]
    taps = [motion_taps(radius, sigma, a, h, w) for a in angles]
    width = max(len(t[0]) for t in taps)
    table = np.zeros((3, len(taps), width))
    for n, t in enumerate(taps):
        table[:, n, :len(t[0])] = t
    weights = xp.asarray(table[0])
    dxs, dys = xp.asarray(table[1].astype(np.int64)), xp.asarray(table[2].astype(np.int64))
    expand = (slice(None),) + (None,) * (x.ndim - 1)
    out = xp.zeros(x.shape, dtype=xp.float32)
    for i in range(width):
        out = out + weights[:, i][expand] * shifted(x, dxs[:, i], dys[:, i], xp)
    return out


def motion_blur(x, c, rng):
    angle = rng.uniform(-45, 45)
    return np.clip(motion_blur_batch(np.asarray(x)[None], c[0], c[1], [angle])[0], 0, 255)


def clipped_zoom(batch, factor, xp=np, ndi=ndimage):
    """Each image of a (N, H, W, C) batch zoomed by ``factor`` about its centre (bilinear),
    cropped back to H x W; ``xp``, ``ndi``: numpy and scipy.ndimage or cupy and cupyx's."""
    h, w = batch.shape[1:3]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    # image by image: a 3-d zoom is the reference's call, and 2.5x faster in SciPy than a 4-d one
    z = [ndi.zoom(img[top:top + ch, left:left + cw], (factor, factor, 1), order=1)
         for img in batch]
    ty, tx = (z[0].shape[0] - h) // 2, (z[0].shape[1] - w) // 2  # centred trim, as make_imagenet_c
    return xp.stack([a[ty:ty + h, tx:tx + w] for a in z])


def zoom_blur_batch(x, factors, xp=np, ndi=ndimage):
    """The mean of each image (float32 (N, H, W, 3) in [0, 1]) and its centred zooms."""
    out = xp.zeros_like(x)
    for factor in factors:
        layer = clipped_zoom(x, factor, xp, ndi)
        out[:, :layer.shape[1], :layer.shape[2]] += layer
    return xp.clip((x + out) / (len(factors) + 1), 0, 1) * 255


def zoom_blur(x, c, rng):
    return zoom_blur_batch(_f(x).astype(np.float32)[None], c)[0]


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


def frost_draws(rng, h, w):
    """The random part of one synthetic frost layer (it does not depend on the image):
    (crystal canvas, haze noise, grain noise), each (h, w) float64.

    The crystals are random walks (a start, a heading, 20-59 steps of length 1-3 px, the heading
    turning by N(0, 0.35) each step) that deposit brightness 0.6-1 on the pixels they pass; the
    numbers are drawn in bulk and the walks summed on the host, in a fixed order."""
    n = max(6, (h * w) // 900)
    start = rng.uniform((0.0, 0.0), (h, w), size=(n, 2))
    heading = rng.uniform(0, 2 * np.pi, n)
    steps = rng.integers(20, 60, n)
    length = rng.uniform(1.0, 3.0, (n, 59))
    turn = rng.normal(0, 0.35, (n, 59))
    brightness = rng.uniform(0.6, 1.0, (n, 59))
    haze = rng.random((h, w))
    grain = rng.random((h, w))
    angle = heading[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(turn[:, :-1], 1)], 1)
    y = start[:, :1] + np.cumsum(length * np.sin(angle), 1)
    x = start[:, 1:] + np.cumsum(length * np.cos(angle), 1)
    walked = np.arange(59)[None, :] < steps[:, None]
    pixel = (np.trunc(y).astype(np.int64) % h) * w + np.trunc(x).astype(np.int64) % w
    canvas = np.bincount(pixel[walked], brightness[walked], minlength=h * w).reshape(h, w)
    return canvas, haze, grain


def frost_layers(canvas, haze, grain, xp=np, ndi=ndimage):
    """Synthetic frost layers (uint8 (N, h, w, 3)) from a batch of :func:`frost_draws`: bright
    crystal strokes (the canvas blurred at two widths) over a cold haze and grain, blue-white."""
    crystals = (blur_batch(canvas, 0.7, ndi, mode="wrap") * 6
                + blur_batch(canvas, 2.5, ndi, mode="wrap") * 10)
    haze = blur_batch(haze, 6, ndi, mode="wrap")
    low = haze.min(axis=(1, 2), keepdims=True)
    haze = (haze - low) / (haze.max(axis=(1, 2), keepdims=True) - low + 1e-12)
    v = xp.clip(0.25 + 0.45 * haze + crystals + grain * 0.15, 0, 1)
    tint = xp.asarray([0.85, 0.93, 1.0])  # cold blue-white
    return (v[..., None] * tint * 255).astype(xp.uint8)


def frost_texture(rng, h, w):
    """One synthetic frost layer (uint8 RGB, 0..255): the original blends one of five frost
    photographs, which we do not ship."""
    return frost_layers(*(a[None] for a in frost_draws(rng, h, w)))[0]


def frost(x, c, rng):
    texture = frost_texture(rng, *np.asarray(x).shape[:2]).astype(np.float64)
    return np.clip(c[0] * np.asarray(x, np.float64) + c[1] * texture, 0, 255)


def _gray(x):
    """OpenCV's RGB2GRAY on float32: 0.299 R + 0.587 G + 0.114 B."""
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def snow_batch(x, normals, angles, c, xp=np, ndi=ndimage):
    """Snow on a float32 batch (N, H, W, 3) in [0, 1], from each image's layer draws
    ``normals`` (N, H, W; ``normal(c[0], c[1])``) and motion angles (N,)."""
    h, w = x.shape[1:3]
    layer = clipped_zoom(normals[..., None], c[2], xp, ndi)
    layer = xp.clip(xp.where(layer < c[3], 0, layer)[..., 0], 0, 1)
    layer = motion_blur_batch(layer, c[4], c[5], angles, xp)
    layer = (xp.round(layer * 255).astype(xp.uint8) / 255.0)[..., None][:, :h, :w]
    x = c[6] * x + (1 - c[6]) * xp.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
    return xp.clip(x + layer + layer[:, ::-1, ::-1], 0, 1) * 255


def snow(x, c, rng):
    x = np.asarray(x, np.float32) / 255.0
    normals = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    angle = rng.uniform(-135, -45)
    return snow_batch(x[None], normals[None], [angle], c)[0]


def spatter_layers(rng, h, w, c):
    """The image-independent part of spatter: (keep, add), float32, such that the corrupted
    image is ``x * keep + add``. Water (``c[5] == 0``): pale turquoise ripples along the
    droplets' edges (OpenCV's Canny, distance transform and histogram equalisation); mud:
    brown blotches."""
    import cv2

    liquid = _blur(rng.normal(size=(h, w), loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
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
        return np.ones((h, w, 1), np.float32), m * colour
    m = np.where(liquid > c[3], 1.0, 0.0)
    m = _blur(m.astype(np.float32), c[4])
    m[m < 0.8] = 0
    colour = np.array([63, 42, 20], np.float32) / 255.0 * m[..., None]
    return 1 - m[..., None], colour


def spatter(x, c, rng):
    x = np.asarray(x, np.float32) / 255.0
    keep, add = spatter_layers(rng, *x.shape[:2], c)
    return np.clip(x * keep + add, 0, 1) * 255


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


def elastic_draws(rng, h, w, c):
    """The random part of the elastic transform (it does not depend on the image): the affine
    matrix (2, 3) that moves three control points around the centre by up to ``c[2]`` px, and
    the two uniform noise fields (h, w) that become the displacement."""
    import cv2

    centre = np.float32((h, w)) // 2
    square = min(h, w) // 3
    pts1 = np.float32([centre + square, [centre[0] + square, centre[1] - square],
                       centre - square])
    pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    matrix = cv2.getAffineTransform(pts1, pts2)
    return matrix, rng.uniform(-1, 1, size=(h, w)), rng.uniform(-1, 1, size=(h, w))


def warp_affine_cv2(images, matrices):
    """OpenCV's warpAffine (bilinear, reflect-101 border) of each float32 image of a batch."""
    import cv2

    return np.stack([cv2.warpAffine(img, m, img.shape[1::-1], borderMode=cv2.BORDER_REFLECT_101)
                     for img, m in zip(images, matrices)])


def elastic_batch(x, matrices, noise_x, noise_y, c, xp=np, ndi=ndimage, warp=warp_affine_cv2):
    """The original ImageNet-C elastic transform of a float32 batch (N, H, W, 3) in [0, 1]: the
    affine warp (``warp(x, matrices)``), then the displacement field (the noise fields smoothed
    by a Gaussian of ``c[1]`` px, reflected, scaled by ``c[0]``), resampled bilinearly."""
    x = warp(x, matrices)
    n, h, w, channels = x.shape

    def displacement(noise):
        field = blur_batch(noise, c[1], ndi, mode="reflect", truncate=3)
        return (field * c[0]).astype(xp.float32)[..., None]

    dx, dy = displacement(noise_x), displacement(noise_y)
    yy = xp.broadcast_to(xp.arange(h)[:, None, None], (h, w, channels))
    xx = xp.broadcast_to(xp.arange(w)[None, :, None], (h, w, channels))
    zz = xp.broadcast_to(xp.arange(channels)[None, None, :], (h, w, channels)).ravel()
    out = xp.empty_like(x)
    for k in range(n):
        coords = xp.stack([(yy + dy[k]).ravel(), (xx + dx[k]).ravel(), zz.astype(xp.float64)])
        out[k] = ndi.map_coordinates(x[k], coords, order=1, mode="reflect").reshape(h, w, channels)
    return xp.clip(out, 0, 1) * 255


def elastic_transform(x, c, rng):
    """The original ImageNet-C elastic transform: a random affine warp of three control points
    (reflect-101 border), then a smooth random displacement field, bilinear, reflected."""
    image = np.asarray(x, np.float32) / 255.0
    matrix, noise_x, noise_y = elastic_draws(rng, *image.shape[:2], c)
    return elastic_batch(image[None], matrix[None], noise_x[None], noise_y[None], c)[0]


OPS = {name: globals()[name] for name in (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
    "pixelate", "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")}
