"""The built-in IFS fractals rendered on the GPU, many per launch (``kernels/fractal.cu``).

The pixels equal :func:`ipmix_dali.mixing.fractals.render_fractals` for the same (seed, index,
size): the host draws every per-fractal parameter from the same generator as the NumPy renderer
(maps, walk seed, colours, low-resolution background), the kernels do the walks, the
accumulation and the per-pixel colour with the NumPy renderer's arithmetic.

One round of :func:`render_indices` over the fractals still pending:

1. host: draw each pending fractal's next system (:func:`~ipmix_dali.mixing.fractals.draw_system`),
   :func:`pack_systems`;
2. ``fractal_walk_bounds`` + ``fractal_reduce_bounds``: the exact bounding box per fractal;
3. host: :func:`~ipmix_dali.mixing.fractals.raster_params` per box, :func:`pack_raster`;
4. ``fractal_raster``: hit counts and colour sums (integer atomics), hit pixels and max count;
5. host: the fractals covering enough pixels are accepted: their colours and backgrounds are
   drawn (:func:`~ipmix_dali.mixing.fractals.draw_colour`, :func:`pack_colour`) and
   ``fractal_colour`` writes their images; the others draw a new system in the next round.

The driver talks to the device the way the executors do: ``cupy`` arrays and the kernels of
:func:`ipmix_dali.kernels.build.get_function`, so CI runs it unchanged through the CuPy stand-in
with the kernel emulator. CuPy is imported only when used.
"""
from __future__ import annotations

import numpy as np

from ..device import require_gpu
from . import fractals as bm

__all__ = ["render_fractals_gpu", "render_indices", "pack_systems", "pack_raster", "pack_colour"]

KERNEL_FILE = "fractal.cu"
BLOCK = 256


# --- host-side packing (plain NumPy) ---------------------------------------------------------
def pack_systems(systems) -> dict:
    """Kernel arrays of a list of :class:`~ipmix_dali.mixing.fractals.IFSSystem`."""
    return {
        "nmaps": np.array([s.n for s in systems], np.int32),
        "cum": np.ascontiguousarray(np.stack([s.cum for s in systems]), np.float64),
        "coef": np.ascontiguousarray(np.stack([s.coef for s in systems]), np.float64),
        "start": np.ascontiguousarray(np.stack([s.start for s in systems]), np.float64),
        "wseed": np.array([s.walk_seed for s in systems], np.uint32),
    }


def pack_raster(params) -> dict:
    """``rparam`` (nf, 5) float64 and ``valid`` (nf,) int32 from raster_params results (or None)."""
    rparam = np.zeros((len(params), 5), np.float64)
    valid = np.zeros(len(params), np.int32)
    for k, p in enumerate(params):
        if p is not None:
            rparam[k] = p
            valid[k] = 1
    return {"rparam": rparam, "valid": valid}


def pack_colour(colours) -> dict:
    """``cparam`` (n, 3) float64 and ``bg`` (n, low, low, 3) float32 from draw_colour results."""
    return {"cparam": np.array([c for c, _ in colours], np.float64).reshape(len(colours), 3),
            "bg": np.ascontiguousarray(np.stack([b for _, b in colours]), np.float32)}


def _grid(n: int):
    return (max(1, (int(n) + BLOCK - 1) // BLOCK),)


def _launch(name, grid, block, args):
    from ..kernels.build import get_function

    get_function(KERNEL_FILE, name)(grid, block, args)


# --- the driver ------------------------------------------------------------------------------
def _next_system(rng, attempts, j):
    """The pending fractal's next system whose maps are not degenerate (counting attempts)."""
    while True:
        attempts[j] += 1
        if attempts[j] > bm.MAX_ATTEMPTS:  # pragma: no cover - practically unreachable
            raise RuntimeError("could not draw a non-degenerate fractal")
        system = bm.draw_system(rng)
        if system is not None:
            return system


def render_indices(indices, size: int = 256, seed: int = 0) -> np.ndarray:
    """Fractals ``indices`` of ``seed`` on the current CUDA device (CuPy, or its stand-in with
    the kernel emulator in CI): (len(indices), size, size, 3) uint8 on the host."""
    import cupy as xp

    indices = [int(i) for i in indices]
    n, size = len(indices), int(size)
    npix = size * size
    W, S, B = bm.WALKERS, bm.STEPS, bm.BURN_IN
    i32 = np.int32
    out = xp.zeros((n, size, size, 3), np.uint8)
    if n == 0:
        return xp.asnumpy(out)
    rngs = [bm._fractal_rng(seed, i) for i in indices]
    attempts = [0] * n
    low = bm.background_side(size)
    ui0, uw0, uw1 = (xp.asarray(t) for t in bm.upsample_tables(size, low))
    logt = xp.asarray(bm.log1p_table())
    pending = list(range(n))
    while pending:
        nf = len(pending)
        sysd = {k: xp.asarray(v) for k, v in
                pack_systems([_next_system(rngs[j], attempts, j) for j in pending]).items()}
        walk_args = (sysd["nmaps"], sysd["cum"], sysd["coef"], sysd["start"], sysd["wseed"])
        wbox = xp.zeros(nf * W * 4, np.float64)
        wbad = xp.zeros(nf * W, np.int32)
        _launch("fractal_walk_bounds", _grid(nf * W), (BLOCK,),
                       walk_args + (wbox, wbad, i32(nf), i32(W), i32(S), i32(B)))
        box = xp.zeros(nf * 4, np.float64)
        bad = xp.zeros(nf, np.int32)
        _launch("fractal_reduce_bounds", _grid(nf), (BLOCK,),
                       (wbox, wbad, box, bad, i32(nf), i32(W)))
        del wbox, wbad
        box_h = xp.asnumpy(box).reshape(nf, 4)
        bad_h = xp.asnumpy(bad)
        params = [bm.raster_params(box_h[k], bool(bad_h[k]), size) for k in range(nf)]
        rast = {k: xp.asarray(v) for k, v in pack_raster(params).items()}
        counts = xp.zeros(nf * npix, np.uint32)
        colsum = xp.zeros(nf * npix, np.uint64)
        hits = xp.zeros(nf, np.int32)
        maxc = xp.zeros(nf, np.int32)
        _launch("fractal_raster", _grid(nf * W), (BLOCK,),
                       walk_args + (rast["rparam"], rast["valid"], counts, colsum, hits, maxc,
                                    i32(nf), i32(W), i32(S), i32(B), i32(size)))
        hits_h = xp.asnumpy(hits)
        accepted = [k for k in range(nf)
                    if params[k] is not None and bm.coverage_ok(hits_h[k], size)]
        if accepted:
            col = pack_colour([bm.draw_colour(rngs[pending[k]], size) for k in accepted])
            src = xp.asarray(np.array(accepted, np.int32))
            dst = xp.asarray(np.array([pending[k] for k in accepted], np.int32))
            na = len(accepted)
            _launch("fractal_colour", _grid(na * npix), (BLOCK,),
                           (counts, colsum, maxc, src, dst, xp.asarray(col["cparam"]),
                            xp.asarray(col["bg"]), ui0, uw0, uw1, logt, out, i32(na),
                            i32(size), i32(low)))
        done = set(accepted)
        pending = [pending[k] for k in range(nf) if k not in done]
    return xp.asnumpy(out)


# --- GPU entry points ------------------------------------------------------------------------
def default_chunk(size: int) -> int:
    """Fractals per launch: about 256 MiB of accumulation buffers (12 bytes per pixel)."""
    return int(max(1, min(512, (256 << 20) // (12 * int(size) * int(size)))))


def render_fractals_gpu(count: int, size: int = 256, seed: int = 0, indices=None,
                        chunk: int | None = None) -> np.ndarray:
    """``count`` fractals on the GPU, (count, size, size, 3) uint8, equal to ``render_fractals``.

    ``indices`` (optional) renders those fractal indices of ``seed`` instead of 0..count-1.
    """
    count, size = int(count), int(size)
    if count < 0 or size < 8:
        raise ValueError(f"render_fractals_gpu needs count >= 0 and size >= 8, got {count}, {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    idx = list(range(count)) if indices is None else [int(i) for i in indices]
    require_gpu()
    chunk = default_chunk(size) if chunk is None else max(1, int(chunk))
    out = np.empty((len(idx), size, size, 3), np.uint8)
    for lo in range(0, len(idx), chunk):
        out[lo:lo + chunk] = render_indices(idx[lo:lo + chunk], size, seed)
    return out
