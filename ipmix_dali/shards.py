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

__all__ = ["ShardSet", "make_shards", "load_shards", "check_shard", "is_shard_set", "open_split",
           "FORMAT"]

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
        return load_shards(folder, skip_bad_files=skip_bad_files)
    return scan_image_folder(folder, skip_bad_files=skip_bad_files, max_pixels=max_pixels)


def load_shards(folder, skip_bad_files: bool = False) -> ShardSet:
    """The shard set in ``folder`` (written by :func:`make_shards`), checked: every shard and
    index is there, and every tar is as long as its index says (:func:`check_shard`). A
    truncated shard is one ValueError naming it, or with ``skip_bad_files`` its broken tail is
    left out (the samples listed in ``skipped``; the reader gets an index of the intact ones)."""
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
    shards = ShardSet(meta["sources"], meta["labels"], meta["classes"],
                      [tuple(s) for s in meta["skipped"]], str(folder), tars, indexes)
    damaged = [(k, *check_shard(t, i)) for k, (t, i) in enumerate(zip(tars, indexes))]
    damaged = [(k, intact, reason) for k, intact, reason in damaged if reason is not None]
    if damaged and not skip_bad_files:
        k, intact, reason = damaged[0]
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise ValueError(f"shard {tars[k]} is damaged{more}: {reason}: run `ipmix-dali "
                         f"make-shards --src {meta['source']} --out {folder}` again (it rewrites "
                         f"damaged shards and keeps the rest), or pass --skip-bad-files to leave "
                         f"the broken tail out")
    if damaged:
        shards = _without_broken_tails(shards, meta["shard_size"], damaged)
    return shards


def _read_index(idx_path):
    """The samples of a DALI index v1.2: per sample, [(name, offset, size)] of its members."""
    with open(idx_path) as f:
        head, *lines = f.read().splitlines()
    version, count = head.split()
    if version != "v1.2" or int(count) != len(lines):
        raise ValueError(f"header {head!r} does not match its {len(lines)} lines")
    samples = []
    for line in lines:
        fields = line.split()
        samples.append([(fields[i + 3], int(fields[i + 1]), int(fields[i + 2]))
                        for i in range(0, len(fields), 4)])
    return samples


def _member_header_matches(f, name, offset, size) -> bool:
    """Whether the USTAR header before ``offset`` names ``name`` with ``size`` bytes."""
    f.seek(offset - tarfile.BLOCKSIZE)
    header = f.read(tarfile.BLOCKSIZE)
    if len(header) < tarfile.BLOCKSIZE:
        return False
    stored = header[:100].rstrip(b"\0").decode("utf-8", "replace")
    try:
        stored_size = int(header[124:136].rstrip(b"\0 ").decode() or "0", 8)
    except ValueError:
        return False
    return stored == name and stored_size == size


def check_shard(tar_path, idx_path, headers: bool = False):
    """``(intact, reason)``: how many samples from the start of the tar are whole, and None or
    why the shard is damaged: a tar shorter than its index says (an interrupted copy, a disk
    fault), an unreadable index, or (``headers``: each member's header read back) a member
    whose header does not match its index entry."""
    try:
        samples = _read_index(idx_path)
    except (OSError, ValueError, IndexError) as exc:
        return 0, f"its index {idx_path} is unreadable ({exc})"
    tar_bytes = os.path.getsize(tar_path)
    with open(tar_path, "rb") as f:
        for n, members in enumerate(samples):
            end = max(offset + size for _, offset, size in members)
            if end > tar_bytes:
                need = max(o + z for m in samples for _, o, z in m)
                return n, (f"{tar_bytes:,} bytes, its index needs at least {need:,} (truncated; "
                           f"{len(samples) - n} of {len(samples)} samples are cut off)")
            if headers and not all(_member_header_matches(f, *m) for m in members):
                return n, (f"the tar header of sample {n} does not match its index "
                           f"({len(samples) - n} of {len(samples)} samples unreadable)")
    return len(samples), None


def _without_broken_tails(shards: ShardSet, shard_size: int, damaged) -> ShardSet:
    """``shards`` without the samples after each damaged shard's intact start: those are
    listed as skipped, and the reader gets an index of the intact samples only (written under
    the cache folder; the shard set is not changed)."""
    import hashlib
    import logging

    from .atomic import atomic_write, cache_root

    drop, skipped = set(), list(shards.skipped)
    tars, indexes = list(shards.tars), list(shards.indexes)
    for k, intact, reason in damaged:
        first = k * shard_size
        part = range(first + intact, min(first + shard_size, len(shards.files)))
        drop.update(part)
        skipped += [(shards.files[i], f"in the broken tail of {tars[k]}") for i in part]
        if intact == 0:
            tars[k] = indexes[k] = None
            continue
        with open(indexes[k]) as f:
            lines = f.read().splitlines()[1:1 + intact]
        st = os.stat(tars[k])
        key = hashlib.sha256(f"{tars[k]}:{st.st_size}:{st.st_mtime_ns}:{intact}".encode())
        indexes[k] = str(cache_root() / "shard-indexes" / f"{key.hexdigest()[:24]}.idx")
        with atomic_write(indexes[k], "w") as f:
            f.write(f"v1.2 {intact}\n" + "\n".join(lines) + "\n")
    keep = [i for i in range(len(shards.files)) if i not in drop]
    if not keep:
        raise ValueError(f"{shards.source}: every shard is damaged: run `ipmix-dali make-shards` "
                         f"into it again (it rewrites damaged shards)")
    logging.getLogger("ipmix_dali.shards").warning(
        "%d damaged shard(s) in %s: left out %d samples of their broken tails (first: %s)",
        len(damaged), shards.source, len(drop), tars[damaged[0][0]] or shards.tars[damaged[0][0]])
    return ShardSet([shards.files[i] for i in keep], [shards.labels[i] for i in keep],
                    shards.classes, skipped, shards.source,
                    [t for t in tars if t is not None], [i for i in indexes if i is not None])


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
    written, rewritten = 0, []
    for k, name in enumerate(tqdm(names, desc="make-shards", unit="shard",
                                  disable=not progress)):
        path = str(out / name)
        if os.path.exists(path) and os.path.exists(path[:-4] + ".idx"):
            if check_shard(path, path[:-4] + ".idx", headers=True)[1] is None:
                continue
            rewritten.append(path)  # a truncated copy or a disk fault: written again
        part = range(k * shard_size, min((k + 1) * shard_size, len(sources)))
        _write_shard(path, [(f"{i:08d}", sources[i], labels[i]) for i in part])
        _verify_written(path)
        written += 1
    manifest["complete"] = True
    write_json(manifest_path, manifest)
    return {**manifest, "written_shards": written, "kept_shards": len(names) - written,
            "rewritten_shards": rewritten}


def _verify_written(path) -> None:
    """Read a shard just written back against its index (sizes, member headers)."""
    reason = check_shard(path, path[:-4] + ".idx", headers=True)[1]
    if reason is not None:
        raise ValueError(f"shard {path} reads back damaged right after writing it ({reason}): "
                      f"the disk or file system lost data; check it, then rerun make-shards "
                      f"(it resumes)")
