"""Checkpoints: written atomically (temp file, fsync, rename), newest valid one found on resume."""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import re

import torch

from ipmix_dali.atomic import DiskFullError, atomic_write
from ipmix_dali.train import faults

log = logging.getLogger("ipmix_dali.train")

_NAME = "checkpoint_step{:09d}.pt"
LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"
_PATTERN = re.compile(r"checkpoint_step(\d{9})\.pt$")


def save_checkpoint(folder, step: int, state: dict, keep: int = 2, best: bool = False) -> str:
    """Write ``folder/checkpoint_stepNNNNNNNNN.pt``; keep the newest ``keep`` of them.
    ``checkpoint_last.pt`` links to it; with ``best``, ``checkpoint_best.pt`` becomes a hard link
    to it (the file outlives its rotation)."""
    path = os.path.join(folder, _NAME.format(step))
    try:
        with atomic_write(path) as f:
            torch.save(state, faults.checkpoint_file(f, step, lambda: _state_bytes(state)))
    except DiskFullError as exc:
        previous = list_checkpoints(folder)
        kept = (f"the previous checkpoint {previous[-1]} is intact" if previous
                else "no earlier checkpoint exists")
        raise DiskFullError(f"cannot write checkpoint {path}: the disk is full (it needs about "
                            f"{_state_bytes(state) / 2 ** 20:,.0f} MiB, "
                            f"{exc.free_bytes / 2 ** 20:,.0f} MiB are free); {kept}: free "
                            f"space and rerun the same command to resume", path,
                            exc.free_bytes) from None
    _link(path, os.path.join(folder, LAST), symbolic=True)
    if best:
        _link(path, os.path.join(folder, BEST), symbolic=False)
    for old in list_checkpoints(folder)[:-keep]:
        try:
            os.remove(old)
        except OSError:
            pass
    return path


def _link(target, name, symbolic: bool):
    """``name`` -> ``target``, replaced atomically (a link made aside, then renamed over)."""
    tmp = f"{name}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        os.remove(tmp)
    if symbolic:
        os.symlink(os.path.basename(target), tmp)
    else:
        os.link(target, tmp)
    os.replace(tmp, name)


def _state_bytes(obj) -> int:
    """Bytes of the tensors in a (nested) state: about the checkpoint's size."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_state_bytes(v) for v in obj)
    return 0


def remove_partial_writes(folder) -> list:
    """Remove the temp files of checkpoint writes that a killed run left (``atomic_write``'s
    ``.checkpoint_stepN.pt.*.tmp``, a link's ``checkpoint_last.pt.PID.tmp``); the paths
    removed. Only the holder of the run folder's lock may call it (no write is under way)."""
    removed = []
    for pattern in (".checkpoint_step*.pt.*.tmp", f"{LAST}.*.tmp", f"{BEST}.*.tmp"):
        for path in glob.glob(os.path.join(glob.escape(os.fspath(folder)), pattern)):
            with contextlib.suppress(OSError):
                os.remove(path)
                removed.append(path)
    if removed:
        log.warning("removed %d unfinished checkpoint write(s) of an interrupted run: %s",
                    len(removed), ", ".join(os.path.basename(p) for p in sorted(removed)))
    return sorted(removed)


def list_checkpoints(folder):
    """Checkpoint paths in ``folder``, oldest first."""
    found = [p for p in glob.glob(os.path.join(folder, "checkpoint_step*.pt"))
             if _PATTERN.search(p)]
    return sorted(found, key=lambda p: int(_PATTERN.search(p).group(1)))


def load_resume_file(path):
    """The state of ``--resume PATH``, or one ValueError naming the file, why it does not load,
    and the intact checkpoint next to it (the newest one that loads) to resume from instead."""
    from ipmix_dali.eval.load_model import why_not_loadable

    if not os.path.isfile(path):
        raise ValueError(f"--resume {path}: no such file: pass a checkpoint file, 'auto' (the "
                         f"newest in --out that loads) or 'none'")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file: named with what to use instead
        reason = why_not_loadable(path, exc)
    damaged = os.path.realpath(path)
    intact = None
    for other in reversed(list_checkpoints(os.path.dirname(os.path.abspath(path)))):
        if os.path.realpath(other) != damaged and _loads(other):
            intact = other
            break
    instead = (f"the intact checkpoint next to it is {intact}: pass --resume {intact} (or "
               f"--resume auto, the newest that loads)" if intact else
               "no intact checkpoint is next to it: pass --resume none to start over")
    raise ValueError(f"--resume {path} does not load: {reason}; {instead}")


def _loads(path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:  # noqa: BLE001 - any failure: not intact
        return False


def load_latest(folder):
    """(path, state) of the newest checkpoint that loads, or (None, None). A file that does not
    load (a crash while copying it elsewhere, a disk fault) is named in a warning and skipped."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: fall back to an older one
            from ipmix_dali.eval.load_model import why_not_loadable

            log.warning("checkpoint %s does not load (%s): falling back to an older one",
                        path, why_not_loadable(path, exc))
    return None, None


def newer_than(folder, step: int):
    """Checkpoints in ``folder`` of steps after ``step`` (after a fallback: those that did not
    load)."""
    return [p for p in list_checkpoints(folder) if int(_PATTERN.search(p).group(1)) > step]
