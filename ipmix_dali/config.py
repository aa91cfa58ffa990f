"""Frozen configurations of the augmentation methods, with the reference code's defaults.

Every hyperparameter of ``docs/augmentations.md`` is a field here; presets name the reference scripts
(``imagenet`` = ``imagenet.py``, ``cifar`` = ``cifar.py``) of each method. Library code takes these
dataclasses, never an argparse namespace. Build one with :func:`make_config`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Tuple

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.5, 0.5, 0.5)
CIFAR_STD = (0.5, 0.5, 0.5)
# Who resizes and flips the training crops (ipmix_dali.pipeline.resolve_crop_resize).
CROP_RESIZES = ("auto", "pillow", "dali")


@dataclass(frozen=True)
class CommonConfig:
    """Fields every method shares.

    Attributes:
        image_size: side of the square training crop the augmentation sees (224 or 32). The
            reference's affine ops write an IMAGE_SIZE x IMAGE_SIZE output and translations scale
            with it.
        jsd: produce two independent augmented views per sample (they share one mixing picture);
            the clean view is the normalised input.
        mean, std: normalisation applied last.
    """

    image_size: int = 224
    jsd: bool = False
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    @property
    def views(self) -> int:
        return 2 if self.jsd else 1

    def _check_common(self):
        if self.image_size < 2:
            raise ValueError(f"image_size must be >= 2, got {self.image_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std need three values and std > 0, got {self.mean} / {self.std}")


@dataclass(frozen=True)
class NoneConfig(CommonConfig):
    """No augmentation: the views are the normalised input (a baseline and a speed floor)."""

    method: str = field(default="none", init=False)

    def __post_init__(self):
        self._check_common()


@dataclass(frozen=True)
class AugMixConfig(CommonConfig):
    """AugMix (google-research/augmix). docs/augmentations.md §2.

    Attributes:
        width: number of chains k (``mixture_width``).
        depth: ops per chain; <= 0 draws it uniformly from {1, 2, 3} per chain (reference -1).
        alpha: Dirichlet(alpha) chain weights and Beta(alpha, alpha) skip weight m.
        severity: level L ~ U(0.1, severity) per op application.
        all_ops: 13-op list (adds color, contrast, brightness, sharpness) instead of 9.
    """

    method: str = field(default="augmix", init=False)
    width: int = 3
    depth: int = -1
    alpha: float = 1.0
    severity: float = 1.0
    all_ops: bool = False

    def __post_init__(self):
        self._check_common()
        _positive(width=self.width, alpha=self.alpha)
        _severity(self.severity)
        if self.depth > 3 or self.depth == 0:
            pass  # depth > 3 is allowed (plans size to it); 0 means stochastic, like -1
        if self.depth > 16:
            raise ValueError(f"depth {self.depth} is unreasonably large (max 16)")

    @property
    def max_depth(self) -> int:
        return self.depth if self.depth > 0 else 3


@dataclass(frozen=True)
class PixMixConfig(CommonConfig):
    """PixMix (andyzoujm/pixmix). docs/augmentations.md §4.

    Attributes:
        k: mixing rounds are uniform on {0..k}.
        beta: get_ab(beta) for add and multiply.
        severity: level L ~ U(0.1, severity) per op application.
        all_ops: 13-op AugMix list (the README recipes pass ``--all-ops``; argparse default off).
        mix_prob: probability that a round's partner is the mixing picture (reference 0.5).
        start_aug_prob: probability that mixing starts from augment(x) rather than x (0.5).
    """

    method: str = field(default="pixmix", init=False)
    k: int = 4
    beta: float = 4.0
    severity: float = 1.0
    all_ops: bool = False
    mix_prob: float = 0.5
    start_aug_prob: float = 0.5

    def __post_init__(self):
        self._check_common()
        _positive(beta=self.beta)
        _severity(self.severity)
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        _prob(mix_prob=self.mix_prob, start_aug_prob=self.start_aug_prob)


@dataclass(frozen=True)
class IPMixConfig(CommonConfig):
    """IPMix (hzlsaber/IPMix). docs/augmentations.md §3.

    Attributes:
        k: number of chains mixed with Dirichlet(1) weights.
        t: chain length n is uniform on {0..t}.
        beta: get_ab(beta) for add and multiply inside patches.
        severity: level L ~ U(0.1, severity) per op application.
        all_ops: 15-op list (adds autocontrast with cutoff, color, contrast, brightness,
            sharpness) instead of the 10-op list. cifar.py has no such flag (always 10).
        patch_sizes: the patch side p is uniform over these.
        augmented_partner: ImageNet variant: a P step mixes with the mixing picture or, with
            probability 0.5, with a freshly augmented copy of the clean input (cifar: never).
        overflow: "wrap" = the reference (ToPILImage's float->uint8 cast keeps the low 8 bits of
            trunc(v*255)); "clip" = the fixed behaviour, clamp to [0, 255] (what PixMix does).
        patch_anchor: "reference" draws the patch corner over [0, W-p] even for a rectangle with
            sides < p (so p = W anchors every patch at (0, 0)); "exact" draws it over
            [0, W-side] for each side (the fixed behaviour).
    """

    method: str = field(default="ipmix", init=False)
    preset: str = "imagenet"
    k: int = 3
    t: int = 3
    beta: float = 4.0
    severity: float = 1.0
    all_ops: bool = False
    patch_sizes: Tuple[int, ...] = (4, 8, 16, 32, 64, 224)
    augmented_partner: bool = True
    overflow: str = "wrap"
    patch_anchor: str = "reference"

    def __post_init__(self):
        self._check_common()
        _positive(k=self.k, beta=self.beta)
        _severity(self.severity)
        if self.t < 0:
            raise ValueError(f"t must be >= 0, got {self.t}")
        if not self.patch_sizes or min(self.patch_sizes) < 2:
            raise ValueError(f"patch_sizes must be >= 2, got {self.patch_sizes}")
        if max(self.patch_sizes) > self.image_size:
            raise ValueError(
                f"patch size {max(self.patch_sizes)} exceeds image_size {self.image_size}: "
                f"pass patch_sizes no larger than the crop (cifar preset: 4, 8, 16, 32)")
        if self.overflow not in ("wrap", "clip"):
            raise ValueError(f"overflow must be 'wrap' or 'clip', got {self.overflow!r}")
        if self.patch_anchor not in ("reference", "exact"):
            raise ValueError(f"patch_anchor must be 'reference' or 'exact', got {self.patch_anchor!r}")


@dataclass(frozen=True)
class LayerMixConfig(CommonConfig):
    """LayerMix (ahmadmughees/LayerMix, the ``laddermix`` method). docs/augmentations.md §5.

    Attributes:
        magnitude: M of ``random_magnitude`` (0..10).
        beta: get_ab(beta) for add and multiply.
    """

    method: str = field(default="layermix", init=False)
    magnitude: float = 3.0
    beta: float = 3.0

    def __post_init__(self):
        self._check_common()
        _positive(beta=self.beta)
        if not 0 <= self.magnitude <= 10:
            raise ValueError(f"magnitude must be in [0, 10], got {self.magnitude}")


PRESETS = {
    # (method, preset) -> overrides of the dataclass defaults. Defaults above are the ImageNet scripts.
    ("ipmix", "imagenet"): dict(preset="imagenet"),
    ("ipmix", "cifar"): dict(preset="cifar", image_size=32, beta=3.0, severity=3.0,
                             patch_sizes=(4, 8, 16, 32), augmented_partner=False, all_ops=False,
                             mean=CIFAR_MEAN, std=CIFAR_STD),
    ("pixmix", "imagenet"): dict(),
    ("pixmix", "cifar"): dict(image_size=32, beta=3.0, severity=3.0, mean=CIFAR_MEAN, std=CIFAR_STD),
    ("augmix", "imagenet"): dict(),
    ("augmix", "cifar"): dict(image_size=32, severity=3.0, mean=CIFAR_MEAN, std=CIFAR_STD),
    ("layermix", "imagenet"): dict(),
    ("layermix", "cifar"): dict(image_size=32, mean=CIFAR_MEAN, std=CIFAR_STD),
    ("none", "imagenet"): dict(),
    ("none", "cifar"): dict(image_size=32, mean=CIFAR_MEAN, std=CIFAR_STD),
}

# The facts of each method, in one table: its config class and whether it blends in mixing
# pictures (then it needs a mixing set). METHODS, MIXING_METHODS and the config lookup derive
# from it; plans.SAMPLERS is checked against it at import.
METHOD_TABLE = {
    "none": (NoneConfig, False),
    "augmix": (AugMixConfig, False),
    "pixmix": (PixMixConfig, True),
    "ipmix": (IPMixConfig, True),
    "layermix": (LayerMixConfig, True),
}
METHODS = tuple(METHOD_TABLE)
MIXING_METHODS = tuple(m for m, (_, mixes) in METHOD_TABLE.items() if mixes)
_CLASSES = {m: cls for m, (cls, _) in METHOD_TABLE.items()}


# IPMix's patch sides in the ImageNet script; a smaller crop keeps those that fit it.
REFERENCE_PATCH_SIZES = (4, 8, 16, 32, 64, 224)


def patch_sizes_for(image_size: int) -> Tuple[int, ...]:
    """IPMix's patch sides for a crop of ``image_size``: the reference's that fit it."""
    return tuple(p for p in REFERENCE_PATCH_SIZES if p <= image_size) or (min(2, image_size),)


def mixing_side(image_size: int) -> int:
    """Side the mixing pictures are resized to before their random ``image_size`` crop: the
    references' Resize(36) for CIFAR's 32 px and Resize(256) for ImageNet's 224 px; other crops
    keep ImageNet's ratio (256 / 224)."""
    image_size = int(image_size)
    if image_size <= 32:
        return round(image_size * 36 / 32)
    return round(image_size * 256 / 224)


def make_config(method: str = "ipmix", preset: str = "imagenet", **overrides):
    """Build the frozen config of ``method`` from a preset plus explicit overrides.

    Example: ``make_config("ipmix", "cifar", jsd=True)``. IPMix's patch sizes follow a crop
    smaller than the preset's (:func:`patch_sizes_for`) unless ``patch_sizes`` is given.
    """
    if method not in _CLASSES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if (method, preset) not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for {method}; choose 'imagenet' or 'cifar'")
    cls = _CLASSES[method]
    kwargs = dict(PRESETS[(method, preset)])
    valid = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"{method} has no option(s) {sorted(unknown)}; valid: {sorted(valid)}")
    for key, value in overrides.items():
        _check_type(cls, key, value)
    kwargs.update(overrides)
    if method == "ipmix" and "patch_sizes" not in overrides and "image_size" in overrides:
        default = kwargs.get("patch_sizes", REFERENCE_PATCH_SIZES)
        if max(default) > kwargs["image_size"]:
            kwargs["patch_sizes"] = patch_sizes_for(kwargs["image_size"])
    if "patch_sizes" in kwargs:
        kwargs["patch_sizes"] = tuple(int(p) for p in kwargs["patch_sizes"])
    for key in ("mean", "std"):
        if key in kwargs:
            kwargs[key] = tuple(float(v) for v in kwargs[key])
    return cls(**kwargs)


def _field_type(cls, name) -> str:
    return next(f.type for f in dataclasses.fields(cls) if f.name == name).replace(" ", "")


def _check_type(cls, name, value):
    """One-line TypeError-free checks: ``k=2.5`` or ``all_ops="maybe"`` are ValueErrors naming the
    option and the type it takes."""
    kind = _field_type(cls, name)
    ok = {"int": lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float, np.integer, np.floating))
          and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool),
          "str": lambda v: isinstance(v, str)}.get(kind)
    if ok is None:  # tuples: patch_sizes (ints), mean and std (floats)
        item = "int" if kind.startswith("Tuple[int") else "float"
        good = isinstance(value, (tuple, list)) and len(value) > 0 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool)
            and (item == "float" or float(v).is_integer()) for v in value)
        if not good:
            raise ValueError(f"option {name} takes a list of "
                             f"{'integers' if item == 'int' else 'numbers'}, got {value!r}")
        return
    if not ok(value):
        kinds = {"int": "an integer", "float": "a number", "bool": "true or false",
                 "str": "a string"}
        raise ValueError(f"option {name} takes {kinds[kind]}, got {value!r}")


def parse_options(method: str, text) -> dict:
    """``"k=3,beta=4.0,all_ops=true,patch_sizes=4:8:16"`` (the trainer's ``--aug``) -> typed
    options of ``make_config(method, ...)``: each value parsed as its field's type (``:``
    separates the items of a list), unknown keys and unparsable values rejected in one line."""
    if method not in _CLASSES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cls = _CLASSES[method]
    valid = {f.name for f in dataclasses.fields(cls) if f.init}
    out = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        key, value = key.strip().replace("-", "_"), value.strip()
        if not sep or not key:
            raise ValueError(f"--aug {text!r}: expected KEY=VALUE items separated by commas")
        if key not in valid:
            raise ValueError(f"--aug: {method} has no option {key!r}; valid: "
                             f"{', '.join(sorted(valid))}")
        kind = _field_type(cls, key)
        try:
            if kind == "bool":
                lowered = value.lower()
                if lowered not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                    raise ValueError
                out[key] = lowered in ("true", "yes", "1", "on")
            elif kind == "int":
                out[key] = int(value)
            elif kind == "float":
                out[key] = float(value)
            elif kind == "str":
                out[key] = value
            else:
                item_type = int if kind.startswith("Tuple[int") else float
                out[key] = tuple(item_type(v) for v in value.split(":"))
        except ValueError:
            kinds = {"bool": "true or false", "int": "an integer", "float": "a number",
                     "str": "a string"}
            raise ValueError(f"--aug {key}={value}: {key} takes "
                             f"{kinds.get(kind, 'a list like 4:8:16')}") from None
    return out


def _positive(**values):
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")


def _severity(s):
    if not 0.1 <= s <= 10:
        raise ValueError(f"severity must be in [0.1, 10] (levels are U(0.1, severity)), got {s}")


def _prob(**values):
    for name, v in values.items():
        if not 0 <= v <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
