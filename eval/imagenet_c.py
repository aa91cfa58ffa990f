"""ImageNet-C (docs/evaluation.md): the canonical protocol (Hendrycks test.py: the 224 px files as
they are, centre crop ``--crop``) by default, ``--pixmix-compat`` for Resize(256) +
CenterCrop(224) as the PixMix/IPMix scripts do; flat (``c/s/wnid``) and grouped
(``noise/c/s/wnid``) layouts; or ImageNet-C-style cells made in memory from the val set
(``--corrupt-on-the-fly``). Top-1 error and RMS calibration per cell; CE / mCE / relative mCE
against AlexNet over the 15 standard corruptions; the 4 extra corruptions reported apart.
"""
from __future__ import annotations

import os

import numpy as np

from .metrics import CORRUPTIONS, EXTRA_CORRUPTIONS, GROUPS, corruption_errors

__all__ = ["find_imagenet_c", "unknown_imagenet_c_folders", "imagenet_c_cells", "summarise_c",
           "from_folders", "on_the_fly"]


def find_imagenet_c(root):
    """``{corruption: {severity: folder}}`` for the flat or the grouped ImageNet-C layout."""
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise ValueError(f"ImageNet-C folder {root} does not exist: pass --imagenet-c DIR "
                         f"(corruption/severity/wnid/*.JPEG)")
    known = set(CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    cells = {}

    def scan(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name in known and os.path.isdir(path):
                sev = {int(s): os.path.join(path, s) for s in os.listdir(path)
                       if s.isdigit() and os.path.isdir(os.path.join(path, s))}
                cells[name] = dict(sorted(sev.items()))
            elif name in GROUPS and os.path.isdir(path):
                scan(path)

    scan(root)
    if not cells:
        raise ValueError(f"{root} has no ImageNet-C corruption folders (e.g. gaussian_noise/1/, "
                         f"or noise/gaussian_noise/1/)")
    return cells


def unknown_imagenet_c_folders(root):
    """Folders of an ImageNet-C tree (and of its group folders) that are none of the 19
    corruptions and no group, as ``group/name`` or ``name``: :func:`find_imagenet_c` leaves
    them out, and the run says so."""
    known = set(CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    root = os.path.abspath(os.path.expanduser(root))
    found = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not os.path.isdir(path) or name.startswith(".") or name in known:
            continue
        if name in GROUPS:
            found += [f"{name}/{n}" for n in sorted(os.listdir(path)) if n not in known
                      and not n.startswith(".") and os.path.isdir(os.path.join(path, n))]
        else:
            found.append(name)
    return found


def imagenet_c_cells(cfg) -> dict:
    """``{corruption: {severity: folder}}`` of ``--imagenet-c`` that ``--corruptions`` keeps,
    every one with severities 1-5 (checked before any model is loaded); {} without the flag."""
    cells = find_imagenet_c(cfg.imagenet_c) if cfg.imagenet_c else {}
    if cfg.corruptions:
        cells = {c: s for c, s in cells.items() if c in cfg.corruptions}
    for c, sev in cells.items():
        if sorted(sev) != [1, 2, 3, 4, 5]:
            raise ValueError(f"{cfg.imagenet_c}: {c} has severities {sorted(sev)}, expected 1-5 "
                             f"(an incomplete download?)")
    return cells


def summarise_c(table, clean_error=None) -> dict:
    """CE / mCE / relative mCE of per-cell results ``table[c][str(s)]`` (errors in %), and the
    mean RMS calibration over the standard corruptions' cells."""
    errors = {c: {int(s): cell["error"] / 100 for s, cell in by_sev.items()}
              for c, by_sev in table.items()}
    summary = corruption_errors(errors, None if clean_error is None else clean_error / 100)
    rms = [cell["rms"] for c in table for cell in table[c].values()
           if c in CORRUPTIONS and cell["rms"] is not None]
    return {"cells": table, **summary, "mean_rms": float(np.mean(rms)) if rms else None}


def from_folders(run) -> dict:
    """The protocol of ``--imagenet-c``: every cell of ``run.cells`` through the model."""
    from ipmix_dali.datasets import scan_image_folder

    cfg = run.config
    preprocess = ({"resize": cfg.resize_side, "crop": cfg.crop} if cfg.pixmix_compat
                  else {"resize": None, "crop": cfg.crop})
    run.log(f"ImageNet-C ({run.protocol['imagenet_c']})")
    ignored = unknown_imagenet_c_folders(cfg.imagenet_c)
    if ignored:
        run.log(f"ImageNet-C: ignored {len(ignored)} folder(s) of {cfg.imagenet_c} that are no "
                f"ImageNet-C corruption: {', '.join(ignored)} (name a folder after one of the 19 "
                f"corruptions to evaluate it)")
    table = {}
    for c, sev in run.cells.items():
        for s, folder in sev.items():
            files = scan_image_folder(folder)
            if files.num_classes != cfg.num_classes:
                raise ValueError(f"{folder} has {files.num_classes} class folders, the model "
                                 f"{cfg.num_classes} outputs: every ImageNet-C cell needs all "
                                 f"{cfg.num_classes} wnid folders (or pass --num-classes)")
            r = run.evaluator.run(f"c/{c}/{s}", files, **preprocess,
                                  **cfg.normalisation("imagenet"))
            table.setdefault(c, {})[str(s)] = r.summary()
    extras = [c for c in table if c in EXTRA_CORRUPTIONS]
    if extras:
        run.log(f"ImageNet-C: evaluated as extras, not in the mCE: {', '.join(extras)}")
    summary = summarise_c(table, run.results.get("clean", {}).get("error"))
    summary["ignored_folders"] = ignored
    return summary


def on_the_fly(run) -> dict:
    """The protocol of ``--corrupt-on-the-fly``: ImageNet-C-style cells of the val set made in
    memory (Resize + CenterCrop, the corruption, JPEG q85), not the canonical ImageNet-C."""
    from ipmix_dali.corruptions.make import corrupted_arrays, preprocess

    cfg, val_files = run.config, run.val_files
    resize, crop = cfg.resize_side, cfg.crop
    names = list(cfg.corruptions or CORRUPTIONS)
    run.log(f"ImageNet-C-style corruptions of the val set, in memory ({len(names)} x 5)")
    run.protocol["imagenet_c"] = (f"ImageNet-C-style, generated in memory from the val set "
                                  f"(Resize({resize}) + CenterCrop({crop}), corruption, JPEG q85; "
                                  f"not the canonical ImageNet-C)")
    val_images = np.stack([preprocess(f, crop, resize) for f in val_files.files])
    table = {}
    for c in names:
        for s in range(1, 6):
            images = corrupted_arrays(val_images, c, s, cfg.seed, device=cfg.device)
            r = run.evaluator.run_arrays(f"otf/{c}/{s}", images, val_files.labels,
                                         val_files.num_classes,
                                         key=f"{val_files.source}:{c}:{s}:{cfg.seed}",
                                         **cfg.normalisation("imagenet"))
            table.setdefault(c, {})[str(s)] = r.summary()
    return {**summarise_c(table, run.results["clean"]["error"]), "generated": True}
