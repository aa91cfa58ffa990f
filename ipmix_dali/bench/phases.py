"""Where a dali-cpu batch's time goes: the augmentation stage against the rest of the pipeline.

DALI runs the stage (one ``python_function`` call per batch) and the next batch's reading,
decoding and cropping one after the other, not at once (docs/cpu_stage.md). So a batch has two
phases: **stage** (inside :class:`~ipmix_dali.pipeline.AugmentStage`'s call) and **between**
(from the end of one call to the start of the next: DALI's decode, resize, flip and its copy of
the stage's output). For each phase this reports the wall time per batch and the CPU time per
batch of each group of threads, read from /proc schedstat (nanoseconds) at every stage entry
and exit:

* ``stage workers``: the worker processes of the CPU stage (``--workers`` >= 2);
* ``stage thread``: the DALI thread that calls the stage (the plan, the stacking, the crops,
  and with ``--workers 1`` the NumPy executor itself);
* ``DALI threads``: DALI's thread pool and executor threads (other than the stage thread);
* ``resize threads``: the stage's crop resize threads (``crop_resize.CropResizer``);
* ``main``: the thread that takes the batches (the torch iterator's copy);
* ``other``: anything else in the process.

``cores`` per phase is CPU time over wall time: on k usable cores, k minus it is what the phase
leaves idle. A machine with many cores shows here whether the stage's workers or DALI's threads
wait for each other.

    python -m ipmix_dali.bench.phases --methods ipmix,layermix --jsd --workers 2 \\
        --out bench/results/stage_workers/phases_2_cores.json
"""
from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from collections import defaultdict

from ..atomic import write_json
from ..config import CROP_RESIZES, METHODS, MIXING_METHODS, make_config
from ..crop_resize import THREAD_NAME
from ..pipeline import resolve_crop_resize
from ..provenance import machine_info

__all__ = ["measure_phases", "run_phases", "GROUPS"]

GROUPS = ("stage workers", "stage thread", "DALI threads", "resize threads", "main", "other")


def _threads_ns(pid):
    """{(pid, tid): (name, run time in ns)} of ``pid``'s threads (gone ones left out)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except (OSError, ValueError, IndexError):
            continue
        out[(int(pid), int(tid))] = (name, ns)
    return out


@contextlib.contextmanager
def _stage_marks(executor):
    """While open, every AugmentStage call appends (time, kind, thread CPU snapshot, stage
    thread id) at its entry ("in") and exit ("out") to the yielded list."""
    from ..pipeline import AugmentStage

    marks = []
    call = AugmentStage.__call__

    def snapshot():
        snap = _threads_ns(os.getpid())
        for pid in getattr(executor, "pids", ()):
            snap.update(_threads_ns(pid))
        return snap

    def timed_call(stage, *args, **kwargs):
        tid = threading.get_native_id()
        marks.append((time.perf_counter(), "in", snapshot(), tid))
        try:
            return call(stage, *args, **kwargs)
        finally:
            marks.append((time.perf_counter(), "out", snapshot(), tid))

    AugmentStage.__call__ = timed_call
    try:
        yield marks
    finally:
        AugmentStage.__call__ = call


def _group(key, name, stage_tid, main_tid, worker_pids):
    pid, tid = key
    if pid in worker_pids:
        return "stage workers"
    if tid == stage_tid:
        return "stage thread"
    if tid == main_tid:
        return "main"
    if name.startswith("[DALI]"):
        return "DALI threads"
    if name.startswith(THREAD_NAME.decode()):
        return "resize threads"
    return "other"


def summarize(marks, worker_pids, main_tid):
    """Per phase: wall ms per batch, CPU ms per batch of each group, cores busy. ``marks``
    alternate "in"/"out" (one stage call each); a phase runs from one mark to the next."""
    wall = {"stage": 0.0, "between": 0.0}
    cpu = {"stage": defaultdict(float), "between": defaultdict(float)}
    calls = 0
    for (t0, kind, s0, tid), (t1, _, s1, _) in zip(marks[:-1], marks[1:]):
        phase = "stage" if kind == "in" else "between"
        calls += kind == "in"
        wall[phase] += t1 - t0
        for key, (name, ns) in s1.items():
            before = s0[key][1] if key in s0 else 0  # a thread started in the phase: all of it
            cpu[phase][_group(key, name, tid, main_tid, worker_pids)] += (ns - before) / 1e6
    batches = max(1, calls)
    phases = {}
    for phase in ("stage", "between"):
        ms = wall[phase] * 1e3 / batches
        groups = {g: round(cpu[phase].get(g, 0.0) / batches, 2) for g in GROUPS}
        phases[phase] = {"wall_ms_per_batch": round(ms, 2), "cpu_ms_per_batch": groups,
                         "cores": round(sum(groups.values()) / ms, 2) if ms else 0.0}
    return phases


def measure_phases(method="ipmix", jsd=True, workers=2, threads=None, batch_size=32,
                   batches=30, warmup=3, data=None, images=256, seed=0, log=print,
                   crop_resize="auto"):
    """Run the dali-cpu training loader of ``method`` for ``warmup + batches`` batches with
    ``workers`` stage processes (1: the stage's own thread) and ``threads`` DALI threads
    (default: ``workers``; 0 workers: one per usable core); the row of the last ``batches``:
    samples/s and the phases (module docstring). ``crop_resize``: who resizes the crops
    (:func:`ipmix_dali.pipeline.resolve_crop_resize`)."""
    from ..datasets import scan_image_folder
    from ..executors import stage_executor
    from ..executors.pool import default_stage_workers
    from ..loader import train_loader
    from ..memory import keep_freed_memory
    from ..mixing.builtin import builtin_mixing_bank
    from .input_pipeline import default_bench_data

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
    if int(batches) < 2:
        raise ValueError(f"--batches {batches}: give at least 2 timed batches")
    keep_freed_memory()
    config = make_config(method, "imagenet", jsd=bool(jsd) and method != "none")
    files = scan_image_folder(data or default_bench_data(images))
    bank = builtin_mixing_bank(count=32, side=256) if method in MIXING_METHODS else None
    workers = int(workers) or default_stage_workers()  # 0: one per usable core, as in train
    executor = stage_executor(workers)
    threads = int(threads or workers)
    warmup = max(1, int(warmup))
    main_tid = threading.get_native_id()
    taken, start, t0 = 0, None, None
    # the stage's calls are timed from the loader's first batch (DALI may call it at build time)
    with _stage_marks(executor) as marks:
        loader = train_loader(files, config, batch_size=batch_size, bank=bank, device="cpu",
                              num_threads=threads, seed=seed, last_batch_policy="drop",
                              executor=executor, crop_resize=crop_resize)
        try:
            while taken < warmup + batches:
                for _ in loader:
                    taken += 1
                    if taken == warmup:  # the stage calls from here on are timed
                        start, t0 = len(marks), time.perf_counter()
                    if taken == warmup + batches:
                        break
            elapsed = time.perf_counter() - t0
            worker_pids = set(getattr(executor, "pids", ()))
        finally:
            loader.close()
        # DALI runs ahead (prefetch): whole stage calls of the timed stretch only
        timed = marks[start:]
        timed = timed[next(i for i, m in enumerate(timed) if m[1] == "in"):]
        if timed and timed[-1][1] == "in":
            timed = timed[:-1]
    phases = summarize(timed, worker_pids, main_tid)
    row = {"method": method, "jsd": config.jsd, "workers": workers, "threads": threads,
           "crop_resize": resolve_crop_resize(crop_resize, "cpu"),
           "batch_size": batch_size, "batches": batches,
           "samples_per_s": round(batches * batch_size / elapsed, 2), "phases": phases}
    log(f"{method}{' + JSD' if config.jsd else ''}, {workers} stage worker(s), {threads} DALI "
        f"thread(s): {row['samples_per_s']} samples/s")
    for phase, p in phases.items():
        busy = ", ".join(f"{g} {v:.1f}" for g, v in p["cpu_ms_per_batch"].items() if v >= 0.05)
        log(f"  {phase:8s} {p['wall_ms_per_batch']:7.1f} ms per batch, {p['cores']:.2f} cores "
            f"busy (CPU ms: {busy})")
    return row


def run_phases(methods=("ipmix",), jsd=False, workers=0, threads=None, batch_size=32,
               batches=30, warmup=3, data=None, out=None, log=print, crop_resize="auto"):
    """:func:`measure_phases` for each method, one JSON result (``rows``)."""
    from .input_pipeline import default_bench_data

    for m in methods:  # every argument checked before anything runs
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
    if int(batches) < 2:
        raise ValueError(f"--batches {batches}: give at least 2 timed batches")
    data = data or default_bench_data()
    load_start = os.getloadavg()
    resolve_crop_resize(crop_resize, "cpu")
    rows = [measure_phases(m, jsd, workers, threads, batch_size, batches, warmup, data, log=log,
                           crop_resize=crop_resize)
            for m in methods]
    result = {"benchmark": "stage-phases", "description": __doc__.split("\n\n")[0],
              "usable_cores": len(os.sched_getaffinity(0)), "machine": machine_info(),
              "loadavg": {"start": load_start, "end": os.getloadavg()}, "rows": rows}
    if out:
        write_json(out, result)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ipmix_dali.bench.phases",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="ipmix", help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--jsd", action="store_true")
    p.add_argument("--workers", type=int, default=0,
                   help="stage worker processes (0: one per usable core; 1: the stage's own "
                        "thread)")
    p.add_argument("--threads", type=int, default=None, help="DALI threads (default: --workers)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--data", default=None, help="ImageFolder tree (default: generated JPEGs)")
    p.add_argument("--crop-resize", default="auto", choices=CROP_RESIZES,
                   help="who resizes and flips the crops: the stage as Pillow does (pillow, the "
                        "CPU default) or DALI's fn.resize and fn.flip (dali)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        run_phases(methods, args.jsd, args.workers, args.threads, args.batch_size,
                   args.batches, args.warmup, args.data, out=args.out,
                   crop_resize=args.crop_resize)
    except ValueError as exc:
        p.exit(2, f"ipmix_dali.bench.phases: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
