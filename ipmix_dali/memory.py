"""Keep freed large blocks in the process: glibc malloc settings for the CPU stage.

The NumPy executor allocates and frees temporaries of a few MB per chunk (uint8 and float32
copies of the views and chains), thousands per epoch. glibc serves blocks above its mmap
threshold (128 KiB at start, raised only as far as the largest block freed so far) with a fresh
``mmap`` and gives them back with ``munmap`` when freed, and it trims the heap top above
twice that threshold: every new temporary then costs a page fault per 4 KiB page before it is
first written. Measured on one core (IPMix / LayerMix / AugMix + JSD, a batch of 32 at 224 px,
CPU time): 240 / 370 / 245 ms per batch with glibc's defaults, 130 / 170 / 180 ms with the
settings below (docs/cpu_stage.md): about half the executor's time was the kernel's page
zeroing.

:func:`keep_freed_memory` sets ``M_MMAP_THRESHOLD`` to 32 MiB (glibc's maximum: blocks up to
that come from the heap) and ``M_TRIM_THRESHOLD`` to 256 MiB (freed heap memory up to that is
kept for the next allocation instead of being returned). The cost is that the process keeps up
to 256 MiB it no longer uses, per malloc arena. The CPU augmentation stage calls it once per
process (its worker processes too); set ``IPMIX_DALI_MALLOC=system`` to keep glibc's defaults.
Processes forked later (DataLoader workers) inherit the settings.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_applied = None
log = logging.getLogger("ipmix_dali.memory")


def keep_freed_memory() -> bool:
    """Apply the settings of the module docstring once per process; True when they are in
    effect (False: not glibc, or ``IPMIX_DALI_MALLOC=system``)."""
    global _applied
    if _applied is not None and _applied[0] == os.getpid():
        return _applied[1]
    ok = False
    choice = os.environ.get("IPMIX_DALI_MALLOC", "").strip().lower()
    if choice not in ("", "system"):  # a typo must not pass for the opt-out, nor silently
        log.warning("IPMIX_DALI_MALLOC=%r is not 'system': the CPU stage's malloc settings "
                    "stay on (set IPMIX_DALI_MALLOC=system to keep glibc's defaults)",
                    os.environ["IPMIX_DALI_MALLOC"])
    if choice != "system" and platform.libc_ver()[0] == "glibc":
        try:
            mallopt = ctypes.CDLL(None).mallopt
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
                bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except (OSError, AttributeError):
            ok = False
    _applied = (os.getpid(), ok)
    return ok
