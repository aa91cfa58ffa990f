"""The trainer's configuration: one dataclass (every flag), the recipes as data, the checks that
run before any work, and the command line built from the dataclass.

    cfg = config_from_args(add_train_arguments(argparse.ArgumentParser()).parse_args(argv))
    cfg = validate_config(cfg)          # one-line ValueErrors naming the flag and the fix
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ipmix_dali.config import CROP_RESIZES

__all__ = ["TrainConfig", "RECIPES", "CHOICES", "FIELD_HELP", "validate_config",
           "config_changes", "config_from_args", "add_train_arguments", "parse_aug_options",
           "augmentation_config", "mixing_picture_side"]


@dataclass
class TrainConfig:
    """Every flag of ``ipmix-dali train`` (defaults: the IPMix ImageNet recipe,
    docs/augmentations.md §3.5); :data:`FIELD_HELP` says what each one does."""

    data: str = ""
    out: str = "runs/train"
    arch: str = "resnet50"
    init_weights: Optional[str] = None
    method: str = "ipmix"
    preset: str = "imagenet"
    jsd: bool = False
    mixing_set: Optional[str] = None
    mixing_memory_gb: float = 8.0
    image_size: int = 224
    val_resize: int = 256
    epochs: int = 180
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    no_bn_weight_decay: bool = False
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0
    amp: str = "none"          # none | bf16 | fp16
    channels_last: bool = False
    device: str = "auto"       # auto (gpu when one is usable) | cpu | gpu
    threads: int = 2
    stage_workers: int = 0     # CPU stage processes; 0: one per usable core
    crop_resize: str = "auto"  # auto | pillow | dali: who resizes and flips the training crops
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0: at epoch ends only
    resume: str = "auto"       # auto | none | PATH
    skip_bad_files: bool = False
    max_image_pixels: int = 89_478_485  # larger images are bad files (Pillow's bomb limit)
    drop_last: bool = True         # drop each epoch's last partial batch (torchvision, timm)
    allow_config_change: bool = False  # --resume into a run with other --epochs
    log_every: int = 10
    sync_every: int = 0            # steps per host readback of the losses; 0: 1 on CPU, log_every on GPU
    aug: Optional[str] = None      # method options, "k=3,t=3,beta=4,all_ops=True,patch_sizes=4:8:16"
    recipe: Optional[str] = None   # ipmix-imagenet | resnet50-90ep (explicit flags override it)
    min_lr: float = 0.0            # the cosine ends here (the IPMix scripts: 1e-6)
    lr_reference_batch: int = 0    # >0: lr is per this many images, scaled by the global batch
    norm: str = "batch"            # batch | group (GroupNorm(32): per-rank batch-independent)
    compile: bool = False          # torch.compile the model
    tensorboard: bool = True       # event files under OUT/tb
    num_classes: int = 1000        # --data synthetic only (ImageFolder: the class folders)
    synthetic_size: int = 12800    # --data synthetic: samples per epoch


# Recipes: a recipe sets these fields; flags given on the command line override them.
RECIPES = {
    # hzlsaber/IPMix imagenet.py defaults (docs/augmentations.md §3.5). Its lr 0.01 looks like a fine-tuning value
    # but the script trains from scratch: kept as the reference has it ([AMBIGUOUS] in docs/augmentations.md §3.5).
    "ipmix-imagenet": dict(arch="resnet50", method="ipmix", preset="imagenet", jsd=True,
                           epochs=180, batch_size=128, lr=0.01, momentum=0.9, nesterov=True,
                           weight_decay=5e-4, warmup_epochs=0.0, label_smoothing=0.0,
                           min_lr=1e-6),
    # NVIDIA DeepLearningExamples ResNet-50 v1.5 (configs.yml of its PyTorch ConvNets): lr 0.256 per 256 images,
    # momentum 0.875, wd 1/32768 without BN/bias decay, 8 warmup epochs, label smoothing 0.1,
    # AMP, channels_last.
    "resnet50-90ep": dict(arch="resnet50", method="none", jsd=False, epochs=90, batch_size=256,
                          lr=0.256, lr_reference_batch=256, momentum=0.875, nesterov=False,
                          weight_decay=1 / 32768, no_bn_weight_decay=True, warmup_epochs=8.0,
                          label_smoothing=0.1, amp="fp16", channels_last=True),
}



FIELD_HELP = {
    "data": "folder with train/ and val/, each an ImageFolder or tar shards (`ipmix-dali "
            "make-shards`), or 'synthetic' (random batches on the device, to time the model "
            "alone)",
    "out": "run folder: checkpoints, metrics.jsonl, config.json, summary.json, tb/",
    "arch": "any torchvision classification model name",
    "init_weights": "start from these weights (our checkpoints, torchvision or IPMix/PixMix "
                    "state dicts)",
    "method": "augmentation method",
    "preset": "the method's reference hyperparameters: ImageNet or CIFAR scripts",
    "jsd": "two augmented views per sample and the JSD consistency loss (lambda 12)",
    "mixing_set": "folder of mixing pictures (PixMix, IPMix, LayerMix); "
                  "`ipmix-dali make-mixing-set` writes fractals",
    "mixing_memory_gb": "a mixing set whose pre-resized pictures fit in this many GiB is kept in "
                        "memory (memory-mapped on the CPU, resident on the GPU); a larger one "
                        "is read by a second DALI reader",
    "image_size": "training crop side",
    "val_resize": "validation: shorter side before the centre crop",
    "epochs": "epochs to train",
    "batch_size": "samples per step and process",
    "lr": "peak learning rate (per --lr-reference-batch images when that is set)",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum",
    "weight_decay": "L2 weight decay",
    "no_bn_weight_decay": "no weight decay on BatchNorm weights and biases",
    "warmup_epochs": "linear warmup length (epochs, fractional allowed), then cosine",
    "label_smoothing": "label smoothing of the cross-entropy",
    "grad_clip": "clip the gradient norm to this (0: off)",
    "amp": "mixed precision",
    "channels_last": "channels_last memory format (with --amp on a GPU the loader hands out "
                     "float16 NHWC batches, no conversion copy)",
    "device": "where to train: auto takes the GPU when one is usable (cuda = gpu)",
    "threads": "DALI worker threads per process",
    "stage_workers": "--device cpu: worker processes of the augmentation stage, one slice of "
                     "each batch each (the same pixels); 0 = one per usable core, 1 = in the "
                     "stage's own thread",
    "crop_resize": "who resizes and flips the training crops: 'pillow' = the CPU stage, as "
                   "Pillow's BILINEAR resize (the reference's RandomResizedCrop bytes, and "
                   "faster than DALI's CPU resize); 'dali' = DALI's fn.resize and fn.flip; "
                   "'auto' = pillow on the CPU, dali on the GPU",
    "seed": "seed of the model, the shuffle and every augmentation plan",
    "checkpoint_every": "also checkpoint every N steps (0: at epoch ends only)",
    "resume": "'auto' (the newest checkpoint in --out that loads), 'none', or a checkpoint file",
    "skip_bad_files": "leave unreadable, truncated or oversized images out (counted) instead "
                      "of stopping",
    "max_image_pixels": "images with more pixels are bad files (Pillow's decompression-bomb "
                        "limit)",
    "drop_last": "drop each epoch's last partial batch (validation always sees every image)",
    "allow_config_change": "let --resume continue a run with another --epochs",
    "log_every": "print and log a progress line every N steps",
    "sync_every": "read the losses back every N steps (0: every step on CPU, --log-every on "
                  "GPU)",
    "aug": "the method's options, e.g. 'k=3,t=3,beta=4,all_ops=true,patch_sizes=4:8:16'",
    "recipe": "a published recipe's defaults; explicit flags override them",
    "min_lr": "the cosine ends at this learning rate",
    "lr_reference_batch": "> 0: --lr is per this many images, scaled by the global batch",
    "norm": "BatchNorm, or GroupNorm(32) (independent of how the batch is split across ranks)",
    "compile": "torch.compile the model",
    "tensorboard": "TensorBoard event files under OUT/tb",
    "num_classes": "--data synthetic: number of classes",
    "synthetic_size": "--data synthetic: samples per epoch",
}


def augmentation_config(cfg: TrainConfig):
    """The augmentation config of a run: method, preset, JSD, crop and ``--aug``. IPMix's patch
    sides for a crop under 224 px are the reference's that fit it
    (:func:`ipmix_dali.config.patch_sizes_for`), whatever the preset, unless ``--aug`` sets them."""
    from ipmix_dali.config import make_config, patch_sizes_for

    options = parse_aug_options(cfg.aug, cfg.method)
    if cfg.method == "ipmix" and cfg.image_size < 224 and "patch_sizes" not in options:
        options["patch_sizes"] = patch_sizes_for(cfg.image_size)
    return make_config(cfg.method, cfg.preset, jsd=cfg.jsd, image_size=cfg.image_size,
                       **options)


def mixing_picture_side(cfg: TrainConfig) -> int:
    """Side the mixing set is pre-resized to (:func:`ipmix_dali.config.mixing_side`)."""
    from ipmix_dali.config import mixing_side

    return mixing_side(cfg.image_size)


def parse_aug_options(text: Optional[str], method: str = "ipmix") -> dict:
    """``--aug "k=3,beta=4.0,all_ops=true,patch_sizes=4:8:16"`` -> typed options of
    ``make_config(method, ...)`` (:func:`ipmix_dali.config.parse_options`)."""
    from ipmix_dali.config import parse_options

    return parse_options(method, text)


# The names torchvision's and timm's training scripts use for the same flags.
ALIASES = {"arch": ("--model",), "out": ("--output-dir",), "batch_size": ("-b",),
           "threads": ("-j", "--workers")}

# Choices of the string flags; "cuda" is torch's name for the GPU.
CHOICES = {"amp": ("none", "bf16", "fp16"), "device": ("auto", "cpu", "gpu"),
           "preset": ("imagenet", "cifar"), "norm": ("batch", "group"),
           "crop_resize": CROP_RESIZES}
DEVICE_ALIASES = {"cuda": "gpu"}
# Fields that do not change what a run computes: they may differ when it is resumed.
OPERATIONAL = ("out", "resume", "threads", "stage_workers", "log_every", "sync_every", "checkpoint_every",
               "tensorboard", "skip_bad_files", "max_image_pixels", "allow_config_change",
               "compile")


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Every value checked before any work, one-line ValueErrors naming the flag and the fix;
    returns the config with aliases resolved (``--device cuda`` is ``gpu``)."""
    from ipmix_dali.config import METHODS

    cfg = dataclasses.replace(cfg, device=DEVICE_ALIASES.get(cfg.device, cfg.device))
    if cfg.device == "auto":
        from ipmix_dali.device import gpu_available

        cfg = dataclasses.replace(cfg, device="gpu" if gpu_available() else "cpu")
    if cfg.method not in METHODS:
        raise ValueError(f"--method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(cfg, name)!r}: choose one of "
                             f"{', '.join(choices)}")
    if cfg.recipe is not None and cfg.recipe not in RECIPES:
        raise ValueError(f"--recipe {cfg.recipe!r}: choose one of {', '.join(RECIPES)}")
    if cfg.crop_resize == "pillow" and cfg.device == "gpu":
        raise ValueError("--crop-resize pillow runs on the CPU stage: with --device gpu use "
                         "--crop-resize auto or dali (DALI resizes on the GPU)")
    at_least = {"epochs": 1, "batch_size": 1, "threads": 1, "stage_workers": 0, "image_size": 8, "val_resize": 8,
                "log_every": 1, "max_image_pixels": 1, "checkpoint_every": 0, "sync_every": 0,
                "lr_reference_batch": 0, "num_classes": 1, "synthetic_size": 1}
    for name, low in at_least.items():
        if getattr(cfg, name) < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got "
                             f"{getattr(cfg, name)}")
    for name in ("lr", "momentum", "weight_decay", "warmup_epochs", "grad_clip", "min_lr"):
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ValueError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.data != "synthetic":
        augmentation_config(cfg)  # its own checks and --aug's types, before any work
    if cfg.device == "gpu":
        from ipmix_dali.device import require_gpu

        require_gpu()
    from ipmix_dali.atomic import check_writable

    check_writable(cfg.out, "--out")  # not a PermissionError after the data checks
    return cfg


# What a field missing from an older run's saved config meant there: a checkpoint from before
# --crop-resize was made with DALI's resize and flip (now the GPU's default only).
LEGACY_VALUES = {"crop_resize": "dali"}


def config_changes(saved: dict, cfg: TrainConfig):
    """{field: (saved, now)} of the fields that define a run and differ from ``saved``.
    ``crop_resize`` is compared as what it resolves to on each run's device ("auto" is "pillow"
    on the CPU, "dali" on the GPU), a missing one as :data:`LEGACY_VALUES` says."""
    from ipmix_dali.pipeline import resolve_crop_resize

    now = dataclasses.asdict(cfg)
    saved = {**{k: v for k, v in LEGACY_VALUES.items() if saved}, **saved}
    changes = {k: (saved.get(k), v) for k, v in now.items()
               if k not in OPERATIONAL and k in saved and saved[k] != v}
    if "crop_resize" in changes:
        def resolved(value, device):
            try:
                return resolve_crop_resize(value, "gpu" if device == "gpu" else "cpu")
            except ValueError:
                return value
        before, after = changes["crop_resize"]
        if resolved(before, saved.get("device", cfg.device)) == resolved(after, cfg.device):
            del changes["crop_resize"]
    return changes


def config_from_args(args) -> TrainConfig:
    """Defaults, then the ``--recipe``'s fields, then every flag given on the command line."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values = {}
    recipe = given.get("recipe")
    if recipe:
        if recipe not in RECIPES:
            raise ValueError(f"unknown --recipe {recipe!r}: choose from {', '.join(RECIPES)}")
        values.update(RECIPES[recipe])
    values.update(given)
    return TrainConfig(**values)


def add_train_arguments(p):
    """One flag per TrainConfig field, with its help text: on/off flags as ``--x/--no-x``, the
    string choices as argparse ``choices`` (``--device cuda`` is accepted as ``gpu``)."""
    import argparse

    from ipmix_dali.config import METHODS

    d = TrainConfig()
    choices = dict(CHOICES, method=METHODS, recipe=tuple(RECIPES))
    choices["device"] = CHOICES["device"] + tuple(DEVICE_ALIASES)
    for f in dataclasses.fields(TrainConfig):
        flags = ["--" + f.name.replace("_", "-"), *ALIASES.get(f.name, ())]
        text = FIELD_HELP[f.name]
        if isinstance(f.default, bool):
            p.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None, help=f"{text} (default: {'on' if f.default else 'off'})")
        else:
            kind = type(f.default) if f.default not in (None, "") else str
            shown = getattr(d, f.name)
            p.add_argument(*flags, dest=f.name, type=kind, default=None,
                           choices=choices.get(f.name),
                           help=f"{text} (default: {shown!r})" if shown not in (None, "")
                           else text)
    return p
