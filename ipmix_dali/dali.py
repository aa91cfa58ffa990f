"""The augmentation as a step of your own DALI pipeline.

    from nvidia.dali import fn, pipeline_def, types
    import ipmix_dali.dali

    @pipeline_def(batch_size=64, num_threads=4, device_id=None)  # device_id=0: on the GPU
    def my_pipeline():
        jpegs, labels = fn.readers.file(file_root="train/", random_shuffle=True, name="Reader")
        images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB)
        images = fn.resize(images, resize_x=224, resize_y=224)
        clean, view1, view2 = ipmix_dali.dali.augment(images, "ipmix", mixing_set="fractals/",
                                                      jsd=True, seed=0)
        return clean, view1, view2, labels

Inputs: uint8 HWC crops of the method's image size (224 by default, ``image_size=`` for
another). Outputs: normalised float views (NCHW float32 by default) with their DALI layout set
("CHW" or "HWC"), so layout-dependent ops may follow. The stage runs where the images are
(``images.device``): the NumPy executor on the CPU, the CuPy executor on DALI's GPU stream, on
the pipeline's ``device_id``. Each batch's plan is keyed by (seed, shard_id, epoch, iteration) with ``epoch,
iteration = divmod(batch number, batches_per_epoch)``; to resume exactly, rebuild the pipeline
from DALI's checkpoint with ``start_batch`` = batches already produced.
"""
from __future__ import annotations

__all__ = ["augment"]


def augment(images, method: str = "ipmix", *, mixing_set=None, preset: str = "imagenet",
            jsd: bool = False, seed: int = 0, shard_id: int = 0,
            batches_per_epoch: int = 1 << 30, start_batch: int = 0, dtype: str = "float32",
            layout: str = "NCHW", executor=None, workers: int = 1, **options):
    """Insert the augmentation stage after ``images`` (a DataNode) in the pipeline being
    defined; returns its view DataNode, or (clean, view1, view2) with ``jsd``.

    Args:
        images: uint8 HWC crops, S x S with S = the config's image size.
        method, preset, options: see :func:`ipmix_dali.config.make_config`.
        mixing_set: folder, MixingBank, uint8 array or None (the built-in fractals), for the
            methods that mix.
        seed, shard_id, batches_per_epoch, start_batch: the plan key (see the module docstring).
        dtype, layout: "float32" / "float16", "NCHW" / "NHWC".
        executor: overrides the executor (default: numpy on the CPU, cupy on the GPU).
        workers: CPU stage: worker processes, one slice of each batch each (the same pixels;
            0 = one per usable core, 1 = the stage's own thread). They stop with the pipeline,
            at exit, or with ``close()`` on the executor.
    """
    from nvidia.dali import fn
    from nvidia.dali.pipeline import Pipeline

    from .config import MIXING_METHODS, make_config
    from .executors import get_executor
    from .mixing import as_mixing_bank
    from .pipeline import AugmentStage, stage_output_layouts

    config = make_config(method, preset, jsd=jsd, **options)
    device = "gpu" if getattr(images, "device", "cpu") == "gpu" else "cpu"
    bank = as_mixing_bank(mixing_set, config.image_size) if config.method in MIXING_METHODS else None
    if executor is None:
        from .executors import stage_executor

        executor = get_executor("cupy") if device == "gpu" else stage_executor(workers)
    # The GPU the pipeline being defined runs on (DALI's threads make it current when they
    # call the stage; the bank must be uploaded there too).
    pipe = Pipeline.current()
    device_id = pipe.device_id if device == "gpu" and pipe is not None else None
    stage = AugmentStage(config, bank, executor, seed, shard_id, batches_per_epoch, dtype,
                         layout, start_batch, device, device_id=device_id)
    outputs = 3 if config.jsd else 1
    return fn.python_function(images, function=stage, batch_processing=True,
                              num_outputs=outputs, device=device,
                              output_layouts=stage_output_layouts(layout, outputs))
