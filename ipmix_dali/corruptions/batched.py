"""Whole-batch corruptions on NumPy or CuPy arrays: the GPU path, and its CPU twin.

For the corruptions whose work is elementwise, a filter or a zoom (noise, contrast, brightness,
saturate, Gaussian and defocus blur, zoom blur, fog), one function runs the batch with an
array module ``xp`` and its ``ndimage`` (NumPy + SciPy on the CPU, CuPy + cupyx on the GPU). The
random draws are the per-image generators of :func:`ipmix_dali.corruptions.corrupt`, drawn on
the host in the same order and sent to the device, so a GPU batch, a CPU batch and the images
one by one get the same noise. The other corruptions (sequential loops, OpenCV and PIL calls)
run per image on the host; ``corrupt(..., device="gpu")`` copies those images there and back.
"""
from __future__ import annotations

import numpy as np

from .ops import _disk, hsv2rgb, plasma_fractal, rgb2hsv
from .params import ALL, PRESETS

__all__ = ["BATCHED", "corrupt_batched", "array_modules", "gpu_speed"]

BATCHED = ("gaussian_noise", "impulse_noise", "speckle_noise", "contrast", "brightness",
           "saturate", "gaussian_blur", "defocus_blur", "zoom_blur", "fog")


def array_modules(device: str):
    """(xp, ndimage) for "cpu" (numpy, scipy.ndimage) or "gpu" (cupy, cupyx.scipy.ndimage)."""
    if device == "gpu":
        import cupy
        import cupyx.scipy.ndimage as ndi

        return cupy, ndi
    from scipy import ndimage

    return np, ndimage


def _generators(seed, indices, name, severity):
    from . import image_rng

    return [image_rng(seed, i, name, severity) for i in indices]


def corrupt_batched(images, name: str, severity: int, seed: int = 0, indices=None,
                    preset: str = "imagenet", device: str = "cpu"):
    """``name`` at ``severity`` on a uint8 (N, H, W, 3) batch of ``device`` arrays; returns the
    same kind of array. Only for the corruptions in :data:`BATCHED`."""
    if name not in BATCHED:
        raise ValueError(f"{name} has no batched version: use ipmix_dali.corruptions.corrupt")
    xp, ndi = array_modules(device)
    n = images.shape[0]
    indices = range(n) if indices is None else indices
    c = PRESETS[preset][name][int(severity) - 1]
    x = images.astype(xp.float64) / 255.0
    shape = tuple(images.shape[1:])
    if name in ("gaussian_noise", "speckle_noise"):
        noise = xp.asarray(np.stack([g.normal(size=shape, scale=c)
                                     for g in _generators(seed, indices, name, severity)]))
        out = x + noise if name == "gaussian_noise" else x + x * noise
        out = xp.clip(out, 0, 1) * 255
    elif name == "impulse_noise":
        draws = [(g.random(shape) < c, g.random(shape) < 0.5)
                 for g in _generators(seed, indices, name, severity)]
        hit = xp.asarray(np.stack([d[0] for d in draws]))
        salt = xp.asarray(np.stack([d[1] for d in draws]))
        out = xp.where(hit & salt, 1.0, xp.where(hit & ~salt, 0.0, x))
        out = xp.clip(out, 0, 1) * 255
    elif name == "contrast":
        means = x.mean(axis=(1, 2), keepdims=True)
        out = xp.clip((x - means) * c + means, 0, 1) * 255
    elif name in ("brightness", "saturate"):
        hsv = rgb2hsv(x, xp)
        if name == "brightness":
            hsv[..., 2] = xp.clip(hsv[..., 2] + c, 0, 1)
        else:
            hsv[..., 1] = xp.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
        out = xp.clip(hsv2rgb(hsv, xp), 0, 1) * 255
    elif name == "gaussian_blur":
        out = xp.clip(ndi.gaussian_filter(x, sigma=(0, c, c, 0), mode="nearest", truncate=4.0),
                      0, 1) * 255
    elif name == "defocus_blur":  # the anti-aliased disk, correlated with reflect-101 borders
        kernel = xp.asarray(_disk(*c).astype(np.float64))[None, :, :, None]
        out = xp.clip(ndi.correlate(x, kernel, mode="mirror"), 0, 1) * 255
    elif name == "zoom_blur":  # the mean of the image and its centred zooms, in float32
        xf = x.astype(xp.float32)
        h, w = shape[:2]
        acc = xp.zeros_like(xf)
        for factor in c:
            ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
            top, left = (h - ch) // 2, (w - cw) // 2
            z = ndi.zoom(xf[:, top:top + ch, left:left + cw], (1, factor, factor, 1), order=1)
            ty, tx = (z.shape[1] - h) // 2, (z.shape[2] - w) // 2
            layer = z[:, ty:ty + h, tx:tx + w]
            acc[:, :layer.shape[1], :layer.shape[2]] += layer
        out = xp.clip((xf + acc) / (len(c) + 1), 0, 1) * 255
    else:  # fog: a diamond-square plasma per image (drawn on the host) over the whole image
        h, w = shape[:2]
        size = 1 << max(1, (max(h, w) - 1).bit_length())
        plasma = xp.asarray(np.stack([plasma_fractal(g, size, c[1])[:h, :w]
                                      for g in _generators(seed, indices, name, severity)]))
        top = x.max(axis=(1, 2, 3), keepdims=True)
        out = xp.clip((x + c[0] * plasma[..., None]) * top / (top + c[0]), 0, 1) * 255
    return out.astype(xp.uint8)


def gpu_speed(images: np.ndarray, names=ALL, severity: int = 3, repeats: int = 3) -> dict:
    """ms per image of ``corrupt(..., device="gpu")`` on a batch (after one warm-up call)."""
    import time

    import cupy

    from . import corrupt

    x = cupy.asarray(images)
    out = {}
    for name in names:
        corrupt(x, name, severity, device="gpu")
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            corrupt(x, name, severity, device="gpu")
        cupy.cuda.Device().synchronize()
        out[name] = 1000 * (time.perf_counter() - t0) / (repeats * len(images))
    return out
