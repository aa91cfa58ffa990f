"""What the trainer records: per-step losses (read back from the device in blocks), epoch
records, ``metrics.jsonl``, TensorBoard and the progress line.

Reading a loss back to the host waits for the GPU to finish that step, so the next step's
kernels are queued only then. On a GPU the losses stay on the device and :class:`StepLog`
reads them (with the one all-reduce that also carries the stop signal) every ``sync_every``
steps; each step still gets its own record.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import torch

from ipmix_dali.atomic import atomic_write

__all__ = ["StepLog", "EpochClock", "append_jsonl", "truncate_jsonl", "progress_line"]


class EpochClock:
    """Samples seen, time spent waiting for data, and their rates within one epoch."""

    def __init__(self):
        self.start = time.perf_counter()
        self.waited = 0.0
        self.seen = 0
        self._ready = self.start

    def batch_arrived(self):
        self.waited += time.perf_counter() - self._ready

    def step_done(self, samples: int):
        self.seen += samples
        self._ready = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.seen / max(self.elapsed, 1e-9)

    @property
    def wait_share(self) -> float:
        return self.waited / max(self.elapsed, 1e-9)


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_jsonl(path, step):
    """Drop the step records after ``step`` (written before a crash, redone after resume)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [ln for ln in f if json.loads(ln).get("step", -1) <= step]
    with atomic_write(path, "w") as f:
        f.writelines(keep)


def progress_line(epoch, done, total, loss, lr, rate, wait):
    """The progress line a log file gets every --log-every steps (a terminal gets a tqdm bar)."""
    width = 24
    filled = int(width * done / max(1, total))
    print(f"epoch {epoch} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
          f"loss {loss:.4f} lr {lr:.5f} {rate:.1f} img/s data-wait {100 * wait:.0f}%",
          flush=True)


class StepLog:
    """Losses of the steps not yet read back, and where records go (rank 0 writes).

    Args:
        dist_: the process group (:class:`~ipmix_dali.train.distributed.Dist`).
        device: where the losses live.
        path: ``metrics.jsonl``.
        writer: a TensorBoard ``SummaryWriter`` or None.
        steps_per_epoch, log_every, sync_every: as the config says.
    """

    def __init__(self, dist_, device, path, writer, steps_per_epoch, log_every, sync_every):
        self.d, self.device, self.path, self.writer = dist_, device, path, writer
        self.steps_per_epoch, self.log_every, self.sync_every = \
            steps_per_epoch, max(1, log_every), max(1, sync_every)
        self.pending = []  # (step, epoch, loss on the device, lr)
        self.tty = sys.stdout.isatty()
        self._bar = None  # the epoch's tqdm bar on a terminal

    def add(self, step, epoch, loss, lr):
        self.pending.append((step, epoch, loss.detach(), lr))

    @property
    def due(self) -> bool:
        return len(self.pending) >= self.sync_every

    def read_back(self, clock: EpochClock, stop_requested: bool) -> bool:
        """Read the pending losses (mean over ranks) and record them; True if any rank was
        asked to stop."""
        if not self.pending:
            return False
        *sums, stops = self.d.all_reduce_sum(
            torch.stack([loss for _, _, loss, _ in self.pending]).double().tolist()
            + [float(stop_requested)], self.device)
        for (at, ep, _, lr), loss_sum in zip(self.pending, sums):
            value = loss_sum / self.d.world
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {at}: lower --lr or "
                                         f"use --amp bf16")
            if not self.d.main:
                continue
            append_jsonl(self.path, {"step": at, "epoch": ep, "loss": value, "lr": lr,
                                     "time": time.time()})
            if self.writer is not None:
                self.writer.add_scalar("train/loss", value, at)
                self.writer.add_scalar("train/lr", lr, at)
            done = at - ep * self.steps_per_epoch
            if self.tty:
                self._progress_bar(ep, done, value, lr, clock)
            elif at % self.log_every == 0:
                progress_line(ep, done, self.steps_per_epoch, value, lr, clock.rate,
                              clock.wait_share)
        self.pending.clear()
        return stops > 0

    def _progress_bar(self, epoch, done, loss, lr, clock):
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}", unit="step",
                             leave=False, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)
        self._bar.set_postfix_str(f"loss {loss:.4f} lr {lr:.5f} {clock.rate:.1f} img/s "
                                  f"data-wait {100 * clock.wait_share:.0f}%")

    def epoch_end(self, record: dict, step: int):
        """The epoch's record: metrics.jsonl, TensorBoard, one printed line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self.d.main:
            return
        append_jsonl(self.path, record)
        if self.writer is not None:
            for key in ("val_top1", "val_top5", "val_loss", "train_img_per_s", "data_wait"):
                if key in record:
                    self.writer.add_scalar(f"epoch/{key}", record[key], step)
            self.writer.flush()
        val = (f"val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}% "
               if "val_top1" in record else "")
        print(f"epoch {record['epoch']}: {val}({record['train_img_per_s']:.1f} img/s, data "
              f"wait {100 * record['data_wait']:.0f}%)", flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
        if self.writer is not None:
            self.writer.close()
