"""Sharded tar input: an ImageFolder written as webdataset-style tar shards, and read back by
DALI's ``fn.readers.webdataset`` (sharded per rank, reshuffled per epoch, exact resume).

    ipmix-dali make-shards --src imagenet/train --out shards/train --shard-size 1000
    ipmix-dali make-shards --src imagenet/val --out shards/val
    ipmix-dali train --data shards/ ...          # train/ and val/ may each be shards or folders

A shard ``shard-000000.tar`` holds, per sample with key ``00000042``: ``00000042.jpg`` (the
source file's bytes, whatever its format: DALI decodes by content), ``00000042.cls`` (the label
as text, for other webdataset tools) and ``00000042.label`` (the label as a little-endian
int32, what DALI reads). ``shard-000000.idx`` is DALI's index of it (format v1.2: per sample,
``ext offset size name`` per component), so the reader does not scan the tar at start.
``dataset.json`` lists the shards, the classes, each sample's label and source file (for
messages), and the files left out as bad: the sources are checked like a folder (header,
size limit) and, by default, decoded once by DALI's decoder (``--no-check-decode`` to skip),
so that no sample fails in training.
"""
from __future__ import annotations

import io
import json
import os
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .atomic import atomic_path, write_json
from .datasets import MAX_IMAGE_PIXELS, FileList

__all__ = ["ShardSet", "make_shards", "load_shards", "is_shard_set", "open_split", "FORMAT"]

FORMAT = 1
MANIFEST = "dataset.json"
COMPONENTS = ("jpg", "cls", "label")  # the order of each sample's members


@dataclass
class ShardSet(FileList):
    """A shard set as a file list: ``files`` are the samples' source files (for messages),
    ``labels`` their labels, and ``tars`` / ``indexes`` what the reader opens."""

    tars: List[str] = field(default_factory=list)
    indexes: List[str] = field(default_factory=list)


def is_shard_set(folder) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def open_split(folder, skip_bad_files: bool = False,
               max_pixels: Optional[int] = MAX_IMAGE_PIXELS) -> FileList:
    """A training or validation split: a shard set (it has ``dataset.json``) or an ImageFolder
    (checked like :func:`ipmix_dali.datasets.scan_image_folder`)."""
    from .datasets import scan_image_folder

    if is_shard_set(folder):
        return load_shards(folder)
    return scan_image_folder(folder, skip_bad_files=skip_bad_files, max_pixels=max_pixels)


def load_shards(folder) -> ShardSet:
    """The shard set in ``folder`` (written by :func:`make_shards`), checked: every shard and
    index is there."""
    folder = Path(folder).expanduser().resolve()
    try:
        meta = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder / MANIFEST} is unreadable ({exc}): write the shards again "
                         f"with `ipmix-dali make-shards`") from None
    if meta.get("format") != FORMAT or not meta.get("complete"):
        raise ValueError(f"{folder} is an unfinished or other-version shard set: run "
                         f"`ipmix-dali make-shards` into it again (it resumes)")
    tars = [str(folder / name) for name in meta["shards"]]
    indexes = [t[:-4] + ".idx" for t in tars]
    missing = [p for p in tars + indexes if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"{folder}: {len(missing)} shard file(s) missing, first {missing[0]}: "
                         f"run `ipmix-dali make-shards` into it again (it resumes)")
    return ShardSet(meta["sources"], meta["labels"], meta["classes"],
                    [tuple(s) for s in meta["skipped"]], str(folder), tars, indexes)


def _index_line(members) -> str:
    return " ".join(f"{name.split('.', 1)[1]} {offset} {size} {name}"
                    for name, offset, size in members)


def _write_shard(path, samples):
    """One tar (and its index) of ``samples`` = [(key, source path, label)]; atomically."""
    lines = []
    with atomic_path(path, ".tar") as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, source, label in samples:
                with open(source, "rb") as f:
                    data = f.read()
                members = []
                for ext, payload in zip(COMPONENTS, (data, str(label).encode(),
                                                     struct.pack("<i", label))):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mode, info.mtime = len(payload), 0o644, 0
                    header = tar.offset  # a short USTAR name: one header block, then the data
                    tar.addfile(info, io.BytesIO(payload))
                    members.append((info.name, header + tarfile.BLOCKSIZE, len(payload)))
                lines.append(_index_line(members))
    with atomic_path(path[:-4] + ".idx", ".idx") as tmp:
        with open(tmp, "w") as f:
            f.write(f"v1.2 {len(samples)}\n" + "\n".join(lines) + "\n")


def make_shards(src, out, shard_size: int = 1000, skip_bad_files: bool = False,
                check_decode: bool = True, max_pixels: Optional[int] = MAX_IMAGE_PIXELS,
                progress: bool = True) -> dict:
    """Write the ImageFolder ``src`` as shards of ``shard_size`` samples into ``out``
    (resumable: finished shards of the same settings are kept). Returns the manifest."""
    from tqdm import tqdm

    from .datasets import find_undecodable, remember_undecodable, scan_image_folder

    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    files = scan_image_folder(src, skip_bad_files=skip_bad_files, max_pixels=max_pixels)
    skipped = list(files.skipped)
    sources, labels = list(files.files), list(files.labels)
    if check_decode:
        bad = find_undecodable(sources)
        if bad:
            remember_undecodable(bad)
            if not skip_bad_files:
                raise ValueError(f"{len(bad)} file(s) of {files.source} do not decode with "
                                 f"DALI's decoder, first {bad[0]}: delete them, or pass "
                                 f"--skip-bad-files to leave them out")
            bad_set = set(bad)
            keep = [i for i, s in enumerate(sources) if s not in bad_set]
            skipped += [(b, "DALI's decoder fails on it") for b in bad]
            sources, labels = [sources[i] for i in keep], [labels[i] for i in keep]
    settings = {"format": FORMAT, "source": files.source, "shard_size": shard_size,
                "samples": len(sources)}
    out = Path(out).expanduser().resolve()
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        differ = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
        if differ:
            raise ValueError(f"{out} holds shards made with other settings ({'; '.join(differ)})"
                             f": rerun with its settings to resume, or write into a new --out")
    out.mkdir(parents=True, exist_ok=True)
    names = [f"shard-{k:06d}.tar" for k in range(-(-len(sources) // shard_size))]
    manifest = {**settings, "classes": files.classes, "shards": names, "labels": labels,
                "sources": sources, "skipped": [list(s) for s in skipped], "complete": False}
    write_json(manifest_path, manifest)  # first, so an interrupted run resumes only as itself
    written = 0
    for k, name in enumerate(tqdm(names, desc="make-shards", unit="shard",
                                  disable=not progress)):
        path = str(out / name)
        if os.path.exists(path) and os.path.exists(path[:-4] + ".idx"):
            continue
        part = range(k * shard_size, min((k + 1) * shard_size, len(sources)))
        _write_shard(path, [(f"{i:08d}", sources[i], labels[i]) for i in part])
        written += 1
    manifest["complete"] = True
    write_json(manifest_path, manifest)
    return {**manifest, "written_shards": written, "kept_shards": len(names) - written}
