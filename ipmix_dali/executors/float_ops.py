"""The float stages of the reference code, in NumPy float32 with the reference's operation order.

The reference runs these in torch on float32 CPU tensors: ``ToTensor`` (x / 255), the pixel-mixing
ops of docs/augmentations.md §1.4, ``Normalize`` ((x - mean) / std), the Dirichlet/Beta combination, and
``ToPILImage``'s ``mul(255).byte()`` cast. Elementwise +, -, *, / are IEEE-exact in both libraries,
so these functions reproduce torch bit for bit, except ``**`` (multiply), where NumPy's and torch's
``pow`` may differ in the last ulp (measured in ``tests/test_fidelity_torch.py``, see
docs/fidelity.md). Arrays may have any layout; channels last is assumed only for mean/std.
"""
from __future__ import annotations

import numpy as np

_F255 = np.float32(255)
_ONE = np.float32(1)
_TWO = np.float32(2)
_TINY = np.float32(1e-37)  # the reference's img2.clip(1e-37)
_WRAP_LIMIT = np.float32(2.0 ** 31)
CUDA_POW_ULP = 2          # CUDA Math API: double pow's maximum error, in double ulp
GPU_MISMATCH_SHARE = 1e-3  # at most this share of output values may differ GPU vs CPU


def to_float(images_u8: np.ndarray) -> np.ndarray:
    """``ToTensor``: uint8 -> float32 / 255 (correctly rounded division, like torch)."""
    return images_u8.astype(np.float32) / _F255


def normalize(x: np.ndarray, mean, std) -> np.ndarray:
    """``Normalize``: (x - mean) / std per channel (last axis), float32, in a new array.

    The per-channel constants are tiled along a whole image row so that NumPy's inner loops run
    over W * 3 values instead of 3 (3-4x faster); every element sees the same two float32 ops.
    """
    x = np.asarray(x, dtype=np.float32)
    c = x.shape[-1]
    row = x.shape[-2] * c if x.ndim >= 2 else c
    mean_row = np.tile(np.asarray(mean, dtype=np.float32), row // c)
    std_row = np.tile(np.asarray(std, dtype=np.float32), row // c)
    out = np.subtract(x.reshape(-1, row), mean_row)
    out /= std_row
    return out.reshape(x.shape)


def normalize_u8(images_u8: np.ndarray, mean, std) -> np.ndarray:
    """``Normalize(ToTensor(x))`` of uint8 (..., 3) images, bit-identical to the two steps."""
    x = images_u8.astype(np.float32)
    x /= _F255
    return normalize(x, mean, std)


def mix_add(x: np.ndarray, y: np.ndarray, a, b) -> np.ndarray:
    """add: x, y mapped to [-1, 1]; (a*x' + b*y' + 1) / 2. a, b broadcast (float32)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    x2 = x * _TWO - _ONE
    y2 = y * _TWO - _ONE
    return (a * x2 + b * y2 + _ONE) / _TWO


def mix_multiply(x: np.ndarray, y: np.ndarray, a, b) -> np.ndarray:
    """multiply: ((2x)^a * max(2y, 1e-37)^b) / 2 (the clamp after the x2, as in the reference).

    Each power is evaluated in float64 and rounded to float32 (the correctly rounded value in
    practice), then the product and the halving run in float32 as in the reference. torch's
    vectorised float32 pow differs from it by <= 3 ulp. The GPU kernels compute
    ``(float)pow((double)x, (double)a)`` too, but CUDA's double ``pow`` is specified to within
    :data:`CUDA_POW_ULP` ulp (CUDA Math API), not correctly rounded, while glibc's (NumPy's, and
    the kernel emulator's) is: the float32 results agree except where the double power lies
    within 2 double ulp of a float32 rounding boundary (about 2^-28 of values), and then differ
    by 1 float32 ulp. Through IPMix's uint8 cast such a value moves by at most one level; the
    documented GPU-vs-CPU tolerance (docs/gpu.md, asserted by tests/test_api.py on a GPU) is
    :data:`GPU_MISMATCH_SHARE` of the values, each within one uint8 level after normalisation
    (the ``gpu_close`` fixture of the GPU tests).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        pa = np.power((x * _TWO).astype(np.float64), a).astype(np.float32)
        pb = np.power(np.maximum(y * _TWO, _TINY).astype(np.float64), b).astype(np.float32)
        return (pa * pb) / _TWO


def pow_tables(exponents, clamp: bool) -> np.ndarray:
    """(r, 256) float32: the power ``mix_multiply`` computes for each uint8 value v, per exponent.

    For an operand that is ``to_float`` of uint8 data, ``(2x)^a`` (clamp=False) or
    ``max(2y, 1e-37)^b`` (clamp=True) takes only 256 values; looking them up gives the same
    floats as evaluating ``pow`` per pixel, about 3x faster on a full image.
    """
    base = to_float(np.arange(256, dtype=np.uint8)) * _TWO
    if clamp:
        base = np.maximum(base, _TINY)
    e = np.asarray(exponents, dtype=np.float32).astype(np.float64).reshape(-1, 1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return np.power(base.astype(np.float64)[None, :], e).astype(np.float32)


def mix_multiply_tables(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """The last two float32 steps of ``mix_multiply`` given both powers: (pa * pb) / 2."""
    out = pa * pb
    out /= _TWO
    return out


def mix_select(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """random_pixels / random_elems: ``mask * x + (1 - mask) * y`` is exactly x where the mask
    holds and y elsewhere (the other term is +0)."""
    return np.where(mask, x, y).astype(np.float32, copy=False)


def to_uint8_wrap(c: np.ndarray) -> np.ndarray:
    """``ToPILImage`` on a float tensor: ``mul(255).byte()``, the reference's (IPMix) behaviour.

    v = c * 255 in float32, truncated toward zero, low 8 bits kept (-0.05 -> 244, 1.1 -> 24).
    Non-finite values give 0, and so does |v| >= 2**31: float32 values that large are multiples
    of 256, so torch's int32 and int64 paths both keep a low byte of 0 there.
    """
    v = c.astype(np.float32, copy=False) * _F255
    with np.errstate(invalid="ignore"):
        ok = np.abs(v) < _WRAP_LIMIT  # False for inf and nan
    t = np.where(ok, v, np.float32(0)).astype(np.int64)
    return (t & 0xFF).astype(np.uint8)


def to_uint8_clip(c: np.ndarray) -> np.ndarray:
    """The fixed behaviour (``overflow="clip"``): trunc(clamp(c * 255, 0, 255)); nan -> 0."""
    v = c.astype(np.float32, copy=False) * _F255
    v = np.nan_to_num(v, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(v, 0, 255).astype(np.uint8)


def clip01(x: np.ndarray) -> np.ndarray:
    """``torch.clip(x, 0, 1)`` (PixMix and LayerMix, after every blend)."""
    return np.clip(x, np.float32(0), np.float32(1)).astype(np.float32, copy=False)


def combine(clean_norm: np.ndarray, chains_norm, weights, m) -> np.ndarray:
    """AugMix/IPMix's final mix: ``(1 - m) * pre(x) + m * sum_i w_i * pre(y_i)``.

    The sum starts from zeros and adds the chains in order (``mix += w_i * pre(y_i)``), float32.
    ``chains_norm`` is a sequence of normalised chain images; weights/m broadcast against them.
    """
    m = np.asarray(m, dtype=np.float32)
    mix = np.zeros_like(clean_norm)
    for w, y in zip(weights, chains_norm):
        mix = mix + np.asarray(w, dtype=np.float32) * y
    return (_ONE - m) * clean_norm + m * mix
