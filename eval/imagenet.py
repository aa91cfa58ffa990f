"""The ImageNet sets read as image folders: clean val, ImageNet-R / -A (logits sliced to their 200
classes) and ImageNet-O (AUROC / AUPR / FPR95 against the val images of its 200 classes), each
Resize(``--resize``) + CenterCrop(``--crop``) with ``--mean/--std`` (docs/evaluation.md)."""
from __future__ import annotations

from .class_subsets import MASKS
from .metrics import ood_measures

__all__ = ["clean", "imagenet_r", "imagenet_a", "imagenet_o", "subset_files"]


def subset_files(files, indices):
    """The files of a 1000-class FileList whose label is in ``indices``, relabelled 0..199."""
    from ipmix_dali.datasets import FileList

    pos = {int(c): k for k, c in enumerate(indices)}
    keep = [(f, pos[l]) for f, l in zip(files.files, files.labels) if l in pos]
    return FileList([f for f, _ in keep], [k for _, k in keep],
                    [files.classes[c] for c in indices], source=files.source + " (O classes)")


def _input(run) -> dict:
    return dict(resize=run.config.resize_side, crop=run.config.crop,
                **run.config.normalisation("imagenet"))


def clean(run) -> dict:
    """The protocol of ``--imagenet-val``."""
    run.log("clean ImageNet val")
    return run.evaluator.run("clean", run.val_files, **_input(run)).summary()


def _subset(run, name, folder) -> dict:
    from ipmix_dali.datasets import scan_image_folder

    run.log(name)
    files = scan_image_folder(folder)
    if files.num_classes != 200:
        raise ValueError(f"{folder} has {files.num_classes} class folders: {name} has "
                         f"200 (all of them are needed for the logit mask)")
    mask = MASKS[name] if run.config.num_classes == 1000 else None
    return run.evaluator.run(name, files, logit_mask=mask, **_input(run)).summary()


def imagenet_r(run) -> dict:
    """The protocol of ``--imagenet-r``."""
    return _subset(run, "imagenet_r", run.config.imagenet_r)


def imagenet_a(run) -> dict:
    """The protocol of ``--imagenet-a``."""
    return _subset(run, "imagenet_a", run.config.imagenet_a)


def imagenet_o(run) -> dict:
    """The protocol of ``--imagenet-o``: score = -max softmax over the 200 classes, anomalies
    positive."""
    from ipmix_dali.datasets import scan_image_folder

    cfg = run.config
    run.log("imagenet_o")
    files = scan_image_folder(cfg.imagenet_o)
    if files.num_classes != 200:
        raise ValueError(f"{cfg.imagenet_o} has {files.num_classes} class folders: ImageNet-O has "
                         f"200")
    if run.val_files.num_classes != 1000 or cfg.num_classes != 1000:
        raise ValueError("--imagenet-o needs a 1000-class model and a 1000-class "
                         "--imagenet-val")
    mask = MASKS["imagenet_o"]
    r_out = run.evaluator.run("imagenet_o", files, logit_mask=mask, **_input(run))
    r_in = run.evaluator.run("imagenet_o_in", subset_files(run.val_files, mask), logit_mask=mask,
                             **_input(run))
    return {**ood_measures(-r_out["confidence"], -r_in["confidence"]),
            "n_out": r_out["n"], "n_in": r_in["n"]}
