"""Streaming evaluation of one loaded model over many image sets, with a per-set result cache.

Each set (clean val, one ImageNet-C cell, ImageNet-R, ...) is decoded by a DALI pipeline (mixed
decode on a GPU, CPU otherwise) and streamed through the same model; per set we keep the
per-sample confidence, correctness and top-5 hit (small arrays) and the ECE, and write them to
``cache/<key>.npz`` atomically, so an interrupted evaluation resumes with the next set. Every
protocol runs its forward passes through :meth:`Evaluator.logits` (the model's memory format and
``--amp``) and scores them with :class:`Scores` (the trainer's validation too).
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ipmix_dali.atomic import atomic_write
from ipmix_dali.config import IMAGENET_MEAN, IMAGENET_STD

from .metrics import calib_err

__all__ = ["Evaluator", "SetResult", "Scores"]


class Scores:
    """Top-1 and top-5 hits, summed cross-entropy and, with ``per_sample``, each sample's
    max-softmax confidence and top-1 hit, over batches of (logits, labels): the one scoring of
    every evaluation protocol and of the trainer's validation. Top-1 is the softmax's argmax
    (the first index on a tie)."""

    def __init__(self, per_sample: bool = False):
        self.n = self.top1 = self.top5 = 0
        self.loss_sum = 0.0
        self.per_sample = per_sample
        self._confidence, self._correct = [], []

    def add(self, logits, labels):
        """Score one batch; returns its softmax probabilities (float32)."""
        logits = logits.float()
        probs = logits.softmax(1)
        confidence, pred = probs.max(1)
        hit = pred == labels
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        self.top1 += int(hit.sum())
        self.top5 += int((top == labels[:, None]).any(dim=1).sum())
        self.loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        self.n += len(labels)
        if self.per_sample:
            self._confidence.append(confidence.cpu().numpy().astype(np.float64))
            self._correct.append(hit.cpu().numpy())
        return probs

    @property
    def confidence(self) -> np.ndarray:
        return np.concatenate(self._confidence) if self._confidence else np.zeros(0)

    @property
    def correct(self) -> np.ndarray:
        return np.concatenate(self._correct) if self._correct else np.zeros(0, bool)


class SetResult(dict):
    """``error``, ``top5_error``, ``rms`` (Hendrycks RMS calibration, %), ``ece`` (%), ``n``,
    ``images_per_s``, plus the arrays ``confidence`` and ``correct`` (not in the report)."""

    def summary(self) -> dict:
        """The numbers of the report, without the per-sample arrays."""
        return {k: v for k, v in self.items() if k not in ("confidence", "correct", "logits")}


class _ArrayNames:
    """What the cache key needs of an in-memory set."""

    def __init__(self, source, n, num_classes):
        self.source, self.n, self.num_classes = source, n, num_classes

    def __len__(self):
        return self.n


class Evaluator:
    """Run sets through ``model`` on ``device`` ("cpu" or "gpu").

    Args:
        cache_key: identifies the model and protocol (cache entries of another checkpoint or
            preprocessing are never reused).
        amp: bfloat16 autocast, on the CPU too (logits change slightly; off for
            number-for-number runs).
    """

    def __init__(self, model, device: str = "cpu", batch_size: int = 64, threads: int = 2,
                 cache_dir=None, cache_key: str = "", amp: bool = False, channels_last=False,
                 log=print):
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        self.dali_device = device
        self.model = model.to(self.device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.channels_last = channels_last
        self.batch_size, self.threads = batch_size, threads
        self.cache_dir, self.cache_key = cache_dir, cache_key
        self.amp = bool(amp)
        self.log = log

    @classmethod
    def of(cls, model, **kwargs) -> "Evaluator":
        """``model`` when it is an Evaluator already, else a new one around it: the protocols'
        functions take either."""
        return model if isinstance(model, cls) else cls(model, **kwargs)

    def inputs(self, images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        """uint8 (N, H, W, 3) images as the model's normalised float (N, 3, H, W) on the
        device."""
        x = torch.from_numpy(np.array(images)).to(self.device)  # a writable copy (of a memmap)
        return self.normalise(x.permute(0, 3, 1, 2).float() / 255, mean, std)

    def normalise(self, x, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        """(x - mean) / std of float (N, 3, H, W) images in [0, 1] (PGD differentiates it)."""
        m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
        return (x - m) / s

    def logits(self, images):
        """float32 logits of normalised images: the model's memory format and ``amp``; the
        caller chooses no_grad (the sets) or enable_grad (PGD)."""
        images = images.to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(images)
        return out.float()

    def _cache_path(self, name, files, protocol):
        if not self.cache_dir:
            return None
        if self.amp:  # another protocol's numbers (float32 entries keep their names)
            protocol = {**protocol, "amp": "bfloat16"}
        h = hashlib.sha256(json.dumps([self.cache_key, name, protocol, files.source,
                                       len(files)]).encode()).hexdigest()[:24]
        return os.path.join(self.cache_dir, f"{name.replace('/', '_')}-{h}.npz")

    def run(self, name: str, files, resize=None, crop: int = 224, logit_mask=None,
            mean=IMAGENET_MEAN, std=IMAGENET_STD, keep_logits=False):
        """Evaluate ``files`` (a FileList); ``logit_mask`` (1000-class indices) slices the logits
        before argmax/softmax (ImageNet-R/A/O). Cached by (model, set, protocol)."""
        protocol = {"resize": resize, "crop": crop, "mask": None if logit_mask is None else
                    list(map(int, logit_mask)), "mean": list(mean), "std": list(std)}
        path = self._cache_path(name, files, protocol)
        if path and os.path.exists(path) and not keep_logits:
            return self._cached(name, path)
        from ipmix_dali.loader import val_loader

        loader = val_loader(files, batch_size=self.batch_size, device=self.dali_device,
                            resize=resize, crop=crop, mean=mean, std=std,
                            num_threads=self.threads)
        return self._stream(name, loader, files.num_classes, files.source, logit_mask, path,
                            keep_logits)

    def run_arrays(self, name: str, images, labels, num_classes: int, logit_mask=None,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD, key=""):
        """The same for uint8 (N, H, W, 3) images already preprocessed (in-memory corruptions).
        ``key`` names the images for the cache (e.g. the corruption, severity and seed)."""
        path = self._cache_path(name, _ArrayNames(key, len(images), num_classes),
                                {"arrays": key, "mean": list(mean), "std": list(std)})
        if path and os.path.exists(path):
            return self._cached(name, path)
        labels = np.asarray(labels)

        def batches():
            for i in range(0, len(images), self.batch_size):
                yield (self.inputs(images[i:i + self.batch_size], mean, std),
                       torch.from_numpy(labels[i:i + self.batch_size]).long())

        return self._stream(name, batches(), num_classes, key, logit_mask, path, False)

    def _cached(self, name, path):
        with np.load(path, allow_pickle=False) as z:
            res = SetResult(json.loads(str(z["meta"])))
            res["confidence"], res["correct"] = z["confidence"], z["correct"]
        res["cached"] = True
        self.log(f"  {name}: cached, error {res['error']:.2f}%")
        return res

    def _stream(self, name, batches, set_classes, source, logit_mask, path, keep_logits):
        from torchmetrics.classification import MulticlassCalibrationError

        mask = None if logit_mask is None else torch.as_tensor(np.asarray(logit_mask),
                                                               device=self.device)
        classes = None
        scores = Scores(per_sample=True)
        logits_all = []
        ece_metric = None
        t0 = time.perf_counter()
        with torch.no_grad():
            for images, labels in batches:
                labels = labels.to(self.device)
                logits = self.logits(images)
                if mask is not None:
                    logits = logits[:, mask]
                if classes is None:
                    classes = logits.shape[1]
                    if set_classes > classes:
                        raise ValueError(f"{source} has {set_classes} class folders but the "
                                         f"model gives {classes} logits: pass the right "
                                         f"--num-classes, or the set's 200-class subset")
                    ece_metric = MulticlassCalibrationError(num_classes=classes, n_bins=15,
                                                            norm="l1").to(self.device)
                ece_metric.update(scores.add(logits, labels), labels)
                if keep_logits:
                    logits_all.append(logits.cpu().numpy())
        seconds = time.perf_counter() - t0
        confidence, hits = scores.confidence, scores.correct
        n = scores.n
        res = SetResult(error=100.0 * (1 - hits.mean()), top5_error=100.0 * (1 - scores.top5 / n),
                        rms=100.0 * calib_err(confidence, hits) if n >= 100 else None,
                        ece=100.0 * float(ece_metric.compute()), n=int(n),
                        images_per_s=round(n / seconds, 1))
        if path:
            meta = {k: v for k, v in res.items()}
            with atomic_write(path) as f:
                np.savez(f, meta=json.dumps(meta), confidence=confidence, correct=hits)
        res["confidence"], res["correct"] = confidence, hits
        if keep_logits:
            res["logits"] = np.concatenate(logits_all)
        self.log(f"  {name}: error {res['error']:.2f}% ({n} images, {res['images_per_s']} img/s)")
        return res
