"""The CIFAR protocols: CIFAR-10/100-C (``.npy`` layout) and PGD (docs/evaluation.md).

* CIFAR-C: ``<corruption>.npy`` (5 severities x the test set, uint8 (N, 32, 32, 3)) and
  ``labels.npy``; the mean top-1 error over the 15 standard corruptions found.
* PGD, the PixMix/IPMix CIFAR attack: L-inf, eps 2/255, 20 steps of 0.5/255 on ``--cifar-test``.

Both normalise with ``--mean/--std`` when given, else 0.5 / 0.5 (the reference CIFAR scripts'
``Normalize``), and run through one :class:`~.runner.Evaluator` (``--amp``, ``--channels-last``).
"""
from __future__ import annotations

import os

import numpy as np

from ipmix_dali.config import CIFAR_MEAN, CIFAR_STD

from .metrics import CORRUPTIONS
from .runner import Evaluator

__all__ = ["evaluate_cifar_c", "pgd_error", "cifar_c", "pgd"]


def evaluate_cifar_c(model, folder, device="cpu", batch=64, log=print, mean=CIFAR_MEAN,
                     std=CIFAR_STD) -> dict:
    """Top-1 error (%) per corruption of a CIFAR-C folder, their mean and the missing ones.
    ``model``: a torch model or an :class:`~.runner.Evaluator` (then its cache keeps each
    corruption's result, keyed by the file's size and time)."""
    folder = os.path.expanduser(str(folder))
    labels_path = os.path.join(folder, "labels.npy")
    if not os.path.isfile(labels_path):
        raise ValueError(f"{folder} has no labels.npy: pass --cifar-c DIR with the CIFAR-10-C or "
                         f"CIFAR-100-C .npy files")
    labels = np.load(labels_path).astype(np.int64)
    ev = Evaluator.of(model, device=device, batch_size=batch, log=log)
    per = {}
    for c in CORRUPTIONS:
        path = os.path.join(folder, f"{c}.npy")
        if not os.path.isfile(path):
            continue
        data = np.load(path, mmap_mode="r")
        if data.shape[0] != len(labels) or data.shape[1:] != (32, 32, 3):
            raise ValueError(f"{path} has shape {data.shape}: expected ({len(labels)}, 32, 32, 3)"
                             f" (5 severities x the test set, like labels.npy)")
        st = os.stat(path)
        num_classes = int(labels.max()) + 1 if len(labels) else 1
        per[c] = float(ev.run_arrays(f"cifar-c/{c}", data, labels, num_classes, mean=mean,
                                     std=std, key=f"{os.path.abspath(path)}:{st.st_size}:"
                                                  f"{st.st_mtime_ns}")["error"])
    if not per:
        raise ValueError(f"{folder} holds none of the 15 corruption .npy files")
    return {"per_corruption": per, "mean_error": float(np.mean(list(per.values()))),
            "missing": [c for c in CORRUPTIONS if c not in per]}


def pgd_error(model, images, labels, eps=2 / 255, steps=20, step_size=0.5 / 255,
              clamp_start=False, seed=0, batch=256, device="cpu", mean=CIFAR_MEAN,
              std=CIFAR_STD):
    """Adversarial error (%) under the PixMix/IPMix CIFAR PGD: inputs in [0, 1], the model sees
    them normalised (``2x - 1`` with the default 0.5 / 0.5), uniform random start in the
    eps-ball, CE summed, sign steps, projection and clamp after each step, model in eval mode.
    ``model``: a torch model or an :class:`~.runner.Evaluator` (its amp applies to the attack).

    The reference does not clamp the random start to [0, 1] before the first step (the first
    forward sees values outside the image range); ``clamp_start=True`` is the fixed behaviour.
    """
    import torch
    import torch.nn.functional as F

    ev = Evaluator.of(model, device=device, batch_size=batch)
    dev = ev.device
    g = torch.Generator(device=dev).manual_seed(seed)
    ev.model.eval()
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
                loss = F.cross_entropy(ev.logits(ev.normalise(adv, mean, std)), y,
                                       reduction="sum")
                grad, = torch.autograd.grad(loss, adv)
            adv = adv.detach() + step_size * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            wrong += int((ev.logits(ev.normalise(adv, mean, std)).argmax(1) != y).sum())
    return 100.0 * wrong / len(labels)


def cifar_c(run) -> dict:
    """The protocol of ``--cifar-c``."""
    run.log("CIFAR-C")
    return evaluate_cifar_c(run.evaluator, run.config.cifar_c, log=run.log,
                            **run.config.normalisation("cifar"))


def pgd(run) -> dict:
    """The protocol of ``--pgd`` on ``--cifar-test``."""
    cfg = run.config
    with np.load(cfg.cifar_test) as z:
        images, labels = z["images"], z["labels"]
    run.log(f"PGD on {len(labels)} images")
    return {"error": pgd_error(run.evaluator, images, labels, clamp_start=cfg.pgd_clamp_start,
                               **cfg.normalisation("cifar")),
            "eps": "2/255", "steps": 20, "step_size": "0.5/255",
            "clamp_start": cfg.pgd_clamp_start, "n": int(len(labels))}
