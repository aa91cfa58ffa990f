"""The PyTorch side: DALI pipelines as an iterable of torch batches, with exact state.

    loader = train_loader(scan_image_folder("imagenet/train"), make_config("ipmix", jsd=True),
                          batch_size=256, bank=bank, device="gpu", shard_id=rank, num_shards=world)
    for epoch in range(start_epoch, epochs):
        for images, labels in loader:        # JSD: images is (clean, view1, view2)
            ...
        state = loader.state_dict()          # also valid mid-epoch

``state_dict()`` holds DALI's checkpoint of the pipeline (reader position and shuffle, crop and
flip generators, the mixing reader) and the number of batches consumed, from which the
augmentation stage re-derives its plan keys; ``load_state_dict()`` rebuilds the pipeline from them,
so the next batches are exactly those an uninterrupted run would have produced.
"""
from __future__ import annotations

import logging
import re
from typing import Callable, Optional

from .datasets import FileList
from .pipeline import (
    AugmentStageError,
    iters_per_epoch,
    train_output_names,
    train_pipeline,
    val_pipeline,
)

__all__ = ["DaliLoader", "train_loader", "val_loader", "decode_error", "pipeline_error",
           "AugmentStageError", "LAST_BATCH_POLICIES"]

log = logging.getLogger("ipmix_dali.loader")

LAST_BATCH_POLICIES = ("partial", "fill", "drop")
STATE_FORMAT = 1


def decode_error(exc: BaseException, files: FileList) -> Optional[ValueError]:
    """A one-line error naming the file, for a DALI decoder failure that names it; else None."""
    text = str(exc)
    m = re.search(r"Failed to decode sample #\d+ : (\S+)", text)
    if m:
        name = m.group(1)
        path = next((f for f in files.files if f.endswith(name)), name)
        return ValueError(f"cannot decode {path}: fix or delete it, or pass --skip-bad-files "
                          f"(the file check runs before training)")
    return None


def pipeline_error(exc: BaseException, files: FileList, stage=None) -> BaseException:
    """What a failed ``DALIGenericIterator`` call means, as the exception to raise:

    * the augmentation stage raised: :class:`AugmentStageError` saying so, whose ``__cause__``
      is the stage's own exception with its traceback;
    * a decoder named a file: a one-line ValueError naming it (:func:`decode_error`);
    * anything else: RuntimeError with DALI's first error line, chained to DALI's exception.
    """
    if stage is not None and stage.error is not None:
        cause, batch = stage.error, stage.error_batch
        stage.error = stage.error_batch = None
        err = AugmentStageError(f"the augmentation stage ({stage.config.method}) failed on "
                                f"batch {batch}: {type(cause).__name__}: {cause}")
        err.__cause__ = cause
        return err
    named = decode_error(exc, files)
    if named is not None:
        return named
    if "nvImageCodec failure" in str(exc) or "fn.decoders" in str(exc):
        # DALI names the sample's place in the batch only: decode the files to find it.
        from .datasets import find_undecodable, remember_undecodable

        log.warning("a file of %s did not decode and DALI did not name it: decoding the %d "
                    "files to find it", files.source, len(files))
        bad = find_undecodable(files.files)
        if bad:
            remember_undecodable(bad)
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            return ValueError(f"cannot decode {bad[0]}{more}: DALI's decoder fails on its "
                              f"compressed data (the header is valid); delete it, or rerun with "
                              f"--skip-bad-files to leave it out (it is remembered)")
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.strip().startswith("Critical error in pipeline")]
    cause = next((ln for ln in lines if "rror" in ln or "failure" in ln),
                 lines[0] if lines else type(exc).__name__)
    err = RuntimeError(f"the DALI pipeline over {files.source} failed: {cause}")
    err.__cause__ = exc
    return err


class DaliLoader:
    """Iterate a DALI pipeline as ``(images, labels)`` torch batches, one epoch per ``for`` loop.

    Args:
        build: ``build(checkpoint, start_batch) -> (pipeline, stage or None)``.
        output_names: the pipeline's outputs in order; "label" is the labels, the rest images.
        files: the file list (epoch length, messages).
        batch_size, num_shards: for the epoch length.
        last_batch_policy: "partial" (the last batch of an epoch is smaller), "fill" (topped up
            with samples from the shard's start) or "drop".
        jsd_output: "tuple" (clean, view1, view2) or "concat" (one 3B batch, timm's layout).
        layout: the pipeline's image layout. Batches are always NCHW tensors (torch's logical
            order); from an NHWC pipeline they are channels_last in memory, without a copy.
    """

    def __init__(self, build: Callable, output_names, files: FileList, batch_size: int,
                 num_shards: int = 1, last_batch_policy: str = "partial",
                 jsd_output: str = "tuple", layout: str = "NCHW"):
        if last_batch_policy not in LAST_BATCH_POLICIES:
            raise ValueError(f"last_batch_policy must be one of {LAST_BATCH_POLICIES}, "
                             f"got {last_batch_policy!r}")
        if jsd_output not in ("tuple", "concat"):
            raise ValueError(f"jsd_output must be 'tuple' or 'concat', got {jsd_output!r}")
        self._build = build
        self.output_names = list(output_names)
        self.files = files
        self.batch_size = int(batch_size)
        self.last_batch_policy = last_batch_policy
        self.jsd_output = jsd_output
        self.nhwc = layout == "NHWC"
        self.iters = iters_per_epoch(len(files), batch_size, num_shards)
        self.epoch = 0
        self._position = 0         # batches consumed in the current epoch
        self._epoch_done = False   # restored after the epoch's last batch: it ends first
        self._make(None)

    def _make(self, checkpoint):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        self.pipeline, self.stage = self._build(checkpoint, self.batches_consumed)
        policy = {"partial": LastBatchPolicy.PARTIAL, "fill": LastBatchPolicy.FILL,
                  "drop": LastBatchPolicy.DROP}[self.last_batch_policy]
        try:
            self._it = DALIGenericIterator([self.pipeline], self.output_names, reader_name="Reader",
                                           last_batch_policy=policy, auto_reset=True)
        except RuntimeError as exc:
            self._raise(exc)

    def close(self) -> None:
        """Release the pipeline and stop the stage's worker processes (a
        :class:`~ipmix_dali.executors.pool.PoolExecutor`); idempotent. Also on ``with`` exit."""
        stage, self.stage = self.stage, None
        self._it = self.pipeline = None
        for owner in (stage, getattr(stage, "executor", None)):  # the resize threads, the pool
            close = getattr(owner, "close", None)
            if close is not None:
                close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _raise(self, exc):
        err = pipeline_error(exc, self.files, self.stage)
        if isinstance(err, ValueError):  # a bad file, named: the one line is the message
            raise err from None
        raise err from err.__cause__

    @property
    def batches_consumed(self) -> int:
        """Pipeline batches consumed over all epochs (the stage's plan counter on resume)."""
        return self.epoch * self.iters + self._position

    def __len__(self) -> int:
        """Batches per epoch for this shard."""
        return len(self._it)

    @property
    def samples_per_epoch(self) -> int:
        return int(self._it.size)

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            raise RuntimeError("this loader is closed: build a new one (or load_state_dict)")
        if self._epoch_done:
            self._epoch_done = False
            self._end_epoch()
            raise StopIteration
        try:
            out = next(self._it)[0]
        except StopIteration:
            self._end_epoch()
            raise
        except RuntimeError as exc:
            self._raise(exc)
        self._position += 1
        labels = out["label"].reshape(-1).long()
        images = [out[name] for name in self.output_names if name not in ("label", "input")]
        if self.nhwc:  # NCHW views of the NHWC buffers: channels_last tensors, no copy
            images = [x.permute(0, 3, 1, 2) for x in images]
        if len(images) == 1:
            return images[0], labels
        if self.jsd_output == "concat":
            import torch

            return torch.cat(images, 0), labels
        return tuple(images), labels

    def _end_epoch(self):
        if self.files.skipped:
            log.warning("epoch %d: %d bad image file(s) of %s were skipped (first: %s)",
                        self.epoch, len(self.files.skipped), self.files.source,
                        self.files.skipped[0][0])
        self.epoch += 1
        self._position = 0

    def state_dict(self) -> dict:
        """Exact position: DALI's pipeline checkpoint, the epoch and batches consumed."""
        return {"format": STATE_FORMAT, "dali": self._it.checkpoints()[0], "epoch": self.epoch,
                "position": self._position, "batches_consumed": self.batches_consumed,
                "num_files": len(self.files), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"loader state format {state.get('format')!r} is not "
                             f"{STATE_FORMAT}: it was written by another version")
        if (state["num_files"], state["batch_size"]) != (len(self.files), self.batch_size):
            raise ValueError(f"loader state is for {state['num_files']} files in batches of "
                             f"{state['batch_size']}, this loader has {len(self.files)} and "
                             f"{self.batch_size}: resume with the same data and batch size")
        delivered = len(self)  # the batches an epoch hands out
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._make(state["dali"])
        # A state taken after the epoch's last batch, before the iterator said so: DALI's
        # checkpoint there is the next epoch's start, so the restored loader ends the epoch
        # first (no batch), as the original did, instead of handing out the next one as the
        # rest of this epoch.
        self._epoch_done = self._position >= delivered


def train_loader(files: FileList, config, *, batch_size: int, bank=None, mixing_files=None,
                 device: str = "cpu", device_id: Optional[int] = None, num_threads: int = 2,
                 shard_id: int = 0, num_shards: int = 1, seed: int = 0,
                 last_batch_policy: str = "partial", jsd_output: str = "tuple",
                 **pipeline_options) -> DaliLoader:
    """A :class:`DaliLoader` over :func:`ipmix_dali.pipeline.train_pipeline`."""
    def build(checkpoint, start_batch):
        return train_pipeline(files, config, batch_size=batch_size, bank=bank,
                              mixing_files=mixing_files, device=device, device_id=device_id,
                              num_threads=num_threads, shard_id=shard_id, num_shards=num_shards,
                              seed=seed, start_batch=start_batch, checkpoint=checkpoint,
                              **pipeline_options)

    return DaliLoader(build, train_output_names(config, pipeline_options.get("emit_input", False)),
                      files, batch_size, num_shards, last_batch_policy, jsd_output,
                      pipeline_options.get("layout", "NCHW"))


def val_loader(files: FileList, *, batch_size: int, device: str = "cpu", shard_id: int = 0,
               num_shards: int = 1, **pipeline_options) -> DaliLoader:
    """A :class:`DaliLoader` over :func:`ipmix_dali.pipeline.val_pipeline` (every sample once)."""
    def build(checkpoint, start_batch):
        return val_pipeline(files, batch_size=batch_size, device=device, shard_id=shard_id,
                            num_shards=num_shards, **pipeline_options), None

    return DaliLoader(build, ["data", "label"], files, batch_size, num_shards, "partial",
                      layout=pipeline_options.get("layout", "NCHW"))
