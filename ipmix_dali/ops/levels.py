"""Level helpers shared by AugMix, PixMix and IPMix (docs/augmentations.md §1.2), vectorised for plans.

The reference draws its level U(0.1, severity) (``sample_level``) again for every op
application; so do the samplers, one draw per op slot (``ops.table.sample_ops``). Integer parameters truncate toward zero exactly like ``int(level * maxval / 10)``.
"""
from __future__ import annotations

import numpy as np


def int_parameter(level, maxval):
    """``int(level * maxval / 10)``: evaluated left to right in float64, truncated toward zero."""
    return np.trunc(np.asarray(level, dtype=np.float64) * maxval / 10)


def float_parameter(level, maxval):
    """``float(level) * maxval / 10.``"""
    return np.asarray(level, dtype=np.float64) * maxval / 10.0


def get_ab(rng: np.random.Generator, beta: float, shape):
    """Mixing coefficients (a, b) of add and multiply, float32 like the reference.

    With probability 0.5: a ~ Beta(beta, 1), b ~ Beta(1, beta); otherwise
    a = 1 + Beta(1, beta), b = -Beta(1, beta) (two independent draws). Returns (a, b, branch)
    where branch is 1 for the interpolation case.
    """
    interp = rng.random(shape) < 0.5
    a_int = rng.beta(beta, 1.0, size=shape).astype(np.float32)
    b_int = rng.beta(1.0, beta, size=shape).astype(np.float32)
    a_ext = np.float32(1) + rng.beta(1.0, beta, size=shape).astype(np.float32)
    b_ext = -rng.beta(1.0, beta, size=shape).astype(np.float32)
    a = np.where(interp, a_int, a_ext).astype(np.float32)
    b = np.where(interp, b_int, b_ext).astype(np.float32)
    return a, b, interp.astype(np.int8)
