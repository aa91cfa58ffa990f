"""Executors: turn (images, mixing pictures, plan) into normalised float views.

``reference`` (PIL, per sample: the ground truth), ``numpy`` (whole batch, CPU) and ``cupy``
(whole batch, GPU raw kernels; CI checks it through the CPU kernel emulator). All share
``apply(images, mixing_pictures, plan)``.
"""


def get_executor(name: str, **kwargs):
    """Executor by name: "reference", "numpy" or "cupy"."""
    if name == "reference":
        from .reference import ReferenceExecutor
        return ReferenceExecutor(**kwargs)
    if name == "numpy":
        from .numpy_exec import NumpyExecutor
        return NumpyExecutor(**kwargs)
    if name == "cupy":
        from .cupy_exec import CupyExecutor
        return CupyExecutor(**kwargs)
    raise ValueError(f"unknown executor {name!r}: choose 'reference', 'numpy' or 'cupy'")


def clean_view(executor, images, config):
    """The normalised input (JSD's clean view) on ``executor``: method "none" with ``config``'s
    image size, mean and std, so every executor normalises with its own, exact, code."""
    from ..config import make_config
    from ..plans import sample_plan
    from ..rng import make_rng

    none = make_config("none", "imagenet", image_size=config.image_size, mean=config.mean,
                       std=config.std)
    return executor.apply(images, None, sample_plan(none, images.shape[0], make_rng(0)))[0]
