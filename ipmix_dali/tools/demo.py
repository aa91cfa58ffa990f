"""``ipmix-dali demo``: the whole job on built-in data, on the CPU, in a few minutes.

1. scikit-learn's handwritten digits (1,797 real 8x8 scans) upscaled to 64x64 RGB JPEGs, written as
   an ImageFolder ``train/`` (80 %) and ``val/`` (20 %, stratified by a fixed seed);
2. a small IFS fractal mixing set (``make-mixing-set``'s renderer);
3. the same small ResNet trained twice through the DALI CPU pipeline: baseline (no augmentation)
   and IPMix (the CIFAR preset; JSD off to fit the time budget);
4. both evaluated on the clean val set and on corrupted copies of it;
5. ``report.json``, ``report.md`` and ``report.png`` (clean and corruption error per method).

Corruptions: the 15 standard ImageNet-C corruptions of :mod:`ipmix_dali.corruptions` at
severities 1-5 (CIFAR parameters: the images are 64 px), made once from the val images and
JPEG-q85 round-tripped like the ImageNet-C files, shared by both models. These are
ImageNet-C-*style* numbers on a toy dataset (unnormalised mean errors; AlexNet's CE normalisers
belong to ImageNet), not ImageNet-C results.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
from PIL import Image

from ..atomic import atomic_write, write_json
from ..corruptions.params import STANDARD
from ..corruptions.params import STANDARD_GROUPS as GROUPS

__all__ = ["run_demo", "write_digits_folder", "GROUPS"]

SIDE = 64


def write_digits_folder(root, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """The digits as 64x64 RGB JPEGs in ``root/train/<digit>/`` and ``root/val/<digit>/``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    for label in range(10):
        idx = np.flatnonzero(digits.target == label)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        for split, part in (("val", idx[:n_val]), ("train", idx[n_val:])):
            folder = os.path.join(str(root), split, str(label))
            os.makedirs(folder, exist_ok=True)
            for i in part:
                path = os.path.join(folder, f"digit_{i:04d}.JPEG")
                counts[split] += 1
                if os.path.exists(path):
                    continue
                grey = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
                img = Image.fromarray(grey).resize((SIDE, SIDE), Image.BICUBIC).convert("RGB")
                with atomic_write(path) as f:
                    img.save(f, format="JPEG", quality=95)
    return counts


def _load_folder(files):
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files.files])
    return images, np.asarray(files.labels)


def _chart(results, path):
    """Top-1 error per method: clean, each corruption group, their mean."""
    from ..plots import grouped_bars

    names = ["clean"] + list(GROUPS) + ["mean corruption"]
    series = {m: [r["clean_error"]] + [r["group_error"][g] for g in GROUPS]
              + [r["mean_corruption_error"]] for m, r in results.items()}
    return grouped_bars(names, series, path, "ipmix-dali demo: digits val, clean and corrupted "
                        "(ImageNet-C-style, severities 1-5)", "top-1 error (%)")


def run_demo(out="demo_out", epochs: int = 8, arch: str = "resnet18", batch_size: int = 64,
             seed: int = 0, threads: int = 2) -> dict:
    import torch

    from ..datasets import scan_image_folder
    from ..eval.runner import Evaluator
    from ..mixing.builtin import write_fractal_set
    from ..train.checkpoint import load_latest
    from ..train.config import TrainConfig
    from ..train.loop import build_model, train

    t0 = time.perf_counter()
    data, mix = os.path.join(out, "digits"), os.path.join(out, "mixing_set")
    print(f"[demo] writing the digits as JPEGs under {data}", flush=True)
    counts = write_digits_folder(data, seed=seed)
    print(f"[demo] {counts['train']} train / {counts['val']} val images; "
          f"rendering 32 fractal mixing pictures", flush=True)
    write_fractal_set(mix, 32, 72, seed, "png")
    val_files = scan_image_folder(os.path.join(data, "val"))
    images, labels = _load_folder(val_files)
    from ..corruptions.make import corrupted_arrays

    print(f"[demo] corrupting the {len(images)} val images: 15 ImageNet-C corruptions x 5 "
          f"severities", flush=True)
    corrupted = {(c, sev): corrupted_arrays(images, c, sev, seed) for c in STANDARD
                 for sev in range(1, 6)}
    results = {}
    for method in ("baseline", "ipmix"):
        print(f"[demo] training {arch} with {method} for {epochs} epochs (DALI CPU pipeline)",
              flush=True)
        cfg = TrainConfig(data=data, out=os.path.join(out, method), arch=arch,
                          method="none" if method == "baseline" else "ipmix", preset="cifar",
                          mixing_set=mix if method == "ipmix" else None, image_size=SIDE,
                          val_resize=SIDE, epochs=epochs, batch_size=batch_size, lr=0.05,
                          weight_decay=5e-4, warmup_epochs=1, threads=threads, seed=seed,
                          log_every=10)
        summary = train(cfg)
        if "stopped" in summary:  # a signal: the run is checkpointed, the demo ends here
            stop = summary["stopped"]
            print(f"[demo] stopped by {stop['signal']} while training {method} (step "
                  f"{stop['step']}, checkpointed): no report; rerun `ipmix-dali demo --out "
                  f"{out}` to resume", flush=True)
            return {"stopped": {**stop, "method": method}}
        model = build_model(cfg, val_files.num_classes)
        _, state = load_latest(cfg.out)
        model.load_state_dict(state["model"])
        from ..config import make_config

        aug = make_config("none", "cifar")
        ev = Evaluator(model, batch_size=256, log=lambda message: None)

        def error(imgs):
            return ev.run_arrays("demo", imgs, labels, val_files.num_classes, mean=aug.mean,
                                 std=aug.std)["error"]

        clean = error(images)
        per = {}
        for k, name in enumerate(STANDARD, 1):  # a line per corruption: minutes in all
            per[name] = float(np.mean([error(corrupted[(name, sev)]) for sev in range(1, 6)]))
            print(f"[demo] {method}: corruption {k}/{len(STANDARD)} {name}: error "
                  f"{per[name]:.2f}%", flush=True)
        groups = {g: float(np.mean([per[c] for c in names])) for g, names in GROUPS.items()}
        results[method] = {"clean_error": clean, "corruption_error": per, "group_error": groups,
                           "mean_corruption_error": float(np.mean(list(per.values()))),
                           "train_summary": summary}
        print(f"[demo] {method}: clean error {clean:.2f}%, mean corruption error "
              f"{results[method]['mean_corruption_error']:.2f}%", flush=True)
    report = {"dataset": "scikit-learn digits, 64x64 RGB JPEG", "train_images": counts["train"],
              "val_images": counts["val"], "arch": arch, "epochs": epochs,
              "batch_size": batch_size, "corruptions": list(STANDARD), "severities": [1, 2, 3, 4, 5],
              "note": "ImageNet-C-style corruptions (ipmix_dali.corruptions, CIFAR parameters) "
                      "on a toy dataset; not ImageNet-C",
              "results": results, "seconds": round(time.perf_counter() - t0, 1),
              "torch_threads": torch.get_num_threads()}
    write_json(os.path.join(out, "report.json"), report)
    lines = ["# ipmix-dali demo report", "",
             f"{arch}, {epochs} epochs, batch {batch_size}, digits 64x64 "
             f"({counts['train']} train / {counts['val']} val), DALI CPU pipeline, "
             f"{report['seconds']:.0f} s in all.", "",
             "Top-1 error (%); each group is the mean over its corruptions and severities 1-5 "
             "(the 15 ImageNet-C corruptions, ImageNet-C-style, not ImageNet-C).", "",
             "| method | clean | " + " | ".join(GROUPS) + " | mean corruption |",
             "|---|---|" + "---|" * len(GROUPS) + "---|"]
    for m, r in results.items():
        lines.append(f"| {m} | {r['clean_error']:.2f} | " + " | ".join(
            f"{r['group_error'][g]:.2f}" for g in GROUPS)
            + f" | {r['mean_corruption_error']:.2f} |")
    with atomic_write(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _chart(results, os.path.join(out, "report.png"))
    print("\n".join(lines[6:]))
    print(f"[demo] wrote {out}/report.json, report.md, report.png in {report['seconds']:.0f} s")
    return report


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_demo()["results"], indent=1))
