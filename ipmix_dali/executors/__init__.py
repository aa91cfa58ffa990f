"""Executors: turn (images, mixing pictures, plan) into normalised float views.

``reference`` (PIL, per sample: the ground truth), ``numpy`` (whole batch, CPU) and ``cupy``
(whole batch, GPU raw kernels; CI runs it through the CuPy stand-in and the CPU kernel
emulator). All share ``apply(images, mixing_pictures, plan, out=None, dtype="float32")`` and
``normalize(images, config, out=None, dtype="float32")`` (see :mod:`.base`). ``pool`` is the
NumPy executor on worker processes, one slice of the batch each (:mod:`.pool`; the same pixels);
:func:`stage_executor` picks the CPU stage's executor for a number of workers.
"""
from .pool import stage_executor  # noqa: F401


def get_executor(name: str, **kwargs):
    """Executor by name: "reference", "numpy", "pool" (``workers=N``) or "cupy"."""
    if name == "reference":
        from .reference import ReferenceExecutor
        return ReferenceExecutor(**kwargs)
    if name == "numpy":
        from .numpy_exec import NumpyExecutor
        return NumpyExecutor(**kwargs)
    if name == "pool":
        from .pool import PoolExecutor
        return PoolExecutor(**kwargs)
    if name == "cupy":
        from .cupy_exec import CupyExecutor
        return CupyExecutor(**kwargs)
    raise ValueError(f"unknown executor {name!r}: choose 'reference', 'numpy', 'pool' or 'cupy'")
