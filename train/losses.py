"""Training losses: cross-entropy with label smoothing, and the JSD consistency loss (docs/augmentations.md §1.5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

JSD_WEIGHT = 12.0  # AugMix / IPMix / LayerMix


def jsd_loss(logits_clean, logits_aug1, logits_aug2, labels, weight: float = JSD_WEIGHT,
             label_smoothing: float = 0.0):
    """``CE(clean, y) + weight * JS(p_clean, p_aug1, p_aug2)``, as the reference computes it.

    ``M = clamp((p_clean + p_aug1 + p_aug2) / 3, 1e-7, 1)``; each term is
    ``kl_div(log M, p_i, reduction='batchmean')``; cross-entropy on the clean view only.
    """
    ce = F.cross_entropy(logits_clean, labels, label_smoothing=label_smoothing)
    p = [F.softmax(x.float(), dim=1) for x in (logits_clean, logits_aug1, logits_aug2)]
    log_m = torch.clamp((p[0] + p[1] + p[2]) / 3.0, 1e-7, 1).log()
    js = sum(F.kl_div(log_m, pi, reduction="batchmean") for pi in p) / 3.0
    return ce + weight * js
