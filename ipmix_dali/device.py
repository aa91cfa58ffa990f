"""The one GPU check: is CuPy importable and a CUDA device usable, and the one-line errors when
not (every ``--device gpu`` entry point goes through here); and the few device services every
GPU entry point shares: which device an array lives on, running on that device, the resident
upload of a large host array, and CuPy's view of a torch stream."""
from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["gpu_available", "require_gpu", "import_cupy", "NO_GPU_MESSAGE", "on_device",
           "current_device_id", "upload_resident", "cupy_stream", "UPLOAD_CHUNK_BYTES"]

# Host-to-device copies of a resident array go in pieces of this size from pageable memory.
UPLOAD_CHUNK_BYTES = 64 << 20

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


def current_device_id() -> int:
    """The calling thread's current CUDA device (what DALI's worker threads set to the
    pipeline's ``device_id``)."""
    return int(import_cupy().cuda.Device().id)


def on_device(device_id):
    """``with on_device(i):`` runs CuPy work (allocations, uploads, launches, the kernel cache's
    lookups) on device ``i``; ``None`` keeps the current device."""
    if device_id is None:
        return contextlib.nullcontext()
    return import_cupy().cuda.Device(int(device_id))


def upload_resident(host, device_id=None, chunk_bytes=None):
    """A device copy of the host array ``host`` (e.g. a memory-mapped mixing bank) on
    ``device_id``, kept for the whole run.

    Why in chunks with ``ndarray.set``: ``cupy.asarray`` of a pageable host array stages it
    through a pinned block of the array's full size, and CuPy's pinned pool keeps that block
    afterwards: an 8 GiB bank would hold 8 GiB of page-locked RAM per rank for the whole run.
    ``set`` copies from pageable memory as it is; a chunk of at most ``chunk_bytes`` also bounds
    the host copy made of a memory-mapped slice. The upload is waited for once at the end: the
    stage runs on DALI's non-blocking stream, which does not wait for the current stream.
    """
    cupy = import_cupy()
    host = np.asarray(host)
    if host.ndim == 0:
        raise ValueError("upload_resident takes an array with at least one axis")
    chunk_bytes = UPLOAD_CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)
    step = max(1, chunk_bytes // max(1, host[0].nbytes))
    with on_device(device_id):
        out = cupy.empty(host.shape, dtype=host.dtype)
        for start in range(0, len(host), step):
            out[start:start + step].set(np.ascontiguousarray(host[start:start + step]))
        cupy.cuda.get_current_stream().synchronize()
    cupy.get_default_pinned_memory_pool().free_all_blocks()
    return out


def cupy_stream(torch_stream):
    """CuPy's view of a torch CUDA stream, tied to the stream's device.

    CuPy 14 takes foreign streams through the CUDA stream protocol (``Stream.from_external``;
    ``ExternalStream`` warns there on every call); older CuPy gets ``ExternalStream`` with the
    device id (without it, CuPy requires the stream to be used only on the device current when
    it was wrapped).
    """
    cupy = import_cupy()
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None and hasattr(torch_stream, "__cuda_stream__"):
        return from_external(torch_stream)
    return cupy.cuda.ExternalStream(int(torch_stream.cuda_stream),
                                    int(torch_stream.device.index))
