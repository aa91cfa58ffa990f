"""``ipmix-dali make-corrupted``: an ImageNet-C-style set from any ImageFolder, and the same in memory.

Like ``make_imagenet_c.py``: each image is read with PIL (RGB), resized (shorter side to
``resize``, bilinear) and centre-cropped to ``size``, corrupted, truncated to uint8 and saved as
JPEG quality 85 (``optimize=True``) at ``OUT/<corruption>/<severity>/<class>/<file stem>.JPEG``.
Files already there are kept (the run resumes); every file is written atomically. The output is
ImageNet-C-*style*: a ``README.txt`` in it says so; report the canonical ImageNet-C for
headline numbers.
"""
from __future__ import annotations

import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from ..atomic import atomic_write, write_json
from . import ALL, STANDARD, corrupt, corrupt_one, image_rng, preset_for

__all__ = ["make_corrupted", "preprocess", "corrupted_arrays", "parse_severities"]

QUALITY = 85


def parse_severities(text) -> list:
    """"1-5", "3", "1,3,5" -> sorted severities."""
    out = set()
    for part in str(text).split(","):
        lo, _, hi = part.strip().partition("-")
        for s in range(int(lo), int(hi or lo) + 1):
            if not 1 <= s <= 5:
                raise ValueError(f"severities must be within 1-5, got {text!r}")
            out.add(s)
    return sorted(out)


def preprocess(path: str, size: int = 224, resize=None) -> np.ndarray:
    """torchvision Resize(resize) + CenterCrop(size) of an image file, uint8 (size, size, 3)."""
    resize = resize or round(size * 256 / 224)
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        if w <= h:
            nw, nh = resize, int(resize * h / w)
        else:
            nw, nh = int(resize * w / h), resize
        img = img.resize((nw, nh), Image.BILINEAR)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        return np.asarray(img.crop((left, top, left + size, top + size)), np.uint8)


GPU_CHUNK = 64  # images per CuPy batch


def write_q85(f, x: np.ndarray) -> None:
    """``x`` as make_imagenet_c.py saves it: JPEG quality 85, ``optimize=True``, to file ``f``."""
    Image.fromarray(x).save(f, format="JPEG", quality=QUALITY, optimize=True)


def progress_bar(total: int, unit: str, enabled: bool = True):
    """make-corrupted's progress (tqdm on stderr): ``bar.update(n)``, ``bar.close()``."""
    from tqdm import tqdm

    return tqdm(total=total, desc="make-corrupted", unit=unit, disable=not enabled,
                file=sys.stderr)


def _jpeg_round_trip(x: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    write_q85(buf, x)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def corrupted_arrays(images: np.ndarray, name: str, severity: int, seed: int = 0,
                     indices=None, jpeg: bool = True, device: str = "cpu") -> np.ndarray:
    """In memory: the images ``make_corrupted`` would write (same generators), decoded again;
    ``jpeg=False`` skips the q85 round trip. ``device="gpu"`` corrupts the batch with CuPy
    (:mod:`.batched`); the JPEG round trip stays on the host."""
    preset = preset_for(images.shape[1])
    indices = list(range(len(images)) if indices is None else indices)
    if device == "gpu" and len(images):
        import cupy

        # in chunks: a whole val set (50,000 x 224^2) with the float64 steps would not fit
        y = np.concatenate([cupy.asnumpy(corrupt(
            cupy.asarray(images[k:k + GPU_CHUNK]), name, severity, seed,
            indices[k:k + GPU_CHUNK], preset, device="gpu"))
            for k in range(0, len(images), GPU_CHUNK)])
    else:
        y = corrupt(images, name, severity, seed, indices, preset)
    if not (jpeg and len(y)):
        return y
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:  # PIL frees the GIL
        return np.stack(list(pool.map(_jpeg_round_trip, y)))


def make_corrupted(src, out, corruptions=STANDARD, severities=(1, 2, 3, 4, 5), size: int = 224,
                   seed: int = 0, skip_bad_files: bool = False, workers=None,
                   progress: bool = True, device: str = "cpu") -> dict:
    """Write the set (see the module docstring). ``device="gpu"``: chunks of 64 images are
    corrupted as CuPy batches (the same pixels); reading and JPEG writing stay on the host."""
    from ..datasets import scan_image_folder

    unknown = [c for c in corruptions if c not in ALL]
    if unknown:
        raise ValueError(f"unknown corruption(s) {unknown}: choose from {', '.join(ALL)}")
    files = scan_image_folder(src, skip_bad_files=skip_bad_files)
    preset = preset_for(size)
    settings = {"source": files.source, "size": size, "seed": seed,
                "corruptions": list(corruptions), "severities": list(severities)}
    manifest_path = os.path.join(out, "manifest.json")
    _check_same_settings(manifest_path, settings)
    os.makedirs(out, exist_ok=True)
    # Written first (complete: false), so that a run interrupted before the end is resumed
    # only with the same settings too.
    write_json(manifest_path, {**settings, "preset": preset, "complete": False})
    with atomic_write(os.path.join(out, "README.txt"), "w") as f:
        f.write("ImageNet-C-style corruptions generated by ipmix-dali make-corrupted from "
                f"{files.source}: Hendrycks' formulas and parameters, our own random draws "
                "and synthetic frost textures. Not the canonical ImageNet-C: report that one "
                "for headline numbers.\n")
    jobs = [(i, c, s) for c in corruptions for s in severities for i in range(len(files))]
    cache = {}

    def target(i, c, s):
        rel_class = files.classes[files.labels[i]]
        stem = os.path.splitext(os.path.basename(files.files[i]))[0]
        return os.path.join(out, c, str(s), rel_class, stem + ".JPEG")

    def save(path, y):
        if os.path.exists(path):
            return 0
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path) as f:
            write_q85(f, y)
        return 1

    def work(job):
        i, c, s = job
        path = target(i, c, s)
        if os.path.exists(path):
            return 0
        x = cache.get(i)
        if x is None:
            x = cache[i] = preprocess(files.files[i], size)
        return save(path, corrupt_one(x, c, s, image_rng(seed, i, c, s), preset))

    written = 0
    workers = workers or max(1, os.cpu_count() or 1)
    if device == "gpu":
        # The GPU corrupts a chunk of images per (corruption, severity); reading and the JPEG
        # encoding (the slower part) run on the host's threads.
        bar = progress_bar(len(files), "img", progress)
        with ThreadPoolExecutor(max_workers=workers) as pool, bar:
            for start in range(0, len(files), GPU_CHUNK):
                idx = list(range(start, min(start + GPU_CHUNK, len(files))))
                todo = [(c, s) for c in corruptions for s in severities
                        if any(not os.path.exists(target(i, c, s)) for i in idx)]
                if todo:
                    x = np.stack(list(pool.map(lambda i: preprocess(files.files[i], size), idx)))
                for c, s in todo:
                    y = corrupted_arrays(x, c, s, seed, idx, jpeg=False, device="gpu")
                    written += sum(pool.map(lambda k: save(target(idx[k], c, s), y[k]),
                                            range(len(idx))))
                bar.update(len(idx))
        jobs = []  # done: the manifest below counts what was kept

    # One image's jobs run together so its preprocessed crop is made once.
    jobs.sort(key=lambda j: j[0])
    chunk = max(1, len(corruptions) * len(severities)) * 8
    bar = progress_bar(len(jobs), "file", progress and bool(jobs))
    with ThreadPoolExecutor(max_workers=workers) as pool, bar:
        for start in range(0, len(jobs), chunk):
            part = jobs[start:start + chunk]
            written += sum(pool.map(work, part))
            for i in {j[0] for j in part}:
                cache.pop(i, None)
            bar.update(len(part))
    total = len(files) * len(corruptions) * len(severities)
    manifest = {**settings, "images": len(files), "preset": preset, "jpeg_quality": QUALITY,
                "written": written, "kept": total - written,
                "skipped_bad_files": len(files.skipped), "device": device, "complete": True,
                "label": "ImageNet-C-style (not the canonical ImageNet-C)"}
    write_json(manifest_path, manifest)
    return manifest


def _check_same_settings(manifest_path, settings) -> None:
    """A folder already holding a set made with other settings is not mixed with this one."""
    import json

    if not os.path.exists(manifest_path):
        return
    try:
        with open(manifest_path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        raise ValueError(f"{manifest_path} is unreadable: this folder's images cannot be "
                         f"matched to settings; write the set into a new --out") from None
    differ = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
    if differ:
        raise ValueError(f"{os.path.dirname(manifest_path)} holds a set made with other settings "
                         f"({'; '.join(differ)}): rerun with its settings to resume it, or write "
                         f"this set into a new --out")
