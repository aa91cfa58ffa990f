"""The evaluator's configuration: one dataclass whose fields are the flags of ``ipmix-dali eval``
(each with its default and help text beside it), the checks that run before any work, and the
command line built from the dataclass (like ``train/config.py``).

    cfg = config_from_args(add_eval_arguments(argparse.ArgumentParser()).parse_args(argv))
    check_config(cfg)                   # one-line ValueErrors naming the flag and the fix
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ipmix_dali.config import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["EvalConfig", "check_config", "config_from_args", "add_eval_arguments"]


def _comma_list(text, flag):
    return text.split(",") if text else None


def _three_numbers(text, flag):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ValueError(f"{flag} takes three comma-separated numbers, got {text!r}")
    return values


def flag(help: str, default=dataclasses.MISSING, *, kind=None, metavar=None, parse=None,
         choices=None, cli_default=dataclasses.MISSING):
    """A field that is also a flag: ``kind`` the argparse type (default: the default's),
    ``parse(text, flag)`` turns the flag's text into the value (a one-line ValueError when it
    cannot), ``cli_default`` what the flag gives when absent if not ``default`` (resolved by
    :func:`config_from_args`)."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, kind=kind, metavar=metavar, parse=parse, choices=choices,
        cli_default=default if cli_default is dataclasses.MISSING else cli_default))


@dataclass
class EvalConfig:
    """What ``ipmix-dali eval`` evaluates, and how (one field per flag).

    ``checkpoint`` names the model (with ``evaluate(..., model=...)`` it only names it in the
    report and the cache). ``resize`` / ``crop`` / ``mean`` / ``std``: the model's input
    protocol, on every set; ``resize`` defaults to ``round(crop * 256 / 224)``, the ratio
    ImageNet-C and ``make-corrupted`` use, so clean and corrupted images show the same field of
    view; ``mean`` / ``std`` default to ImageNet's, and to 0.5 on CIFAR-C and PGD (the
    PixMix/IPMix CIFAR protocol). ImageNet-C files are read as they are (centre crop ``crop``)
    unless ``pixmix_compat``.
    """

    checkpoint: str = flag("the model: our checkpoints, torchvision or IPMix/PixMix state dicts")
    out: str = flag("output folder: results.json, report.md, the charts and a per-set cache")
    arch: str = flag("any torchvision classification model name", "resnet50")
    num_classes: int = flag("the model's outputs", 1000)
    imagenet_val: Optional[str] = flag("ImageNet val (ImageFolder): the clean error, and "
                                       "ImageNet-O's in-distribution images", None, metavar="DIR")
    imagenet_c: Optional[str] = flag("ImageNet-C: corruption/severity/wnid/*.JPEG, or grouped "
                                     "(noise/gaussian_noise/1/...)", None, metavar="DIR")
    imagenet_r: Optional[str] = flag("ImageNet-R (200 class folders)", None, metavar="DIR")
    imagenet_a: Optional[str] = flag("ImageNet-A (200 class folders)", None, metavar="DIR")
    imagenet_o: Optional[str] = flag("ImageNet-O (200 class folders; needs --imagenet-val)", None,
                                     metavar="DIR")
    imagenet_p: Optional[str] = flag("ImageNet-P: perturbation/wnid/*.mp4", None, metavar="DIR")
    alexnet_p: Optional[str] = flag("AlexNet's ImageNet-P FP/T5D per perturbation (for mFR / "
                                    "mT5D)", None, metavar="JSON")
    measure_alexnet: Optional[str] = flag("measure those normalisers with torchvision AlexNet "
                                          "weights", None, metavar="WEIGHTS")
    cifar_c: Optional[str] = flag("CIFAR-10/100-C: <corruption>.npy and labels.npy", None,
                                  metavar="DIR")
    cifar_test: Optional[str] = flag("CIFAR test set for --pgd: arrays 'images' (N, 32, 32, 3) "
                                     "and 'labels'", None, metavar="NPZ")
    pgd: bool = flag("L-inf PGD, eps 2/255, 20 steps (CIFAR)", False)
    pgd_clamp_start: bool = flag("clamp PGD's random start to [0, 1] (the reference does not)",
                                 False)
    pixmix_compat: bool = flag("ImageNet-C through Resize(256) + CenterCrop(224) like the "
                               "PixMix/IPMix scripts (default: the canonical protocol, files as "
                               "they are)", False)
    corruptions: Optional[Sequence[str]] = flag("comma list (default: every one found)", None,
                                                parse=_comma_list)
    device: str = flag("default: gpu when CUDA is available", "cpu", choices=("cpu", "gpu"),
                       cli_default=None)
    batch_size: int = flag("images per forward pass", 64)
    threads: int = flag("DALI decoding threads", 2)
    unsafe_pickle: bool = flag("torch.load with weights_only=False (only for files you trust)",
                               False)
    amp: bool = flag("bfloat16 autocast (on the CPU too)", False)
    channels_last: bool = flag("channels_last model and input", False)
    corrupt_on_the_fly: bool = flag("ImageNet-C-style corruptions of --imagenet-val made in "
                                    "memory", False)
    seed: int = flag("seed of --corrupt-on-the-fly", 0)
    resize: Optional[int] = flag("shorter side before the crop (default round(crop * 256 / 224): "
                                 "256)", None, kind=int)
    crop: int = flag("centre crop (the model's input size)", 224)
    mean: Optional[Tuple[float, float, float]] = flag(
        f"normalisation mean (3 values; default {','.join(map(str, IMAGENET_MEAN))}, on CIFAR-C "
        f"and PGD {','.join(map(str, CIFAR_MEAN))})", None, parse=_three_numbers)
    std: Optional[Tuple[float, float, float]] = flag(
        f"normalisation std (3 values; default {','.join(map(str, IMAGENET_STD))}, on CIFAR-C "
        f"and PGD {','.join(map(str, CIFAR_STD))})", None, parse=_three_numbers)

    @property
    def resize_side(self) -> int:
        """The shorter side before the centre crop."""
        return int(self.resize) if self.resize else round(self.crop * 256 / 224)

    def normalisation(self, dataset: str = "imagenet") -> dict:
        """``{"mean": ..., "std": ...}`` of the model's input: the flags when given, else the
        dataset's protocol ("imagenet" or "cifar")."""
        mean, std = (CIFAR_MEAN, CIFAR_STD) if dataset == "cifar" else (IMAGENET_MEAN,
                                                                         IMAGENET_STD)
        return {"mean": tuple(self.mean or mean), "std": tuple(self.std or std)}


def check_config(cfg: EvalConfig) -> EvalConfig:
    """The flags' combinations and names checked before any folder is read or model loaded."""
    from .metrics import CORRUPTIONS, EXTRA_CORRUPTIONS

    if not any([cfg.imagenet_val, cfg.imagenet_c, cfg.imagenet_r, cfg.imagenet_a, cfg.imagenet_o,
                cfg.imagenet_p, cfg.cifar_c, cfg.pgd]):
        raise ValueError("nothing to evaluate: pass at least one of --imagenet-val, "
                         "--imagenet-c, --imagenet-r, --imagenet-a, --imagenet-o, "
                         "--imagenet-p, --cifar-c, --pgd")
    if (cfg.alexnet_p or cfg.measure_alexnet) and not cfg.imagenet_p:
        raise ValueError("--alexnet-p / --measure-alexnet normalise ImageNet-P: pass "
                         "--imagenet-p DIR too")
    if cfg.corrupt_on_the_fly and (not cfg.imagenet_val or cfg.imagenet_c):
        raise ValueError("--corrupt-on-the-fly corrupts --imagenet-val in memory (ImageNet-C-"
                         "style); pass --imagenet-val and no --imagenet-c")
    if cfg.imagenet_o and not cfg.imagenet_val:
        raise ValueError("--imagenet-o needs --imagenet-val: its in-distribution set is the val "
                         "images of the 200 ImageNet-O classes")
    if cfg.pgd and not cfg.cifar_test:
        raise ValueError("--pgd needs --cifar-test FILE.npz (arrays 'images' (N, 32, 32, 3) "
                         "uint8 and 'labels')")
    if cfg.corruptions:
        unknown = sorted(set(cfg.corruptions) - set(CORRUPTIONS) - set(EXTRA_CORRUPTIONS))
        if unknown:
            raise ValueError(f"unknown corruption(s) {unknown}: choose from the 15 ImageNet-C "
                             f"corruptions and {', '.join(EXTRA_CORRUPTIONS)}")
    return cfg


def config_from_args(args) -> EvalConfig:
    """The parsed flags as an :class:`EvalConfig`: comma lists and triples parsed (one-line
    ValueErrors), ``--device`` absent resolved to gpu when CUDA is available."""
    values = {}
    for f in dataclasses.fields(EvalConfig):
        value = getattr(args, f.name)
        parse = f.metadata["parse"]
        if parse is not None and value is not None:
            value = parse(value, "--" + f.name.replace("_", "-"))
        values[f.name] = value
    if values["device"] is None:
        import torch

        values["device"] = "gpu" if torch.cuda.is_available() else "cpu"
    return EvalConfig(**values)


def add_eval_arguments(p):
    """One flag per EvalConfig field, with its help text: fields without a default are required
    flags, on/off fields ``store_true`` flags."""
    for f in dataclasses.fields(EvalConfig):
        m = f.metadata
        name = "--" + f.name.replace("_", "-")
        if f.default is dataclasses.MISSING:
            p.add_argument(name, required=True, help=m["help"])
        elif isinstance(f.default, bool):
            p.add_argument(name, action="store_true", help=m["help"])
        else:
            default = m["cli_default"]
            shown = f" (default: {default})" if default is not None else ""
            kind = m["kind"] or (type(default) if default is not None and m["parse"] is None
                                 else str)
            p.add_argument(name, type=kind, default=default, metavar=m["metavar"],
                           choices=m["choices"], help=m["help"] + shown)
    return p
