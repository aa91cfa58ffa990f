"""Training and validation file lists: ImageFolder trees or "path label" files, checked up front.

DALI's reader takes the list we give it (``fn.readers.file(files=..., labels=...)``), so the
labels are exactly torchvision ``ImageFolder``'s: class folders sorted by name, numbered from 0.

Bad input is found before any work starts, not as a pipeline crash hours in: DALI reports a file
it cannot decode as ``nvImageCodec failure: '#4'`` (no file name) and the pipeline object is then
unusable. :func:`check_image_file` reads each file's first and last bytes (a format DALI decodes,
a JPEG that ends with its end-of-image marker): cheap enough for ImageNet's 1.28 M files, and it
finds the empty, non-image and truncated files a crawl leaves behind. A file that passes the check
and still fails in the decoder is reported by the loader with its name
(:func:`ipmix_dali.loader.decode_error`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

__all__ = ["FileList", "scan_image_folder", "read_file_list", "check_image_file",
           "IMAGE_EXTENSIONS"]

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


def check_image_file(path: str) -> Optional[str]:
    """None if ``path`` looks decodable, else the reason: empty, unknown format, truncated JPEG.

    A JPEG must end with its end-of-image marker (``FF D9``), allowing the few bytes of padding some
    encoders append after it.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(16)
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
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return None


def _bad_files_error(source: str, bad: Sequence[Tuple[str, str]]) -> ValueError:
    named = "; ".join(f"{p} ({r})" for p, r in bad[:_MAX_NAMED])
    more = f" and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    return ValueError(f"{len(bad)} bad image file(s) in {source}: {named}{more}: {_SKIP_HINT}")


def _checked(files: List[str], labels: List[int], classes: List[str], source: str,
             check: bool, skip_bad_files: bool) -> FileList:
    bad = []
    if check:
        keep_files, keep_labels = [], []
        for path, label in zip(files, labels):
            reason = check_image_file(path)
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


def scan_image_folder(root, check: bool = True, skip_bad_files: bool = False) -> FileList:
    """The images of an ImageFolder tree ``root/<class>/**/<image>``, labelled like torchvision.

    Args:
        root: the folder with one sub-folder per class.
        check: run :func:`check_image_file` on every file.
        skip_bad_files: leave bad files out (listed in ``skipped``, one warning) instead of
            raising one ValueError naming them.
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
    return _checked(files, labels, classes, str(root), check, skip_bad_files)


def read_file_list(list_file, root=None, check: bool = True,
                   skip_bad_files: bool = False) -> FileList:
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
    return _checked(files, labels, classes, str(list_file), check, skip_bad_files)
