"""``ipmix-dali eval``: every robustness number for one checkpoint, as the reference tools compute it.

    ipmix-dali eval --checkpoint ckpt.pt --imagenet-val val/ --imagenet-c imagenet-c/ --out ev/

* clean ImageNet val: Resize(256) + CenterCrop(224).
* ImageNet-C: the canonical protocol (Hendrycks test.py: the 224 px files as they are) by
  default, ``--pixmix-compat`` for Resize(256) + CenterCrop(224) as the PixMix/IPMix scripts do;
  the protocol is recorded in the report. Flat (``c/s/wnid``) and grouped (``noise/c/s/wnid``)
  layouts. Top-1 error and RMS calibration per cell; CE / mCE / relative mCE against AlexNet over
  the 15 standard corruptions; the 4 extra corruptions reported apart.
* ImageNet-R / -A: logits sliced to the 200 classes; ImageNet-O: AUROC / AUPR / FPR95 against the
  val images of its 200 classes (needs ``--imagenet-val``).
* ImageNet-P at difficulty 1: flip probability and top-5 distance; mFR / mT5D with AlexNet
  normalisers given (``--alexnet-p``) or measured (``--measure-alexnet WEIGHTS``).
* CIFAR-10/100-C (``.npy`` layout): mean error over 15 corruptions x 5 severities.
* PGD (CIFAR protocol): L-inf, eps 2/255, 20 steps of 0.5/255 on ``--cifar-test`` (``.npz``).

Results: ``results.json`` (every number, the protocol, versions), ``report.md``,
``imagenet_c.png`` (CE per corruption) and ``imagenet_c_severity.png`` (error per corruption and
severity).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from ipmix_dali.atomic import atomic_write, write_json

from .metrics import CORRUPTIONS, EXTRA_CORRUPTIONS, GROUPS, corruption_errors, ood_measures

__all__ = ["EvalConfig", "evaluate", "find_imagenet_c", "unknown_imagenet_c_folders",
           "RESNET50_MCE"]

RESNET50_MCE = 76.7          # torchvision ResNet-50 (V1), robustness README leaderboard
RESNET50_CLEAN_ERROR = 23.85


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


def _key(checkpoint, arch, extra):
    st = os.stat(checkpoint)
    return hashlib.sha256(json.dumps([os.path.abspath(checkpoint), st.st_size, st.st_mtime_ns,
                                      arch, extra]).encode()).hexdigest()[:16]


def _versions():
    from ipmix_dali.bench.machine import package_versions

    return package_versions(("torch", "torchvision", "numpy", "nvidia.dali", "torchmetrics",
                             "sklearn"))


def _subset_files(files, indices):
    """The files of a 1000-class FileList whose label is in ``indices``, relabelled 0..199."""
    from ipmix_dali.datasets import FileList

    pos = {int(c): k for k, c in enumerate(indices)}
    keep = [(f, pos[l]) for f, l in zip(files.files, files.labels) if l in pos]
    return FileList([f for f, _ in keep], [k for _, k in keep],
                    [files.classes[c] for c in indices], source=files.source + " (O classes)")


def summarise_c(table, clean_error=None) -> dict:
    """CE / mCE / relative mCE of per-cell results ``table[c][str(s)]`` (errors in %), and the
    mean RMS calibration over the standard corruptions' cells."""
    errors = {c: {int(s): cell["error"] / 100 for s, cell in by_sev.items()}
              for c, by_sev in table.items()}
    summary = corruption_errors(errors, None if clean_error is None else clean_error / 100)
    rms = [cell["rms"] for c in table for cell in table[c].values()
           if c in CORRUPTIONS and cell["rms"] is not None]
    return {"cells": table, **summary, "mean_rms": float(np.mean(rms)) if rms else None}


def _cifar_c(model, folder, device, batch, log):
    import torch

    folder = os.path.expanduser(folder)
    labels_path = os.path.join(folder, "labels.npy")
    if not os.path.isfile(labels_path):
        raise ValueError(f"{folder} has no labels.npy: pass --cifar-c DIR with the CIFAR-10-C or "
                         f"CIFAR-100-C .npy files")
    labels = np.load(labels_path).astype(np.int64)
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    per = {}
    for c in CORRUPTIONS:
        path = os.path.join(folder, f"{c}.npy")
        if not os.path.isfile(path):
            continue
        data = np.load(path, mmap_mode="r")
        if data.shape[0] != len(labels) or data.shape[1:] != (32, 32, 3):
            raise ValueError(f"{path} has shape {data.shape}: expected ({len(labels)}, 32, 32, 3)"
                             f" (5 severities x the test set, like labels.npy)")
        wrong = 0
        with torch.no_grad():
            for i in range(0, len(labels), batch):
                x = torch.from_numpy(np.array(data[i:i + batch])).to(dev)  # a writable copy
                x = x.permute(0, 3, 1, 2).float() / 255 * 2 - 1  # Normalize(0.5, 0.5)
                pred = model(x).argmax(1).cpu().numpy()
                wrong += int((pred != labels[i:i + batch]).sum())
        per[c] = 100.0 * wrong / len(labels)
        log(f"  cifar-c {c}: error {per[c]:.2f}%")
    if not per:
        raise ValueError(f"{folder} holds none of the 15 corruption .npy files")
    return {"per_corruption": per, "mean_error": float(np.mean(list(per.values()))),
            "missing": [c for c in CORRUPTIONS if c not in per]}


def pgd_error(model, images, labels, eps=2 / 255, steps=20, step_size=0.5 / 255,
              clamp_start=False, seed=0, batch=256, device="cpu"):
    """Adversarial error (%) under the PixMix/IPMix CIFAR PGD: inputs in [0, 1], model sees
    ``2x - 1``, uniform random start in the eps-ball, CE summed, sign steps, projection and
    clamp after each step, model in eval mode.

    The reference does not clamp the random start to [0, 1] before the first step (the first
    forward sees values outside the image range); ``clamp_start=True`` is the fixed behaviour.
    """
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda" if device == "gpu" else "cpu")
    g = torch.Generator(device=dev).manual_seed(seed)
    model.eval()
    wrong = 0
    for i in range(0, len(labels), batch):
        x = torch.as_tensor(images[i:i + batch], device=dev).permute(0, 3, 1, 2).float() / 255
        y = torch.as_tensor(labels[i:i + batch], device=dev).long()
        adv = x + (torch.rand(x.shape, generator=g, device=dev) * 2 - 1) * eps
        if clamp_start:
            adv = adv.clamp(0, 1)
        for _ in range(steps):
            adv = adv.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(adv * 2 - 1), y, reduction="sum")
                grad, = torch.autograd.grad(loss, adv)
            adv = adv.detach() + step_size * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            wrong += int((model(adv * 2 - 1).argmax(1) != y).sum())
    return 100.0 * wrong / len(labels)


@dataclass
class EvalConfig:
    """What ``ipmix-dali eval`` evaluates, and how (one field per flag).

    ``checkpoint`` names the model (with ``evaluate(..., model=...)`` it only names it in the
    report and the cache). ``resize`` / ``crop`` / ``mean`` / ``std``: the model's input
    protocol (ImageNet's by default; ``resize`` defaults to ``round(crop * 256 / 224)``, the
    ratio ImageNet-C and ``make-corrupted`` use, so clean and corrupted images show the same
    field of view). ImageNet-C files are read as they are (centre crop ``crop``) unless
    ``pixmix_compat``.
    """

    checkpoint: str
    out: str
    arch: str = "resnet50"
    num_classes: int = 1000
    imagenet_val: Optional[str] = None
    imagenet_c: Optional[str] = None
    imagenet_r: Optional[str] = None
    imagenet_a: Optional[str] = None
    imagenet_o: Optional[str] = None
    imagenet_p: Optional[str] = None
    alexnet_p: Optional[str] = None
    measure_alexnet: Optional[str] = None
    cifar_c: Optional[str] = None
    cifar_test: Optional[str] = None
    pgd: bool = False
    pgd_clamp_start: bool = False
    pixmix_compat: bool = False
    corruptions: Optional[Sequence[str]] = None
    device: str = "cpu"
    batch_size: int = 64
    threads: int = 2
    unsafe_pickle: bool = False
    amp: bool = False
    channels_last: bool = False
    corrupt_on_the_fly: bool = False
    seed: int = 0
    resize: Optional[int] = None
    crop: int = 224
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)


def evaluate(config: EvalConfig, model=None, log=print) -> dict:
    """Evaluate ``config.checkpoint`` (or an already built ``model``, for the Python API) on
    every set ``config`` names; results.json, report.md and the charts go to ``config.out``."""
    # The fields as locals: the body reads like the protocol it implements.
    checkpoint, out, arch, num_classes = (config.checkpoint, config.out, config.arch,
                                          config.num_classes)
    imagenet_val, imagenet_c, imagenet_r, imagenet_a, imagenet_o, imagenet_p = (
        config.imagenet_val, config.imagenet_c, config.imagenet_r, config.imagenet_a,
        config.imagenet_o, config.imagenet_p)
    alexnet_p, measure_alexnet, cifar_c, cifar_test = (config.alexnet_p, config.measure_alexnet,
                                                       config.cifar_c, config.cifar_test)
    pgd, pgd_clamp_start, pixmix_compat, corruptions = (config.pgd, config.pgd_clamp_start,
                                                        config.pixmix_compat, config.corruptions)
    device, batch_size, threads, unsafe_pickle = (config.device, config.batch_size,
                                                  config.threads, config.unsafe_pickle)
    amp, channels_last, corrupt_on_the_fly, seed = (config.amp, config.channels_last,
                                                    config.corrupt_on_the_fly, config.seed)
    resize, crop, mean, std = config.resize, config.crop, config.mean, config.std
    resize = int(resize) if resize else round(crop * 256 / 224)
    from ipmix_dali.datasets import scan_image_folder

    from .checkpoints import load_model
    from .masks import MASKS
    from .runner import Evaluator

    if not any([imagenet_val, imagenet_c, imagenet_r, imagenet_a, imagenet_o, imagenet_p,
                cifar_c, pgd]):
        raise ValueError("nothing to evaluate: pass at least one of --imagenet-val, "
                         "--imagenet-c, --imagenet-r, --imagenet-a, --imagenet-o, "
                         "--imagenet-p, --cifar-c, --pgd")
    if (alexnet_p or measure_alexnet) and not imagenet_p:
        raise ValueError("--alexnet-p / --measure-alexnet normalise ImageNet-P: pass "
                         "--imagenet-p DIR too")
    if corrupt_on_the_fly and (not imagenet_val or imagenet_c):
        raise ValueError("--corrupt-on-the-fly corrupts --imagenet-val in memory (ImageNet-C-"
                         "style); pass --imagenet-val and no --imagenet-c")
    if imagenet_o and not imagenet_val:
        raise ValueError("--imagenet-o needs --imagenet-val: its in-distribution set is the val "
                         "images of the 200 ImageNet-O classes")
    if pgd and not cifar_test:
        raise ValueError("--pgd needs --cifar-test FILE.npz (arrays 'images' (N, 32, 32, 3) "
                         "uint8 and 'labels')")
    # Check every folder before loading anything.
    cells = find_imagenet_c(imagenet_c) if imagenet_c else {}
    ignored = unknown_imagenet_c_folders(imagenet_c) if imagenet_c else []
    if ignored:
        log(f"ImageNet-C: ignored {len(ignored)} folder(s) of {imagenet_c} that are no "
            f"ImageNet-C corruption: {', '.join(ignored)} (name a folder after one of the 19 "
            f"corruptions to evaluate it)")
    if corruptions:
        unknown = sorted(set(corruptions) - set(CORRUPTIONS) - set(EXTRA_CORRUPTIONS))
        if unknown:
            raise ValueError(f"unknown corruption(s) {unknown}: choose from the 15 ImageNet-C "
                             f"corruptions and {', '.join(EXTRA_CORRUPTIONS)}")
        cells = {c: s for c, s in cells.items() if c in corruptions}
    for c, sev in cells.items():
        if sorted(sev) != [1, 2, 3, 4, 5]:
            raise ValueError(f"{imagenet_c}: {c} has severities {sorted(sev)}, expected 1-5 "
                             f"(an incomplete download?)")
    if model is None:
        model = load_model(checkpoint, arch, num_classes, unsafe_pickle)
        cache_key = _key(checkpoint, arch, [num_classes, pixmix_compat])
    else:
        cache_key = hashlib.sha256(repr([checkpoint, arch, num_classes, pixmix_compat]).encode()
                                   ).hexdigest()[:16]
    norm = {"mean": tuple(mean), "std": tuple(std)}
    preprocess_c = ({"resize": resize, "crop": crop} if pixmix_compat
                    else {"resize": None, "crop": crop})
    protocol = {"imagenet_c": f"pixmix-compat: Resize({resize}) + CenterCrop({crop})"
                if pixmix_compat else f"canonical (Hendrycks test.py): the {crop}x{crop} files as "
                                      f"they are",
                "clean": f"Resize({resize}) + CenterCrop({crop})",
                "normalisation": f"mean {tuple(mean)}, std {tuple(std)}",
                "subsets": "ImageNet-R/A/O: logits sliced to the 200 classes",
                "calibration": "RMS: Hendrycks calib_err (bins of 100, last bin skipped); "
                               "ECE: torchmetrics, 15 bins, L1"}
    os.makedirs(out, exist_ok=True)
    ev = Evaluator(model, device, batch_size, threads, os.path.join(out, "cache"), cache_key,
                   amp=amp, channels_last=channels_last, log=log)
    results = {"checkpoint": str(checkpoint), "arch": arch,
               "num_classes": num_classes, "protocol": protocol, "versions": _versions()}
    t0 = time.perf_counter()

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("confidence", "correct", "logits")}

    val_files = None
    if imagenet_val:
        log("clean ImageNet val")
        val_files = scan_image_folder(imagenet_val)
        results["clean"] = strip(ev.run("clean", val_files, resize=resize, crop=crop, **norm))
    if cells:
        log(f"ImageNet-C ({protocol['imagenet_c']})")
        table = {}
        for c, sev in cells.items():
            for s, folder in sev.items():
                files = scan_image_folder(folder)
                if files.num_classes != num_classes:
                    raise ValueError(f"{folder} has {files.num_classes} class folders, the model "
                                     f"{num_classes} outputs: every ImageNet-C cell needs all "
                                     f"{num_classes} wnid folders (or pass --num-classes)")
                r = ev.run(f"c/{c}/{s}", files, **preprocess_c, **norm)
                table.setdefault(c, {})[str(s)] = strip(r)
        results["imagenet_c"] = summarise_c(table, results.get("clean", {}).get("error"))
        results["imagenet_c"]["ignored_folders"] = ignored
        extras = [c for c in table if c in EXTRA_CORRUPTIONS]
        if extras:
            log(f"ImageNet-C: evaluated as extras, not in the mCE: {', '.join(extras)}")
    if corrupt_on_the_fly:
        from ipmix_dali.corruptions.make import corrupted_arrays, preprocess

        names = list(corruptions or CORRUPTIONS)
        log(f"ImageNet-C-style corruptions of the val set, in memory ({len(names)} x 5)")
        protocol["imagenet_c"] = (f"ImageNet-C-style, generated in memory from the val set "
                                  f"(Resize({resize}) + CenterCrop({crop}), corruption, JPEG q85; "
                                  f"not the canonical ImageNet-C)")
        val_images = np.stack([preprocess(f, crop, resize) for f in val_files.files])
        table = {}
        for c in names:
            for s in range(1, 6):
                images = corrupted_arrays(val_images, c, s, seed, device=device)
                r = ev.run_arrays(f"otf/{c}/{s}", images, val_files.labels, val_files.num_classes,
                                  key=f"{val_files.source}:{c}:{s}:{seed}", **norm)
                table.setdefault(c, {})[str(s)] = strip(r)
        results["imagenet_c"] = {**summarise_c(table, results["clean"]["error"]),
                                 "generated": True}
    for name, folder in (("imagenet_r", imagenet_r), ("imagenet_a", imagenet_a)):
        if folder:
            log(name)
            files = scan_image_folder(folder)
            if files.num_classes != 200:
                raise ValueError(f"{folder} has {files.num_classes} class folders: {name} has "
                                 f"200 (all of them are needed for the logit mask)")
            mask = MASKS[name] if num_classes == 1000 else None
            results[name] = strip(ev.run(name, files, resize=resize, crop=crop, logit_mask=mask,
                                         **norm))
    if imagenet_o:
        log("imagenet_o")
        files = scan_image_folder(imagenet_o)
        if files.num_classes != 200:
            raise ValueError(f"{imagenet_o} has {files.num_classes} class folders: ImageNet-O has "
                             f"200")
        if val_files.num_classes != 1000 or num_classes != 1000:
            raise ValueError("--imagenet-o needs a 1000-class model and a 1000-class "
                             "--imagenet-val")
        mask = MASKS["imagenet_o"]
        r_out = ev.run("imagenet_o", files, resize=resize, crop=crop, logit_mask=mask, **norm)
        r_in = ev.run("imagenet_o_in", _subset_files(val_files, mask), resize=resize, crop=crop,
                      logit_mask=mask, **norm)
        results["imagenet_o"] = {**ood_measures(-r_out["confidence"], -r_in["confidence"]),
                                 "n_out": r_out["n"], "n_in": r_in["n"]}
    if imagenet_p:
        from .imagenet_p import evaluate_imagenet_p
        from .imagenet_p import measure_alexnet as _measure

        normalisers = None
        if measure_alexnet:
            log("ImageNet-P with AlexNet (the normalisers)")
            normalisers = _measure(measure_alexnet, imagenet_p, device, log)
            write_json(os.path.join(out, "alexnet_p.json"), normalisers)
        elif alexnet_p:
            with open(alexnet_p) as f:
                normalisers = json.load(f)
        log("ImageNet-P (difficulty 1)")
        results["imagenet_p"] = evaluate_imagenet_p(model, imagenet_p, device, alexnet=normalisers,
                                                    log=log)
    if cifar_c:
        log("CIFAR-C")
        results["cifar_c"] = _cifar_c(model, cifar_c, device, batch_size, log)
    if pgd:
        with np.load(cifar_test) as z:
            images, labels = z["images"], z["labels"]
        log(f"PGD on {len(labels)} images")
        results["pgd"] = {"error": pgd_error(model, images, labels, clamp_start=pgd_clamp_start,
                                             device=device),
                          "eps": "2/255", "steps": 20, "step_size": "0.5/255",
                          "clamp_start": pgd_clamp_start, "n": int(len(labels))}
    results["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(os.path.join(out, "results.json"), results)
    with atomic_write(os.path.join(out, "report.md"), "w") as f:
        f.write(report_markdown(results))
    if "imagenet_c" in results and results["imagenet_c"]["per_corruption"]:
        ce_chart(results, os.path.join(out, "imagenet_c.png"))
        severity_chart({os.path.basename(os.path.normpath(out)): results},
                       os.path.join(out, "imagenet_c_severity.png"))
    return results


def _fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def report_markdown(r) -> str:
    lines = [f"# Robustness report: {os.path.basename(r['checkpoint'])} ({r['arch']})", ""]
    for k, v in r["protocol"].items():
        lines.append(f"* {k}: {v}")
    lines.append("")
    if "clean" in r:
        c = r["clean"]
        lines += ["## Clean ImageNet val", "", f"top-1 error {_fmt(c['error'])} %, top-5 error "
                  f"{_fmt(c['top5_error'])} %, RMS calibration {_fmt(c['rms'])} %, ECE "
                  f"{_fmt(c['ece'])} % ({c['n']} images, {c['images_per_s']} img/s)", ""]
    if "imagenet_c" in r:
        ic = r["imagenet_c"]
        lines += ["## ImageNet-C", "",
                  "| corruption | s1 | s2 | s3 | s4 | s5 | mean error | CE | relative CE | "
                  "mean RMS |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c, row in ic["per_corruption"].items():
            cells = ic["cells"][c]
            rms = [cells[s]["rms"] for s in sorted(cells) if cells[s]["rms"] is not None]
            lines.append(f"| {c}{' (extra)' if c in EXTRA_CORRUPTIONS else ''} | " + " | ".join(
                _fmt(cells[str(s)]["error"]) for s in range(1, 6)) + f" | {_fmt(row['mean_error'])}"
                f" | {_fmt(row.get('ce'))} | {_fmt(row.get('relative_ce'))} | "
                f"{_fmt(float(np.mean(rms)) if rms else None)} |")
        lines += ["", f"**mCE {_fmt(ic.get('mce'))} %**, relative mCE "
                  f"{_fmt(ic.get('relative_mce'))} %, unnormalised mean error "
                  f"{_fmt(ic.get('unnormalized_mce'))} %, mean RMS calibration "
                  f"{_fmt(ic.get('mean_rms'))} % (15 standard corruptions; AlexNet = 100; "
                  f"torchvision ResNet-50: {RESNET50_MCE} %)."]
        if ic.get("missing"):
            lines.append(f"Missing standard corruptions (no mCE): {', '.join(ic['missing'])}.")
        if "extra_mean_ce" in ic:
            lines.append(f"Extra corruptions, mean CE (not in mCE): {_fmt(ic['extra_mean_ce'])} %.")
        if ic.get("ignored_folders"):
            lines.append(f"Ignored folders (no ImageNet-C corruption, not evaluated): "
                         f"{', '.join(ic['ignored_folders'])}.")
        lines.append("")
    rows = []
    for name, label in (("imagenet_r", "ImageNet-R"), ("imagenet_a", "ImageNet-A")):
        if name in r:
            x = r[name]
            rows.append(f"| {label} | {_fmt(x['error'])} | {_fmt(x['top5_error'])} | "
                        f"{_fmt(x['rms'])} | {x['n']} |")
    if rows:
        lines += ["## ImageNet-R / -A (200-class logits)", "",
                  "| set | top-1 error | top-5 error | RMS | images |", "|---|---|---|---|---|",
                  *rows, ""]
    if "imagenet_o" in r:
        o = r["imagenet_o"]
        lines += ["## ImageNet-O", "", f"AUPR {_fmt(o['aupr'])} %, AUROC {_fmt(o['auroc'])} %, "
                  f"FPR95 {_fmt(o['fpr95'])} % ({o['n_out']} anomalies vs {o['n_in']} val images; "
                  f"score = -max softmax over the 200 classes)", ""]
    if "imagenet_p" in r:
        ip = r["imagenet_p"]
        lines += ["## ImageNet-P (difficulty 1)", "", "| perturbation | flip prob. | top-5 dist. | "
                  "FR | T5D ratio | videos |", "|---|---|---|---|---|---|"]
        for p, v in ip["per_perturbation"].items():
            lines.append(f"| {p} | {_fmt(v['flip_probability'])} | {_fmt(v['top5_distance'], 3)} "
                         f"| {_fmt(v.get('fr'))} | {_fmt(v.get('t5d_ratio'))} | {v['videos']} |")
        lines += ["", f"mFR {_fmt(ip.get('mfr'))} %, mT5D {_fmt(ip.get('mt5d'))} % (AlexNet = 100; "
                  f"needs AlexNet normalisers: --alexnet-p or --measure-alexnet)", ""]
    if "cifar_c" in r:
        cc = r["cifar_c"]
        lines += ["## CIFAR-C", "", f"mean corruption error {_fmt(cc['mean_error'])} % over "
                  f"{len(cc['per_corruption'])} corruptions x 5 severities", ""]
    if "pgd" in r:
        p = r["pgd"]
        lines += ["## PGD (CIFAR protocol)", "", f"adversarial error {_fmt(p['error'])} % "
                  f"(L-inf eps {p['eps']}, {p['steps']} steps of {p['step_size']}, "
                  f"clamped start: {p['clamp_start']}, {p['n']} images)", ""]
    return "\n".join(lines) + "\n"


def ce_chart(r, path):
    """Per-corruption CE bars with AlexNet (100) and the ResNet-50 mCE (76.7) as reference
    lines."""
    from ipmix_dali.plots import grouped_bars

    per = r["imagenet_c"]["per_corruption"]
    names = [c for c in list(CORRUPTIONS) + list(EXTRA_CORRUPTIONS) if c in per]
    return grouped_bars(
        [c.replace("_", " ") for c in names], {"CE": [per[c]["ce"] for c in names]}, path,
        f"ImageNet-C CE per corruption (%), mCE {_fmt(r['imagenet_c'].get('mce'))}",
        "corruption error CE (%, AlexNet = 100)",
        lines={"AlexNet 100": 100.0, f"ResNet-50 mCE {RESNET50_MCE}": RESNET50_MCE},
        rotate=True)


def severity_table(r) -> dict:
    """{corruption: {severity: top-1 error}} of a results.json's ImageNet-C cells."""
    cells = (r.get("imagenet_c") or {}).get("cells") or {}
    return {c: {int(s): v["error"] for s, v in sev.items()} for c, sev in cells.items()}


def severity_chart(models: dict, path, title="ImageNet-C top-1 error per corruption and "
                                              "severity"):
    """Per-corruption x severity error, one line per model ({name: results.json dict})."""
    from ipmix_dali.plots import severity_lines

    tables = {name: severity_table(r) for name, r in models.items()}
    tables = {name: t for name, t in tables.items() if t}
    if not tables:
        return None
    return severity_lines(tables, path, title)


def compare(outs, log=print, chart=None) -> str:
    """A Markdown table of several ``results.json`` side by side (``ipmix-dali eval-compare``);
    ``chart``: also a PNG of their ImageNet-C error per corruption and severity."""
    rows = []
    for o in outs:
        path = os.path.join(o, "results.json")
        if not os.path.isfile(path):
            raise ValueError(f"{o} has no results.json: pass folders written by ipmix-dali eval")
        with open(path) as f:
            rows.append((o, json.load(f)))

    def get(r, *keys):
        for k in keys:
            if not isinstance(r, dict) or k not in r:
                return None
            r = r[k]
        return r

    cols = [("clean err", ("clean", "error")), ("mCE", ("imagenet_c", "mce")),
            ("rel. mCE", ("imagenet_c", "relative_mce")), ("C RMS", ("imagenet_c", "mean_rms")),
            ("R err", ("imagenet_r", "error")), ("A err", ("imagenet_a", "error")),
            ("O AUPR", ("imagenet_o", "aupr")), ("mFR", ("imagenet_p", "mfr")),
            ("CIFAR-C err", ("cifar_c", "mean_error")),
            ("PGD err", ("pgd", "error"))]
    cols = [c for c in cols if any(get(r, *c[1]) is not None for _, r in rows)]
    lines = ["| run | " + " | ".join(c[0] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for o, r in rows:
        lines.append(f"| {o} | " + " | ".join(_fmt(get(r, *k)) for _, k in cols) + " |")
    text = "\n".join(lines) + "\n"
    log(text)
    if chart:
        written = severity_chart({os.path.basename(os.path.normpath(o)): r for o, r in rows},
                                 chart)
        log(f"wrote {written}" if written else "no ImageNet-C results to chart")
    return text

