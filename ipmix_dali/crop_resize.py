"""The training crop's resize and flip on the CPU stage, as the reference does them.

The reference's ImageNet transform is torchvision's ``RandomResizedCrop(224)`` then
``RandomHorizontalFlip()`` on a PIL image: Pillow's ``Image.resize((224, 224), BILINEAR)`` of
the integer crop box, then a mirror of the columns half of the time. The CPU pipeline draws the
box and decodes just that region with DALI (``decoders.image_random_crop``; the draw is DALI's,
so a DALI checkpoint resumes it) and the flip with ``random.coin_flip``; :func:`resize_crops`
then resizes and flips the whole batch of crops, pixel for pixel as Pillow 13 does
(``corruptions.pil_resample.resize(..., "bilinear")`` is its NumPy twin), in one compiled pass
(``kernels/resample.cu``, g++ through ``executors.native``) or, without a compiler, the twin.

Why not DALI's ``fn.resize``: on the CPU it was the largest part of DALI's work per batch
(~1.2 ms of CPU per 224 px sample on the bench's 500x375 JPEGs, against ~0.6 for the ROI
decode), and its pixels are its own float filter's, not the reference's. The compiled Pillow
resize costs a fraction of that (docs/cpu_stage.md) and gives the reference's bytes. The GPU
pipeline keeps DALI's resize (on the GPU it is nearly free; nvJPEG's decode differs from
libjpeg-turbo's anyway).
"""
from __future__ import annotations

import math

import numpy as np

from .corruptions.pil_resample import resize as pil_resize

__all__ = ["CropResizer", "balanced_parts", "check_crops", "resize_crops", "resize_crops_twin",
           "SOURCE"]

SOURCE = "resample.cu"
ROWS_AT_A_TIME = 16  # resample.cu's RS_ROWS
THREAD_NAME = b"crop-resize"  # the OS name of CropResizer's threads


def check_crops(crops, flips, size):
    """A one-line ValueError for crops that are not uint8 (h, w, 3) RGB, or flips that do not
    match them."""
    if len(flips) != len(crops):
        raise ValueError(f"resize_crops: {len(crops)} crops but {len(flips)} flips")
    for i, c in enumerate(crops):
        if c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3 or 0 in c.shape:
            raise ValueError(f"resize_crops: sample {i} is {c.dtype} {tuple(c.shape)}, expected "
                             f"uint8 (height, width, 3) RGB (decode with output_type=RGB)")
    if int(size) < 1:
        raise ValueError(f"resize_crops: size must be positive, got {size}")


def _output(out, n, size):
    shape = (n, size, size, 3)
    if out is None:
        return np.empty(shape, np.uint8)
    if out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"resize_crops: out is {out.dtype} {tuple(out.shape)}, expected uint8 "
                         f"{shape}")
    if out.strides[1:] != (size * 3, 3, 1):
        raise ValueError("resize_crops: out's samples must be dense (height, width, 3) rows")
    return out


def resize_crops_twin(crops, size: int, flips, out=None):
    """:func:`resize_crops` by the NumPy twin, one image at a time."""
    check_crops(crops, flips, size)
    return _twin(crops, int(size), flips, _output(out, len(crops), int(size)))


def _twin(crops, size, flips, out):
    for i, (crop, flip) in enumerate(zip(crops, flips)):
        resized = pil_resize(crop[None], (int(size), int(size)), filter="bilinear")[0]
        out[i] = resized[:, ::-1] if flip else resized
    return out


def _ksize(n_in: int, n_out: int) -> int:
    return int(math.ceil(1.0 * max(n_in / n_out, 1.0))) * 2 + 1  # Pillow's bilinear ksize


def resize_crops(crops, size: int, flips, out=None):
    """Each uint8 (h, w, 3) crop resized to ``size`` x ``size`` as Pillow's
    ``Image.resize((size, size), Image.BILINEAR)`` (Pillow 13's pass order), its columns
    mirrored where ``flips[i]`` is true: uint8 (n, size, size, 3), written into ``out`` if given
    (its samples' rows dense; any sample stride).

    Compiled (``kernels/resample.cu``'s ``resample_images``, one host thread) where
    ``executors.native`` can build it, else :func:`resize_crops_twin`: the same bytes.
    """
    check_crops(crops, flips, size)
    return _resize(crops, int(size), flips, _output(out, len(crops), int(size)))


def _resize(crops, size, flips, out):
    """:func:`resize_crops` of checked crops into a checked ``out``."""
    from .executors import native

    mod = native.load(SOURCE)
    if mod is None:
        return _twin(crops, size, flips, out)
    if not crops:
        return out
    crops = [c if c.flags.c_contiguous else np.ascontiguousarray(c) for c in crops]
    n = len(crops)
    heights = np.array([c.shape[0] for c in crops], np.int32)
    widths = np.array([c.shape[1] for c in crops], np.int32)
    pointers = np.array([c.ctypes.data for c in crops], np.uint64)
    flip = np.array([1 if f else 0 for f in flips], np.int32)
    kmax = max(max(_ksize(int(h), size), _ksize(int(w), size)) for h, w in zip(heights, widths))
    mid = np.empty(3 * max(max(size * int(w), size * int(h)) for h, w in zip(heights, widths)),
                   np.uint8)
    taps = np.empty(2 * size * (2 + kmax), np.int32)
    widest = max(size, int(widths.max()))
    acc = np.empty(3 * widest, np.int32)
    block = np.empty(ROWS_AT_A_TIME * 3 * widest, np.uint8)
    mod.launch("resample_images", grid=(1, 1, 1), block=(1, 1, 1),
               args=(pointers, heights, widths, flip, out, np.int64(out.strides[0]),
                     np.int32(n), np.int32(size), np.int32(size), mid, taps, np.int32(kmax),
                     acc, block))
    del crops  # kept alive until the launch returns (the pointers point into them)
    return out


def balanced_parts(cost, parts: int):
    """``parts`` contiguous (start, stop) slices of the samples whose costs are ``cost``, each
    cut where the running total comes nearest its share; (n, n) for parts left empty."""
    cost = np.asarray(cost, np.float64)
    prefix = np.concatenate([[0.0], np.cumsum(cost)])  # prefix[c]: the cost of samples < c
    edges = [0]
    for k in range(1, parts):
        target = prefix[-1] * k / parts
        c = int(np.searchsorted(prefix, target))  # the first cut at or past the share
        if c > 0 and target - prefix[c - 1] <= (prefix[c] if c < len(prefix) else np.inf) - target:
            c -= 1
        edges.append(max(edges[-1], min(c, len(cost))))
    edges.append(len(cost))
    return [(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _name_os_thread(name: bytes = THREAD_NAME):
    """Give the calling thread an OS name (``top -H``, /proc's comm, bench.phases' "resize
    threads"): otherwise it inherits the DALI thread's that started it. Linux only; no-op
    elsewhere."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name, 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


class CropResizer:
    """:func:`resize_crops` of a batch on ``threads`` threads of this process, in the
    background: the compiled resize releases the GIL (ctypes), so the threads run in parallel
    straight from DALI's crops (no copy into shared memory first) while the caller's thread
    draws the plan and crops the mixing pictures.

        wait = resizer.start(crops, flips, size, out)   # returns at once
        ...                                             # other work
        wait()                                          # out is filled (or the error raised)
    """

    def __init__(self, threads: int = 1):
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self._pool = None

    def start(self, crops, flips, size: int, out, then=None):
        """Start resizing ``crops`` into ``out`` (uint8 (n, size, size, 3), rows dense); the
        function returned waits for it. ``then(start, stop)``, if given, runs on each share's
        thread once its samples are resized (the stage normalises them there). One thread, or
        one sample: done before returning."""
        check_crops(crops, flips, size)
        size, n = int(size), len(crops)
        out = _output(out, n, size)

        def share(a, b):
            _resize(crops[a:b], size, flips[a:b], out[a:b])
            if then is not None:
                then(a, b)

        if self.threads == 1 or n < 2:
            share(0, n)
            return lambda: out
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="crop-resize",
                                            initializer=_name_os_thread)
        # a sample's cost: its input pixels (the first pass) and the output's (the second)
        cost = [c.shape[0] * c.shape[1] + 2 * size * size for c in crops]
        futures = [self._pool.submit(share, a, b)
                   for a, b in balanced_parts(cost, self.threads) if b > a]

        def wait():
            for f in futures:
                f.result()
            return out

        return wait

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
