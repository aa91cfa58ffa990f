"""``ipmix_dali.augment``: the augmentation on arrays, for users without DALI.

    views = augment(images, bank, method="ipmix", seed=0, iteration=step)

NumPy arrays (and CPU torch tensors) run on the NumPy executor; CuPy arrays and CUDA torch
tensors run on the CuPy executor, zero-copy through DLPack, on the device they live on and (torch)
on the caller's current stream; the mixing bank stays resident on that GPU and is cropped there.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .augmenter import Augmenter
from .config import MIXING_METHODS, make_config
from .device import on_device


def _kind(images):
    mod = type(images).__module__
    if mod.startswith("torch"):
        return "torch-cuda" if images.is_cuda else "torch-cpu"
    if mod.startswith("cupy"):
        return "cupy"
    if isinstance(images, np.ndarray):
        return "numpy"
    raise TypeError(f"images must be a NumPy or CuPy array or a torch tensor, got {type(images)}")


def augment(images, mixing_bank=None, method: str = "ipmix", preset: str = "imagenet",
            seed: int = 0, shard: int = 0, epoch: int = 0, iteration: int = 0, jsd: bool = False,
            executor: str | None = None, config=None, **options):
    """Augment a batch of uint8 images (N, S, S, 3), S = the preset's image size.

    Args:
        images: uint8 NHWC batch: numpy / cupy array or torch tensor (CPU or CUDA).
        mixing_bank: a :class:`~ipmix_dali.mixing.bank.MixingBank`, a folder, a uint8
            (M, T, T, 3) array of square pictures (T >= S), or None for the built-in fractal set
            (methods that mix); see :func:`ipmix_dali.mixing.as_mixing_bank`.
        method, preset, options: see :func:`ipmix_dali.config.make_config`.
        seed, shard, epoch, iteration: the plan's key; the same key gives the same pixels.
        jsd: return (clean, view1, view2) instead of one view.
        executor: "numpy", "cupy" or "reference"; default from the array type.
        config: a config from ``make_config`` (then method, preset, jsd and options are its).

    Returns:
        Normalised float32 NHWC views of the input's kind (a tuple of three with ``jsd``).
    """
    from .executors import get_executor
    from .mixing import as_mixing_bank

    kind = _kind(images)
    executor = executor or ("cupy" if kind in ("cupy", "torch-cuda") else "numpy")
    cfg = config if config is not None else make_config(method, preset, jsd=jsd, **options)
    jsd = cfg.jsd
    if kind == "torch-cpu":
        host = images.numpy()
    elif kind == "torch-cuda":
        import cupy

        host = cupy.from_dlpack(images)
    else:
        host = images
    if host.dtype != np.uint8 or host.ndim != 4 or host.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, S, S, 3), got {host.dtype} {tuple(host.shape)}")

    if executor != "cupy" and kind in ("cupy", "torch-cuda"):
        raise ValueError(f"executor {executor!r} runs on the CPU: pass host arrays or "
                         f"executor='cupy'")
    bank = as_mixing_bank(mixing_bank, cfg.image_size) if cfg.method in MIXING_METHODS else None
    device_id, stream = None, contextlib.nullcontext()
    if kind == "cupy":
        device_id = host.device.id
    elif kind == "torch-cuda":  # on the caller's torch stream, as the docstring promises
        import torch

        from .device import cupy_stream

        device_id = images.device.index
        stream = cupy_stream(torch.cuda.current_stream(images.device))
    with on_device(device_id), stream:
        # On the GPU the bank stays resident on the images' device and is cropped there.
        aug = Augmenter(cfg, bank, get_executor(executor),
                        "gpu" if executor == "cupy" else "cpu", device_id)
        out = aug.views(host, aug.plan((seed, shard, epoch, iteration), host.shape[0]))

    def back(x):
        if kind == "torch-cuda":
            import torch

            return torch.from_dlpack(x)
        if kind == "torch-cpu":
            import torch

            return torch.from_numpy(np.ascontiguousarray(x))
        return x

    return tuple(back(v) for v in out) if jsd else back(out[0])
