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

Every set is read with the same ``--mean/--std`` (default ImageNet's; 0.5 on CIFAR-C and PGD, as
the CIFAR scripts) and goes through one :class:`~.runner.Evaluator` (``--amp``,
``--channels-last``, the per-set cache). One module per protocol: ``imagenet.py`` (clean, -R, -A,
-O), ``imagenet_c.py``, ``imagenet_p.py``, ``cifar.py`` (CIFAR-C, PGD); :data:`PROTOCOLS` runs
them in order. Results (``report.py``): ``results.json`` (every number, the protocol, versions),
``report.md``, ``imagenet_c.png`` (CE per corruption) and ``imagenet_c_severity.png`` (error per
corruption and severity).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from functools import cached_property

from . import cifar, imagenet, imagenet_c, imagenet_p
from .config import EvalConfig, check_config
from .report import write_report
from .runner import Evaluator

__all__ = ["EvalConfig", "evaluate", "PROTOCOLS", "EvalRun"]

# (results key, whether the config asks for it, the protocol), run in this order: ImageNet-C's
# relative CE needs the clean error, ImageNet-O and --corrupt-on-the-fly the val files.
PROTOCOLS = (
    ("clean", lambda run: run.config.imagenet_val, imagenet.clean),
    ("imagenet_c", lambda run: run.cells, imagenet_c.from_folders),
    ("imagenet_c", lambda run: run.config.corrupt_on_the_fly, imagenet_c.on_the_fly),
    ("imagenet_r", lambda run: run.config.imagenet_r, imagenet.imagenet_r),
    ("imagenet_a", lambda run: run.config.imagenet_a, imagenet.imagenet_a),
    ("imagenet_o", lambda run: run.config.imagenet_o, imagenet.imagenet_o),
    ("imagenet_p", lambda run: run.config.imagenet_p, imagenet_p.imagenet_p),
    ("cifar_c", lambda run: run.config.cifar_c, cifar.cifar_c),
    ("pgd", lambda run: run.config.pgd, cifar.pgd),
)


class EvalRun:
    """What the protocols share: the config, the one :class:`~.runner.Evaluator`, the log, the
    checked ImageNet-C cells, the protocol descriptions of the report and the results so far."""

    def __init__(self, config: EvalConfig, evaluator: Evaluator, cells: dict, log=print):
        self.config, self.evaluator, self.cells, self.log = config, evaluator, cells, log
        self.protocol = _protocol(config)
        self.results = {}

    @cached_property
    def val_files(self):
        from ipmix_dali.datasets import scan_image_folder

        return scan_image_folder(self.config.imagenet_val)


def _key(checkpoint, arch, extra):
    st = os.stat(checkpoint)
    return hashlib.sha256(json.dumps([os.path.abspath(checkpoint), st.st_size, st.st_mtime_ns,
                                      arch, extra]).encode()).hexdigest()[:16]


def _versions():
    from ipmix_dali.provenance import package_versions

    return package_versions(("torch", "torchvision", "numpy", "nvidia.dali", "torchmetrics",
                             "sklearn"))


def _protocol(cfg: EvalConfig) -> dict:
    """The report's description of how each set was read."""
    resize, crop, norm = cfg.resize_side, cfg.crop, cfg.normalisation("imagenet")
    normalisation = f"mean {norm['mean']}, std {norm['std']}"
    if (cfg.cifar_c or cfg.pgd) and cfg.normalisation("cifar") != norm:
        cifar_norm = cfg.normalisation("cifar")
        normalisation += f"; CIFAR-C and PGD: mean {cifar_norm['mean']}, std {cifar_norm['std']}"
    return {"imagenet_c": f"pixmix-compat: Resize({resize}) + CenterCrop({crop})"
            if cfg.pixmix_compat else f"canonical (Hendrycks test.py): the {crop}x{crop} files as "
                                      f"they are",
            "clean": f"Resize({resize}) + CenterCrop({crop})",
            "normalisation": normalisation,
            "subsets": "ImageNet-R/A/O: logits sliced to the 200 classes",
            "calibration": "RMS: Hendrycks calib_err (bins of 100, last bin skipped); "
                           "ECE: torchmetrics, 15 bins, L1"}


def evaluate(config: EvalConfig, model=None, log=print) -> dict:
    """Evaluate ``config.checkpoint`` (or an already built ``model``, for the Python API) on
    every set ``config`` names; results.json, report.md and the charts go to ``config.out``."""
    cfg = check_config(config)
    cells = imagenet_c.imagenet_c_cells(cfg)  # every folder checked before loading anything
    if model is None:
        from .load_model import load_model

        model = load_model(cfg.checkpoint, cfg.arch, cfg.num_classes, cfg.unsafe_pickle)
        cache_key = _key(cfg.checkpoint, cfg.arch, [cfg.num_classes, cfg.pixmix_compat])
    else:
        cache_key = hashlib.sha256(repr([cfg.checkpoint, cfg.arch, cfg.num_classes,
                                         cfg.pixmix_compat]).encode()).hexdigest()[:16]
    os.makedirs(cfg.out, exist_ok=True)
    ev = Evaluator(model, cfg.device, cfg.batch_size, cfg.threads, os.path.join(cfg.out, "cache"),
                   cache_key, amp=cfg.amp, channels_last=cfg.channels_last, log=log)
    run = EvalRun(cfg, ev, cells, log)
    results = run.results
    results.update(checkpoint=str(cfg.checkpoint), arch=cfg.arch, num_classes=cfg.num_classes,
                   protocol=run.protocol, versions=_versions())
    t0 = time.perf_counter()
    for key, wanted, protocol in PROTOCOLS:
        if wanted(run):
            results[key] = protocol(run)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    write_report(results, cfg.out)
    return results
