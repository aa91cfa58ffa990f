"""DALI pipelines: read, decode, crop and flip in DALI; the augmentation as one batched stage.

Training (:func:`train_pipeline`)::

    readers.file (sharded, reshuffled every epoch, padded to whole batches, name="Reader")
      -> decoders.image_random_crop (device "mixed" = nvJPEG / hardware decoder, or "cpu";
         scale 0.08-1, ratio 3/4-4/3)  -> resize to image_size  -> random horizontal flip
      -> AugmentStage: sample the plan of (seed, shard, epoch, iteration), crop the mixing
         pictures, run the executor on the whole batch, normalise, cast, lay out
      -> (clean, view 1, view 2) with JSD, else one view; labels

The resize and the flip (``crop_resize``): "dali" runs DALI's ``fn.resize`` and ``fn.flip``
(the GPU pipeline's, where they are nearly free); "pillow" (the CPU pipeline's default) hands
the decoded crops and ``random.coin_flip``'s flips to the stage, which resizes them as Pillow's
BILINEAR resize does (torchvision's RandomResizedCrop on a PIL image, the reference's bytes)
on threads of its process (:mod:`ipmix_dali.crop_resize`): DALI's CPU resize was its largest
cost per batch.

The stage is a ``fn.python_function`` with ``batch_processing=True``: NumPy executor on the CPU,
CuPy executor on the GPU (CuPy arrays on DALI's stream). It keeps no random state: the plan of
the b-th batch a pipeline produces is drawn from ``make_rng(seed, shard, b // iters, b % iters)``
(``iters`` = batches per epoch per shard; ``pad_last_batch`` makes epochs end on a batch
boundary), so a pipeline rebuilt from a DALI checkpoint with ``start_batch`` = batches already
consumed continues with exactly the same plans. DALI's own random choices (crop, flip, the
mixing reader's order) are restored from the checkpoint.

Mixing pictures come from a :class:`~ipmix_dali.mixing.bank.MixingBank` cropped per plan (host
memory-mapped for the CPU stage, copied once to GPU memory for the GPU stage), or, for a set
larger than ``mixing_memory_budget``, from a second reader (``name="Mix"``, not sharded, its own
shuffle; ``Resize(side)`` + a random ``image_size`` crop like the reference's RandomCrop), whose
pictures then replace the plan's index and crop.

Validation (:func:`val_pipeline`): shorter side ``resize`` (256), centre crop ``crop`` (224),
normalise, in DALI.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .augmenter import Augmenter
from .config import CROP_RESIZES, IMAGENET_MEAN, IMAGENET_STD, MIXING_METHODS
from .datasets import FileList
from .device import on_device

__all__ = ["AugmentStage", "AugmentStageError", "train_pipeline", "val_pipeline",
           "iters_per_epoch", "dali_seed", "output_buffer", "stage_output_layouts",
           "resolve_crop_resize", "OUTPUT_DTYPES", "LAYOUTS"]

OUTPUT_DTYPES = ("float32", "float16")
LAYOUTS = ("NCHW", "NHWC")
DEFAULT_MIXING_MEMORY_BUDGET = 8 << 30  # bytes of pre-resized mixing pictures kept in memory


def iters_per_epoch(num_files: int, batch_size: int, num_shards: int = 1) -> int:
    """Batches per epoch of every shard: DALI's shards are [floor(i N / S), floor((i+1) N / S)),
    and ``pad_last_batch`` pads each to the batch count of the largest."""
    largest = max(((i + 1) * num_files) // num_shards - (i * num_files) // num_shards
                  for i in range(num_shards))
    return max(1, math.ceil(largest / batch_size))


def dali_seed(seed: int, shard_id: int) -> int:
    """The DALI pipeline seed of a shard (crop, flip, mixing reader): distinct per rank."""
    return (int(seed) * 1_000_003 + int(shard_id) * 7_919 + 12) % (1 << 31)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def resolve_crop_resize(crop_resize: str, device: str) -> str:
    """"pillow" or "dali": who resizes and flips the training crops ("auto": "pillow" on the
    CPU, "dali" on the GPU). The GPU stage takes 224 px crops only: "pillow" there is refused."""
    _check_choice("crop_resize", crop_resize, CROP_RESIZES)
    if crop_resize == "auto":
        return "dali" if device == "gpu" else "pillow"
    if crop_resize == "pillow" and device == "gpu":
        raise ValueError("crop_resize='pillow' runs on the CPU stage only: the GPU pipeline "
                         "resizes with DALI (use --crop-resize dali or auto there)")
    return crop_resize


class AugmentStageError(RuntimeError):
    """An exception raised inside the augmentation stage, re-raised by the loader with the
    original exception (and its traceback) as ``__cause__``."""


# Physical axis order of the stage's output buffer (V views, N samples, H, W, C channels), by
# (device, layout). On the GPU the samples are interleaved with the rows: DALI copies outputs
# whose samples are dense with one cudaMemcpyAsync each (N calls per output), and strided ones
# with one batched kernel (``CopyDlTensorBatchGpu``); a layout where the sample axis is not the
# outermost makes every sample strided. On the CPU, dense samples are the cheap case.
_PHYSICAL_ORDER = {("cpu", "NCHW"): "VNCHW", ("cpu", "NHWC"): "VNHWC",
                   ("gpu", "NCHW"): "VCHNW", ("gpu", "NHWC"): "VHNWC"}


def output_buffer(xp, device: str, layout: str, dtype: str, views: int, n: int, size: int,
                  empty=None):
    """(logical, samples): a (views, n, size, size, 3) view of a new buffer laid out for DALI,
    and per view the list of its n per-sample arrays in ``layout`` (HWC or CHW). ``empty``
    (shape, dtype) -> C-contiguous array allocates the buffer (default ``xp.empty``)."""
    order = _PHYSICAL_ORDER[(device, layout)]
    extent = {"V": views, "N": n, "H": size, "W": size, "C": 3}
    physical = (empty or xp.empty)(tuple(extent[a] for a in order), np.dtype(dtype))
    logical = physical.transpose(tuple(order.index(a) for a in "VNHWC"))
    samples = []
    for v in range(views):
        per_view = logical[v] if layout == "NHWC" else logical[v].transpose(0, 3, 1, 2)
        samples.append(list(per_view))
    return logical, samples


class AugmentStage:
    """The augmentation of a whole batch, called by DALI once per batch, in batch order.

    Args:
        config: an augmentation config (:func:`ipmix_dali.config.make_config`).
        bank: mixing pictures (a MixingBank), or None (methods that do not mix, or reader mode).
        executor: the executor (``apply(images, pictures, plan, out=...)``, ``normalize``).
        seed, shard_id, iters: plan key parts; ``iters`` = batches per epoch of this shard.
        dtype, layout: output element type and layout.
        start_batch: batches this pipeline's predecessors already produced (resume).
        device: "cpu" (NumPy arrays) or "gpu" (CuPy arrays, on DALI's stream).
        emit_input: also return the uint8 crops the augmentation saw (tests, `show`).
        device_id: the pipeline's GPU (``device="gpu"``; default: the current device). The
            bank is uploaded to it and every batch runs under it: DALI's worker threads make
            the pipeline's device current, but the stage is built on the caller's thread,
            whose current device may be another.
        resize_crops: the stage's first inputs are DALI's decoded crops (any size) and, with
            ``flips``, one 0/1 flip per sample: the stage resizes them to ``image_size`` and
            flips them (:mod:`ipmix_dali.crop_resize`, on one thread per executor worker)
            before the augmentation. Otherwise the images arrive resized.

    An exception inside the stage is kept in ``error`` (with the batch number in
    ``error_batch``) before DALI wraps it, so the loader can re-raise it as itself.

    On the CPU the arrays a call returns are views of one output buffer that the next call
    overwrites (DALI copies them before it calls the stage again); copy them to keep them.
    """

    def __init__(self, config, bank, executor, seed: int, shard_id: int, iters: int,
                 dtype: str = "float32", layout: str = "NCHW", start_batch: int = 0,
                 device: str = "cpu", emit_input: bool = False, device_id: Optional[int] = None,
                 resize_crops: bool = False, flips: bool = True):
        _check_choice("dtype", dtype, OUTPUT_DTYPES)
        _check_choice("layout", layout, LAYOUTS)
        _check_choice("device", device, ("cpu", "gpu"))
        self.config = config
        self.executor = executor
        self.seed, self.shard_id, self.iters = int(seed), int(shard_id), int(iters)
        self.dtype, self.layout = dtype, layout
        self.batches = int(start_batch)
        self.device = device
        self.emit_input = emit_input
        self.bank = bank
        if resize_crops and device != "cpu":
            raise ValueError("the stage resizes crops on the CPU only")
        self.resize_crops, self.flips = bool(resize_crops), bool(flips)
        self.error, self.error_batch = None, None
        self.augmenter = Augmenter(config, bank, executor, device, device_id)
        self.xp, self.device_id = self.augmenter.xp, self.augmenter.device_id
        self._output = None  # (key, logical, samples): the CPU stage's output buffer
        self._resizer = None  # crop_resize.CropResizer, made at the first batch
        self._normalizer = None  # a NumpyExecutor for the resize threads' normalisation

    @property
    def _bank_images(self):
        """The bank's resident copy on the stage's GPU (None on the CPU)."""
        return self.augmenter._resident

    def plan_key(self, batch: int):
        """(seed, shard, epoch, iteration) of the pipeline's ``batch``-th batch."""
        epoch, iteration = divmod(int(batch), self.iters)
        return self.seed, self.shard_id, epoch, iteration

    def plan(self, batch: int, n: int):
        return self.augmenter.plan(self.plan_key(batch), n)

    def _stack(self, samples, role="images"):
        stack = getattr(self.executor, "stack_samples", None)
        return stack(samples, role) if stack is not None else self.xp.stack(samples)

    def __call__(self, images, *more):
        """One batch: ``images`` (and, resizing crops with flips, the flips), then the mixing
        pictures in reader mode."""
        batch = self.batches
        self.batches += 1
        try:
            flips = None
            if self.resize_crops and self.flips:
                flips, more = more[0], more[1:]
            pictures = more[0] if more else None
            with on_device(self.device_id):
                return self._run(batch, images, pictures, flips)
        except Exception as exc:
            self.error, self.error_batch = exc, batch
            raise

    def _resize(self, crops, flips, normalized=None):
        """Start resizing and flipping DALI's decoded crops (crop_resize) into the batch's
        images (the executor's shared memory where it has it), on as many threads as the
        executor has workers: returns (images, wait); read the images after ``wait()``.
        ``normalized`` (a float view array, or None): each thread also normalises its share
        into it (JSD's clean view, "none"'s view), natively (the GIL released), instead of a
        round of the executor's workers."""
        size, n = self.config.image_size, len(crops)
        flips = [0] * n if flips is None else [int(f) for f in flips]
        if self._resizer is None:
            from .crop_resize import CropResizer

            self._resizer = CropResizer(getattr(self.executor, "workers", None)
                                        or getattr(self.executor, "threads", 1))
        shared = getattr(self.executor, "input_array", None)
        x = (shared("images", (n, size, size, 3), np.uint8) if shared is not None
             else np.empty((n, size, size, 3), np.uint8))
        then = None
        if normalized is not None:
            if self._normalizer is None:
                from .executors.numpy_exec import NumpyExecutor

                self._normalizer = NumpyExecutor()

            def then(a, b):
                self._normalizer.normalize(x[a:b], self.config, out=normalized[a:b])
        return x, self._resizer.start(crops, flips, size, x, then)

    def _run(self, batch, images, pictures, flips=None):
        n, jsd = len(images), 1 if self.config.jsd else 0
        plan = self.plan(batch, n)
        logical, samples = self._output_buffer(jsd + plan.views, n)
        wait, normalized = None, False
        if self.resize_crops:
            # JSD's clean view, or "none"'s only view: normalised by the resize threads
            normalized = self.augmenter.first_view_is_normalized(plan)
            x, wait = self._resize(images, flips, logical[0] if normalized else None)
            images = list(x)  # emit_input: the crops as the augmentation saw them
        else:
            x = self._stack(images)
        size = self.config.image_size
        if tuple(x.shape[1:]) != (size, size, 3):
            raise ValueError(f"the augmentation stage got images of shape {tuple(x.shape[1:])}, "
                             f"the config's image_size is {size}: resize to {size}x{size} "
                             f"before the stage")
        if pictures is not None:
            pics = self._stack(pictures, "pictures")
        else:  # drawn here, while the crops are resized
            pics = self.augmenter.pictures(plan)
        if wait is not None:
            wait()
        self.augmenter.views(x, plan, pictures=pics, out=logical, first_view_done=normalized)
        samples = list(samples)  # the kept buffer's list stays as it is
        if self.emit_input:
            samples.append(list(images))
        return tuple(samples) if len(samples) > 1 else samples[0]

    def close(self):
        """Stop the crop resize's threads (if any); the executor is closed by its owner."""
        if self._resizer is not None:
            self._resizer.close()
            self._resizer = None

    def _output_buffer(self, views: int, n: int):
        """The batch's output buffer. On the CPU it is kept from batch to batch: DALI copies a
        python_function's outputs before it calls it again, and a fresh buffer of a JSD batch
        (58 MB at 32 x 224 px, float32) costs more in page faults than the copy itself. A pool
        executor provides it in shared memory, so its workers write DALI's buffer in place.
        On the GPU each batch gets a new one from CuPy's pool (DALI reads it asynchronously)."""
        if self.device == "gpu":
            return output_buffer(self.xp, self.device, self.layout, self.dtype, views, n,
                                 self.config.image_size)
        key = (views, n)
        if self._output is None or self._output[0] != key:
            self._output = None  # the old block goes before the new one is made
            self._output = (key,) + output_buffer(
                np, "cpu", self.layout, self.dtype, views, n, self.config.image_size,
                empty=getattr(self.executor, "output_array", None))
        return self._output[1:]


def stage_output_layouts(layout: str, views: int, emit_input: bool = False):
    """The DALI layout of each stage output: "CHW" or "HWC" per view (``layout`` NCHW / NHWC),
    "HWC" for the uint8 input crops. DALI does not infer layouts for a python_function; without
    them a layout-dependent op after the stage (crop_mirror_normalize, a transpose by name,
    crop) refuses the data."""
    _check_choice("layout", layout, LAYOUTS)
    return [layout[1:]] * views + (["HWC"] if emit_input else [])


def _dali():
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError as exc:  # pragma: no cover - DALI is a dependency
        raise ImportError("NVIDIA DALI is needed for pipelines: pip install nvidia-dali-cuda120") from exc
    return fn, pipeline_def, types


def _device_args(device: str, device_id):
    _check_choice("device", device, ("cpu", "gpu"))
    if device == "cpu":
        return None
    return 0 if device_id is None else int(device_id)


def _reader(fn, files: FileList, shard_id, num_shards, training, name="Reader"):
    """(encoded images, int32 labels) of a file list, or of a tar shard set (ShardSet)."""
    from .shards import ShardSet

    common = dict(shard_id=shard_id, num_shards=num_shards, shuffle_after_epoch=training,
                  pad_last_batch=True, name=name)
    if isinstance(files, ShardSet):
        from nvidia.dali import types

        return fn.readers.webdataset(paths=list(files.tars), index_paths=list(files.indexes),
                                     ext=["jpg", "label"], dtypes=[types.UINT8, types.INT32],
                                     **common)
    return fn.readers.file(files=list(files.files), labels=list(files.labels), **common)


def train_pipeline(files: FileList, config, *, batch_size: int, bank=None, mixing_files=None,
                   mixing_side: int = 256, device: str = "cpu", device_id: Optional[int] = None,
                   num_threads: int = 2, shard_id: int = 0, num_shards: int = 1, seed: int = 0,
                   scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                   flip: bool = True, dtype: str = "float32", layout: str = "NCHW",
                   executor=None, start_batch: int = 0, checkpoint: Optional[str] = None,
                   emit_input: bool = False, prefetch_queue_depth: int = 2,
                   crop_resize: str = "auto"):
    """The training pipeline (see the module docstring); returns ``(pipeline, stage)``.

    Args:
        files: the training set (:func:`ipmix_dali.datasets.scan_image_folder`).
        config: the augmentation config; ``config.image_size`` is the crop side.
        bank: mixing pictures as a bank, or
        mixing_files: a :class:`FileList` of mixing pictures read by a second reader instead
            (use :func:`choose_mixing_source` to decide by memory budget).
        mixing_side: reader mode: shorter side the pictures are resized to before the crop.
        device: "gpu" (mixed decode, CuPy stage; needs the CuPy executor) or "cpu".
        executor: overrides the stage's executor (default: numpy on CPU, cupy on GPU).
        start_batch, checkpoint: resume (batches already consumed, DALI checkpoint string).
        emit_input: also output the uint8 crops the stage received (output name "input").
        crop_resize: "auto", "pillow" or "dali": who resizes and flips the crops (module
            docstring; :func:`resolve_crop_resize`).

    Outputs, in order: the views ("clean", "view1", "view2" with JSD, else "data"), "label",
    then "input" if ``emit_input``.
    """
    fn, pipeline_def, types = _dali()
    dev = _device_args(device, device_id)
    mixes = config.method in MIXING_METHODS
    if mixes and bank is None and mixing_files is None:
        raise ValueError(f"{config.method} needs mixing pictures: pass --mixing-set DIR (a folder "
                         f"of images) or create one with `ipmix-dali make-mixing-set`")
    if executor is None:
        from .executors import get_executor

        executor = get_executor("cupy" if device == "gpu" else "numpy")
    iters = iters_per_epoch(len(files), batch_size, num_shards)
    in_stage = resolve_crop_resize(crop_resize, device) == "pillow"
    stage = AugmentStage(config, bank if mixes and mixing_files is None else None, executor, seed,
                         shard_id, iters, dtype, layout, start_batch, device, emit_input,
                         device_id=dev, resize_crops=in_stage, flips=flip)
    size = config.image_size
    use_reader = mixes and mixing_files is not None
    num_outputs = (3 if config.jsd else 1) + (1 if emit_input else 0)

    def graph():
        jpegs, labels = _reader(fn, files, shard_id, num_shards, training=True)
        images = fn.decoders.image_random_crop(
            jpegs, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB,
            random_area=list(scale), random_aspect_ratio=list(ratio), num_attempts=10)
        if in_stage:  # the stage resizes and flips (crop_resize="pillow")
            inputs = [images]
            if flip:
                inputs.append(fn.random.coin_flip(probability=0.5))
        else:
            images = fn.resize(images, resize_x=size, resize_y=size)
            if flip:
                images = fn.flip(images, horizontal=fn.random.coin_flip(probability=0.5))
            inputs = [images]
        if use_reader:
            pics, _ = fn.readers.file(files=list(mixing_files.files), random_shuffle=True,
                                      name="Mix")
            pics = fn.decoders.image(pics, device="mixed" if device == "gpu" else "cpu",
                                     output_type=types.RGB)
            pics = fn.resize(pics, resize_shorter=mixing_side)
            pics = fn.crop(pics, crop=(size, size),
                           crop_pos_x=fn.random.uniform(range=[0.0, 1.0]),
                           crop_pos_y=fn.random.uniform(range=[0.0, 1.0]))
            inputs.append(pics)
        outs = fn.python_function(*inputs, function=stage, batch_processing=True,
                                  num_outputs=num_outputs, device=device,
                                  output_layouts=stage_output_layouts(
                                      layout, 3 if config.jsd else 1, emit_input))
        outs = list(outs) if num_outputs > 1 else [outs]
        if device == "gpu":  # labels reach torch on the GPU: no pageable copy, no host sync
            labels = labels.gpu()
        if emit_input:
            return (*outs[:-1], labels, outs[-1])
        return (*outs, labels)

    pipe = pipeline_def(graph, enable_checkpointing=True)(
        batch_size=batch_size, num_threads=num_threads, device_id=dev,
        seed=dali_seed(seed, shard_id), checkpoint=checkpoint,
        prefetch_queue_depth=prefetch_queue_depth)
    return pipe, stage


def train_output_names(config, emit_input: bool = False):
    names = ["clean", "view1", "view2"] if config.jsd else ["data"]
    return names + ["label"] + (["input"] if emit_input else [])


def choose_mixing_source(folder, side: int, budget: int = DEFAULT_MIXING_MEMORY_BUDGET,
                         skip_bad_files: bool = False):
    """("bank", MixingBank) for a mixing set whose pre-resized pictures fit in ``budget`` bytes,
    else ("reader", FileList) for the second-reader path."""
    from pathlib import Path

    from .mixing.bank import list_candidate_files, load_mixing_bank

    folder_p = Path(folder).expanduser().resolve()
    rels = list_candidate_files(folder_p) if folder_p.is_dir() else []
    if rels and len(rels) * side * side * 3 > budget:
        files = [str(folder_p / r) for r in rels]
        return "reader", FileList(files, [0] * len(files), ["mixing"], source=str(folder_p))
    return "bank", load_mixing_bank(folder, side=side, progress=True,
                                    skip_bad_files=skip_bad_files)


def val_pipeline(files: FileList, *, batch_size: int, resize: Optional[int] = 256,
                 crop: int = 224,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, device: str = "cpu",
                 device_id: Optional[int] = None, num_threads: int = 2, shard_id: int = 0,
                 num_shards: int = 1, dtype: str = "float32", layout: str = "NCHW"):
    """Validation: shorter side ``resize`` (None: no resize, e.g. ImageNet-C's 224 px files),
    centre crop ``crop``, normalise; outputs data, label."""
    fn, pipeline_def, types = _dali()
    dev = _device_args(device, device_id)
    _check_choice("dtype", dtype, OUTPUT_DTYPES)
    _check_choice("layout", layout, LAYOUTS)

    def graph():
        jpegs, labels = _reader(fn, files, shard_id, num_shards, training=False)
        images = fn.decoders.image(jpegs, device="mixed" if device == "gpu" else "cpu",
                                   output_type=types.RGB)
        if resize:
            images = fn.resize(images, resize_shorter=resize)
        images = fn.crop_mirror_normalize(
            images, crop=(crop, crop), mean=[255 * m for m in mean], std=[255 * s for s in std],
            dtype=types.FLOAT16 if dtype == "float16" else types.FLOAT,
            output_layout="CHW" if layout == "NCHW" else "HWC")
        return images, labels.gpu() if device == "gpu" else labels

    return pipeline_def(graph)(batch_size=batch_size, num_threads=num_threads, device_id=dev,
                               seed=12)
