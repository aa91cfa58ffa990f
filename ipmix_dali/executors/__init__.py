"""Executors: turn (images, mixing pictures, plan) into normalised float views.

``reference`` (PIL, per sample: the ground truth) and ``numpy`` (whole batch, CPU). The CuPy
executor (GPU) arrives with its own issue. All share ``apply(images, mixing_pictures, plan)``.
"""


def get_executor(name: str, **kwargs):
    """Executor by name: "reference" or "numpy"."""
    if name == "reference":
        from .reference import ReferenceExecutor
        return ReferenceExecutor(**kwargs)
    if name == "numpy":
        from .numpy_exec import NumpyExecutor
        return NumpyExecutor(**kwargs)
    raise ValueError(f"unknown executor {name!r}: choose 'reference' or 'numpy' "
                     f"('cupy' is not built yet)")
