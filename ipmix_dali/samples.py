"""Natural images with no download: crops of the photographs scikit-learn ships.

``sklearn.datasets.load_sample_images()`` holds two real photographs (china.jpg, flower.jpg,
427x640). Random-resized crops of them give as many distinct, natural-looking training images as a
test, a benchmark or ``ipmix-dali show`` needs.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image


@functools.lru_cache(maxsize=1)
def shipped_photographs():
    """The photographs shipped with scikit-learn, as uint8 (H, W, 3) arrays."""
    from sklearn.datasets import load_sample_images

    return tuple(np.ascontiguousarray(img) for img in load_sample_images().images)


def sample_photos(n: int, size: int = 224, seed: int = 0, min_scale: float = 0.08) -> np.ndarray:
    """``n`` RandomResizedCrop-style crops (size x size, uint8) of the shipped photographs.

    Scale in [min_scale, 1] of the photo's area, aspect ratio in [3/4, 4/3], bilinear resize,
    horizontal flip with p = 0.5. Deterministic per seed.
    """
    rng = np.random.default_rng(seed)
    photos = shipped_photographs()
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        for _ in range(10):
            area = h * w * rng.uniform(min_scale, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw = ch = min(h, w)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(photo[top:top + ch, left:left + cw]).resize(
            (size, size), Image.BILINEAR)
        arr = np.asarray(crop)
        out[i] = arr[:, ::-1] if rng.random() < 0.5 else arr
    return out
