"""The built-in mixing set: IFS fractals (:mod:`.fractals`, or :mod:`.fractals_gpu` on a GPU)
as an in-memory bank or written as files.

    bank = builtin_mixing_bank(count=16, side=256)     # rendered once per process, read-only
    write_fractal_set("fractals/", 1000, 256, seed=0, device="gpu")   # make-mixing-set
"""
from __future__ import annotations

import functools
import os

import numpy as np

from ..atomic import atomic_write
from .bank import MixingBank, bank_from_array, load_mixing_bank
from .fractals import _fractal_rng, render_fractal, render_fractals

__all__ = ["builtin_mixing_bank", "as_mixing_bank", "write_fractal_set"]


@functools.lru_cache(maxsize=8)
def _cached_fractals(count: int, side: int, seed: int) -> np.ndarray:
    images = render_fractals(count, side, seed)
    images.flags.writeable = False
    return images


def builtin_mixing_bank(count: int = 16, side: int = 256, seed: int = 0) -> MixingBank:
    """An in-memory bank of ``count`` built-in fractals (rendered once per process, read-only)."""
    if count < 1:
        raise ValueError(f"the built-in mixing set needs count >= 1, got {count}")
    images = _cached_fractals(int(count), int(side), int(seed))
    return bank_from_array(images, paths=[f"builtin:fractal:seed={seed}:{i}" for i in range(count)])


def as_mixing_bank(source, image_size: int) -> MixingBank:
    """The MixingBank the user-facing entry points (``augment``, the transforms, the DALI
    function) take for ``source``: None (16 built-in fractals), a MixingBank, a folder
    (pre-resized once, memory-mapped, cached) or a uint8 (M, T, T, 3) array. Pictures are
    ``mixing_side(image_size)`` on a side."""
    from ..config import mixing_side

    if source is None:
        return builtin_mixing_bank(count=16, side=mixing_side(image_size))
    if isinstance(source, MixingBank):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_mixing_bank(source, side=mixing_side(image_size))
    return bank_from_array(np.asarray(source))


def write_fractal_set(out_dir, count: int, size: int = 256, seed: int = 0, fmt: str = "png",
                      progress: bool = False, chunk: int | None = None, device: str = "cpu"):
    """Write fractals 0..count-1 of ``seed`` as ``fractal_<seed>_<index>.<fmt>`` files.

    ``device="gpu"`` renders each chunk with :func:`.fractals_gpu.render_fractals_gpu`
    (the same pixels, many fractals per kernel launch). Image i depends only on (seed, i), so an
    interrupted run resumes: files already present are kept and not rendered again. Each file is
    written to a temporary name and renamed. Returns (written, kept).
    """
    import sys

    from PIL import Image
    from tqdm import tqdm

    if count < 1 or size < 8:
        raise ValueError(f"need count >= 1 and size >= 8, got count={count} size={size}")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device == "gpu":
        from .fractals_gpu import default_chunk, render_fractals_gpu, require_gpu

        require_gpu()
        chunk = chunk or default_chunk(size)
    chunk = chunk or 32
    os.makedirs(out_dir, exist_ok=True)
    names = [os.path.join(out_dir, f"fractal_{seed}_{i:06d}.{fmt}") for i in range(count)]
    todo = [i for i, name in enumerate(names) if not os.path.exists(name)]
    bar = tqdm(total=len(todo), desc="fractals", unit="img", disable=not progress or not todo,
               file=sys.stderr)
    for start in range(0, len(todo), chunk):
        batch = todo[start:start + chunk]
        if device == "gpu":
            images = render_fractals_gpu(len(batch), size, seed, indices=batch)
        else:
            images = (render_fractal(_fractal_rng(seed, i), size) for i in batch)
        for i, image in zip(batch, images):
            with atomic_write(names[i]) as f:
                Image.fromarray(image).save(f, format="PNG" if fmt == "png" else "JPEG",
                                            quality=95)
        bar.update(len(batch))
    bar.close()
    return len(todo), count - len(todo)
