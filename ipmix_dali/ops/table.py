"""The op table: every image-level op, its parameter map and the per-method op lists.

Single source of truth for names, op ids, level -> parameter maps and signs (docs/augmentations.md §1.3 for
the PIL ops of AugMix/PixMix/IPMix, section 5.2 for LayerMix's torchvision float ops, section 1.4
for the pixel-mixing ops). Executors receive parameters already mapped; they never sample.

PIL op ids index :data:`PIL_OPS`; LayerMix op ids index :data:`LAYERMIX_OPS`; mixing op ids index
:data:`MIX_OPS`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from .levels import float_parameter, int_parameter

# Kernel-level names of the PIL ops (uint8 HWC). The id of an op is its index here.
PIL_OPS: Tuple[str, ...] = (
    "autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
    "translate_x", "translate_y", "color", "contrast", "brightness", "sharpness", "mirror", "invert",
)
PIL_OP_ID = {name: i for i, name in enumerate(PIL_OPS)}

MIX_OPS: Tuple[str, ...] = ("add", "multiply", "random_pixels", "random_elems")
MIX_OP_ID = {name: i for i, name in enumerate(MIX_OPS)}

# Family of each PIL op, with the agreement tolerance a batch executor must meet against PIL:
# "lut" and "histogram" are exact; "geometry" (bilinear) and "enhance" (float blends) may be off by
# one grey level on a few pixels.
PIL_FAMILY = {
    "autocontrast": "histogram", "equalize": "histogram", "posterize": "lut", "solarize": "lut",
    "invert": "lut", "mirror": "lut", "rotate": "geometry", "shear_x": "geometry",
    "shear_y": "geometry", "translate_x": "geometry", "translate_y": "geometry",
    "color": "enhance", "contrast": "enhance", "brightness": "enhance", "sharpness": "enhance",
}
TOLERANCE = {"lut": 0, "histogram": 0, "geometry": 1, "enhance": 1}


@dataclass(frozen=True)
class OpSpec:
    """One entry of a method's op list.

    Attributes:
        name: kernel-level op name (a key of PIL_OP_ID or LAYERMIX_OP_ID).
        to_param: maps (level L, image_size) to the op's parameter (float64 array); ``None`` for
            ops without a parameter (their parameter is 0).
        signed: the reference flips the parameter's sign with probability 0.5.
    """

    name: str
    to_param: Optional[Callable[[np.ndarray, int], np.ndarray]] = None
    signed: bool = False

    @property
    def op_id(self) -> int:
        return PIL_OP_ID[self.name]


# --- PIL ops (AugMix / PixMix / IPMix), docs/augmentations.md §1.3. Parameters are what PIL receives. -----------
AUTOCONTRAST = OpSpec("autocontrast")  # AugMix/PixMix: no cutoff
# IPMix: ImageOps.autocontrast(img, 10 - float_parameter(L, 10)), cutoff in percent.
AUTOCONTRAST_CUTOFF = OpSpec("autocontrast", lambda L, size: 10 - float_parameter(L, 10))
EQUALIZE = OpSpec("equalize")
POSTERIZE = OpSpec("posterize", lambda L, size: 4 - int_parameter(L, 4))  # bits kept
ROTATE = OpSpec("rotate", lambda L, size: int_parameter(L, 30), signed=True)  # integer degrees
SOLARIZE = OpSpec("solarize", lambda L, size: 256 - int_parameter(L, 256))  # threshold
SHEAR_X = OpSpec("shear_x", lambda L, size: float_parameter(L, 0.3), signed=True)
SHEAR_Y = OpSpec("shear_y", lambda L, size: float_parameter(L, 0.3), signed=True)
# IMAGE_SIZE / 3 is a float (224 / 3), so the truncation happens after the product.
TRANSLATE_X = OpSpec("translate_x", lambda L, size: int_parameter(L, size / 3), signed=True)
TRANSLATE_Y = OpSpec("translate_y", lambda L, size: int_parameter(L, size / 3), signed=True)
COLOR = OpSpec("color", lambda L, size: float_parameter(L, 1.8) + 0.1)
CONTRAST = OpSpec("contrast", lambda L, size: float_parameter(L, 1.8) + 0.1)
BRIGHTNESS = OpSpec("brightness", lambda L, size: float_parameter(L, 1.8) + 0.1)
SHARPNESS = OpSpec("sharpness", lambda L, size: float_parameter(L, 1.8) + 0.1)
MIRROR = OpSpec("mirror")
INVERT = OpSpec("invert")

AUGMIX_OPS = (AUTOCONTRAST, EQUALIZE, POSTERIZE, ROTATE, SOLARIZE, SHEAR_X, SHEAR_Y,
              TRANSLATE_X, TRANSLATE_Y)
AUGMIX_OPS_ALL = AUGMIX_OPS + (COLOR, CONTRAST, BRIGHTNESS, SHARPNESS)
IPMIX_OPS = (EQUALIZE, POSTERIZE, ROTATE, SOLARIZE, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y,
             MIRROR, INVERT)
IPMIX_OPS_ALL = (AUTOCONTRAST_CUTOFF, EQUALIZE, POSTERIZE, ROTATE, SOLARIZE, SHEAR_X, SHEAR_Y,
                 TRANSLATE_X, TRANSLATE_Y, COLOR, CONTRAST, BRIGHTNESS, SHARPNESS, MIRROR, INVERT)


def op_list(method: str, all_ops: bool):
    """The op list a method draws from (uniformly, with replacement)."""
    if method == "ipmix":
        return IPMIX_OPS_ALL if all_ops else IPMIX_OPS
    if method in ("augmix", "pixmix"):
        return AUGMIX_OPS_ALL if all_ops else AUGMIX_OPS
    raise ValueError(f"no PIL op list for method {method!r}")


def sample_ops(rng: np.random.Generator, ops, severity: float, image_size: int, shape):
    """Draw op ids and mapped parameters for ``shape`` op applications.

    One op index (uniform over ``ops``), one level L ~ U(0.1, severity) and one sign coin per
    application, as the reference does per call. Returns (op_id int8, param float64).
    """
    choice = rng.integers(0, len(ops), size=shape)
    level = rng.uniform(0.1, severity, size=shape)
    negate = rng.random(shape) > 0.5
    op_id = np.zeros(shape, dtype=np.int8)
    param = np.zeros(shape, dtype=np.float64)
    for i, spec in enumerate(ops):
        sel = choice == i
        op_id[sel] = spec.op_id
        if spec.to_param is not None:
            value = spec.to_param(level[sel], image_size)
            if spec.signed:
                value = np.where(negate[sel], -value, value)
            param[sel] = value
    return op_id, param


# --- LayerMix ops (torchvision v2 on float CHW images), docs/augmentations.md §5.2. -------------------------------
LAYERMIX_OPS: Tuple[str, ...] = (
    "equalize", "posterize", "posterize_increasing", "solarize", "solarize_increasing",
    "autocontrast", "grayscale", "rotate", "shear_x", "shear_y", "translate_x", "translate_y",
)
LAYERMIX_OP_ID = {name: i for i, name in enumerate(LAYERMIX_OPS)}
# name -> (max_val as a function of image size, negative?) of random_magnitude; None: no parameter.
LAYERMIX_MAGNITUDE = {
    "equalize": None, "autocontrast": None, "grayscale": None,
    "posterize": (lambda size: 4, False),
    "posterize_increasing": (lambda size: 4, False),
    "solarize": (lambda size: 1, False),
    "solarize_increasing": (lambda size: 1, False),  # called with magnitude 1 - M (docs/augmentations.md §5.2)
    "rotate": (lambda size: 30, True),
    "shear_x": (lambda size: 0.3, True),
    "shear_y": (lambda size: 0.3, True),
    "translate_x": (lambda size: int(size * 0.33), True),
    "translate_y": (lambda size: int(size * 0.33), True),
}


def layermix_param(name: str, u: np.ndarray, negate: np.ndarray, magnitude: float,
                   image_size: int) -> np.ndarray:
    """Map uniforms to LayerMix's parameters, as ``random_magnitude`` and the op wrappers do.

    ``random_magnitude(max_val, M)``: level = random.uniform(0.1, max_val * M / 10), i.e.
    0.1 + (upper - 0.1) * u (also valid when upper < 0.1), negated with p = 0.5 if allowed.
    Returned parameter per op: bits for the posterizes, the threshold for the solarizes, degrees
    for rotate and the shears (``degrees(atan(level))``), pixels for the translations.
    """
    entry = LAYERMIX_MAGNITUDE[name]
    if entry is None:
        return np.zeros_like(u, dtype=np.float64)
    max_fn, can_negate = entry
    m = (1 - magnitude) if name == "solarize_increasing" else magnitude
    upper = max_fn(image_size) * m / 10.0
    level = 0.1 + (upper - 0.1) * u
    if can_negate:
        level = np.where(negate, -level, level)
    if name == "posterize":
        return np.trunc(level)
    if name == "posterize_increasing":
        return 4 - np.trunc(level)
    if name in ("shear_x", "shear_y"):
        return np.array([math.degrees(math.atan(v)) for v in np.ravel(level)],
                        dtype=np.float64).reshape(np.shape(level))
    return level
