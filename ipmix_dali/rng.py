"""The only source of randomness: one ``numpy.random.Generator`` per (seed, shard, epoch, iteration).

Seeding by the batch's coordinates (not by a running stream) makes every batch reproducible on its
own: a resumed run, another shard count's rank, or a CPU re-run of a GPU batch draws the same plan.
"""
from __future__ import annotations

import numpy as np


def make_rng(seed: int, shard: int = 0, epoch: int = 0, iteration: int = 0) -> np.random.Generator:
    """A PCG64 generator keyed by the batch coordinates (all non-negative integers)."""
    key = [int(seed), int(shard), int(epoch), int(iteration)]
    if min(key) < 0:
        raise ValueError(f"seed, shard, epoch and iteration must be >= 0, got {key}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))
