"""Training and validation file lists: ImageFolder trees or "path label" files, checked up front.

DALI's reader takes the list we give it (``fn.readers.file(files=..., labels=...)``), so the
labels are exactly torchvision ``ImageFolder``'s: class folders sorted by name, numbered from 0.

Bad input is found before any work starts, not as a pipeline crash hours in: DALI reports a file
it cannot decode as ``nvImageCodec failure: '#4'`` (no file name) and the pipeline object is then
unusable. :func:`check_image_file` reads each file's first and last bytes and its header (a
format DALI decodes, a JPEG that ends with its end-of-image marker, at most ``max_pixels``
pixels as Pillow limits them): cheap enough for ImageNet's 1.28 M files, and it finds the empty,
non-image, truncated and decompression-bomb files a crawl leaves behind. A file that passes the
check and still fails in DALI's decoder (a corrupt compressed stream) is found by
:func:`find_undecodable` when the loader hits it, named in the error, and remembered
(:func:`remember_undecodable`), so ``skip_bad_files`` leaves it out from the next run on.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .atomic import cache_root, write_json

__all__ = ["FileList", "scan_image_folder", "read_file_list", "check_image_file", "image_size",
           "find_undecodable", "remember_undecodable", "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS"]

log = logging.getLogger("ipmix_dali.datasets")

# What DALI's image decoders read (by content, whatever the name says: ImageNet's PNG-in-.JPEG).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pnm", ".ppm",
                    ".pgm", ".pbm", ".jp2")
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x00\x00\x00\x0cjP  ", "jpeg2000"),
)
_SKIP_HINT = "fix or delete the files, or pass --skip-bad-files to leave them out (counted)"
# Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): 1024 * 1024 * 1024 // 4 // 3.
MAX_IMAGE_PIXELS = 89_478_485
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_MAX_NAMED = 5


@dataclass
class FileList:
    """Files with integer labels, the class names, and the files left out as bad.

    Attributes:
        files: absolute paths, in the order the reader sees them (sorted by class, then name).
        labels: one int per file.
        classes: class names; ``labels`` index into it.
        skipped: ``(path, reason)`` of files left out (``skip_bad_files``).
        source: the folder or list file it came from (for messages).
    """

    files: List[str]
    labels: List[int]
    classes: List[str]
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _jpeg_size(f) -> Optional[Tuple[int, int]]:
    """(width, height) from a JPEG's frame header, walking the segment headers only."""
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        while marker[1] == 0xFF:  # fill bytes
            marker = marker[1:] + f.read(1)
        kind = marker[1]
        if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:  # no length field
            continue
        length = f.read(2)
        if len(length) < 2:
            return None
        if kind in _JPEG_SOF:
            frame = f.read(5)
            return (int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")) \
                if len(frame) == 5 else None
        if kind == 0xDA:  # scan data before any frame header
            return None
        f.seek(int.from_bytes(length, "big") - 2, os.SEEK_CUR)


def _header_size(f, head: bytes) -> Optional[Tuple[int, int]]:
    if head.startswith(b"\xff\xd8\xff"):
        return _jpeg_size(f)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    from PIL import Image

    f.seek(0)
    with Image.open(f) as img:  # reads the header only
        return img.size


def image_size(path: str) -> Optional[Tuple[int, int]]:
    """(width, height) from the file's header (no decoding), or None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return _header_size(f, f.read(24))
    except Exception:  # noqa: BLE001 - anything unreadable: no size
        return None


def check_image_file(path: str, max_pixels: Optional[int] = MAX_IMAGE_PIXELS,
                     known_undecodable: Optional[dict] = None) -> Optional[str]:
    """None if ``path`` looks decodable, else the reason: empty, unknown format, truncated JPEG,
    larger than ``max_pixels`` (None: no limit), or a file DALI's decoder failed on before
    (``known_undecodable``: the registry, loaded once per scan; default: load it).

    A JPEG must end with its end-of-image marker (``FF D9``), allowing the few bytes of padding some
    encoders append after it.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(24)
            kind = next((k for magic, k in _MAGIC if head.startswith(magic)), None)
            if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                kind = "webp"
            if kind is None and head[:1] == b"P" and head[1:2] in b"123456":
                kind = "pnm"
            if kind is None:
                return "not an image DALI decodes (unknown header)"
            if kind == "jpeg":
                f.seek(max(0, size - 64))
                if b"\xff\xd9" not in f.read():
                    return "truncated JPEG (no end-of-image marker)"
            if max_pixels is not None:
                try:
                    wh = _header_size(f, head)
                except Exception:  # noqa: BLE001 - a header PIL cannot read: left to DALI
                    wh = None
                if wh is not None and wh[0] * wh[1] > max_pixels:
                    return (f"{wh[0]}x{wh[1]} pixels, over the limit of {max_pixels:,} "
                            f"(--max-image-pixels)")
        known = _known_undecodable() if known_undecodable is None else known_undecodable
        if os.path.abspath(path) in known:
            return "DALI's decoder failed on it (found by an earlier run)"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return None


# --- files that pass the header check but not DALI's decoder --------------------------------
def _registry_path() -> Path:
    return cache_root() / "undecodable_files.json"


def _known_undecodable() -> dict:
    """{path: (size, mtime_ns)} of files DALI failed to decode, still unchanged on disk."""
    import json

    try:
        entries = json.loads(_registry_path().read_text())
    except (OSError, ValueError):
        return {}
    known = {}
    for path, (size, mtime) in entries.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_size, st.st_mtime_ns) == (size, mtime):
            known[path] = (size, mtime)
    return known


def remember_undecodable(paths) -> None:
    """Record files DALI's decoder failed on, so ``skip_bad_files`` leaves them out later."""
    entries = _known_undecodable()
    for path in paths:
        st = os.stat(path)
        entries[os.path.abspath(path)] = (st.st_size, st.st_mtime_ns)
    write_json(_registry_path(), entries)


def find_undecodable(files: Sequence[str], batch_size: int = 64, num_threads: int = 2):
    """The files of ``files`` that DALI's CPU decoder cannot decode, found by decoding them all
    (batches first, one by one inside a batch that fails): the search a loader runs when its
    pipeline reports ``nvImageCodec failure`` without a file name."""
    from nvidia.dali import fn, pipeline_def, types

    def decodes(chunk, batch):
        @pipeline_def(batch_size=batch, num_threads=num_threads, device_id=None,
                      prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        def check():
            data, _ = fn.readers.file(files=list(chunk), labels=[0] * len(chunk),
                                      pad_last_batch=True, name="Reader")
            return fn.decoders.image(data, device="cpu", output_type=types.RGB)

        pipe = check()
        try:
            pipe.build()
            for _ in range(-(-len(chunk) // batch)):
                pipe.run()
            return True
        except RuntimeError:
            return False
        finally:
            del pipe

    bad = []
    for start in range(0, len(files), batch_size):
        chunk = list(files[start:start + batch_size])
        if not decodes(chunk, len(chunk)):
            bad += [f for f in chunk if not decodes([f], 1)]
    return bad


def _bad_files_error(source: str, bad: Sequence[Tuple[str, str]]) -> ValueError:
    named = "; ".join(f"{p} ({r})" for p, r in bad[:_MAX_NAMED])
    more = f" and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    return ValueError(f"{len(bad)} bad image file(s) in {source}: {named}{more}: {_SKIP_HINT}")


def _checked(files: List[str], labels: List[int], classes: List[str], source: str,
             check: bool, skip_bad_files: bool, max_pixels: Optional[int]) -> FileList:
    bad = []
    if check:
        keep_files, keep_labels = [], []
        known = _known_undecodable()
        for path, label in zip(files, labels):
            reason = check_image_file(path, max_pixels, known)
            if reason is None:
                keep_files.append(path)
                keep_labels.append(label)
            else:
                bad.append((path, reason))
        if bad and not skip_bad_files:
            raise _bad_files_error(source, bad)
        files, labels = keep_files, keep_labels
        if bad:
            log.warning("skipped %d bad image file(s) in %s (first: %s: %s)", len(bad), source,
                        bad[0][0], bad[0][1])
    if not files:
        raise ValueError(f"{source} has no usable images: expected class folders with image files "
                         f"({', '.join(IMAGE_EXTENSIONS[:3])}, ...) or a list of 'path label' "
                         f"lines; pass --data DIR with train/ and val/ ImageFolder trees")
    return FileList(files, labels, classes, bad, source)


def scan_image_folder(root, check: bool = True, skip_bad_files: bool = False,
                      max_pixels: Optional[int] = MAX_IMAGE_PIXELS) -> FileList:
    """The images of an ImageFolder tree ``root/<class>/**/<image>``, labelled like torchvision.

    Args:
        root: the folder with one sub-folder per class.
        check: run :func:`check_image_file` on every file.
        skip_bad_files: leave bad files out (listed in ``skipped``, one warning) instead of
            raising one ValueError naming them.
        max_pixels: images with more pixels are bad files (None: no limit).
    """
    given = root
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"image folder {given} does not exist or is not a folder: pass --data DIR "
                         f"with train/ and val/ ImageFolder trees (one sub-folder per class)")
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {root} has no class folders: expected {root}/<class>/"
                         f"<image>, one sub-folder per class (ImageFolder layout)")
    files, labels, empty = [], [], []
    for label, name in enumerate(classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, f) for f in filenames
                      if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            empty.append(name)
        found.sort()
        files += found
        labels += [label] * len(found)
    if empty:
        raise ValueError(f"image folder {root}: class folder(s) with no images: "
                         f"{', '.join(empty[:_MAX_NAMED])}{' ...' if len(empty) > _MAX_NAMED else ''}"
                         f": every class needs at least one image (remove the empty folders)")
    return _checked(files, labels, classes, str(root), check, skip_bad_files, max_pixels)


def read_file_list(list_file, root=None, check: bool = True, skip_bad_files: bool = False,
                   max_pixels: Optional[int] = MAX_IMAGE_PIXELS) -> FileList:
    """A text file of ``path label`` lines (DALI's ``file_list`` format); paths relative to ``root``
    (default: the list file's folder). Classes are named by their label numbers."""
    list_file = Path(list_file).expanduser()
    if not list_file.is_file():
        raise ValueError(f"file list {list_file} does not exist: pass a text file of "
                         f"'path label' lines")
    base = Path(root).expanduser() if root is not None else list_file.parent
    files, labels = [], []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, _, label = line.rpartition(" ")
        try:
            label_i = int(label)
            if not path or label_i < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"{list_file}:{n}: expected 'path label' with a label >= 0, "
                             f"got {line!r}") from None
        files.append(str((base / path.strip()).resolve()))
        labels.append(label_i)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ValueError(f"file list {list_file}: {len(missing)} listed file(s) do not exist, "
                         f"first: {missing[0]} (paths are relative to {base})")
    classes = [str(i) for i in range(max(labels) + 1)] if labels else []
    return _checked(files, labels, classes, str(list_file), check, skip_bad_files, max_pixels)
