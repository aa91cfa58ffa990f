"""Atomic file writes: a temp file in the same folder, flushed and fsynced, then renamed.

A reader (or a resumed run) sees the old file or the new one, never half of one: result files,
reports, checkpoints and caches all go through :func:`atomic_write`.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile

__all__ = ["atomic_write", "write_json", "fsync_dir"]


def fsync_dir(folder) -> None:
    """Make a rename in ``folder`` durable (ignored where the file system cannot)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """``with atomic_write(path) as f: f.write(...)``; ``path`` appears only when the block ends
    without an exception. Folders are created."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def write_json(path, obj, indent: int = 2) -> str:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
    return os.fspath(path)
