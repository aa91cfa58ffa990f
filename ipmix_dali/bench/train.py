"""``ipmix-dali bench-train``: does the input pipeline keep up with the model?

Trains the same model twice for one epoch, on ``--data synthetic`` (device-resident random
batches: the model's own speed) and on an ImageFolder through the DALI pipeline with the chosen
augmentation, and compares their steady-state step rates (the second half of the steps, from the
per-step timestamps of ``metrics.jsonl``). The issue's target: IPMix + JSD at >= 0.95 x the
synthetic rate (ResNet-50, AMP, channels_last, batch 256, on an H100/H200).
"""
from __future__ import annotations

import json
import os
import tempfile

from ..atomic import write_json
from ..provenance import machine_info

__all__ = ["run_train_bench"]


def _rate(out_dir, batch_size):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        steps = [json.loads(line) for line in f if '"loss"' in line]
    if len(steps) < 4:
        raise ValueError(f"only {len(steps)} steps: give more --images (at least 4 batches)")
    half = steps[len(steps) // 2 - 1:]
    seconds = half[-1]["time"] - half[0]["time"]
    n = len(half) - 1
    return {"steps_per_s": n / seconds, "images_per_s": n * batch_size / seconds,
            "timed_steps": n}


def run_train_bench(data=None, images=2560, arch="resnet50", method="ipmix", jsd=True,
                    batch_size=256, amp="bf16", channels_last=True, device="gpu", threads=8,
                    mixing_set=None, out="bench/results/train.json", image_size=224,
                    log=print) -> dict:
    from ..mixing.builtin import write_fractal_set
    from ..tools.samples import write_jpeg_tree
    from ..train.config import TrainConfig
    from ..train.loop import train

    work = tempfile.mkdtemp(prefix="ipmix-bench-train-")
    if data is None:
        per = max(1, images // 10)
        for split, n in (("train", per), ("val", max(1, per // 10))):
            write_jpeg_tree(os.path.join(work, "data", split), classes=10, per_class=n, seed=1)
        data = os.path.join(work, "data")
    if method in ("pixmix", "ipmix", "layermix") and not mixing_set:
        mixing_set = os.path.join(work, "mix")
        write_fractal_set(mixing_set, 64, max(256, image_size + 32), 0, "png")
    common = dict(arch=arch, batch_size=batch_size, amp=amp, channels_last=channels_last,
                  image_size=image_size, val_resize=round(image_size * 256 / 224),
                  device=device, threads=threads, epochs=1, lr=0.01, tensorboard=False,
                  checkpoint_every=0, log_every=10, resume="none")
    from ..datasets import scan_image_folder

    n_train = len(scan_image_folder(os.path.join(data, "train")))
    rows = {}
    for name, cfg in (
            ("synthetic", TrainConfig(data="synthetic", method="none", jsd=jsd, num_classes=10,
                                      synthetic_size=n_train, out=os.path.join(work, "syn"),
                                      **common)),
            ("pipeline", TrainConfig(data=data, method=method, jsd=jsd, mixing_set=mixing_set,
                                     out=os.path.join(work, "pipe"), **common))):
        log(f"[bench-train] {name}: {arch}, batch {batch_size}, {method}{' + JSD' if jsd else ''}")
        train(cfg)
        rows[name] = _rate(cfg.out, batch_size)
    ratio = rows["pipeline"]["steps_per_s"] / rows["synthetic"]["steps_per_s"]
    result = {"benchmark": "train", "arch": arch, "method": method, "jsd": jsd,
              "batch_size": batch_size, "image_size": image_size, "amp": amp,
              "channels_last": channels_last,
              "device": device, "train_images": n_train, "rows": rows,
              "pipeline_over_synthetic": round(ratio, 3), "target": 0.95,
              "machine": machine_info()}
    if device == "gpu":
        import cupy

        from ..provenance import gpu_info as _gpu_info

        result["gpu"] = _gpu_info(cupy)
    if out:
        write_json(out, result)
    return result
