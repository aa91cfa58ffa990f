"""Whole-batch corruptions on NumPy or CuPy arrays: the GPU path, and its CPU twin.

Every corruption runs on a batch with an array module ``xp`` and its ``ndimage`` (NumPy + SciPy
on the CPU, CuPy + cupyx on the GPU), through the same functions as the per-image corruptions
of ``ops.py`` where those are written for batches. The random draws are the per-image
generators of :func:`ipmix_dali.corruptions.corrupt`, drawn on the host in the same order and
sent to the device, so a GPU batch, a CPU batch and the images one by one get the same numbers.

What stays on the host (see :data:`HOST_WORK`): the draws themselves; shot noise's Poisson
draw, which needs the image (the batch is copied down for it); spatter's liquid layer (OpenCV's
Canny edges, distance transform and histogram equalisation: it does not depend on the image, so
only the blend runs on the batch); frost's crystal walks (summed into a canvas, then blurred on
the batch); and JPEG, which must be libjpeg's to give the reference's pixels.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .params import ALL, PRESETS

__all__ = ["HOST_WORK", "corrupt_batched", "array_modules", "gpu_speed"]

HOST_WORK = {
    "shot_noise": "the Poisson draw (its rate is the image)",
    "spatter": "the liquid layer (OpenCV), which does not depend on the image",
    "frost": "the crystal walks, summed into a canvas",
    "jpeg_compression": "everything: libjpeg through PIL, image by image",
}


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


def _to_host(xp, a):
    return a if xp is np else xp.asnumpy(a)


def corrupt_batched(images, name: str, severity: int, seed: int = 0, indices=None,
                    preset: str = "imagenet", device: str = "cpu"):
    """``name`` at ``severity`` on a uint8 (N, H, W, 3) batch of ``device`` arrays; returns the
    same kind of array, with the pixels of the per-image corruptions."""
    if name not in ALL:
        raise ValueError(f"unknown corruption {name!r}: choose from {', '.join(ALL)}")
    xp, ndi = array_modules(device)
    n = images.shape[0]
    indices = range(n) if indices is None else indices
    gens = _generators(seed, indices, name, severity)
    c = PRESETS[preset][name][int(severity) - 1]
    out = _OPS[name](images, c, gens, xp, ndi)
    return out.astype(xp.uint8)


def _f64(images):
    return images.astype(np.float64) / 255.0


def _gaussian_or_speckle(images, c, gens, xp, ndi, speckle):
    x = _f64(images)
    noise = xp.asarray(np.stack([g.normal(size=x.shape[1:], scale=c) for g in gens]))
    return xp.clip(x + x * noise if speckle else x + noise, 0, 1) * 255


def _shot_noise(images, c, gens, xp, ndi):
    host = _f64(_to_host(xp, images))
    counts = xp.asarray(np.stack([g.poisson(img * c) for g, img in zip(gens, host)]))
    return xp.clip(counts / float(c), 0, 1) * 255


def _impulse_noise(images, c, gens, xp, ndi):
    x = _f64(images)
    draws = [(g.random(x.shape[1:]) < c, g.random(x.shape[1:]) < 0.5) for g in gens]
    hit = xp.asarray(np.stack([d[0] for d in draws]))
    salt = xp.asarray(np.stack([d[1] for d in draws]))
    return xp.clip(xp.where(hit & salt, 1.0, xp.where(hit & ~salt, 0.0, x)), 0, 1) * 255


def _contrast(images, c, gens, xp, ndi):
    x = _f64(images)
    means = x.mean(axis=(1, 2), keepdims=True)
    return xp.clip((x - means) * c + means, 0, 1) * 255


def _hsv_shift(images, c, gens, xp, ndi, field):
    hsv = ops.rgb2hsv(_f64(images), xp)
    if field == 2:  # brightness
        hsv[..., 2] = xp.clip(hsv[..., 2] + c, 0, 1)
    else:  # saturate
        hsv[..., 1] = xp.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return xp.clip(ops.hsv2rgb(hsv, xp), 0, 1) * 255


def _gaussian_blur(images, c, gens, xp, ndi):
    return xp.clip(ops.blur_batch(_f64(images), c, ndi), 0, 1) * 255


def _defocus_blur(images, c, gens, xp, ndi):  # the anti-aliased disk, reflect-101 borders
    kernel = xp.asarray(ops._disk(*c).astype(np.float64))[None, :, :, None]
    return xp.clip(ndi.correlate(_f64(images), kernel, mode="mirror"), 0, 1) * 255


def _glass_blur(images, c, gens, xp, ndi):
    sigma, delta, iterations = c
    n, h, w, channels = images.shape
    y = (ops.blur_batch(_f64(images), sigma, ndi) * 255).astype(xp.uint8)
    offsets = xp.asarray(np.stack([ops.glass_offsets(g, h, w, delta, iterations) for g in gens]))
    sources = ops.glass_sources(offsets, h, w, delta, xp)
    y = xp.take_along_axis(y.reshape(n, h * w, channels), sources[..., None], 1)
    return xp.clip(ops.blur_batch(y.reshape(images.shape) / 255.0, sigma, ndi), 0, 1) * 255


def _motion_blur(images, c, gens, xp, ndi):
    angles = [g.uniform(-45, 45) for g in gens]
    return xp.clip(ops.motion_blur_batch(images, c[0], c[1], angles, xp), 0, 255)


def _zoom_blur(images, c, gens, xp, ndi):
    return ops.zoom_blur_batch(_f64(images).astype(xp.float32), c, xp, ndi)


def _snow(images, c, gens, xp, ndi):
    h, w = images.shape[1:3]
    normals, angles = [], []
    for g in gens:  # the layer's draws, then its motion angle, as the per-image snow draws them
        normals.append(g.normal(size=(h, w), loc=c[0], scale=c[1]))
        angles.append(g.uniform(-135, -45))
    x = images.astype(xp.float32) / 255.0
    return ops.snow_batch(x, xp.asarray(np.stack(normals)), angles, c, xp, ndi)


def _frost(images, c, gens, xp, ndi):
    h, w = images.shape[1:3]
    canvas, haze, grain = (xp.asarray(np.stack(a))
                           for a in zip(*(ops.frost_draws(g, h, w) for g in gens)))
    texture = ops.frost_layers(canvas, haze, grain, xp, ndi).astype(xp.float64)
    return xp.clip(c[0] * images.astype(xp.float64) + c[1] * texture, 0, 255)


def _fog(images, c, gens, xp, ndi):  # a diamond-square plasma per image, drawn on the host
    x = _f64(images)
    h, w = images.shape[1:3]
    size = 1 << max(1, (max(h, w) - 1).bit_length())
    plasma = xp.asarray(np.stack([ops.plasma_fractal(g, size, c[1])[:h, :w] for g in gens]))
    top = x.max(axis=(1, 2, 3), keepdims=True)
    return xp.clip((x + c[0] * plasma[..., None]) * top / (top + c[0]), 0, 1) * 255


def _spatter(images, c, gens, xp, ndi):
    h, w = images.shape[1:3]
    keep, add = (xp.asarray(np.stack(a))
                 for a in zip(*(ops.spatter_layers(g, h, w, c) for g in gens)))
    x = images.astype(xp.float32) / 255.0
    return xp.clip(x * keep + add, 0, 1) * 255


def _elastic_transform(images, c, gens, xp, ndi):
    from .cv_warp import warp_affine

    h, w = images.shape[1:3]
    matrices, noise_x, noise_y = (xp.asarray(np.stack(a))
                                  for a in zip(*(ops.elastic_draws(g, h, w, c) for g in gens)))
    x = images.astype(xp.float32) / 255.0
    return ops.elastic_batch(x, matrices, noise_x, noise_y, c, xp, ndi,
                             warp=lambda a, m: warp_affine(a, m, xp))


def _pixelate(images, c, gens, xp, ndi):
    from .pil_resample import box_resize

    h, w = images.shape[1:3]
    small = box_resize(images, (int(w * c), int(h * c)), xp)
    return box_resize(small, (w, h), xp)


def _jpeg_compression(images, c, gens, xp, ndi):
    host = _to_host(xp, images)
    return xp.asarray(np.stack([ops.jpeg_compression(img, c, None) for img in host]))


_OPS = {
    "gaussian_noise": lambda *a: _gaussian_or_speckle(*a, speckle=False),
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": lambda *a: _gaussian_or_speckle(*a, speckle=True),
    "contrast": _contrast,
    "brightness": lambda *a: _hsv_shift(*a, field=2),
    "saturate": lambda *a: _hsv_shift(*a, field=1),
    "gaussian_blur": _gaussian_blur,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "spatter": _spatter,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
assert set(_OPS) == set(ALL)


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
