"""Natural images with no download: crops of the photographs scikit-learn ships.

``sklearn.datasets.load_sample_images()`` holds two real photographs (china.jpg, flower.jpg,
427x640). Random-resized crops of them give as many distinct, natural-looking training images as a
test, a benchmark or ``ipmix-dali show`` needs.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from ..atomic import atomic_write


@functools.lru_cache(maxsize=1)
def shipped_photographs():
    """The photographs shipped with scikit-learn, as uint8 (H, W, 3) arrays.

    On a machine without scikit-learn (the lent GPU machines), ``IPMIX_DALI_PHOTOS`` may name a
    folder holding copies of its ``china.jpg`` and ``flower.jpg`` (``bench/gpu_pass.sh`` carries
    them there).
    """
    import os

    folder = os.environ.get("IPMIX_DALI_PHOTOS")
    if folder:
        return tuple(np.ascontiguousarray(Image.open(os.path.join(folder, name)).convert("RGB"))
                     for name in ("china.jpg", "flower.jpg"))
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


def photo_like_image(rng: np.random.Generator, width: int = 500, height: int = 375) -> np.ndarray:
    """One natural-looking (height, width, 3) uint8 picture: a random crop of a shipped photograph
    (scale 0.2-1 of its area, random aspect), resized, flipped with p = 0.5, with a per-channel
    gain and a brightness shift, so that every picture is different but photographic."""
    photo = shipped_photographs()[int(rng.integers(2))]
    h, w = photo.shape[:2]
    ch = int(h * np.sqrt(rng.uniform(0.2, 1.0)))
    cw = min(w, int(ch * width / height * rng.uniform(0.8, 1.25)))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((width, height),
                                                                       Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    arr = arr * rng.uniform(0.8, 1.2, size=3).astype(np.float32) + np.float32(rng.uniform(-20, 20))
    return np.clip(arr, 0, 255).astype(np.uint8)


def write_jpeg_tree(root, classes: int = 4, per_class: int = 8, size=(500, 375), seed: int = 0,
                    quality: int = 90) -> str:
    """An ImageFolder tree of ImageNet-like JPEGs (``root/n0000000c/img_XXXX.JPEG``, about
    500x375, q90 like ImageNet's), deterministic per seed; files already there are kept."""
    import os

    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = os.path.join(str(root), f"n{c:08d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            picture = photo_like_image(rng, *size)  # drawn even when kept: same tree per seed
            path = os.path.join(folder, f"img_{i:04d}.JPEG")
            if not os.path.exists(path):
                with atomic_write(path) as f:
                    Image.fromarray(picture).save(f, format="JPEG", quality=quality)
    return str(root)
