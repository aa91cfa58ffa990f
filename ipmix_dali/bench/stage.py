"""The CPU stage's mechanism, measured: the NumPy executor on one thread, on N threads over
chunks, and on N worker processes (:class:`~ipmix_dali.executors.pool.PoolExecutor`), on the
same batch and plan, executor alone (no DALI). The three run in turn, ``repeats`` rounds, so a
shared machine's load falls on all three alike; a row has the best time of each and the median
of the per-round speedups.

    python -m ipmix_dali.bench.stage --workers 2 --out bench/results/stage_workers/mechanism.json
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ..atomic import write_json
from ..config import METHODS, make_config
from ..provenance import machine_info

__all__ = ["run_mechanism_bench"]


def _rounds(executors, images, pics, plan, repeats):
    """Per executor, the wall time of every round (the executors take turns)."""
    for ex in executors:
        ex.apply(images, pics, plan)  # warm: pool start, first touch of the buffers
    times = [[] for _ in executors]
    for _ in range(repeats):
        for ex, ts in zip(executors, times):
            t0 = time.perf_counter()
            ex.apply(images, pics, plan)
            ts.append(time.perf_counter() - t0)
    return [np.asarray(ts) for ts in times]


def run_mechanism_bench(workers=2, batch_size=32, repeats=5, methods=METHODS, jsd=True,
                        out=None, log=print):
    from ..executors import get_executor
    from ..executors.pool import PoolExecutor
    from ..mixing.builtin import builtin_mixing_bank
    from ..plans import sample_plan
    from ..rng import make_rng
    from ..tools.samples import sample_photos

    photos = sample_photos(8, 224, seed=1, min_scale=0.3)
    images = np.concatenate([photos] * -(-batch_size // len(photos)))[:batch_size]
    bank = builtin_mixing_bank(count=16, side=256)
    rows = []
    load = [os.getloadavg()]
    for method in methods:
        cfg = make_config(method, "imagenet", jsd=jsd and method != "none")
        plan = sample_plan(cfg, batch_size, make_rng(1, 0, 0, 0), len(bank), bank.side)
        pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, 224)
                if "mix_index" in plan.arrays else None)
        pool = PoolExecutor(workers)
        try:
            one, threaded, procs = _rounds([get_executor("numpy"),
                                            get_executor("numpy", threads=workers), pool],
                                           images, pics, plan, repeats)
        finally:
            pool.close()
        row = {"method": method, "jsd": cfg.jsd, "one_thread_s": round(float(one.min()), 4),
               f"threads_{workers}_s": round(float(threaded.min()), 4),
               f"processes_{workers}_s": round(float(procs.min()), 4),
               "threads_speedup": round(float(np.median(one / threaded)), 2),
               "processes_speedup": round(float(np.median(one / procs)), 2)}
        rows.append(row)
        log(row)
        load.append(os.getloadavg())
    result = {"benchmark": "stage-mechanism", "description": __doc__.split("\n\n")[0],
              "workers": workers, "batch_size": batch_size, "repeats": repeats,
              "usable_cores": len(os.sched_getaffinity(0)), "loadavg": load,
              "machine": machine_info(), "rows": rows}
    if out:
        write_json(out, result)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ipmix_dali.bench.stage", description=__doc__)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default="bench/results/stage_workers/mechanism.json")
    args = p.parse_args(argv)
    run_mechanism_bench(args.workers, args.batch_size, args.repeats,
                        [m.strip() for m in args.methods.split(",")], out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
