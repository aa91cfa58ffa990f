"""Atomic file writes: a temp file in the same folder, flushed and fsynced, then renamed.

A reader (or a resumed run) sees the old file or the new one, never half of one: result files,
reports, checkpoints and caches all go through :func:`atomic_write`. The new file gets the mode
a plain ``open()`` would give it (0666 less the umask; ``mkstemp``'s own is 0600), and a full
disk is one :class:`DiskFullError` naming the file, with the old file left as it was.
:func:`cache_root` is the folder the caches written this way live under.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "atomic_path", "write_json", "fsync_dir", "DiskFullError",
           "is_disk_full", "cache_root", "check_writable"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


def cache_root() -> Path:
    """``$IPMIX_DALI_CACHE``, else ``$XDG_CACHE_HOME/ipmix-dali``, else ``~/.cache/ipmix-dali``:
    where the compiled kernels and the undecodable-file registry are kept."""
    root = os.environ.get("IPMIX_DALI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ipmix-dali")
    return Path(root)


def check_writable(folder, flag: str = "--out") -> None:
    """One ValueError naming ``flag`` when files cannot be created in ``folder`` (a folder still
    to be made: in its nearest existing parent). Probed by creating and removing an empty file,
    which also finds read-only mounts and ACLs that the permission bits do not show."""
    import stat

    folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    probe = folder
    while True:
        try:
            mode = os.stat(probe).st_mode
            break
        except FileNotFoundError:
            if os.path.dirname(probe) == probe:
                raise
            probe = os.path.dirname(probe)
        except OSError as exc:  # a parent that cannot even be searched
            raise ValueError(f"{flag} {folder}: cannot reach {probe} ({exc.strerror}): choose "
                             f"a folder you can write, or fix its permissions") from None
    if not stat.S_ISDIR(mode):
        raise ValueError(f"{flag} {folder}: {probe} is a file, not a folder: pass a folder path")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".write-check-")
        os.close(fd)
        os.remove(tmp)
    except OSError as exc:
        where = "" if probe == folder else f" (it would be created in {probe})"
        raise ValueError(f"{flag} {folder}: cannot write there{where}: {exc.strerror}: choose "
                         f"a folder you can write, or fix its permissions") from None


class DiskFullError(OSError):
    """No space left while writing ``path`` (the previous version of the file is intact)."""

    def __init__(self, message, path=None, free_bytes=None):
        super().__init__(errno.ENOSPC, message)
        self.path, self.free_bytes = path, free_bytes

    def __str__(self):
        return self.strerror


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from is ENOSPC/EDQUOT (torch.save reports
    a full disk as a zip-writer RuntimeError raised while handling the OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in _FULL):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _umask() -> int:
    """The process umask, read without changing it where /proc tells it (threads may be
    creating files meanwhile)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _size(n) -> str:
    return f"{n / 2 ** 20:,.0f} MiB" if n >= 2 ** 20 else f"{n / 1024:,.0f} KiB"


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
def atomic_path(path, suffix: str = ".tmp"):
    """``with atomic_path(path) as tmp: writer(tmp)`` for writers that need a file name (NumPy
    memmaps): ``tmp`` (a new empty file next to ``path``) becomes ``path`` when the block ends
    without an exception, with a plain ``open()``'s mode, flushed to disk; removed otherwise.
    Folders are created."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        _raise_if_full(exc, path, folder)
        raise
    fsync_dir(folder)


def _raise_if_full(exc, path, folder):
    if is_disk_full(exc) and not isinstance(exc, DiskFullError):
        free = shutil.disk_usage(folder).free
        kept = "the previous version is intact" if os.path.exists(path) else "nothing was written"
        raise DiskFullError(f"cannot write {path}: no space left on the disk ({_size(free)} "
                            f"free); {kept}", path, free) from None


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """``with atomic_write(path) as f: f.write(...)``; ``path`` appears only when the block ends
    without an exception. Folders are created."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f


def write_json(path, obj, indent: int = 2) -> str:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
    return os.fspath(path)
