"""Executor benchmark: ms per image of the reference and NumPy executors on one CPU core.

Not a test: it writes a JSON result (with the machine, the library versions and n) for
``bench/results/``. Images are crops of real photographs; mixing pictures are the built-in fractal
set. Each timing is the median of ``repeats`` runs after one warm-up run, on one thread.
"""
from __future__ import annotations

import statistics
import time

from ..atomic import write_json
from ..config import make_config, mixing_side
from ..executors import get_executor
from ..plans import sample_plan
from ..provenance import machine_info
from ..rng import make_rng


def _time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_executor_bench(methods, preset="imagenet", batch=32, repeats=3, jsd=False,
                       out="bench/results/executors_cpu.json") -> dict:
    try:
        import torch

        torch.set_num_threads(1)  # LayerMix's reference runs torchvision ops
    except ImportError:
        pass
    from ..mixing.builtin import builtin_mixing_bank
    from ..tools.samples import sample_photos

    size = make_config("none", preset).image_size
    images = sample_photos(batch, size, seed=1)
    bank = builtin_mixing_bank(count=16, side=mixing_side(size), seed=0)
    rows = []
    for method in methods:
        for use_jsd in ([False, True] if jsd and method != "none" else [False]):
            cfg = make_config(method, preset, jsd=use_jsd)
            plan = sample_plan(cfg, batch, make_rng(0, 0, 0, 1), len(bank), bank.side)
            pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, size)
                    if "mix_index" in plan.arrays else None)
            row = {"method": method, "jsd": use_jsd, "views": cfg.views}
            for name in ("reference", "numpy"):
                ex = get_executor(name)
                seconds = _time(lambda: ex.apply(images, pics, plan), repeats)
                row[f"{name}_ms_per_image"] = round(1000 * seconds / batch, 3)
            row["speedup"] = round(row["reference_ms_per_image"] / row["numpy_ms_per_image"], 2)
            rows.append(row)
    header = f"{'method':10} {'jsd':5} {'reference ms/img':>17} {'numpy ms/img':>13} {'speedup':>8}"
    lines = [header] + [f"{r['method']:10} {str(r['jsd']):5} {r['reference_ms_per_image']:17.2f} "
                        f"{r['numpy_ms_per_image']:13.2f} {r['speedup']:8.2f}" for r in rows]
    result = {
        "benchmark": "executors_cpu",
        "description": "ms per image (one sample: its views, no clean view) on one CPU thread; "
                       "median of repeats after one warm-up",
        "preset": preset, "image_size": size, "batch": batch, "repeats": repeats,
        "machine": machine_info(), "rows": rows, "table": "\n".join(lines),
    }
    if out:
        write_json(out, result)
    return result
