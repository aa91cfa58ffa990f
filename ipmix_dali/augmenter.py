"""One augmentation recipe behind every entry point: plan -> mixing pictures -> views.

    aug = Augmenter(config, bank, get_executor("numpy"))
    plan = aug.plan((seed, shard, epoch, iteration), n)
    views = aug.views(images, plan)            # (clean, view1, view2) with JSD, else (view,)

The DALI stage (:class:`ipmix_dali.pipeline.AugmentStage`), the array function
(:func:`ipmix_dali.augment`) and the torch transforms (:mod:`ipmix_dali.transforms`) are thin
adapters over it, so they cannot drift apart: the same key gives the same pixels through every
one of them (``tests/test_augmenter.py``).

* ``plan(key, n)``: every random decision of a batch from ``make_rng(*key)``;
* ``pictures(plan)``: the plan's mixing-picture crops: from the bank on the host (CPU
  executors), or from the bank's resident copy on the GPU, cropped there (CuPy executor);
  None for the methods that do not mix;
* ``views(images, plan, pictures=None, out=None)``: the clean view (with JSD) and the
  augmented views, normalised, written into ``out`` ((V, N, S, S, 3), any strides and dtype)
  or new arrays. ``pictures`` overrides the plan's crops (the stage's reader mode).
"""
from __future__ import annotations

import numpy as np

from .config import MIXING_METHODS
from .plans import sample_plan
from .rng import make_rng

__all__ = ["Augmenter"]


class Augmenter:
    """The augmentation of ``config`` with mixing pictures from ``bank`` (a MixingBank, or None
    for methods that do not mix or whose pictures arrive cropped), run by ``executor``
    (:func:`ipmix_dali.executors.get_executor`) on ``device`` ("cpu" or "gpu"; ``device_id``
    the GPU, default the current one)."""

    def __init__(self, config, bank, executor, device: str = "cpu", device_id=None):
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        self.config, self.bank, self.executor = config, bank, executor
        self.device, self.device_id = device, device_id
        self.xp = np
        self._resident = None
        if device == "cpu":  # the executor's temporaries reuse freed memory (no page faults)
            from .memory import keep_freed_memory

            keep_freed_memory()
        if device == "gpu":
            from .device import current_device_id, import_cupy

            self.xp = import_cupy("the GPU augmentation")
            self.device_id = current_device_id() if device_id is None else int(device_id)
            if bank is not None and self.mixes:
                self._resident = bank.on_device(self.device_id)  # resident, synchronised

    @property
    def mixes(self) -> bool:
        return self.config.method in MIXING_METHODS

    def plan(self, key, n: int):
        if self.bank is not None:
            size, side = len(self.bank), self.bank.side
        else:  # no mixing, or the pictures arrive cropped (one uniform "bank" of crops)
            size, side = (1, self.config.image_size) if self.mixes else (0, 0)
        return sample_plan(self.config, int(n), make_rng(*key), size, side)

    def pictures(self, plan):
        if not self.mixes or self.bank is None:
            return None
        size = self.config.image_size
        if self._resident is not None:
            return self.executor.crop_pictures(self._resident, plan, size)
        shared = getattr(self.executor, "input_array", None)  # the CPU pool: no copy later
        out = (shared("pictures", (plan.n, size, size, 3), np.uint8)
               if shared is not None and plan.n else None)
        pics = self.bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, size, out=out)
        return self.xp.asarray(pics) if self.xp is not np else pics

    def first_view_is_normalized(self, plan) -> bool:
        """Whether view 0 of ``plan``'s output is the normalised images themselves (JSD's clean
        view, or "none"'s only view): what ``views(first_view_done=True)`` may skip."""
        return bool(self.config.jsd) or (self.config.method == "none" and plan.views == 1)

    def views(self, images, plan, pictures=None, out=None, first_view_done=False):
        """(clean, view1, view2) with JSD, else (view,): normalised float views of uint8
        (N, S, S, 3) ``images`` under ``plan``. ``first_view_done``: ``out[0]`` already holds
        the normalised images (JSD's clean view, or "none"'s only view), so it is not
        computed again (the CPU stage normalises while it resizes the crops)."""
        pics = self.pictures(plan) if pictures is None else pictures
        jsd = 1 if self.config.jsd else 0
        if first_view_done:
            if out is None or not self.first_view_is_normalized(plan):
                raise ValueError("first_view_done needs out, and a clean view or a 'none' plan")
            if jsd:
                self.executor.apply(images, pics, plan, out=out[1:])
            return tuple(out)
        if out is None:
            clean = self.executor.normalize(images, self.config) if jsd else None
            views = self.executor.apply(images, pics, plan)
            return ((clean,) if jsd else ()) + tuple(views)
        if jsd:
            self.executor.normalize(images, self.config, out=out[0])
        self.executor.apply(images, pics, plan, out=out[jsd:])
        return tuple(out)
