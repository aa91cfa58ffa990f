"""CUDA C sources for the CuPy raw-kernel executor (loaded through cupy.RawModule).

The GPU executor is not built yet (see the GPU executor issue); this package already ships
`common.cuh`, whose counter-based hash defines the random masks that the NumPy executor draws
(`ipmix_dali.ops.masks`), so both executors produce the same masks from the same plan.
"""
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def kernel_sources():
    """Paths of every ``.cu`` file shipped with the package."""
    return sorted(KERNEL_DIR.glob("*.cu"))
