"""Robustness metrics exactly as the reference tools compute them (docs/evaluation.md).

* :func:`calib_err`: Hendrycks' RMS calibration error (bins of 100 by sorted confidence, the
  last, most confident bin skipped) — the number PixMix/IPMix print.
* :func:`ece`: torchmetrics' multiclass ECE (15 equal-width bins, L1), a different metric.
* :func:`corruption_errors`: CE, mCE, relative CE and relative mCE against AlexNet.
* :func:`ood_measures`: AUROC, AUPR (average precision) and FPR at 95 % recall, anomalies
  positive, score = -max softmax probability.
"""
from __future__ import annotations

import numpy as np

# The 15 standard ImageNet-C corruptions in test.py's order, the 4 extra ("validation") ones and
# the grouped layout's folders: one list, ipmix_dali.corruptions.params.
from ipmix_dali.corruptions.params import EXTRA as EXTRA_CORRUPTIONS
from ipmix_dali.corruptions.params import GROUPS
from ipmix_dali.corruptions.params import STANDARD as CORRUPTIONS

__all__ = ["ALEXNET_ERR", "ALEXNET_CLEAN_ERR", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "GROUPS",
           "calib_err", "ece", "corruption_errors", "ood_measures", "fpr_at_recall",
           "top5_distance", "flip_probability"]

# AlexNet's mean top-1 error over the 5 severities (fractions; x 250,000 = exact counts).
ALEXNET_ERR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
    "speckle_noise": 0.845388, "gaussian_blur": 0.787108, "spatter": 0.717512,
    "saturate": 0.658248,
}
ALEXNET_CLEAN_ERR = 0.4348


def calib_err(confidence, correct, p: str = "2", beta: int = 100) -> float:
    """Hendrycks' ``calib_err``: adaptive bins of ``beta`` examples by ascending confidence (the
    last bin absorbs the remainder and is *not* visited), weighted by n_b / N.

    Returns a fraction (x 100 for the printed number). ``p``: "2" (RMS), "1" (MAD), "infty".
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    n = len(confidence)
    if n < beta:
        raise ValueError(f"calib_err needs at least {beta} examples (one bin), got {n}")
    order = np.argsort(confidence)  # quicksort, as the reference (tie order matches)
    confidence, correct = confidence[order], correct[order]
    bins = [[i * beta, (i + 1) * beta] for i in range(n // beta)]
    bins[-1][1] = n
    total = 0.0
    for start, stop in bins[:-1]:  # the reference's range(len(bins) - 1): last bin skipped
        gap = abs(np.nanmean(confidence[start:stop]) - np.nanmean(correct[start:stop]))
        size = stop - start
        if p == "2":
            total += size / n * gap ** 2
        elif p == "1":
            total += size / n * gap
        elif p in ("infty", "infinity", "max"):
            total = max(total, gap)
        else:
            raise ValueError(f"p must be '1', '2' or 'infty', got {p!r}")
    return float(np.sqrt(total)) if p == "2" else float(total)


def ece(probs, labels, n_bins: int = 15) -> float:
    """torchmetrics' ``multiclass_calibration_error(norm='l1')`` of (N, C) probabilities."""
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = torch.as_tensor(np.asarray(probs, dtype=np.float32))
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return float(multiclass_calibration_error(probs, labels, num_classes=probs.shape[1],
                                              n_bins=n_bins, norm="l1"))


def corruption_errors(errors: dict, clean_error: float | None = None) -> dict:
    """CE and relative CE per corruption, mCE and relative mCE over the 15 standard ones.

    ``errors[c][s]``: top-1 error (fraction) of corruption c at severity s (1..5, all five
    needed); ``clean_error``: the model's clean val error (fraction) for the relative numbers.
    Values are returned in percent. Extra corruptions get CE (AlexNet-normalised) but never
    enter mCE.
    """
    out = {"per_corruption": {}, "missing": []}
    for c, by_sev in errors.items():
        sev = sorted(int(s) for s in by_sev)
        if sev != [1, 2, 3, 4, 5]:
            raise ValueError(f"corruption {c} has severities {sev}: all of 1-5 are needed for "
                             f"its CE (evaluate the missing ones or pass --corruptions)")
        mean = float(np.mean([by_sev[s] for s in sorted(by_sev, key=int)]))
        row = {"mean_error": 100 * mean}
        if c in ALEXNET_ERR:
            row["ce"] = 100 * mean / ALEXNET_ERR[c]
            if clean_error is not None:
                row["relative_ce"] = float(100 * (mean - clean_error)
                                           / (ALEXNET_ERR[c] - ALEXNET_CLEAN_ERR))
        out["per_corruption"][c] = row
    standard = [c for c in CORRUPTIONS if c in out["per_corruption"]]
    out["missing"] = [c for c in CORRUPTIONS if c not in out["per_corruption"]]
    if standard and not out["missing"]:
        out["mce"] = float(np.mean([out["per_corruption"][c]["ce"] for c in CORRUPTIONS]))
        out["unnormalized_mce"] = float(np.mean([out["per_corruption"][c]["mean_error"]
                                                 for c in CORRUPTIONS]))
        if clean_error is not None:
            out["relative_mce"] = float(np.mean([out["per_corruption"][c]["relative_ce"]
                                                 for c in CORRUPTIONS]))
    extras = [c for c in EXTRA_CORRUPTIONS if c in out["per_corruption"]]
    if extras:
        out["extra_mean_ce"] = float(np.mean([out["per_corruption"][c]["ce"] for c in extras]))
    return out


def fpr_at_recall(scores, labels, recall_level: float = 0.95) -> float:
    """False-positive rate at the threshold whose recall is closest to ``recall_level``
    (Hendrycks' ``fpr_and_fdr_at_recall``, positives = label 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, labels = scores[order], labels[order]
    distinct = np.where(np.diff(scores))[0]
    thresholds = np.r_[distinct, labels.size - 1]
    tps = np.cumsum(labels)[thresholds]
    fps = 1 + thresholds - tps
    recall = tps / tps[-1]
    last = tps.searchsorted(tps[-1])
    sl = slice(last, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return float(fps[cutoff] / np.sum(~labels))


def ood_measures(out_scores, in_scores) -> dict:
    """AUROC, AUPR and FPR95 (percent) with the anomalies (``out_scores``) as positives."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.r_[np.asarray(out_scores, np.float64), np.asarray(in_scores, np.float64)]
    labels = np.r_[np.ones(len(out_scores)), np.zeros(len(in_scores))]
    return {"auroc": 100 * float(roc_auc_score(labels, scores)),
            "aupr": 100 * float(average_precision_score(labels, scores)),
            "fpr95": 100 * fpr_at_recall(scores, labels)}


def top5_distance(ref_logits, cur_logits) -> float:
    """ImageNet-P's pair distance: sum over the reference frame's top 5 classes of how far their
    rank moved within the top 5, ``sum_i |min(sigma_i, 6) - i|``."""
    ref = np.argsort(-np.asarray(ref_logits), kind="stable")[:5]
    rank = np.empty(len(cur_logits), dtype=np.int64)
    rank[np.argsort(-np.asarray(cur_logits), kind="stable")] = np.arange(1, len(cur_logits) + 1)
    return float(sum(abs(min(rank[c], 6) - i) for i, c in enumerate(ref, 1)))


def flip_probability(predictions, noise: bool) -> float:
    """One sequence's flip rate at difficulty 1: consecutive frames, or every frame against the
    first for the noise perturbations."""
    p = np.asarray(predictions)
    if len(p) < 2:
        raise ValueError("a sequence needs at least 2 frames")
    return float(np.mean(p[1:] != (p[0] if noise else p[:-1])))
