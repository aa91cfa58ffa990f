"""Per-sample transform benchmark: ms per image of ``ipmix_dali.transforms`` (what a DataLoader
worker pays per sample) against the reference executor (the reference code's PIL steps, per
sample) on one core, 224 px photographs, ImageNet presets (not a test)."""
from __future__ import annotations

import statistics
import time

from ..atomic import write_json
from ..provenance import machine_info

METHODS = ("ipmix", "pixmix", "augmix", "layermix")


def run_transform_bench(methods=METHODS, images: int = 40, repeats: int = 3, size: int = 224,
                        out="bench/results/transforms_cpu.json") -> dict:
    import torch
    from PIL import Image

    from .. import make_rng, sample_plan
    from ..executors import get_executor
    from ..tools.samples import sample_photos
    from ..transforms import AugMix, IPMix, LayerMix, PixMix

    classes = {"ipmix": IPMix, "pixmix": PixMix, "augmix": AugMix, "layermix": LayerMix}
    torch.set_num_threads(1)
    photos = [Image.fromarray(p) for p in sample_photos(images, size, seed=1)]
    arrays = sample_photos(images, size, seed=1)
    reference = get_executor("reference")
    rows = []
    for method in methods:
        for jsd in (False, True):
            tf = classes[method](jsd=jsd, image_size=size)
            tf(photos[0])  # loads the mixing set, warms up
            bank = tf._bank

            def transform():
                for p in photos:
                    tf(p)

            def by_reference():
                for i, x in enumerate(arrays):
                    plan = sample_plan(tf.config, 1, make_rng(0, i),
                                       len(bank) if bank else 0, bank.side if bank else 0)
                    pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, size)
                            if bank else None)
                    reference.apply(x[None], pics, plan)
                    if jsd:
                        reference.normalize(x[None], tf.config)

            times = {}
            for name, fn in (("transform", transform), ("reference", by_reference)):
                fn()
                runs = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    fn()
                    runs.append((time.perf_counter() - start) / images * 1e3)
                times[name] = statistics.median(runs)
            rows.append({"method": method, "jsd": jsd,
                         "transform_ms_per_image": round(times["transform"], 2),
                         "reference_ms_per_image": round(times["reference"], 2),
                         "speedup": round(times["reference"] / times["transform"], 2)})
    lines = [f"{'method':9} {'jsd':5} {'transform ms':>13} {'reference ms':>13} {'speedup':>8}"]
    lines += [f"{r['method']:9} {str(r['jsd']):5} {r['transform_ms_per_image']:13.2f} "
              f"{r['reference_ms_per_image']:13.2f} {r['speedup']:8.2f}" for r in rows]
    result = {"benchmark": "transforms_cpu", "image_size": size, "images": images,
              "repeats": repeats, "threads": 1,
              "how": "median of repeats of ms per image over the images, one thread; "
                     "transform = ipmix_dali.transforms.<Method>(jsd=...)(PIL image); "
                     "reference = the reference executor (PIL per sample) on the same kind "
                     "of plan, plus the clean view with JSD",
              "machine": machine_info(), "rows": rows, "table": "\n".join(lines)}
    if out:
        write_json(out, result)
    return result
