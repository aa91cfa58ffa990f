"""ImageNet-C-style corruptions: the 15 standard ones and the 4 extras, severities 1-5.

    from ipmix_dali.corruptions import corrupt
    out = corrupt(images_uint8_nhwc, "glass_blur", severity=3, seed=0)   # (N, H, W, 3) uint8

Hendrycks' formulas and parameters (``params.py``: ImageNet for 224 px, CIFAR for 32 px; the
preset follows the image size unless given). Image ``i`` is corrupted with its own generator
``numpy.random.default_rng([seed, index_i, corruption, severity])``, so any image can be
re-made alone and a batch gives the same pixels as its images one by one. Results are
truncated to uint8 like the generators. These are ImageNet-C-*style* images: the canonical
ImageNet-C files (with their unseeded draws and frost photographs) are the ones to report.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .ops import OPS
from .params import ALL, EXTRA, PRESETS, STANDARD

__all__ = ["corrupt", "corrupt_one", "image_rng", "ALL", "STANDARD", "EXTRA", "preset_for"]


def preset_for(size: int) -> str:
    """"cifar" for images up to 64 px, "imagenet" above (the two parameter sets)."""
    return "cifar" if size <= 64 else "imagenet"


def image_rng(seed: int, index: int, name: str, severity: int) -> np.random.Generator:
    """The generator of image ``index``'s ``name`` at ``severity`` (every path draws from it)."""
    if name not in ALL:
        raise ValueError(f"unknown corruption {name!r}: choose from {', '.join(ALL)}")
    return np.random.default_rng([int(seed), int(index), ALL.index(name) + 1, int(severity)])


def corrupt_one(image: np.ndarray, name: str, severity: int, rng: np.random.Generator,
                preset: str = "imagenet") -> np.ndarray:
    if name not in OPS:
        raise ValueError(f"unknown corruption {name!r}: choose from {', '.join(ALL)}")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be 1-5, got {severity}")
    c = PRESETS[preset][name][int(severity) - 1]
    return np.uint8(OPS[name](np.asarray(image, np.uint8), c, rng))


def corrupt(images, name: str, severity: int, seed: int = 0,
            indices: Optional[Sequence[int]] = None, preset: Optional[str] = None,
            device: str = "cpu"):
    """Corrupt a uint8 (N, H, W, 3) batch (or one (H, W, 3) image).

    ``indices`` (default 0..N-1) are the images' ids in the dataset: with ``seed`` they key the
    per-image generators. ``device="gpu"`` takes and returns CuPy arrays and corrupts the whole
    batch there (``batched.py``: same draws as here; what stays on the host is listed in
    :data:`~.batched.HOST_WORK`).
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device == "cpu":
        images = np.asarray(images)
    single = images.ndim == 3
    if single:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if name not in ALL:
        raise ValueError(f"unknown corruption {name!r}: choose from {', '.join(ALL)}")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be 1-5, got {severity}")
    preset = preset or preset_for(min(images.shape[1:3]))
    if preset not in PRESETS:
        raise ValueError(f"preset must be 'imagenet' or 'cifar', got {preset!r}")
    if device == "gpu":
        import cupy

        from .batched import corrupt_batched

        out = corrupt_batched(cupy.ascontiguousarray(images), name, severity, seed, indices,
                              preset, device="gpu")
    else:
        indices = range(len(images)) if indices is None else indices
        out = np.empty_like(images)
        for k, (img, idx) in enumerate(zip(images, indices)):
            out[k] = corrupt_one(img, name, severity, image_rng(seed, idx, name, severity),
                                 preset)
    return out[0] if single else out
