"""A small built-in mixing set: deterministic IFS fractals drawn by the chaos game.

PixMix and IPMix mix training images with pictures of a separate "mixing set" (the papers use
DeviantArt fractals and feature visualisations, a 1.6 GB download). So that ``ipmix-dali show``,
the tests and the benchmarks run with no download, this module renders fractals of the kind of
Anderson & Farrell (WACV 2022), following docs/augmentations.md §8:

1. n ~ U{2..7} affine maps ``x -> A x + b``.
2. ``A = U diag(s1, s2) V`` with U, V random rotations, each a reflection with p = 1/2. The
   singular values (1 >= s1 >= s2 >= 0) are sampled so that ``sum(s1 + 2 s2) = sigma`` with
   ``sigma ~ U((5+n)/2, (6+n)/2)`` (the sigma-factor method).
3. ``b ~ U(-1, 1)^2``.
4. Chaos game with map probabilities proportional to ``|det A|``: 1000 walkers in parallel,
   started at the fixed point of map 1 (on the attractor), 100 steps, the first 8 discarded.
   Walker w picks its map at step t with the counter hash of ``kernels/common.cuh``,
   ``uniform_from_hash(walk_seed, t * 1000 + w)`` (``walk_seed`` drawn per system).
5. Rasterised into the attractor's bounding box (aspect kept) by hit count, normalised to its
   maximum on a log scale.
6. Coloured in HSV: hue = a random base hue plus a random span times a running average of the
   chosen map indices (self-similar parts get their own hue), saturation in [0.3, 1], value in
   [0.5, 1] by density; composited onto a dark background or a smooth value-noise background
   (drawn at <= 64 px and upsampled bilinearly).

Pictures with fewer than 2 % of their pixels hit (or a degenerate bounding box) are re-drawn from
the same generator, so image ``i`` depends only on ``(seed, i)``.

GPU twin: :mod:`.fractals_gpu` renders the same pixels with ``kernels/fractal.cu``, many
fractals per launch. The host draws every parameter here (:func:`draw_system`,
:func:`draw_colour`); the steps after it are written so that the kernels can repeat them bit
for bit: float64 walks without FMA, integer hit counts, per-pixel colour sums in 2^-24 fixed
point (order-independent, like GPU atomics), an exact bounding box, log1p from one table, and
float32/float64 colour steps in a fixed order. Change both sides together (tests/test_fractal_twin.py).

These IFS fractals are a different distribution from the papers' DeviantArt set: use them for
demos and tests, and a real mixing set (``--mixing-set DIR``) for training runs you compare with
the papers.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ..ops.masks import uniform_from_hash

__all__ = ["render_fractals", "render_fractal", "sample_ifs", "draw_system", "draw_colour"]

WALKERS = 1000
STEPS = 100
BURN_IN = 8
MIN_COVERAGE = 0.02
MAX_ATTEMPTS = 100
_STREAM = 0x1F5  # separates these generators from the plan generators of rng.make_rng
MAX_MAPS = 7
MAX_COUNT = (STEPS - BURN_IN) * WALKERS  # the most hits one pixel can get
COL_SCALE = 2.0 ** 24                    # fixed point of the per-pixel colour sums


def _rotation(theta: float, reflect: bool) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    r = np.array([[c, -s], [s, c]])
    if reflect:
        r = r @ np.array([[1.0, 0.0], [0.0, -1.0]])
    return r


def _sample_singular_values(n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) singular values, 1 >= s1 >= s2 >= 0 per map, with sum(s1 + 2 s2) = sigma.

    Each map's share c = s1 + 2 s2 lies in [0, 3]; shares are drawn one by one, uniformly in the
    interval that keeps the rest feasible, then shuffled; each c is split with s1 ~ U(c/3, min(1, c)).
    """
    shares = np.empty(n)
    remaining = float(sigma)
    for j in range(n):
        left = n - j - 1
        lo, hi = max(0.0, remaining - 3.0 * left), min(3.0, remaining)
        c = rng.uniform(lo, hi) if left else min(max(remaining, 0.0), 3.0)
        shares[j] = c
        remaining -= c
    shares = shares[rng.permutation(n)]
    s1 = rng.uniform(shares / 3.0, np.minimum(1.0, shares))
    s2 = (shares - s1) / 2.0
    return np.stack([s1, s2], axis=1)


def sample_ifs(rng: np.random.Generator):
    """One iterated function system: (A (n, 2, 2), b (n, 2)) float64."""
    n = int(rng.integers(2, 8))
    sigma = rng.uniform((5 + n) / 2.0, (6 + n) / 2.0)
    sv = _sample_singular_values(n, sigma, rng)
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(n, 2))
    reflect = rng.random((n, 2)) < 0.5
    a = np.empty((n, 2, 2))
    for i in range(n):
        u = _rotation(angles[i, 0], reflect[i, 0])
        v = _rotation(angles[i, 1], reflect[i, 1])
        a[i] = u @ np.diag(sv[i]) @ v
    b = rng.uniform(-1.0, 1.0, size=(n, 2))
    return a, b


class IFSSystem(NamedTuple):
    """One drawn system, in the form both renderers consume (padded to ``MAX_MAPS`` maps).

    ``coef[k]`` holds map k's ``a00, a01, b0, a10, a11, b1`` and its colour term
    ``0.5 k / (n - 1)``; ``cum`` the float64 cumulative map probabilities (padding 1.0).
    """
    n: int
    cum: np.ndarray      # (MAX_MAPS,) float64
    coef: np.ndarray     # (MAX_MAPS, 7) float64
    start: np.ndarray    # (2,) float64, the fixed point of map 0
    walk_seed: int       # uint32 seed of the map-choice hash


def draw_system(rng: np.random.Generator) -> IFSSystem | None:
    """One attempt's system from ``rng`` (maps, then the walk seed), or None if degenerate."""
    a, b = sample_ifs(rng)
    walk_seed = int(rng.integers(0, 1 << 32, dtype=np.uint32))
    n = a.shape[0]
    det = np.abs(a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0])
    if not np.isfinite(det).all() or det.sum() <= 1e-12:
        return None
    cum = np.ones(MAX_MAPS)
    cum[:n] = np.cumsum(det / det.sum())
    try:
        start = np.linalg.solve(np.eye(2) - a[0], b[0])
    except np.linalg.LinAlgError:
        start = np.zeros(2)
    if not np.isfinite(start).all():
        start = np.zeros(2)
    coef = np.zeros((MAX_MAPS, 7))
    coef[:n] = np.stack([a[:, 0, 0], a[:, 0, 1], b[:, 0], a[:, 1, 0], a[:, 1, 1], b[:, 1],
                         0.5 * np.arange(n) / max(n - 1, 1)], axis=1)
    return IFSSystem(n, cum, coef, np.asarray(start, np.float64), walk_seed)


def chaos_game(system: IFSSystem):
    """Kept walker positions x, y and colour coordinates, ((STEPS - BURN_IN) * WALKERS,) float64.

    Walker w at step t picks the first map k with ``u < cum[k]`` (k at most n - 1), where
    ``u = uniform_from_hash(walk_seed, t * WALKERS + w)``; then ``x, y = A x + b`` and
    ``col = 0.5 col + colour_k``, all float64 without FMA: ``fractal.cu`` computes the same bits.
    """
    n = system.n
    u = uniform_from_hash(np.uint32(system.walk_seed),
                          np.arange(STEPS * WALKERS, dtype=np.uint32)).astype(np.float64)
    ks = np.minimum(np.searchsorted(system.cum[:n], u, side="right"), n - 1)
    ks = ks.reshape(STEPS, WALKERS)
    coef = np.ascontiguousarray(system.coef[:n].T)                          # (7, n)
    x = np.full(WALKERS, system.start[0])
    y = np.full(WALKERS, system.start[1])
    col = np.full(WALKERS, 0.5)
    keep = STEPS - BURN_IN
    xs = np.empty((keep, WALKERS))
    ys = np.empty((keep, WALKERS))
    cs = np.empty((keep, WALKERS))
    for t in range(STEPS):
        c = coef[:, ks[t]]                                                  # (7, WALKERS)
        x, y = c[0] * x + c[1] * y + c[2], c[3] * x + c[4] * y + c[5]
        col = 0.5 * col + c[6]
        if t >= BURN_IN:
            xs[t - BURN_IN], ys[t - BURN_IN], cs[t - BURN_IN] = x, y, col
    return xs.ravel(), ys.ravel(), cs.ravel()


def bounds(xs: np.ndarray, ys: np.ndarray):
    """((x0, x1, y0, y1) float64, bad): the exact bounding box and whether any point is not finite."""
    bad = not (np.isfinite(xs).all() and np.isfinite(ys).all())
    return np.array([xs.min(), xs.max(), ys.min(), ys.max()]), bad


def raster_params(box, bad: bool, size: int):
    """(x0, y0, scale, off_x, off_y) mapping points to pixels, or None for a degenerate box.

    Shared by both renderers (the GPU path computes the box on the device, these on the host).
    """
    x0, x1, y0, y1 = (float(v) for v in box)
    if bad or not np.isfinite([x0, x1, y0, y1]).all() or max(abs(x0), abs(x1), abs(y0), abs(y1)) > 1e6:
        return None
    extent = max(x1 - x0, y1 - y0)
    if extent <= 1e-9:
        return None
    margin = 0.03 * size
    inner = size - 1 - 2 * margin
    scale = inner / extent
    # Keep the aspect ratio and centre the shorter axis.
    return (x0, y0, scale, margin + 0.5 * (inner - (x1 - x0) * scale),
            margin + 0.5 * (inner - (y1 - y0) * scale))


def accumulate(xs, ys, cols, params, size: int):
    """Hit counts (size*size,) int64 and colour sums (size*size,) float64 holding exact integers.

    Each point adds ``trunc(col * 2**24)`` to its pixel's sum: integers, so the GPU's atomics
    (uint64) give the same sums in any order (and every partial sum stays below 2**53).
    """
    x0, y0, scale, off_x, off_y = params
    cx = np.clip(np.rint((xs - x0) * scale + off_x), 0, size - 1)
    cy = np.clip(np.rint((ys - y0) * scale + off_y), 0, size - 1)
    flat = (cy * size + cx).astype(np.int64)  # row = y, column = x
    counts = np.bincount(flat, minlength=size * size)
    col_sum = np.bincount(flat, weights=np.trunc(cols * COL_SCALE), minlength=size * size)
    return counts, col_sum


def coverage_ok(hits: int, size: int) -> bool:
    return int(hits) / (size * size) >= MIN_COVERAGE


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; returns (..., 3)."""
    h6 = (h % 1.0) * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    bl = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, bl], axis=-1)


@functools.lru_cache(maxsize=64)
def _noise_weights(size: int, g: int) -> np.ndarray:
    """(size, g) linear-interpolation weights from a g-point grid to ``size`` samples."""
    x = np.linspace(0.0, 1.0, size)
    xg = x * (g - 1)
    i0 = np.minimum(xg.astype(np.int64), g - 2)
    fr = xg - i0
    w = np.zeros((size, g))
    w[np.arange(size), i0] = 1.0 - fr
    w[np.arange(size), i0 + 1] = fr
    w.flags.writeable = False
    return w


def _value_noise(size: int, rng: np.random.Generator, octaves: int = 5) -> np.ndarray:
    """Smooth multi-octave value noise in [0, 1], (size, size) float64."""
    out = np.zeros((size, size))
    amp = 1.0
    for o in range(octaves):
        g = 2 ** (o + 1) + 1
        grid = rng.random((g, g))
        w = _noise_weights(size, g)  # separable linear interpolation: W @ grid @ W.T
        out += amp * (w @ grid @ w.T)
        amp *= 0.5
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


def background_side(size: int) -> int:
    """Side of the low-resolution background (it is smooth) that is upsampled to ``size``."""
    return min(size, 64)


def _background_low(size: int, rng: np.random.Generator) -> np.ndarray:
    """(low, low, 3) float32 in [0, 1]: a dark plain colour or a smooth dark noise."""
    low = background_side(size)
    if rng.random() < 0.5:
        rgb = _hsv_to_rgb(np.array(rng.random()), np.array(0.5), np.array(rng.uniform(0.0, 0.12)))
        return np.ascontiguousarray(np.broadcast_to(rgb.astype(np.float32), (low, low, 3)))
    n1, n2 = _value_noise(low, rng), _value_noise(low, rng)
    return _hsv_to_rgb(rng.random() + 0.25 * n1, np.full_like(n1, rng.uniform(0.2, 0.7)),
                       0.05 + 0.35 * n2).astype(np.float32)


@functools.lru_cache(maxsize=16)
def upsample_tables(size: int, low: int):
    """Bilinear weights from ``low`` to ``size`` samples: i0 (size,) int32, w0, w1 (size,) float32."""
    x = np.linspace(0.0, low - 1.0, size)
    i0 = np.minimum(x.astype(np.int64), low - 2)
    w1 = (x - i0).astype(np.float32)
    w0 = np.float32(1.0) - w1
    tables = (i0.astype(np.int32), w0, w1)
    for arr in tables:
        arr.flags.writeable = False
    return tables


def upsample(low_rgb: np.ndarray, size: int) -> np.ndarray:
    """(low, low, 3) float32 -> (size, size, 3) float32: rows first, then columns, float32 steps
    in the order ``fractal_colour`` uses (``w0 * a + w1 * b``)."""
    i0, w0, w1 = upsample_tables(size, low_rgb.shape[0])
    rows = w0[:, None, None] * low_rgb[i0] + w1[:, None, None] * low_rgb[i0 + 1]   # (size, low, 3)
    return w0[None, :, None] * rows[:, i0] + w1[None, :, None] * rows[:, i0 + 1]


@functools.lru_cache(maxsize=1)
def log1p_table() -> np.ndarray:
    """log1p(0..MAX_COUNT) float64: the density of a count, one table for both renderers."""
    table = np.log1p(np.arange(MAX_COUNT + 1, dtype=np.float64))
    table.flags.writeable = False
    return table


def draw_colour(rng: np.random.Generator, size: int):
    """(base_hue, hue_span, saturation) and the (low, low, 3) float32 background, from ``rng``."""
    base_hue = rng.random()
    hue_span = rng.uniform(0.15, 0.6)
    saturation = rng.uniform(0.3, 1.0)
    return (float(base_hue), float(hue_span), float(saturation)), _background_low(size, rng)


def colourise(counts, col_sum, colour, bg_low, size: int) -> np.ndarray:
    """(size, size, 3) uint8 from the accumulation (the NumPy twin of ``fractal_colour``)."""
    base_hue, hue_span, saturation = colour
    hit_idx = np.flatnonzero(counts)
    cnt = counts[hit_idx]
    table = log1p_table()
    density = table[cnt] / table[counts.max()]
    mean_col = (col_sum[hit_idx] / cnt.astype(np.float64)) * (1.0 / COL_SCALE)
    fractal = _hsv_to_rgb(base_hue + hue_span * mean_col, saturation, 0.5 + 0.5 * density)
    out = upsample(bg_low, size).reshape(-1, 3)
    alpha = (0.6 + 0.4 * density)[:, None]
    out[hit_idx] = alpha * fractal + (1.0 - alpha) * out[hit_idx]   # float64, rounded to float32
    out = np.rint(out * np.float32(255.0))
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8).reshape(size, size, 3)


def render_fractal(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One (size, size, 3) uint8 fractal; systems are re-drawn from ``rng`` until non-degenerate."""
    for _ in range(MAX_ATTEMPTS):
        system = draw_system(rng)
        if system is None:
            continue
        xs, ys, cols = chaos_game(system)
        params = raster_params(*bounds(xs, ys), size)
        if params is None:
            continue
        counts, col_sum = accumulate(xs, ys, cols, params, size)
        if not coverage_ok(np.count_nonzero(counts), size):
            continue
        break
    else:  # pragma: no cover - practically unreachable
        raise RuntimeError("could not draw a non-degenerate fractal")
    colour, bg_low = draw_colour(rng, size)
    return colourise(counts, col_sum, colour, bg_low, size)


def _fractal_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index), _STREAM])))


def render_fractals(count: int, size: int = 256, seed: int = 0) -> np.ndarray:
    """``count`` fractals, (count, size, size, 3) uint8; image ``i`` depends only on (seed, i)."""
    count, size = int(count), int(size)
    if count < 0 or size < 8:
        raise ValueError(f"render_fractals needs count >= 0 and size >= 8, got {count}, {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        out[i] = render_fractal(_fractal_rng(seed, i), size)
    return out
