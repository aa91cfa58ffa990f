"""Per-step learning-rate schedule: linear warmup, then cosine to zero (the reference steps it
every iteration: ``LambdaLR`` with the cosine of ``step / total_steps``)."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base lr at ``step`` (0-based): ``(step + 1) / warmup`` during warmup,
    then ``0.5 (1 + cos(pi t))`` with ``t`` the fraction of the remaining steps done."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * t))
