"""One training at a time per run folder: ``OUT/train.lock``, flock-ed by the process that
writes into OUT, with its pid, host and start time inside for the message a second training
gets. The kernel drops a flock when its process dies, so the lock file a killed run leaves
behind is taken over by the next run (and named in a warning); a run that ends removes it."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time

__all__ = ["run_lock", "LOCK_NAME"]

log = logging.getLogger("ipmix_dali.train")

LOCK_NAME = "train.lock"


def _holder(fd) -> str:
    """``pid P on host H, since T`` from a lock file's content (or that it is not written yet)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, since {info['started']}"
    except (OSError, ValueError, KeyError):
        return "its holder has not written its pid yet"


def _same_file(fd, path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def run_lock(folder):
    """Hold ``folder/train.lock`` for the block, or raise one ValueError naming the training
    that holds it. The folder is created (and removed again if the block leaves it empty)."""
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ValueError(f"{folder} is in use by another training ({holder}; lock {path}): "
                             f"wait for it to end, or train into another --out") from None
        except OSError as exc:  # a file system without locks: train unguarded, and say so
            os.close(fd)
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log.warning("cannot lock %s (%s): nothing stops a second training into %s",
                        path, exc.strerror, folder)
            yield
            return
        if _same_file(fd, path):  # not a file its last holder removed meanwhile
            break
        os.close(fd)
    if os.fstat(fd).st_size:
        log.warning("took over the lock %s of a training that is gone (%s)", path, _holder(fd))
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                      time.gmtime())}).encode())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # while still held: the next run's check of the inode sees it
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if nothing else was written
