"""Mixing-picture banks: a folder of pictures, pre-resized once into a memory-mapped uint8 array.

The reference loads the mixing set with ``ImageFolder`` (``pil_loader``: ``convert('RGB')``) and
applies ``Resize(256)`` then ``RandomCrop(224)`` to every picture it draws (CIFAR: 36 then 32).
Decoding and resizing a picture per sample is the slow part of that, so a bank does the
deterministic part once:

* every picture is converted to RGB and its shorter side is resized to ``side`` with PIL's
  BILINEAR filter (what torchvision's ``Resize`` does for PIL input, output size computed the same
  way: the longer side becomes ``int(side * long / short)``);
* then a centre crop to ``side x side`` (torchvision ``CenterCrop``'s rounding) makes every entry
  the same shape.

Deviation from the reference: the plan's random ``image_size`` crop is taken from this centred
``side x side`` square, not from the whole resized picture, so the strips beyond the square on the
longer side are never used. 16-bit greyscale pictures (``I;16`` modes) are scaled to 8 bits
(``>> 8``) before conversion; the reference's ``convert('RGB')`` clips them (mostly white).

The bank is cached as ``<key>.npy`` (written with ``np.lib.format.open_memmap``) plus
``<key>.json`` (a manifest written last) in ``$IPMIX_DALI_CACHE`` or
``~/.cache/ipmix-dali/banks``. The key hashes the resolved folder, the sorted relative paths, each
file's size and mtime_ns, the side and the format version, so a changed folder gets a new key and a
valid cache is memory-mapped read-only with no decoding.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import PIL
from PIL import Image
from tqdm import tqdm

from ..atomic import atomic_path, write_json

__all__ = ["MixingBank", "load_mixing_bank", "bank_from_array", "default_cache_dir",
           "preresize", "list_candidate_files"]

log = logging.getLogger("ipmix_dali.mixing")

FORMAT_VERSION = 1
_HINT = "pass --mixing-set DIR with images, or create one with `ipmix-dali make-mixing-set`"
_MAX_NAMED = 5


class MixingBank:
    """Square uint8 RGB mixing pictures.

    Attributes:
        images: ``np.ndarray`` or read-only ``np.memmap``, uint8, shape (N, S, S, 3).
        side: S.
        paths: one name per picture (absolute file paths for a folder bank).
        skipped: ``(path, reason)`` for each file that could not be read (``skip_bad_files``).
        cache_path: the ``.npy`` file backing ``images``, or None for an in-memory bank.
    """

    def __init__(self, images: np.ndarray, paths: Optional[Sequence[str]] = None,
                 skipped: Sequence[Tuple[str, str]] = (), cache_path: Optional[str] = None):
        _check_images(images)
        self.images = images
        self.side = int(images.shape[1])
        self.paths = list(paths) if paths is not None else [f"array:{i}" for i in range(len(images))]
        if len(self.paths) != len(images):
            raise ValueError(f"{len(self.paths)} paths for {len(images)} mixing pictures")
        self.skipped = [tuple(s) for s in skipped]
        self.cache_path = cache_path
        self._resident = {}  # (CuPy module, device id) -> the pictures in that GPU's memory

    def on_device(self, device_id=None):
        """The pictures as a CuPy array resident on GPU ``device_id`` (default: the current
        one), uploaded on first use and kept: every GPU entry point crops from this copy
        (``CupyExecutor.crop_pictures``) instead of uploading crops per batch."""
        from ..device import current_device_id, import_cupy, upload_resident

        device_id = current_device_id() if device_id is None else int(device_id)
        key = (id(import_cupy()), device_id)  # the kernel cache's rule: one copy per CuPy
        resident = self._resident.get(key)
        if resident is None:
            resident = self._resident[key] = upload_resident(self.images, device_id)
        return resident

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getstate__(self):
        # A bank backed by its cache file travels as the file's name (DataLoader workers map
        # it again) instead of as a copy of every picture.
        state = dict(self.__dict__)
        state["_resident"] = {}  # device memory stays with its process
        if self.cache_path and isinstance(self.images, np.memmap):
            state["images"] = None
        return state

    def __setstate__(self, state):
        state.setdefault("_resident", {})
        self.__dict__.update(state)
        if self.images is None:
            self.images = np.load(self.cache_path, mmap_mode="r")

    def __repr__(self) -> str:
        where = f", cache={self.cache_path!r}" if self.cache_path else ""
        return f"MixingBank(n={len(self)}, side={self.side}{where})"

    def crops(self, index: np.ndarray, top: np.ndarray, left: np.ndarray, size: int,
              out: Optional[np.ndarray] = None) -> np.ndarray:
        """``out[i] = images[index[i], top[i]:top[i]+size, left[i]:left[i]+size]``, (n, size, size, 3) uint8.

        ``out``: an (n, size, size, 3) uint8 array to write them into (e.g. the CPU stage
        pool's shared memory, so the crops are not copied again), else a new one."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        top = np.asarray(top, dtype=np.int64).reshape(-1)
        left = np.asarray(left, dtype=np.int64).reshape(-1)
        size = int(size)
        n = index.shape[0]
        if top.shape[0] != n or left.shape[0] != n:
            raise ValueError(f"crops: index, top and left must have the same length, got "
                             f"{n}, {top.shape[0]}, {left.shape[0]}")
        if not 0 < size <= self.side:
            raise ValueError(f"crops: size {size} must be in [1, {self.side}] (the bank's side)")
        if out is not None and (out.shape != (n, size, size, 3) or out.dtype != np.uint8):
            raise ValueError(f"crops: out must be uint8 {(n, size, size, 3)}, got "
                             f"{out.dtype} {out.shape}")
        if n == 0:
            return np.empty((0, size, size, 3), np.uint8) if out is None else out
        if index.min() < 0 or index.max() >= len(self):
            raise ValueError(f"crops: index out of range [0, {len(self)})")
        hi = self.side - size
        if top.min() < 0 or left.min() < 0 or top.max() > hi or left.max() > hi:
            raise ValueError(f"crops: top/left must be in [0, {hi}] for size {size} from side {self.side}")
        # One slice copy per crop: contiguous row copies beat a fancy-index gather by ~6-12x
        # (measured for 224-of-256 and 32-of-36 crops), and read only the needed rows of a memmap.
        if out is None:
            out = np.empty((n, size, size, 3), np.uint8)
        images = self.images
        for i, (k, t, l) in enumerate(zip(index.tolist(), top.tolist(), left.tolist())):
            out[i] = images[k, t:t + size, l:l + size]
        return out


def _check_images(images) -> None:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"mixing pictures must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"mixing pictures must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"mixing pictures must be square (N, S, S, 3), got {images.shape}")


def bank_from_array(images: np.ndarray, paths: Optional[Sequence[str]] = None) -> MixingBank:
    """An in-memory bank from an (N, S, S, 3) uint8 array (not copied if already contiguous)."""
    _check_images(images)
    return MixingBank(np.ascontiguousarray(images), paths=paths)


def default_cache_dir() -> Path:
    env = os.environ.get("IPMIX_DALI_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/ipmix-dali/banks").expanduser()


# ---------------------------------------------------------------------------------------------
# Decoding and pre-resizing

def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        a = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    with warnings.catch_warnings():
        # "Palette images with Transparency expressed in bytes should be converted to RGBA".
        warnings.simplefilter("ignore", UserWarning)
        return img.convert("RGB")


def preresize(img: Image.Image, side: int) -> np.ndarray:
    """RGB, shorter side -> ``side`` (PIL BILINEAR, torchvision ``Resize`` sizing), centre crop.

    Returns a (side, side, 3) uint8 array.
    """
    img = _to_rgb(img)
    w, h = img.size
    if w <= h:
        nw, nh = side, int(side * h / w)
    else:
        nw, nh = int(side * w / h), side
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - side) / 2.0))
    left = int(round((nw - side) / 2.0))
    out = np.asarray(img)[top:top + side, left:left + side]
    return np.ascontiguousarray(out, dtype=np.uint8)


def _decode(path: str, side: int):
    """(array, None) or (None, reason). The whole picture is loaded so truncation is caught."""
    try:
        with Image.open(path) as img:
            img.load()
            return preresize(img, side), None
    except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
        msg = str(exc).splitlines()[0] if str(exc) else ""
        return None, f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Listing

def _image_extensions() -> set:
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def _walk(folder: Path) -> List[str]:
    """Sorted relative paths (POSIX separators) of non-hidden regular files, recursively."""
    out = []
    seen = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop or a second link to a folder already listed
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            if os.path.isfile(full):
                out.append(Path(os.path.relpath(full, folder)).as_posix())
    return sorted(out)


def _is_image(path: str, exts: set) -> bool:
    """Files with an image extension are pictures (a failure to read them is an error); other
    files are pictures only if PIL identifies them from their header (README, .txt are ignored)."""
    if os.path.splitext(path)[1].lower() in exts:
        return True
    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001
        return False


def list_candidate_files(folder) -> List[str]:
    """The pictures a bank of ``folder`` holds, as sorted relative paths (header probes only)."""
    folder = Path(folder).expanduser().resolve()
    exts = _image_extensions()
    return [rel for rel in _walk(folder) if _is_image(str(folder / rel), exts)]


def _cache_key(folder: Path, rels: List[str], side: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT_VERSION, "folder": str(folder), "side": int(side)},
                        sort_keys=True).encode())
    for rel in rels:
        st = os.stat(folder / rel)
        h.update(f"\n{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# Cache I/O

def _write_json_atomic(path: Path, obj) -> None:
    write_json(path, obj, indent=1)


def _read_cache(npy: Path, manifest: Path, key: str, side: int):
    """(images memmap, manifest dict) for a complete cache entry, else None."""
    try:
        with open(manifest) as f:
            meta = json.load(f)
        if meta.get("key") != key or meta.get("format") != FORMAT_VERSION:
            return None
        images = np.load(npy, mmap_mode="r")
        if images.dtype != np.uint8 or images.shape != (meta["count"], side, side, 3):
            return None
        return images, meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _bad_files_error(folder: Path, bad: List[Tuple[str, str]]) -> ValueError:
    named = "; ".join(f"{p} ({r})" for p, r in bad[:_MAX_NAMED])
    more = f" and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    what = "file" if len(bad) == 1 else "files"
    return ValueError(f"mixing set {folder}: {len(bad)} unreadable {what}: {named}{more}; "
                      f"pass --skip-bad-files to skip them")


def _warn_skipped(folder: Path, skipped) -> None:
    if skipped:
        log.warning("mixing set %s: skipped %d unreadable file(s), first: %s (%s)",
                    folder, len(skipped), skipped[0][0], skipped[0][1])


def load_mixing_bank(folder, side: int = 256, cache_dir=None, skip_bad_files: bool = False,
                     progress: bool = False, workers: Optional[int] = None) -> MixingBank:
    """The bank of every picture under ``folder`` (recursive, hidden files skipped, sorted).

    Built once (decoded with ``workers`` threads, default ``min(8, cpu count)``), cached in
    ``cache_dir`` and memory-mapped read-only afterwards. Unreadable files raise one ValueError
    naming them, unless ``skip_bad_files``: then they are left out, listed in ``bank.skipped`` and
    counted in one warning of the ``ipmix_dali.mixing.bank`` logger.
    """
    side = int(side)
    if side < 1:
        raise ValueError(f"mixing bank side must be >= 1, got {side}")
    given = folder
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"mixing set {given} does not exist or is not a folder: {_HINT}")
    rels = _walk(folder)
    if not rels:
        raise ValueError(f"mixing set {folder} has no images (looked for files PIL can open, "
                         f"recursively): {_HINT}")
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(folder, rels, side)
    npy, manifest = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"

    cached = _read_cache(npy, manifest, key, side)
    if cached is not None:
        images, meta = cached
        skipped = [(str(folder / p), r) for p, r in meta.get("skipped", [])]
        if skipped and not skip_bad_files:
            raise _bad_files_error(folder, skipped)
        _warn_skipped(folder, skipped)
        return MixingBank(images, [str(folder / p) for p in meta["paths"]], skipped, str(npy))

    exts = _image_extensions()
    pictures = [rel for rel in rels if _is_image(str(folder / rel), exts)]
    if not pictures:
        raise ValueError(f"mixing set {folder} has no images (looked for files PIL can open, "
                         f"recursively): {_HINT}")

    with atomic_path(npy, ".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(pictures), side, side, 3))
        kept: List[str] = []
        bad: List[Tuple[str, str]] = []
        workers = workers or max(1, min(8, os.cpu_count() or 1))
        chunk = 16 * workers
        bar = tqdm(total=len(pictures), desc="mixing bank", unit="img", disable=not progress,
                   file=sys.stderr)
        with ThreadPoolExecutor(max_workers=workers) as pool, bar:
            for start in range(0, len(pictures), chunk):
                part = pictures[start:start + chunk]
                results = pool.map(lambda rel: _decode(str(folder / rel), side), part)
                for rel, (arr, reason) in zip(part, results):
                    if arr is None:
                        bad.append((rel, reason))
                    else:
                        out[len(kept)] = arr
                        kept.append(rel)
                bar.update(len(part))
        if bad and not skip_bad_files:
            raise _bad_files_error(folder, [(str(folder / p), r) for p, r in bad])
        if not kept:
            raise ValueError(f"mixing set {folder} has no readable images ({len(bad)} unreadable "
                             f"files, first: {folder / bad[0][0]}): {_HINT}")
        if len(kept) < len(pictures):
            # Some files were skipped: the bank gets the right length (a shorter copy).
            with atomic_path(tmp, ".npy") as short:
                out2 = np.lib.format.open_memmap(short, mode="w+", dtype=np.uint8,
                                                 shape=(len(kept), side, side, 3))
                for i in range(0, len(kept), 256):
                    j = min(i + 256, len(kept))
                    out2[i:j] = out[i:j]
                out2.flush()
                del out2
        out.flush()
        del out
    _write_json_atomic(manifest, {
        "format": FORMAT_VERSION, "key": key, "folder": str(folder), "side": side,
        "count": len(kept), "paths": kept, "skipped": [list(b) for b in bad],
        "pillow": PIL.__version__,
    })
    skipped = [(str(folder / p), r) for p, r in bad]
    _warn_skipped(folder, skipped)
    images = np.load(npy, mmap_mode="r")
    return MixingBank(images, [str(folder / p) for p in kept], skipped, str(npy))
