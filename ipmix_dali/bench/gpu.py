"""GPU benchmark of the augmentation stage, the CuPy executor and the fractal renderer (not a
test), and its host-only half that runs anywhere.

On a GPU the pipeline stage's Python (plan sampling, building the launch program, the launches,
handing the outputs to DALI) runs on one host thread per pipeline while the GPU works, so a
batch costs about max(host ms, GPU ms). Two measurements per method (224 px, batch 256):

* **host** (:func:`stage_host_rows`, also without a GPU: ``--host-only``): the stage called as
  DALI calls it (per-sample DLPack inputs in, per-sample DLPack outputs back) through the CuPy
  stand-in in count mode: host ms per batch (wall time minus the stand-in's own NumPy work),
  sample_plan's share, and every device operation counted by kind.
* **GPU** (:func:`run_gpu_bench`, needs a GPU): the same stage on CuPy: GPU ms per batch
  (CUDA events), host ms per call, and samples/s of back-to-back batches; then the executor
  alone (compulsory traffic in GB/s against the device's peak) and fractal generation.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from ..atomic import write_json
from ..config import METHODS, MIXING_METHODS, make_config, mixing_side
from ..plans import sample_plan
from ..provenance import gpu_info, machine_info
from ..rng import make_rng


def _inputs(batch, size):
    from ..mixing.builtin import builtin_mixing_bank
    from ..tools.samples import sample_photos

    photos = sample_photos(min(batch, 16), size, seed=1)
    crops = [np.ascontiguousarray(photos[i % len(photos)]) for i in range(batch)]
    bank = builtin_mixing_bank(count=16, side=mixing_side(size), seed=0)
    return crops, bank


def _stage(cupy, method, jsd, bank, size, dtype, layout):
    from ..executors import get_executor
    from ..pipeline import AugmentStage

    preset = "imagenet" if size > 32 else "cifar"
    cfg = make_config(method, preset, jsd=jsd)
    return AugmentStage(cfg, bank if method in MIXING_METHODS else None, get_executor("cupy"),
                        seed=0, shard_id=0, iters=1000, dtype=dtype, layout=layout,
                        device="gpu"), cfg


def _dali_call(cupy, stage, samples):
    """The stage called as DALI's GPU python_function wrapper calls it: DLPack in and out."""
    inputs = [cupy.from_dlpack(s) for s in samples]
    outputs = stage(inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return [[t.__dlpack__() for t in out] for out in outputs]


def stage_host_rows(methods=METHODS, batch=256, size=224, repeats=5, dtype="float16",
                    layout="NCHW", jsd_modes=(False, True)) -> list:
    """Host ms and device operations per batch of the GPU stage, through the CuPy stand-in
    (count mode: kernels are counted, not run). Needs no GPU."""
    from ..testing import cupy_standin

    crops, bank = _inputs(batch, size)
    rows = []
    for method in methods:
        for jsd in ([False] if method == "none" else jsd_modes):
            with cupy_standin.installed(mode="count") as device:
                import cupy

                stage, cfg = _stage(cupy, method, jsd, bank, size, dtype, layout)
                _dali_call(cupy, stage, crops)  # first call: compiles the kernels
                host, counts = [], None
                for _ in range(repeats):
                    device.reset()
                    start = time.perf_counter()
                    _dali_call(cupy, stage, crops)
                    host.append(time.perf_counter() - start - device.device_seconds)
                    counts = dict(device.counts)
                    device_ops = device.device_ops
            plan_s = []
            for it in range(repeats):
                start = time.perf_counter()
                sample_plan(cfg, batch, make_rng(0, 0, 0, it), len(bank), bank.side)
                plan_s.append(time.perf_counter() - start)
            host_ms, plan_ms = 1e3 * statistics.median(host), 1e3 * statistics.median(plan_s)
            rows.append({"method": method, "jsd": jsd, "views": cfg.views + (1 if jsd else 0),
                         "device_ops": device_ops, "counts": counts,
                         "host_ms": round(host_ms, 2), "host_ms_min": round(1e3 * min(host), 2),
                         "plan_ms": round(plan_ms, 2), "plan_ms_min": round(1e3 * min(plan_s), 2),
                         "host_ms_without_plan": round(host_ms - plan_ms, 2)})
    return rows


def host_table(rows) -> str:
    lines = [f"{'method':9} {'jsd':5} {'device ops':>10} {'kernels':>8} {'h2d':>4} "
             f"{'dlpack':>6} {'host ms':>8} {'plan ms':>8}"]
    for r in rows:
        c = r["counts"]
        lines.append(f"{r['method']:9} {str(r['jsd']):5} {r['device_ops']:10d} "
                     f"{c.get('kernel', 0):8d} {c.get('h2d', 0):4d} {c.get('dlpack', 0):6d} "
                     f"{r['host_ms']:8.2f} {r['plan_ms']:8.2f}")
    return "\n".join(lines)


def run_host_bench(methods=METHODS, batch=256, size=224, repeats=5, dtype="float16",
                   layout="NCHW", out="bench/results/gpu_host_overhead.json") -> dict:
    """``bench-gpu --host-only``: :func:`stage_host_rows` as a JSON result."""
    rows = stage_host_rows(methods, batch, size, repeats, dtype, layout)
    result = {"benchmark": "gpu_stage_host", "image_size": size, "batch": batch,
              "repeats": repeats, "dtype": dtype, "layout": layout,
              "how": "AugmentStage(device='gpu') called as DALI calls it, through the CuPy "
                     "stand-in in count mode (kernels counted, not run); host ms = wall time "
                     "minus the stand-in's NumPy work, median of repeats",
              "machine": machine_info(), "rows": rows, "table": host_table(rows)}
    if out:
        write_json(out, result)
    return result


def _require_cupy():
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        cupy.zeros(1)
    except Exception as exc:
        raise ValueError(f"no usable CUDA GPU for bench-gpu ({type(exc).__name__}); run "
                         f"`ipmix-dali bench-gpu --host-only` here, or bench-gpu on a GPU "
                         f"machine") from None
    return cupy


def run_gpu_bench(methods=METHODS, batch=256, size=224, repeats=10, jsd=True,
                  out="bench/results/executors_gpu.json", out_dtype="float16",
                  layout="NCHW", fractal_count=256, fractal_size=256) -> dict:
    """Stage and executor throughput on the GPU (see the module docstring)."""
    cupy = _require_cupy()
    from ..executors import get_executor

    info = gpu_info(cupy)
    crops, bank = _inputs(batch, size)
    device_crops = [cupy.asarray(c) for c in crops]
    out_bytes = np.dtype(out_dtype).itemsize
    stage_rows, rows = [], []
    for method in methods:
        for use_jsd in ([False, True] if jsd and method != "none" else [False]):
            stage, cfg = _stage(cupy, method, use_jsd, bank, size, out_dtype, layout)
            _dali_call(cupy, stage, device_crops)  # warm-up (compiles)
            cupy.cuda.Device().synchronize()
            host, gpu = [], []
            t_all = time.perf_counter()
            for _ in range(repeats):
                start, stop = cupy.cuda.Event(), cupy.cuda.Event()
                start.record()
                t0 = time.perf_counter()
                _dali_call(cupy, stage, device_crops)
                host.append(time.perf_counter() - t0)
                stop.record()
                gpu.append((start, stop))
            cupy.cuda.Device().synchronize()
            wall = (time.perf_counter() - t_all) / repeats
            gpu_ms = statistics.median(cupy.cuda.get_elapsed_time(a, b) for a, b in gpu)
            views = cfg.views + (1 if use_jsd else 0)
            stage_rows.append({"method": method, "jsd": use_jsd, "views": views,
                               "host_ms": round(1e3 * statistics.median(host), 3),
                               "gpu_ms": round(gpu_ms, 3),
                               "samples_per_s": round(batch / wall, 1),
                               "images_per_s": round(batch * views / wall, 1)})
            # The executor alone, views written once in out_dtype.
            ex = get_executor("cupy")
            plans = [sample_plan(cfg, batch, make_rng(0, 0, 0, it), len(bank), bank.side)
                     for it in range(repeats + 1)]
            pics = [cupy.asarray(bank.crops(p.mix_index, p.mix_top, p.mix_left, size))
                    if "mix_index" in p.arrays else None for p in plans]
            images = cupy.stack(device_crops)
            ex.apply(images, pics[0], plans[0], dtype=out_dtype)  # warm-up
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for it in range(1, repeats + 1):
                ex.apply(images, pics[it], plans[it], dtype=out_dtype)
            stop.record()
            stop.synchronize()
            seconds = cupy.cuda.get_elapsed_time(start, stop) / 1e3 / repeats
            n_pix = batch * size * size * 3
            traffic = n_pix * (1 + (1 if pics[0] is not None else 0)) + n_pix * cfg.views * out_bytes
            rows.append({"method": method, "jsd": use_jsd, "views": cfg.views,
                         "samples_per_s": round(batch / seconds, 1),
                         "images_per_s": round(batch * cfg.views / seconds, 1),
                         "ms_per_batch": round(seconds * 1e3, 3),
                         "compulsory_gbps": round(traffic / seconds / 1e9, 2),
                         "fraction_of_peak": round(traffic / seconds / 1e9
                                                   / info["peak_bandwidth_gbps"], 4)})
    fractal = _fractal_speed(cupy, fractal_count, fractal_size)
    header = f"{'method':10} {'jsd':5} {'samples/s':>10} {'images/s':>10} {'GB/s':>8} {'peak':>6}"
    lines = [header] + [f"{r['method']:10} {str(r['jsd']):5} {r['samples_per_s']:10.0f} "
                        f"{r['images_per_s']:10.0f} {r['compulsory_gbps']:8.1f} "
                        f"{100 * r['fraction_of_peak']:5.1f}%" for r in rows]
    stage_lines = [f"{'method':10} {'jsd':5} {'host ms':>8} {'GPU ms':>8} {'samples/s':>10}"] + [
        f"{r['method']:10} {str(r['jsd']):5} {r['host_ms']:8.2f} {r['gpu_ms']:8.2f} "
        f"{r['samples_per_s']:10.0f}" for r in stage_rows]
    result = {"benchmark": "executors_gpu", "image_size": size, "batch": batch,
              "repeats": repeats, "out_dtype": out_dtype, "layout": layout, "device": info,
              "machine": machine_info(), "stage": stage_rows, "rows": rows,
              "fractals": fractal, "stage_table": "\n".join(stage_lines),
              "table": "\n".join(lines)}
    if out:
        write_json(out, result)
    return result


def _fractal_speed(cupy, count, size):
    from ..mixing.fractals import render_fractals

    t0 = time.perf_counter()
    render_fractals(min(count, 8), size, seed=1)
    cpu_ms = (time.perf_counter() - t0) / min(count, 8) * 1e3
    fractal = {"size": size, "cpu_ms_per_image": round(cpu_ms, 2),
               "cpu_images_per_s": round(1e3 / cpu_ms, 1)}
    from ..mixing.fractals_gpu import render_fractals_gpu

    render_fractals_gpu(min(count, 4), size, seed=0)
    cupy.cuda.Device().synchronize()
    t0 = time.perf_counter()
    render_fractals_gpu(count, size, seed=2)
    cupy.cuda.Device().synchronize()
    fractal["gpu_images_per_s"] = round(count / (time.perf_counter() - t0), 1)
    return fractal
