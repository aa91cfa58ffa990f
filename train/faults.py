"""A test hook, not a feature: ``IPMIX_DALI_FAULT=rank<R>:<point>`` makes rank R kill itself
with SIGKILL at a named point of a run, so that tests/test_elastic.py can check what torchrun's
``--max-restarts`` and the resume make of a worker that dies there. It fires only in the first
attempt (``TORCHELASTIC_RESTART_COUNT`` 0 or unset): the restarted workers run through.

Points:

* ``step<N>``: training step N, its batch arrived, before its forward pass (mid-epoch: the
  other ranks wait in that step's gradient all-reduce);
* ``val``: the first validation, after its first batch is scored (before the all-reduce of
  the scores);
* ``ckpt_write`` or ``ckpt_write@<N>``: writing the checkpoint (of step N; without ``@N`` the
  first one), when half of its tensor bytes are in the temp file (flushed), before the rename.
  Only rank 0 writes checkpoints: name ``rank0``.

Unset (always, outside tests) every call here is one dictionary look-up.
"""
from __future__ import annotations

import os
import re
import signal
import sys

__all__ = ["ENV", "at_step", "at_validation", "checkpoint_file"]

ENV = "IPMIX_DALI_FAULT"
_SPEC = re.compile(r"rank(\d+):(?:step(\d+)|(val)|(ckpt_write)(?:@(\d+))?)")


def _armed(point: str, step: int | None = None) -> bool:
    spec = os.environ.get(ENV)
    if not spec:
        return False
    m = _SPEC.fullmatch(spec.strip())
    if m is None:
        raise ValueError(f"{ENV}={spec!r}: expected rank<R>:step<N>, rank<R>:val or "
                         f"rank<R>:ckpt_write[@<N>] (a test hook)")
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0:
        return False
    if int(m[1]) != int(os.environ.get("RANK", "0")):
        return False
    if point == "step":
        return m[2] is not None and int(m[2]) == step
    if point == "val":
        return m[3] is not None
    return m[4] is not None and (m[5] is None or int(m[5]) == step)


def _die(what: str) -> None:
    print(f"{ENV}: rank {os.environ.get('RANK', '0')} kills itself (SIGKILL) {what}",
          file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def at_step(step: int) -> None:
    """Training step ``step`` is about to run (its batch is here)."""
    if _armed("step", step):
        _die(f"at training step {step}")


def at_validation() -> None:
    """A validation batch was scored."""
    if _armed("val"):
        _die("during validation")


class _HalfWriter:
    """The checkpoint's temp file, killed once ``limit`` bytes went into it."""

    def __init__(self, f, limit: int, step: int):
        self.f, self.limit, self.step, self.written = f, limit, step, 0

    def write(self, data):
        n = self.f.write(data)
        self.written += len(data)
        if self.written >= self.limit:
            self.f.flush()
            os.fsync(self.f.fileno())
            _die(f"writing the checkpoint of step {self.step} ({self.written:,} bytes in "
                 f"{self.f.name}, not renamed)")
        return n

    def flush(self):
        return self.f.flush()


def checkpoint_file(f, step: int, size_of):
    """``f`` (the temp file ``torch.save`` writes the checkpoint of ``step`` into), or when armed
    a writer that dies halfway through it. ``size_of()`` gives the checkpoint's tensor bytes;
    it is called only when armed (walking a whole state is not for every save)."""
    if _armed("ckpt_write", step):
        return _HalfWriter(f, max(1, size_of() // 2), step)
    return f
