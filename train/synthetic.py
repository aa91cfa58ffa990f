"""``--data synthetic``: random batches resident on the training device, to time the model alone.

A fixed pool of ``pool`` random images (normal noise, the shape the model would get after
normalisation) and labels, drawn once from the seed. Step ``s`` of the global batch takes pool
entries ``(s * global_batch + i) % pool``; rank ``r`` of ``world`` takes its contiguous slice of
that global batch. So one process with batch 8 and two with batch 4 see the same samples per
step (the 1-vs-2-process test), and no host work or copy happens per step.
"""
from __future__ import annotations

import math

import torch


class SyntheticLoader:
    def __init__(self, batch_size: int, image_size: int, num_classes: int, size: int,
                 device, seed: int = 0, rank: int = 0, world: int = 1, views: int = 1,
                 pool: int = 256, channels_last: bool = False):
        self.batch_size, self.rank, self.world, self.views = batch_size, rank, world, views
        self.global_batch = batch_size * world
        self.iters = max(1, math.ceil(size / self.global_batch))
        g = torch.Generator().manual_seed(seed)
        images = torch.randn(pool, 3, image_size, image_size, generator=g)
        self.labels = torch.randint(0, num_classes, (pool,), generator=g).to(device)
        self.images = images.to(device)
        if channels_last:
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.pool = pool
        self.position = 0  # steps done in the current epoch
        self.epoch = 0

    def __len__(self):
        return self.iters

    def __iter__(self):
        while self.position < self.iters:
            step = self.epoch * self.iters + self.position
            start = step * self.global_batch + self.rank * self.batch_size
            idx = (torch.arange(start, start + self.batch_size) % self.pool).to(self.images.device)
            self.position += 1
            images = self.images[idx]
            if self.views > 1:  # JSD: the same work as (clean, view1, view2)
                images = torch.cat([images] * self.views)
            yield images, self.labels[idx]
        self.epoch += 1
        self.position = 0

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
