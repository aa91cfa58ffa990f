"""``ipmix-dali`` command line: thin parsers that call library code.

Running: ``train`` (``python -m ipmix_dali.train`` takes the same flags), ``demo`` (the whole
job on built-in data), ``eval`` and ``eval-compare`` (robustness evaluation). Data:
``make-mixing-set`` (IFS fractals as files), ``make-corrupted`` (ImageNet-C-style sets),
``show`` (a grid of augmented views to look at). Benchmarks (JSON results): ``bench-executors``,
``bench`` (the input pipeline: reference DataLoader vs DALI), ``bench-gpu`` (the GPU stage;
``--host-only`` without a GPU), ``bench-train``, ``bench-corruptions``. Bad input is one line
on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .atomic import DiskFullError
from .config import CROP_RESIZES, METHODS


def _require_gpu_for(device: str) -> None:
    """--device gpu without a usable GPU: one ValueError naming the fix (--device cpu)."""
    if device == "gpu":
        from .device import require_gpu

        require_gpu()


def _add_show(sub):
    p = sub.add_parser("show", help="write a PNG grid: clean image + augmented views per method")
    p.add_argument("--method", default="all",
                   help=f"one of {', '.join(METHODS)}, a comma list, or 'all' (default)")
    p.add_argument("--preset", default="imagenet", choices=["imagenet", "cifar"])
    p.add_argument("--images", default=None,
                   help="folder of images (default: photographs shipped with scikit-learn)")
    p.add_argument("--mixing-set", default=None,
                   help="folder of mixing pictures (default: a small built-in fractal set)")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="skip unreadable images (counted) instead of failing")
    p.add_argument("--out", default="grid.png", help="output PNG (default grid.png)")
    p.add_argument("--rows", type=int, default=2, help="images per method")
    p.add_argument("--views", type=int, default=5, help="augmented views per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--executor", default="numpy", choices=["numpy", "reference"])
    p.add_argument("--jsd", action="store_true", help="draw the views as JSD pairs")
    p.add_argument("--all-ops", action="store_true", help="use the method's all-ops list")
    p.set_defaults(func=_run_show)


def _run_show(args) -> int:
    from .tools.show import render_grid

    methods = list(METHODS) if args.method == "all" else [m.strip() for m in args.method.split(",")]
    path = render_grid(methods, preset=args.preset, images_dir=args.images,
                       mixing_dir=args.mixing_set, out=args.out, rows=args.rows, views=args.views,
                       seed=args.seed, executor=args.executor, all_ops=args.all_ops,
                       skip_bad_files=args.skip_bad_files)
    print(f"wrote {path}")
    return 0


def _add_bench_executors(sub):
    p = sub.add_parser("bench-executors",
                       help="ms per image of the reference and NumPy executors (one core)")
    p.add_argument("--methods", default="none,augmix,pixmix,ipmix,layermix")
    p.add_argument("--preset", default="imagenet", choices=["imagenet", "cifar"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jsd", action="store_true", help="also time each method with JSD views")
    p.add_argument("--out", default="bench/results/executors_cpu.json")
    p.set_defaults(func=_run_bench_executors)


def _run_bench_executors(args) -> int:
    from .bench.executors import run_executor_bench

    result = run_executor_bench([m.strip() for m in args.methods.split(",")], preset=args.preset,
                                batch=args.batch, repeats=args.repeats, jsd=args.jsd,
                                out=args.out)
    print(result["table"])
    print(f"wrote {args.out}")
    return 0


def _add_bench_transforms(sub):
    p = sub.add_parser("bench-transforms", help="ms per image of ipmix_dali.transforms against "
                                                "the reference executor, one core")
    p.add_argument("--methods", default="ipmix,pixmix,augmix,layermix",
                   help="comma list of methods")
    p.add_argument("--images", type=int, default=40, help="images per timed run")
    p.add_argument("--out", default="bench/results/transforms_cpu.json", help="JSON result")
    p.set_defaults(func=_run_bench_transforms)


def _run_bench_transforms(args) -> int:
    from .bench.transforms import run_transform_bench

    result = run_transform_bench([m.strip() for m in args.methods.split(",")],
                                 images=args.images, out=args.out)
    print(result["table"])
    print(f"wrote {args.out}")
    return 0


def _add_make_shards(sub):
    p = sub.add_parser("make-shards", help="write an ImageFolder as webdataset-style tar shards "
                                           "with DALI indexes (train --data takes them)")
    p.add_argument("--src", required=True, help="ImageFolder to convert")
    p.add_argument("--out", required=True, help="folder for the shards and dataset.json")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="leave bad files out (listed in dataset.json) instead of stopping")
    p.add_argument("--check-decode", action=argparse.BooleanOptionalAction, default=True,
                   help="decode every file once with DALI's decoder first (default on)")
    p.set_defaults(func=_run_make_shards)


def _run_make_shards(args) -> int:
    from .shards import make_shards

    m = make_shards(args.src, args.out, args.shard_size, args.skip_bad_files,
                    args.check_decode)
    print(f"{m['samples']} samples of {len(m['classes'])} classes in {len(m['shards'])} shards "
          f"({m['written_shards']} written, {m['kept_shards']} kept, {len(m['skipped'])} bad "
          f"files left out) in {args.out}")
    if m["rewritten_shards"]:
        print(f"rewrote {len(m['rewritten_shards'])} damaged shard(s) (first: "
              f"{m['rewritten_shards'][0]}): they were shorter than their index or did not "
              f"match it")
    return 0


def _add_bench_gpu(sub):
    p = sub.add_parser("bench-gpu", help="GPU stage and CuPy executor throughput; --host-only: "
                                         "the stage's host ms and device operations, no GPU")
    p.add_argument("--methods", default="none,augmix,pixmix,ipmix,layermix",
                   help="comma list of methods (default: all five)")
    p.add_argument("--batch", type=int, default=256, help="samples per batch (default 256)")
    p.add_argument("--size", type=int, default=224, help="image side (default 224)")
    p.add_argument("--repeats", type=int, default=10, help="timed batches per row")
    p.add_argument("--out-dtype", default="float16", choices=["float16", "float32"],
                   help="dtype of the views the stage writes (default float16)")
    p.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"],
                   help="layout of the views (default NCHW)")
    p.add_argument("--host-only", action="store_true",
                   help="no GPU needed: run the GPU stage through the CuPy stand-in (kernels "
                        "counted, not run) and report host ms and device operations per batch")
    p.add_argument("--out", default=None, help="JSON result (default "
                   "bench/results/executors_gpu.json, or gpu_host_overhead.json with "
                   "--host-only)")
    p.set_defaults(func=_run_bench_gpu)


def _run_bench_gpu(args) -> int:
    from .bench.gpu import run_gpu_bench, run_host_bench

    methods = [m.strip() for m in args.methods.split(",")]
    if args.host_only:
        out = args.out or "bench/results/gpu_host_overhead.json"
        result = run_host_bench(methods, batch=args.batch, size=args.size,
                                repeats=min(args.repeats, 5), dtype=args.out_dtype,
                                layout=args.layout, out=out)
        print(result["table"])
        print(f"wrote {out}")
        return 0
    out = args.out or "bench/results/executors_gpu.json"
    result = run_gpu_bench(methods, batch=args.batch, size=args.size, repeats=args.repeats,
                           out=out, out_dtype=args.out_dtype, layout=args.layout)
    print(result["device"]["gpu"])
    print(result["stage_table"])
    print(result["table"])
    print(f"fractals: {result['fractals']}")
    print(f"wrote {out}")
    return 0


def _add_bench(sub):
    p = sub.add_parser("bench", help="input-pipeline throughput: reference DataLoader vs DALI "
                                     "CPU/GPU, per method (JSON + PNG chart)")
    p.add_argument("--backends", default=None,
                   help="comma list of reference, dali-cpu, dali-gpu (default: all three; "
                        "dali-gpu rows say 'unavailable' without a GPU)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--jsd", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                   help="clean + two augmented views per sample; 'both': every method without, "
                        "then with JSD")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=16,
                   help="timed batches per row (reference: at least 2 per worker)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--data", default=None,
                   help="ImageFolder tree (default: generated ImageNet-like 500x375 JPEGs)")
    p.add_argument("--images", type=int, default=128, help="generated JPEGs (without --data)")
    p.add_argument("--workers", type=int, default=None,
                   help="reference DataLoader workers (default: every core)")
    p.add_argument("--threads", type=int, default=None, help="DALI threads (default: every core)")
    p.add_argument("--stage-threads", type=int, default=1,
                   help="dali-cpu with --stage-workers 1: threads of the NumPy augmentation "
                        "stage (same pixels)")
    p.add_argument("--stage-workers", type=int, default=0,
                   help="dali-cpu: worker processes of the augmentation stage (same pixels; "
                        "default 0: one per usable core, 1: the stage's own thread)")
    p.add_argument("--crop-resize", default="auto", choices=CROP_RESIZES,
                   help="who resizes and flips the DALI rows' crops: the CPU stage as Pillow "
                        "does (pillow; auto on the CPU) or DALI's fn.resize and fn.flip (dali; "
                        "auto on the GPU)")
    p.add_argument("--cores", default=None,
                   help="comma list of core counts, e.g. 1,2: every row set once per count, "
                        "pinned to that many cores (like taskset), side by side")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every row set this many times, the backends taking turns; "
                        "rows report the median (a machine's speed drifts)")
    p.add_argument("--mixing-set", default=None, help="mixing pictures (default: built-in fractals)")
    p.add_argument("--out", default="bench/results/bench_cpu.json")
    p.add_argument("--chart", default=None, help="PNG chart (default: next to --out)")
    p.set_defaults(func=_run_bench)


def _core_counts(text):
    if text is None:
        return None
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(f"--cores {text!r}: give core counts >= 1, e.g. --cores 1,2")
    return counts


def _run_bench(args) -> int:
    from .bench.input_pipeline import BACKENDS, run_bench

    backends = BACKENDS if args.backends is None else [b.strip() for b in args.backends.split(",")]
    result = run_bench(backends, [m.strip() for m in args.methods.split(",")], jsd=args.jsd,
                       batch_size=args.batch_size, batches=args.batches, warmup=args.warmup,
                       data=args.data, images=args.images, workers=args.workers,
                       threads=args.threads, stage_threads=args.stage_threads,
                       stage_workers=args.stage_workers, cores=_core_counts(args.cores),
                       mixing_set=args.mixing_set, out=args.out, chart=args.chart,
                       rounds=args.rounds, crop_resize=args.crop_resize)
    print(result["table"])
    for name, value in result["ratios"].items():
        print(f"{name}: {value}")
    for name, value in result.get("paired_ratios", {}).items():
        print(f"{name}, median of the rounds' own ratios: {value}")
    print(f"wrote {args.out} and {result.get('chart')}")
    return 0


def _add_train(sub):
    from .train.config import add_train_arguments

    p = sub.add_parser("train", help="train a torchvision model on the DALI pipeline "
                                     "(ImageFolder train/ and val/ under --data)")
    add_train_arguments(p)
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .train.config import config_from_args
    from .train.loop import run_cli

    return run_cli(config_from_args(args))


def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole job on built-in data (digits, fractals): train "
                                    "baseline and IPMix on the DALI CPU pipeline, evaluate on "
                                    "corruptions, write a report")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .tools.demo import run_demo

    report = run_demo(args.out, epochs=args.epochs, arch=args.arch, batch_size=args.batch_size,
                      seed=args.seed)
    if "stopped" in report:  # 128 + the signal, as the trainer exits
        return int(report["stopped"]["exit_code"])
    return 0


def _add_eval(sub):
    from .eval.config import add_eval_arguments

    p = sub.add_parser("eval", help="robustness evaluation of a checkpoint: ImageNet val/-C/-R/"
                                    "-A/-O/-P, CIFAR-C, PGD (results.json, report.md, PNG)")
    add_eval_arguments(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from .eval.config import config_from_args
    from .eval.evaluate import evaluate

    evaluate(config_from_args(args))
    print(f"wrote {args.out}/results.json and report.md")
    return 0


def _add_eval_compare(sub):
    p = sub.add_parser("eval-compare", help="several eval output folders side by side")
    p.add_argument("outs", nargs="+", help="folders written by ipmix-dali eval")
    p.add_argument("--chart", default=None,
                   help="also write a PNG of their ImageNet-C error per corruption and severity")
    p.set_defaults(func=_run_eval_compare)


def _run_eval_compare(args) -> int:
    from .eval.report import compare

    compare(args.outs, chart=args.chart)
    return 0


def _add_bench_train(sub):
    p = sub.add_parser("bench-train", help="step rate of training on the DALI pipeline vs on "
                                           "synthetic device-resident batches")
    p.add_argument("--data", default=None, help="ImageFolder train/ and val/ (default: "
                                                "generated ImageNet-like JPEGs)")
    p.add_argument("--images", type=int, default=2560, help="generated training JPEGs")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--method", default="ipmix")
    p.add_argument("--no-jsd", action="store_true")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--amp", default="bf16", choices=["none", "bf16", "fp16"])
    p.add_argument("--device", default="gpu", choices=["cpu", "gpu"])
    p.add_argument("--threads", type=int, default=8, help="DALI threads")
    p.add_argument("--mixing-set", default=None)
    p.add_argument("--out", default="bench/results/train.json")
    p.set_defaults(func=_run_bench_train)


def _run_bench_train(args) -> int:
    from .bench.train import run_train_bench

    _require_gpu_for(args.device)
    r = run_train_bench(args.data, args.images, args.arch, args.method, not args.no_jsd,
                        args.batch_size, args.amp, args.device == "gpu", args.device,
                        args.threads, args.mixing_set, args.out, args.image_size)
    print(json.dumps(r["rows"], indent=1))
    print(f"pipeline / synthetic step rate: {r['pipeline_over_synthetic']} (target 0.95)")
    print(f"wrote {args.out}")
    return 0


def _add_make_corrupted(sub):
    p = sub.add_parser("make-corrupted", help="an ImageNet-C-style set (corruption/severity/"
                                              "class/*.JPEG) or a CIFAR-C-style one (.npy) "
                                              "from any ImageFolder")
    p.add_argument("--src", required=True, help="ImageFolder tree (e.g. imagenet/val); with "
                                                "--layout cifar-c also a .npz (images, labels)")
    p.add_argument("--out", required=True)
    p.add_argument("--layout", choices=["imagenet-c", "cifar-c"], default="imagenet-c",
                   help="imagenet-c: corruption/severity/class/*.JPEG (q85); cifar-c: "
                        "<corruption>.npy (severities x N) + labels.npy, no JPEG")
    p.add_argument("--corruptions", default=None,
                   help="comma list (default: the 15 standard; 'all' adds the 4 extras)")
    p.add_argument("--severities", default="1-5")
    p.add_argument("--size", type=int, default=None,
                   help="crop side (default 224, cifar-c 32; <= 64 selects the CIFAR parameters)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: corrupt batches with CuPy (same pixels)")
    p.add_argument("--skip-bad-files", action="store_true")
    p.set_defaults(func=_run_make_corrupted)


def _run_make_corrupted(args) -> int:
    from .corruptions import ALL, STANDARD
    from .corruptions.make import make_corrupted, parse_severities

    names = (ALL if args.corruptions == "all" else STANDARD if not args.corruptions
             else [c.strip() for c in args.corruptions.split(",")])
    _require_gpu_for(args.device)
    if args.layout == "cifar-c":
        from .corruptions.cifar_c import make_cifar_c

        m = make_cifar_c(args.src, args.out, names, parse_severities(args.severities),
                         args.size or 32, args.seed, args.skip_bad_files, device=args.device)
        print(f"wrote {len(m['written'])} corruption files of {m['images']} images x "
              f"{len(m['severities'])} severities to {args.out} ({len(m['kept'])} already "
              f"there); CIFAR-C-style, not the canonical CIFAR-10/100-C")
        return 0
    m = make_corrupted(args.src, args.out, names, parse_severities(args.severities),
                       args.size or 224, args.seed, args.skip_bad_files, args.workers,
                       device=args.device)
    print(f"wrote {m['written']} images to {args.out} ({m['kept']} already there); "
          f"ImageNet-C-style, not the canonical ImageNet-C")
    return 0


def _add_bench_corruptions(sub):
    p = sub.add_parser("bench-corruptions",
                       help="corruptions vs the imagecorruptions package: fidelity and ms/img")
    p.add_argument("--images", type=int, default=4, help="224 px photographs compared")
    p.add_argument("--corruptions", default=None, help="comma list (default: all 19)")
    p.add_argument("--out", default="bench/results/corruptions_cpu.json")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    p.set_defaults(func=_run_bench_corruptions)


def _run_bench_corruptions(args) -> int:
    from .atomic import atomic_write, write_json
    from .corruptions import ALL
    from .corruptions.fidelity import compare, markdown
    from .provenance import machine_info
    from .tools.samples import sample_photos

    names = args.corruptions.split(",") if args.corruptions else ALL
    result = compare(sample_photos(args.images, 224, seed=0, min_scale=0.3), names)
    result["machine"] = machine_info()
    from .device import gpu_available

    if gpu_available():
        import cupy

        from .corruptions.batched import gpu_speed
        from .provenance import gpu_info as _gpu_info

        result["gpu"] = {"device": _gpu_info(cupy), "ms_per_image_batch64": gpu_speed(
            sample_photos(64, 224, seed=1, min_scale=0.3), names)}
    else:
        result["gpu"] = None  # unmeasured: no GPU on this machine
    write_json(args.out, result)
    table = markdown(result)
    if args.markdown:
        with atomic_write(args.markdown, "w") as f:
            f.write(table)
    print(table)
    print(f"wrote {args.out}")
    return 0


def _add_make_mixing_set(sub):
    p = sub.add_parser("make-mixing-set",
                       help="render IFS fractals (chaos game, sigma-factor maps) as image files")
    p.add_argument("--out", required=True, help="output folder (created; existing files kept)")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--format", choices=["png", "jpg"], default="png")
    p.set_defaults(func=_run_make_mixing_set)


def _run_make_mixing_set(args) -> int:
    from .mixing.builtin import write_fractal_set

    _require_gpu_for(args.device)
    written, kept = write_fractal_set(args.out, args.count, args.size, args.seed, args.format,
                                      progress=True, device=args.device)
    print(f"wrote {written} fractals to {args.out} ({kept} already there)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipmix-dali",
        description="IPMix / PixMix / LayerMix / AugMix as seeded plans run by batch executors.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_show(sub)
    _add_bench_executors(sub)
    _add_make_mixing_set(sub)
    _add_bench_gpu(sub)
    _add_bench_transforms(sub)
    _add_make_shards(sub)
    _add_bench(sub)
    _add_train(sub)
    _add_demo(sub)
    _add_eval(sub)
    _add_eval_compare(sub)
    _add_bench_corruptions(sub)
    _add_make_corrupted(sub)
    _add_bench_train(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        # Bad input: one line naming the problem and the fix, no traceback.
        print(f"ipmix-dali {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:  # nothing already written is damaged: one line
        print(f"ipmix-dali {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
