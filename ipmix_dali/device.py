"""The one GPU check: is CuPy importable and a CUDA device usable, and the one-line errors when
not (every ``--device gpu`` entry point goes through here)."""
from __future__ import annotations

__all__ = ["gpu_available", "require_gpu", "import_cupy", "NO_GPU_MESSAGE"]

NO_GPU_MESSAGE = "no CUDA GPU available for --device gpu: use --device cpu"


def import_cupy(purpose: str = "--device gpu"):
    """``cupy``, or ImportError in one line naming the package to install."""
    try:
        import cupy
    except ImportError:
        raise ImportError(f"{purpose} needs CuPy, which is not installed: pip install "
                          f"cupy-cuda12x (CUDA 12) or cupy-cuda13x (CUDA 13), or use "
                          f"--device cpu") from None
    return cupy


def gpu_available() -> bool:
    """Whether CuPy imports and can run on a CUDA device."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        cupy.zeros(1)
        return True
    except Exception:
        return False


def require_gpu() -> None:
    """Raise ValueError (one line, naming the fix) unless a CUDA GPU is usable."""
    if not gpu_available():
        raise ValueError(NO_GPU_MESSAGE)
