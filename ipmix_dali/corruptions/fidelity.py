"""Fidelity and speed against ``imagecorruptions`` (bethgelab, PyPI 1.1.2), the community's CPU
implementation of the ImageNet-C corruptions (``ipmix-dali bench-corruptions``).

imagecorruptions needs three runtime shims on a current stack (docs/evaluation.md §6.2):
``pkg_resources`` (gone from setuptools >= 81), ``np.float_`` (gone in NumPy 2) and scikit-image's
removed ``multichannel=`` keyword. It draws from NumPy's global legacy generator; for the
comparison our corruptions get a generator over the same legacy stream (``LegacyRng``), seeded
alike, so where both implementations draw the same numbers in the same order the outputs can be
compared value for value. Reported per corruption and severity: share of identical values, mean
absolute difference (grey levels) and PSNR of ours against imagecorruptions' output, and
milliseconds per image for both on one core.
"""
from __future__ import annotations

import importlib
import os
import sys
import time
import types

import numpy as np

from .ops import OPS
from .params import ALL, IMAGENET

__all__ = ["load_imagecorruptions", "LegacyRng", "compare"]


def load_imagecorruptions():
    """Import imagecorruptions with the three shims; None if it is not installed."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")

            def resource_filename(package, name):
                return os.path.join(os.path.dirname(importlib.import_module(package).__file__),
                                    name)

            shim.resource_filename = resource_filename
            sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    try:
        ic = importlib.import_module("imagecorruptions")
    except ImportError:
        return None
    mod = sys.modules["imagecorruptions.corruptions"]
    if not getattr(mod, "_ipmix_shimmed", False):
        gaussian = mod.gaussian

        def gaussian_compat(*args, multichannel=None, **kwargs):
            if multichannel:
                kwargs.setdefault("channel_axis", -1)
            return gaussian(*args, **kwargs)

        mod.gaussian = gaussian_compat
        mod._ipmix_shimmed = True
    return ic


class LegacyRng:
    """The Generator methods our corruptions use, drawn from NumPy's global legacy stream (the
    one imagecorruptions uses), so both see the same numbers."""

    def normal(self, loc=0.0, scale=1.0, size=None):
        return np.random.normal(loc, scale, size)

    def poisson(self, lam=1.0, size=None):
        return np.random.poisson(lam, size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return np.random.uniform(low, high, size)

    def random(self, size=None):
        return np.random.random_sample(size)

    def integers(self, low, high=None, size=None):
        if isinstance(size, tuple) and len(size) == 3 and size[-1] == 2:
            # one (dx, dy) pair per pixel, drawn pixel by pixel as the glass blur loop does
            return np.array([[np.random.randint(low, high, size=2) for _ in range(size[1])]
                             for _ in range(size[0])]).reshape(size)
        return np.random.randint(low, high, size)


def compare(images: np.ndarray, names=ALL, log=print) -> dict:
    """Rows of (corruption, severity, identical share, MAD, PSNR, ms ours, ms theirs)."""
    ic = load_imagecorruptions()
    if ic is None:
        raise ValueError("imagecorruptions is not installed: pip install imagecorruptions "
                         "scikit-image (the comparison only; ipmix-dali does not need it)")
    rows = []
    for name in names:
        for s in range(1, 6):
            ours, theirs, t_ours, t_theirs = [], [], 0.0, 0.0
            for i, img in enumerate(images):
                seed = 1000 * s + i
                np.random.seed(seed)
                t0 = time.perf_counter()
                ref = np.uint8(np.asarray(ic.corrupt(img, corruption_name=name, severity=s)))
                t_theirs += time.perf_counter() - t0
                np.random.seed(seed)
                mine = np.uint8(OPS[name](img, IMAGENET[name][s - 1], LegacyRng()))
                t0 = time.perf_counter()  # timed with our own generator (LegacyRng is slow)
                OPS[name](img, IMAGENET[name][s - 1], np.random.default_rng(seed))
                t_ours += time.perf_counter() - t0
                ours.append(mine)
                theirs.append(ref)
            a = np.stack(ours).astype(np.float64)
            b = np.stack(theirs).astype(np.float64)
            mse = float(np.mean((a - b) ** 2))
            row = {"corruption": name, "severity": s, "identical": float(np.mean(a == b)),
                   "mad": float(np.mean(np.abs(a - b))),
                   "psnr": float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse),
                   "ms_ours": 1000 * t_ours / len(images),
                   "ms_imagecorruptions": 1000 * t_theirs / len(images)}
            rows.append(row)
            log(f"{name} s{s}: identical {row['identical']:.4f}, MAD {row['mad']:.3f}, "
                f"PSNR {row['psnr']:.1f} dB, {row['ms_ours']:.1f} vs "
                f"{row['ms_imagecorruptions']:.1f} ms")
    return {"imagecorruptions": getattr(ic, "__version__", "1.1.2"), "rows": rows,
            "images": int(len(images)), "size": list(images.shape[1:3])}


NOTES = {
    "impulse_noise": "scikit-image >= 0.19 draws salt and pepper from its own generator, "
                     "ignoring np.random.seed: same algorithm, other draws",
    "frost": "synthetic frost textures (the original blends frost photographs we do not ship)",
    "elastic_transform": "ours is the original ImageNet-C algorithm (random affine + "
                         "displacement, 244-based constants; 100 % identical to "
                         "make_imagenet_c.py's function with the same seeds); imagecorruptions "
                         "changed it",
    "snow": "rounding of the blurred snow layer near .5 (<= 3 % of values, mostly 1 level)",
    "motion_blur": "float summation order (a few values, 1 level)",
    "spatter": "float summation order (a few values, 1 level)",
}


def markdown(result: dict) -> str:
    """The fidelity table of docs/corruptions.md (with a GPU column when a GPU was measured)."""
    gpu = (result.get("gpu") or {}).get("ms_per_image_batch64", {})
    head = "| corruption | s1 | s2 | s3 | s4 | s5 | ms/img ours | ms/img imagecorruptions "
    lines = [head + ("| ms/img GPU (batch 64) " if gpu else "") + "| note |",
             "|---" * (9 + bool(gpu)) + "|"]
    by = {}
    for r in result["rows"]:
        by.setdefault(r["corruption"], []).append(r)
    for name, rows in by.items():
        cells = []
        for r in rows:
            psnr = "inf" if r["psnr"] == float("inf") else f"{r['psnr']:.1f}"
            cells.append(f"{100 * r['identical']:.1f} % / {r['mad']:.2f} / {psnr}")
        ours = np.mean([r["ms_ours"] for r in rows])
        theirs = np.mean([r["ms_imagecorruptions"] for r in rows])
        gpu_cell = f" {gpu[name]:.2f} |" if gpu else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ours:.1f} | {theirs:.1f} |"
                     f"{gpu_cell} {NOTES.get(name, '')} |")
    if not gpu:
        lines.append("\nGPU speed: unmeasured (no GPU on the machine that ran this).")
    return "\n".join(lines) + "\n"
