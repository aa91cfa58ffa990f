"""Counter-based random masks of ``random_pixels`` / ``random_elems``.

The reference draws ``torch.rand(...) < torch.rand([])`` inside the op. A plan cannot hold every
mask, so it holds the threshold p and a 32-bit seed per mixing step, and each mask element is
``u(seed, index) < p`` with ``u`` a stateless hash of (seed, element index). The same function is
written in CUDA (``kernels/common.cuh``); both executors therefore draw identical masks.

Index layout (patch-local, row-major): random_pixels uses ``y * w + x`` (one value per pixel,
shared by the channels); random_elems uses ``(c * h + y) * w + x`` (CHW order, like the reference).
"""
from __future__ import annotations

import numpy as np

_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_GOLDEN = np.uint32(0x9E3779B9)


def _mix32(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer finaliser (xorshift-multiply, 'lowbias32' constants)."""
    x = x ^ (x >> np.uint32(16))
    x = x * _M1
    x = x ^ (x >> np.uint32(15))
    x = x * _M2
    x = x ^ (x >> np.uint32(16))
    return x


def uniform_from_hash(seed, index) -> np.ndarray:
    """float32 uniforms in [0, 1) with 24 random bits: ``(hash(seed, index) >> 8) * 2**-24``."""
    with np.errstate(over="ignore"):
        s = _mix32(np.asarray(seed, dtype=np.uint32) ^ _GOLDEN)
        h = _mix32(np.asarray(index, dtype=np.uint32) ^ s)
        h = _mix32(h + s)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)


def pixel_mask(seed: int, p: float, h: int, w: int) -> np.ndarray:
    """random_pixels mask, shape (h, w), bool."""
    idx = np.arange(h * w, dtype=np.uint32).reshape(h, w)
    return uniform_from_hash(np.uint32(seed), idx) < np.float32(p)


def elem_mask(seed: int, p: float, h: int, w: int, c: int = 3) -> np.ndarray:
    """random_elems mask, returned as (h, w, c) bool with element index (c * h + y) * w + x."""
    idx = np.arange(c * h * w, dtype=np.uint32).reshape(c, h, w)
    return np.moveaxis(uniform_from_hash(np.uint32(seed), idx) < np.float32(p), 0, -1)
