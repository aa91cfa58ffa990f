"""GPU benchmark of the CuPy executor and the fractal renderer (not a test).

Per method at 224x224, batch 256: samples/s and images/s (views) timed with CUDA events after a
warm-up, and the achieved memory bandwidth of the compulsory traffic (uint8 inputs and mixing
pictures read once, float outputs written once) against the GPU's peak (2 x memory clock x bus
width). Fractal generation: images/s on CPU (NumPy, one process) and GPU. Writes JSON with the
device, driver and library versions.
"""
from __future__ import annotations

import time

import numpy as np

from .bench_executors import machine_info
from .atomic import write_json
from .config import make_config
from .plans import sample_plan
from .rng import make_rng


def _gpu_info(cupy):
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    peak = 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8  # bytes/s
    return {"gpu": name, "driver": cupy.cuda.runtime.driverGetVersion(),
            "runtime": cupy.cuda.runtime.runtimeGetVersion(), "cupy": cupy.__version__,
            "memory_gib": round(props["totalGlobalMem"] / 2 ** 30, 1),
            "peak_bandwidth_gbps": round(peak / 1e9, 1)}


def run_gpu_bench(methods=("none", "augmix", "pixmix", "ipmix"), batch=256, size=224,
                  repeats=10, jsd=True, out="bench/results/executors_gpu.json",
                  out_dtype="float16", fractal_count=256) -> dict:
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        cupy.zeros(1)
    except Exception as exc:
        raise ValueError(f"no usable CUDA GPU for bench-gpu ({type(exc).__name__}); run it on a "
                         f"GPU machine, or use `ipmix-dali bench-executors` on the CPU") from None
    from .builtin_mixing import builtin_mixing_bank, render_fractals
    from .executors import get_executor
    from .samples import sample_photos

    info = _gpu_info(cupy)
    preset = "imagenet" if size > 32 else "cifar"
    images = cupy.asarray(sample_photos(batch, size, seed=1))
    bank = builtin_mixing_bank(count=16, side=max(256, size) if size > 32 else 36, seed=0)
    ex = get_executor("cupy")
    out_bytes = np.dtype(out_dtype).itemsize
    rows = []
    for method in methods:
        for use_jsd in ([False, True] if jsd and method != "none" else [False]):
            cfg = make_config(method, preset, jsd=use_jsd)
            plans = [sample_plan(cfg, batch, make_rng(0, 0, 0, it), len(bank), bank.side)
                     for it in range(repeats + 1)]
            pics = [cupy.asarray(bank.crops(p.mix_index, p.mix_top, p.mix_left, size))
                    if "mix_index" in p.arrays else None for p in plans]
            ex.apply(images, pics[0], plans[0], out_dtype=out_dtype)  # warm-up (compiles)
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for it in range(1, repeats + 1):
                ex.apply(images, pics[it], plans[it], out_dtype=out_dtype)
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
    # fractals
    t0 = time.perf_counter()
    render_fractals(8, 256, seed=1)
    cpu_ms = (time.perf_counter() - t0) / 8 * 1e3
    fractal = {"cpu_ms_per_image": round(cpu_ms, 2), "cpu_images_per_s": round(1e3 / cpu_ms, 1)}
    try:
        from .fractal_gpu import render_fractals_gpu

        render_fractals_gpu(4, 256, seed=0)
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        render_fractals_gpu(fractal_count, 256, seed=2)
        cupy.cuda.Device().synchronize()
        fractal["gpu_images_per_s"] = round(fractal_count / (time.perf_counter() - t0), 1)
    except ImportError:
        fractal["gpu_images_per_s"] = None
    header = f"{'method':10} {'jsd':5} {'samples/s':>10} {'images/s':>10} {'GB/s':>8} {'peak':>6}"
    lines = [header] + [f"{r['method']:10} {str(r['jsd']):5} {r['samples_per_s']:10.0f} "
                        f"{r['images_per_s']:10.0f} {r['compulsory_gbps']:8.1f} "
                        f"{100 * r['fraction_of_peak']:5.1f}%" for r in rows]
    result = {"benchmark": "executors_gpu", "image_size": size, "batch": batch,
              "repeats": repeats, "out_dtype": out_dtype, "device": info,
              "machine": machine_info(), "rows": rows, "fractals": fractal,
              "table": "\n".join(lines)}
    if out:
        write_json(out, result)
    return result
