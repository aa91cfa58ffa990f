"""``ipmix-dali bench``: augmentation throughput of the whole input pipeline, one table.

Backends:

* ``reference``: what users run today, a torch ``DataLoader`` with ``workers`` processes, each
  sample read and decoded with PIL, ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip``
  (torchvision), then the reference executor (PIL ops, spec semantics) on a one-sample plan.
* ``dali-cpu``: the DALI pipeline of :mod:`ipmix_dali.pipeline` on the CPU (NumPy executor stage).
* ``dali-gpu``: the same with mixed (nvJPEG) decoding and the CuPy executor stage.

A sample is one training example: its clean view plus two augmented views with ``--jsd``, so
images/s = samples/s x 3 there (the images the model sees). Each row runs ``warmup`` batches, then
``batches`` batches, and times the second half of them (batches finished ahead of time in the
prefetch queues arrive in a burst first); it records peak host RSS (this process and its workers), peak GPU memory
and the CPU cores the row kept busy (process + worker CPU time / wall time).
"""
from __future__ import annotations

import os
import resource
import time
import traceback

import numpy as np

from ..atomic import write_json
from ..config import METHODS, MIXING_METHODS, make_config
from ..device import gpu_available
from ..provenance import machine_info

__all__ = ["run_bench", "BACKENDS"]

BACKENDS = ("reference", "dali-cpu", "dali-gpu")


class ReferenceDataset:
    """PIL decode, torchvision RandomResizedCrop + flip, the reference executor, per sample."""

    def __init__(self, files, config, bank, seed: int = 0):
        self.files, self.config, self.bank, self.seed = files, config, bank, seed

    def __len__(self):
        return len(self.files.files)

    def __getitem__(self, index):
        import torch
        from PIL import Image
        from torchvision import transforms as T

        from ..executors.reference import ReferenceExecutor
        from ..plans import sample_plan
        from ..rng import make_rng

        cfg = self.config
        crop = T.Compose([T.RandomResizedCrop(cfg.image_size), T.RandomHorizontalFlip()])
        with Image.open(self.files.files[index]) as img:
            x = np.asarray(crop(img.convert("RGB")))[None]
        mixes = cfg.method in MIXING_METHODS
        plan = sample_plan(cfg, 1, make_rng(self.seed, 0, 0, index),
                           len(self.bank) if mixes else 0, self.bank.side if mixes else 0)
        pics = (self.bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, cfg.image_size)
                if mixes else None)
        views = ReferenceExecutor().apply(x, pics, plan)[:, 0]  # (V, H, W, 3)
        if cfg.jsd:
            from ..executors.float_ops import normalize_u8

            views = np.concatenate([normalize_u8(x, cfg.mean, cfg.std), views])
        return torch.from_numpy(np.ascontiguousarray(views.transpose(0, 3, 1, 2))), \
            self.files.labels[index]


def _reference_batches(files, config, bank, batch_size, workers, seed):
    import torch

    ds = ReferenceDataset(files, config, bank, seed)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
        generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None)
    it = iter(loader)
    try:
        while True:
            try:
                yield next(it)
            except StopIteration:
                it = iter(loader)  # persistent workers: the same processes go on
    finally:
        # Join the workers now: left to the garbage collector they can linger into the next
        # row and take CPU from it (seen: the DALI rows after reference rows lost ~20 %).
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _dali_batches(files, config, bank, batch_size, threads, seed, device, stage_threads=1):
    from ..executors import get_executor
    from ..loader import train_loader

    extra = {} if device == "gpu" else {"executor": get_executor("numpy", threads=stage_threads)}
    loader = train_loader(files, config, batch_size=batch_size, bank=bank, device=device,
                          num_threads=threads, seed=seed, last_batch_policy="drop", **extra)
    while True:
        for batch in loader:
            yield batch


def _tree_cpu_seconds():
    """CPU seconds of this process and its live child processes (the DataLoader workers)."""
    s = os.times()
    total = s.user + s.system
    tick = os.sysconf("SC_CLK_TCK")
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _peak_rss_mib():
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + kids) / 1024, 1)  # Linux: KiB


def _gpu_peak_mib():
    try:
        import cupy

        pool = cupy.get_default_memory_pool()
        return round(pool.total_bytes() / 2 ** 20, 1)
    except Exception:
        return None


def time_backend(backend, files, config, bank, batch_size, batches, warmup, workers, threads,
                 seed=0, stage_threads=1):
    """One row: samples/s, images/s and resources of ``batches`` timed batches."""
    if backend == "reference":
        gen = _reference_batches(files, config, bank, batch_size, workers, seed)
    else:
        gen = _dali_batches(files, config, bank, batch_size, threads, seed,
                            "gpu" if backend == "dali-gpu" else "cpu", stage_threads)
    if backend == "reference":
        # Every worker builds whole batches and keeps two finished ones queued.
        warmup = max(warmup, workers)
        batches = max(batches, 4 * workers)
    for _ in range(warmup):
        next(gen)
    # Batches finished ahead of time (the prefetch queues) arrive in a burst at the start of
    # the timed run: the rate and the CPU share are measured over its second half only.
    marks = []
    for _ in range(batches):
        images, labels = next(gen)
        if backend == "dali-gpu":
            import cupy

            cupy.cuda.Device().synchronize()
        marks.append((time.perf_counter(), _tree_cpu_seconds(), len(labels)))
    gen.close()
    del gen  # shuts the reference workers down
    half = len(marks) // 2
    (t0, cpu0, _), (t1, cpu1, _) = marks[half - 1], marks[-1]
    samples = sum(n for _, _, n in marks[half:])
    wall, cpu = t1 - t0, cpu1 - cpu0
    views = 3 if config.jsd else 1
    return {"samples_per_s": round(samples / wall, 2),
            "images_per_s": round(samples * views / wall, 2),
            "samples": samples, "timed_batches": batches - half, "seconds": round(wall, 3),
            "cpu_cores_used": round(cpu / wall, 2), "peak_host_rss_mib": _peak_rss_mib(),
            "peak_gpu_mib": _gpu_peak_mib() if backend == "dali-gpu" else None}


def _table(rows):
    head = (f"{'backend':10} {'method':9} {'jsd':5} {'samples/s':>10} {'images/s':>9} "
            f"{'cores':>6} {'RSS MiB':>8} {'GPU MiB':>8}")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['backend']:10} {r['method']:9} {str(r['jsd']):5} unavailable: "
                         f"{r['error']}")
            continue
        gpu = "-" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
        lines.append(f"{r['backend']:10} {r['method']:9} {str(r['jsd']):5} "
                     f"{r['samples_per_s']:10.1f} {r['images_per_s']:9.1f} "
                     f"{r['cpu_cores_used']:6.2f} {r['peak_host_rss_mib']:8.0f} {gpu:>8}")
    return "\n".join(lines)


def bar_chart(rows, path, title):
    """A PNG bar chart of samples/s per method, one bar per backend."""
    from ..plots import grouped_bars

    ok = [r for r in rows if "error" not in r]
    methods = list(dict.fromkeys(r["method"] + (" + JSD" if r["jsd"] else "") for r in ok))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    series = {b: [next((r["samples_per_s"] for r in ok if r["backend"] == b and
                        r["method"] + (" + JSD" if r["jsd"] else "") == m), None)
                  for m in methods] for b in backends}
    return grouped_bars(methods, series, path, title, "samples/s (higher is better)",
                        xlabel="method", digits=0)


def run_bench(backends=("reference", "dali-cpu"), methods=METHODS, jsd=False, batch_size=32,
              batches=16, warmup=1, data=None, images=128, workers=None, threads=None,
              mixing_set=None, out="bench/results/bench_cpu.json", chart=None,
              log=print, stage_threads=1) -> dict:
    """Time every (backend, method) pair; write the JSON result and the PNG chart."""
    from ..datasets import scan_image_folder
    from ..mixing.bank import default_cache_dir, load_mixing_bank
    from ..tools.samples import write_jpeg_tree

    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"unknown backend {b!r}: choose from {', '.join(BACKENDS)}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
    cores = os.cpu_count() or 1
    workers = cores if workers is None else workers
    threads = cores if threads is None else threads
    if data is None:
        data = os.path.join(default_cache_dir().parent, f"bench-jpegs-{images}")
        write_jpeg_tree(data, classes=8, per_class=max(1, images // 8), seed=0)
    files = scan_image_folder(data)
    if mixing_set:
        bank = load_mixing_bank(mixing_set, side=256, progress=True)
    else:
        from ..mixing.builtin import builtin_mixing_bank

        bank = builtin_mixing_bank(count=32, side=256)
    if len(files) < batch_size * (batches + warmup) and "reference" in backends:
        log(f"note: {len(files)} files for {batches + warmup} batches of {batch_size}: "
            f"the reference loader repeats epochs")
    rows = []
    for method in methods:
        for backend in backends:
            cfg = make_config(method, "imagenet", jsd=jsd and method != "none")
            row = {"backend": backend, "method": method, "jsd": cfg.jsd,
                   "batch_size": batch_size,
                   "workers" if backend == "reference" else "dali_threads":
                       workers if backend == "reference" else threads}
            if backend == "dali-cpu":
                row["stage_threads"] = stage_threads
            if backend == "dali-gpu" and not gpu_available():
                row["error"] = "no CUDA GPU on this machine"
            else:
                try:
                    row.update(time_backend(backend, files, cfg, bank, batch_size, batches,
                                            warmup, workers, threads, stage_threads=stage_threads))
                except (ImportError, ValueError, RuntimeError) as exc:
                    # The row keeps the first line; the whole chain (an augmentation stage
                    # error carries the stage's own traceback) goes to the log.
                    row["error"] = (str(exc).splitlines() or [type(exc).__name__])[0]
                    log("".join(traceback.format_exception(exc)).rstrip())
            rows.append(row)
            log(_table([row]).splitlines()[-1])
    by = {(r["backend"], r["method"]): r for r in rows if "error" not in r}
    ratios = {}
    for m in methods:
        ref, cpu = by.get(("reference", m)), by.get(("dali-cpu", m))
        if ref and cpu:
            ratios[f"dali-cpu/reference {m} per core"] = round(
                (cpu["samples_per_s"] / max(cpu["cpu_cores_used"], 1e-9))
                / (ref["samples_per_s"] / max(ref["cpu_cores_used"], 1e-9)), 2)
    gpu_none, gpu_ip = by.get(("dali-gpu", "none")), by.get(("dali-gpu", "ipmix"))
    if gpu_none and gpu_ip:
        ratios["dali-gpu ipmix / dali-gpu none"] = round(
            gpu_ip["samples_per_s"] / gpu_none["samples_per_s"], 3)
    if gpu_ip and by.get(("reference", "ipmix")):
        ratios["dali-gpu ipmix / reference ipmix (all cores)"] = round(
            gpu_ip["samples_per_s"] / by[("reference", "ipmix")]["samples_per_s"], 2)
    result = {"benchmark": "bench", "description": __doc__.split("\n\n")[0],
              "data": str(data), "num_files": len(files), "image_size": 224,
              "mixing_pictures": len(bank), "batches": batches, "warmup": warmup,
              "machine": _machine(), "rows": rows, "ratios": ratios, "table": _table(rows)}
    if out:
        result["chart"] = chart or os.path.splitext(out)[0] + ".png"
        bar_chart(rows, result["chart"], f"ipmix-dali bench: batch {batch_size}, "
                                         f"{result['machine']['cpu']}, {cores} cores")
        write_json(out, result)
    return result


def _machine():
    info = machine_info()
    try:
        import nvidia.dali

        info["versions"]["nvidia.dali"] = nvidia.dali.__version__
    except ImportError:
        info["versions"]["nvidia.dali"] = None
    info["gpu"] = None
    if gpu_available():
        import cupy

        from ..provenance import gpu_info as _gpu_info

        info["gpu"] = _gpu_info(cupy)
    return info
