"""CUDA C sources of the GPU executor, the GPU fractal renderer and their helpers.

:mod:`.build` compiles them with NVRTC and loads them into CuPy;
:mod:`ipmix_dali.testing.emulator` runs them on the CPU, thread by thread, for CI. ``common.cuh`` holds the
counter-based hash of the random masks, the twin of ``ipmix_dali.ops.masks``, so every executor
draws the same masks from the same plan.
"""
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def kernel_sources():
    """Paths of every ``.cu`` file shipped with the package."""
    return sorted(KERNEL_DIR.glob("*.cu"))
