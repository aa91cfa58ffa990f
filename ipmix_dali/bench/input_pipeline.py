"""``ipmix-dali bench``: augmentation throughput of the whole input pipeline, one table.

Backends:

* ``reference``: what users run today, a torch ``DataLoader`` with ``workers`` processes, each
  sample read and decoded with PIL, ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip``
  (torchvision), then the reference executor (PIL ops, spec semantics) on a one-sample plan.
* ``dali-cpu``: the DALI pipeline of :mod:`ipmix_dali.pipeline` on the CPU (NumPy executor stage,
  on ``stage_workers`` processes: :mod:`ipmix_dali.executors.pool`).
* ``dali-gpu``: the same with mixed (nvJPEG) decoding and the CuPy executor stage.

A sample is one training example: its clean view plus two augmented views with ``--jsd``, so
images/s = samples/s x 3 there (the images the model sees). Each row runs ``warmup`` batches, then
``batches`` batches, and times the second half of them (batches finished ahead of time in the
prefetch queues arrive in a burst first); it records peak host RSS (this process and its workers), peak GPU memory
and the CPU cores the row kept busy (process + worker CPU time / wall time), and the machine's
load average before and after it (a shared machine's other work shows there).

``cores=(1, 2)`` runs every row set once per core count, each in a child process pinned to the
first k usable cores (what ``taskset -c 0..k-1`` does), so "all cores" means k for both
backends; the result adds dali-cpu/reference on the whole (pinned) machine and each backend's
scaling efficiency from the smallest to the largest core count.

``ratios`` divide the rows' median rates. With ``rounds`` >= 2, ``paired_ratios`` also gives
the whole-machine ratios and the scaling efficiencies as the median of each round's own ratio
(rows of one round run minutes apart at most, so they see one machine speed).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

from ..atomic import write_json
from ..config import CROP_RESIZES, METHODS, MIXING_METHODS, make_config
from ..device import gpu_available
from ..pipeline import resolve_crop_resize
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


def default_bench_data(images: int = 256) -> str:
    """The bench's default data: ``images`` ImageNet-like 500x375 JPEGs (crops of real
    photographs) in 8 classes, written once into the cache."""
    from ..mixing.bank import default_cache_dir
    from ..tools.samples import write_jpeg_tree

    data = os.path.join(default_cache_dir().parent, f"bench-jpegs-{images}")
    write_jpeg_tree(data, classes=8, per_class=max(1, images // 8), seed=0)
    return data


def _dali_batches(files, config, bank, batch_size, threads, seed, device, stage_threads=1,
                  stage_workers=1, crop_resize="auto"):
    from ..executors import get_executor, stage_executor
    from ..loader import train_loader

    extra = {}
    if device != "gpu":
        extra["executor"] = (get_executor("numpy", threads=stage_threads) if stage_workers == 1
                             else stage_executor(stage_workers))
    loader = train_loader(files, config, batch_size=batch_size, bank=bank, device=device,
                          num_threads=threads, seed=seed, last_batch_policy="drop",
                          crop_resize=crop_resize, **extra)
    try:
        while True:
            for batch in loader:
                yield batch
    finally:
        loader.close()  # the stage's worker processes stop before the next row


def _tree_cpu_seconds():
    """CPU seconds of this process and its live child processes (the DataLoader workers, the
    stage's workers), to the nanosecond: a row's timed window is a few tens of ms in the tests,
    where clock ticks (10 ms, ``os.times`` and /proc/PID/stat) would be off by a third of a
    core. This process: its CPU-time clock (every thread); a child: the run time of each of
    its threads in /proc/PID/task/TID/schedstat, or its stat ticks where that is missing."""
    total = time.process_time()
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
            total += _child_cpu_seconds(pid, fields, tick)
    return total


def _child_cpu_seconds(pid, stat_fields, tick):
    try:
        ns = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
        return ns / 1e9
    except (OSError, ValueError, IndexError):  # gone meanwhile, or no schedstat
        return (int(stat_fields[11]) + int(stat_fields[12])) / tick  # utime, stime


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
                 seed=0, stage_threads=1, stage_workers=1, crop_resize="auto"):
    """One row: samples/s, images/s and resources of ``batches`` timed batches."""
    load_before = os.getloadavg()[0]
    if backend == "reference":
        gen = _reference_batches(files, config, bank, batch_size, workers, seed)
    else:
        gen = _dali_batches(files, config, bank, batch_size, threads, seed,
                            "gpu" if backend == "dali-gpu" else "cpu", stage_threads,
                            stage_workers, crop_resize)
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
            "peak_gpu_mib": _gpu_peak_mib() if backend == "dali-gpu" else None,
            "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def _table(rows):
    head = (f"{'pinned':>6} {'backend':10} {'method':9} {'jsd':5} {'samples/s':>10} "
            f"{'images/s':>9} {'cores':>6} {'RSS MiB':>8} {'GPU MiB':>8}")
    lines = [head]
    for r in rows:
        pinned = f"{r.get('pinned_cores', '-'):>6} "
        if "error" in r:
            lines.append(f"{pinned}{r['backend']:10} {r['method']:9} {str(r['jsd']):5} "
                         f"unavailable: {r['error']}")
            continue
        gpu = "-" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
        lines.append(f"{pinned}{r['backend']:10} {r['method']:9} {str(r['jsd']):5} "
                     f"{r['samples_per_s']:10.1f} {r['images_per_s']:9.1f} "
                     f"{r['cpu_cores_used']:6.2f} {r['peak_host_rss_mib']:8.0f} {gpu:>8}")
    return "\n".join(lines)


def bar_chart(rows, path, title):
    """A PNG bar chart of samples/s per method, one bar per backend."""
    from ..plots import grouped_bars

    ok = [r for r in rows if "error" not in r]
    methods = list(dict.fromkeys(r["method"] + (" + JSD" if r["jsd"] else "") for r in ok))

    def name(r):
        return r["backend"] + (f", {r['pinned_cores']} core{'s' * (r['pinned_cores'] > 1)}"
                               if "pinned_cores" in r else "")

    backends = list(dict.fromkeys(name(r) for r in ok))
    series = {b: [next((r["samples_per_s"] for r in ok if name(r) == b and
                        r["method"] + (" + JSD" if r["jsd"] else "") == m), None)
                  for m in methods] for b in backends}
    return grouped_bars(methods, series, path, title, "samples/s (higher is better)",
                        xlabel="method", digits=0, rotate=len(methods) > 6)


def _label(row):
    return row["method"] + (" + JSD" if row["jsd"] else "")


def _jsd_modes(jsd):
    """``jsd``: False, True or "both" (each method without, then with JSD)."""
    if jsd == "both":
        return [False, True]
    if jsd in ("on", "off"):
        return [jsd == "on"]
    return [bool(jsd)]


def run_bench(backends=("reference", "dali-cpu"), methods=METHODS, jsd=False, batch_size=32,
              batches=16, warmup=1, data=None, images=128, workers=None, threads=None,
              mixing_set=None, out="bench/results/bench_cpu.json", chart=None,
              log=print, stage_threads=1, stage_workers=0, cores=None, rounds=1,
              crop_resize="auto") -> dict:
    """Time every (backend, method, JSD) row; write the JSON result and the PNG chart.

    ``jsd``: False, True or "both". ``stage_workers``: the dali-cpu stage's processes (0: one
    per usable core, 1: the stage's own thread with ``stage_threads`` threads). ``cores``: a
    list of core counts, each row set run pinned to that many cores (module docstring).
    ``rounds``: each row set measured that many times, the backends taking turns, and every
    row reports its median samples/s (``samples_per_s_rounds`` lists them): the speed of a
    shared or throttled machine drifts by tens of percent within minutes, and rows next to
    each other in time see the same drift. ``crop_resize``: who resizes the DALI rows' crops
    (:func:`ipmix_dali.pipeline.resolve_crop_resize`; "auto": the stage on the CPU, DALI on
    the GPU)."""
    from ..datasets import scan_image_folder
    from ..executors.pool import default_stage_workers, usable_cores
    from ..mixing.bank import load_mixing_bank

    if int(rounds) < 1:
        raise ValueError(f"--rounds {rounds}: give a number of rounds >= 1, e.g. --rounds 3")
    if crop_resize not in CROP_RESIZES:
        raise ValueError(f"--crop-resize {crop_resize!r}: choose one of {', '.join(CROP_RESIZES)}")
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"unknown backend {b!r}: choose from {', '.join(BACKENDS)}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
    if data is None:
        data = default_bench_data(images)
    if cores:
        return _run_pinned(dict(backends=list(backends), methods=list(methods), jsd=jsd,
                                batch_size=batch_size, batches=batches, warmup=warmup,
                                data=str(data), images=images, workers=workers,
                                threads=threads, mixing_set=mixing_set,
                                stage_threads=stage_threads, stage_workers=stage_workers,
                                rounds=rounds, crop_resize=crop_resize),
                           sorted({int(c) for c in cores}), out, chart, log)
    rounds = int(rounds)
    # The CPU stage's malloc settings (ipmix_dali.memory), for both backends alike: set here,
    # before any row, the reference's DataLoader workers inherit them.
    from ..memory import keep_freed_memory

    malloc_kept = keep_freed_memory()
    ncores = usable_cores()
    workers = ncores if workers is None else workers
    threads = ncores if threads is None else threads
    stage_workers = stage_workers or default_stage_workers(ncores)
    files = scan_image_folder(data)
    if mixing_set:
        bank = load_mixing_bank(mixing_set, side=256, progress=True)
    else:
        from ..mixing.builtin import builtin_mixing_bank

        bank = builtin_mixing_bank(count=32, side=256)
    if len(files) < batch_size * (batches + warmup) and "reference" in backends:
        log(f"note: {len(files)} files for {batches + warmup} batches of {batch_size}: "
            f"the reference loader repeats epochs")
    load_start = os.getloadavg()
    rows = []
    for method in methods:
        for with_jsd in _jsd_modes(jsd):
            if method == "none" and with_jsd and False in _jsd_modes(jsd):
                continue  # none has no augmented views: its JSD row is the same work
            cfg = make_config(method, "imagenet", jsd=with_jsd and method != "none")
            pair = []
            for backend in backends:
                row = {"backend": backend, "method": method, "jsd": cfg.jsd,
                       "batch_size": batch_size,
                       "workers" if backend == "reference" else "dali_threads":
                           workers if backend == "reference" else threads}
                if backend.startswith("dali"):
                    row["crop_resize"] = resolve_crop_resize(
                        "dali" if backend == "dali-gpu" and crop_resize == "pillow"
                        else crop_resize, "gpu" if backend == "dali-gpu" else "cpu")
                if backend == "dali-cpu":
                    row["stage_workers"] = stage_workers
                    if stage_workers == 1:
                        row["stage_threads"] = stage_threads
                if backend == "dali-gpu" and not gpu_available():
                    row["error"] = "no CUDA GPU on this machine"
                pair.append((row, []))
            for _ in range(rounds):  # the backends take turns
                for row, runs in pair:
                    if "error" in row:
                        continue
                    try:
                        runs.append(time_backend(row["backend"], files, cfg, bank, batch_size,
                                                 batches, warmup, workers, threads,
                                                 stage_threads=stage_threads,
                                                 stage_workers=stage_workers,
                                                 crop_resize=row.get("crop_resize", "auto")))
                    except (ImportError, ValueError, RuntimeError) as exc:
                        # The row keeps the first line; the whole chain (an augmentation stage
                        # error carries the stage's own traceback) goes to the log.
                        row["error"] = (str(exc).splitlines() or [type(exc).__name__])[0]
                        log("".join(traceback.format_exception(exc)).rstrip())
            for row, runs in pair:
                if runs and "error" not in row:
                    row.update(_median_run(runs))
                rows.append(row)
                log(_table([row]).splitlines()[-1])
    result = {"benchmark": "bench", "description": __doc__.split("\n\n")[0],
              "data": str(data), "num_files": len(files), "image_size": 224,
              "mixing_pictures": len(bank), "batches": batches, "warmup": warmup,
              "rounds": rounds,
              "usable_cores": ncores, "machine": _machine(),
              "malloc": ("freed memory kept (ipmix_dali.memory), both backends" if malloc_kept
                         else "glibc defaults"),
              "loadavg": {"start": load_start, "end": os.getloadavg()},
              "rows": rows, "ratios": _ratios(rows),
              "paired_ratios": _paired_ratios(rows), "table": _table(rows)}
    if out:
        result["chart"] = chart or os.path.splitext(out)[0] + ".png"
        bar_chart(rows, result["chart"], f"ipmix-dali bench: batch {batch_size}, "
                                         f"{result['machine']['cpu']}, {ncores} cores")
        write_json(out, result)
    return result


def _median_run(runs):
    """The run with the median samples/s (its resources with it), plus every run's rate."""
    ranked = sorted(runs, key=lambda r: r["samples_per_s"])
    row = dict(ranked[(len(ranked) - 1) // 2])
    if len(runs) > 1:  # in the order they ran
        row["samples_per_s_rounds"] = [r["samples_per_s"] for r in runs]
        row["loadavg_1min"] = [runs[0]["loadavg_1min"][0], runs[-1]["loadavg_1min"][1]]
    return row


def _ratios(rows):
    """dali-cpu against the reference per row set (whole machine and per core), and the GPU's."""
    both = len({r["jsd"] for r in rows if r["method"] != "none"}) > 1

    def label(r):  # " + JSD" only where rows with and without it sit side by side
        return _label(r) if both else r["method"]

    by = {(r["backend"], label(r), r.get("pinned_cores")): r for r in rows if "error" not in r}
    ratios = {}
    for (backend, label, pinned), cpu in by.items():
        ref = by.get(("reference", label, pinned))
        if backend != "dali-cpu" or ref is None:
            continue
        at = f" at {pinned} core{'s' * (pinned > 1)}" if pinned else ""
        ratios[f"dali-cpu/reference {label}{at} (whole machine)"] = round(
            cpu["samples_per_s"] / ref["samples_per_s"], 2)
        ratios[f"dali-cpu/reference {label}{at} per core"] = round(
            (cpu["samples_per_s"] / max(cpu["cpu_cores_used"], 1e-9))
            / (ref["samples_per_s"] / max(ref["cpu_cores_used"], 1e-9)), 2)
    pinned = sorted({r["pinned_cores"] for r in rows if "pinned_cores" in r})
    if len(pinned) > 1:
        lo, hi = pinned[0], pinned[-1]
        for (backend, label, k), row in by.items():
            base = by.get((backend, label, lo))
            if k == hi and base is not None:
                ratios[f"{backend} {label} scaling efficiency {lo}->{hi} cores"] = round(
                    row["samples_per_s"] / (base["samples_per_s"] * hi / lo), 2)
    gpu_none, gpu_ip = by.get(("dali-gpu", "none", None)), by.get(("dali-gpu", "ipmix", None))
    if gpu_none and gpu_ip:
        ratios["dali-gpu ipmix / dali-gpu none"] = round(
            gpu_ip["samples_per_s"] / gpu_none["samples_per_s"], 3)
    if gpu_ip and by.get(("reference", "ipmix", None)):
        ratios["dali-gpu ipmix / reference ipmix (all cores)"] = round(
            gpu_ip["samples_per_s"] / by[("reference", "ipmix", None)]["samples_per_s"], 2)
    return ratios


def _paired_ratios(rows):
    """The whole-machine ratios and scaling efficiencies of :func:`_ratios`, each the median
    over rounds of the ratio within one round (round r of one row against round r of the
    other), for rows with two or more rounds. The rows of a round run next to each other in
    time (the backends take turns, the core counts follow each other), so a round's ratio sees
    one machine speed; the ratio of two median rows may pair a fast round with a slow one, and
    this machine's speed drifts by tens of percent within minutes."""
    both = len({r["jsd"] for r in rows if r["method"] != "none"}) > 1
    runs = {}
    for r in rows:
        rates = r.get("samples_per_s_rounds") or []
        if "error" not in r and len(rates) >= 2:
            label = _label(r) if both else r["method"]
            runs[(r["backend"], label, r.get("pinned_cores"))] = np.asarray(rates, float)

    def median_ratio(num, den, scale=1.0):
        n = min(len(num), len(den))
        return round(float(np.median(num[:n] / (den[:n] * scale))), 2)

    ratios = {}
    for (backend, label, pinned), cpu in runs.items():
        ref = runs.get(("reference", label, pinned))
        if backend == "dali-cpu" and ref is not None:
            at = f" at {pinned} core{'s' * (pinned > 1)}" if pinned else ""
            ratios[f"dali-cpu/reference {label}{at} (whole machine)"] = median_ratio(cpu, ref)
    pinned = sorted({k for _, _, k in runs if k is not None})
    if len(pinned) > 1:
        lo, hi = pinned[0], pinned[-1]
        for (backend, label, k), rates in runs.items():
            base = runs.get((backend, label, lo))
            if k == hi and base is not None:
                ratios[f"{backend} {label} scaling efficiency {lo}->{hi} cores"] = median_ratio(
                    rates, base, hi / lo)
    return ratios


def _run_pinned(kwargs, cores, out, chart, log):
    """Every row set once per core count, in a child process pinned to the first k usable
    cores; one merged result."""
    from ..executors.pool import usable_cores

    available = sorted(os.sched_getaffinity(0))
    if cores[0] < 1 or cores[-1] > len(available):
        raise ValueError(f"--cores {','.join(map(str, cores))}: this process may use "
                         f"{len(available)} core(s) (1..{len(available)})")
    load_start = os.getloadavg()
    rounds = int(kwargs.get("rounds", 1))
    # Rounds outermost (every core count once per round, one child each): the 1- and 2-core
    # rows of a round run minutes apart at most, so the scaling efficiencies see one speed.
    measured, parts = {}, []
    for r in range(rounds):
        for k in cores:
            cpus = available[:k]
            log(f"-- pinned to {k} core(s): CPUs {','.join(map(str, cpus))}"
                + (f", round {r + 1} of {rounds}" if rounds > 1 else ""))
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "part.json")
                spec = dict(kwargs, cpus=cpus, out=path, rounds=1)
                subprocess.run([sys.executable, "-m", "ipmix_dali.bench.input_pipeline",
                                json.dumps(spec)], check=True)
                with open(path) as f:
                    part = json.load(f)
            for row in part["rows"]:
                row["pinned_cores"] = k
                log(_table([row]).splitlines()[-1])
                key = (k, row["backend"], row["method"], row["jsd"])
                measured.setdefault(key, []).append(row)
            if r == 0:
                parts.append({"pinned_cores": k, "cpus": cpus, "loadavg": part["loadavg"],
                              "usable_cores": part["usable_cores"],
                              "malloc": part.get("malloc")})
    rows = []
    for runs in measured.values():
        failed = [row for row in runs if "error" in row]
        rows.append(failed[0] if failed else _median_run(runs))
    result = {"benchmark": "bench", "description": __doc__.split("\n\n")[0],
              "data": kwargs["data"], "image_size": 224, "batches": kwargs["batches"],
              "rounds": rounds,
              "warmup": kwargs["warmup"], "pinned": parts, "usable_cores": usable_cores(),
              "machine": _machine(), "malloc": parts[0]["malloc"],
              "loadavg": {"start": load_start, "end": os.getloadavg()},
              "rows": rows, "ratios": _ratios(rows),
              "paired_ratios": _paired_ratios(rows), "table": _table(rows)}
    if out:
        result["chart"] = chart or os.path.splitext(out)[0] + ".png"
        bar_chart(rows, result["chart"], f"ipmix-dali bench: batch {kwargs['batch_size']}, "
                                         f"{result['machine']['cpu']}, pinned to "
                                         f"{' and '.join(map(str, cores))} cores")
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


def _pinned_child(spec_json: str):
    """``python -m ipmix_dali.bench.input_pipeline SPEC``: pin this process to ``cpus`` first (its
    threads and children inherit the mask), then run the rows; the result goes to ``out``."""
    spec = json.loads(spec_json)
    os.sched_setaffinity(0, spec.pop("cpus"))
    run_bench(**spec, chart=os.path.splitext(spec["out"])[0] + ".png")


if __name__ == "__main__":
    _pinned_child(sys.argv[1])
