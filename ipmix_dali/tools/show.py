"""``ipmix-dali show``: a PNG grid of clean images and augmented views, for a person to look at.

One row per (method, image): the clean crop, then ``views`` augmented views drawn from one plan
(each view is a separate sample of the batch, so the views are independent draws).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_write
from ..config import make_config, mixing_side
from ..executors import get_executor
from ..plans import sample_plan
from ..rng import make_rng

_LABEL_W = 90


def load_image_folder(folder, size: int, limit: int, skip_bad_files: bool = False) -> np.ndarray:
    """Up to ``limit`` images of a folder (recursive, sorted): shorter side to ``size``, centre
    crop, RGB uint8 (n, size, size, 3)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist: pass --images DIR with images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    out, bad = [], []
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                img = img.convert("RGB")
        except Exception as exc:  # PIL raises many types for bad files
            if path.suffix.lower() in (".txt", ".json", ".md", ".csv"):
                continue
            bad.append(f"{path} ({type(exc).__name__})")
            continue
        out.append(np.asarray(_resize_center(img, size)))
        if len(out) == limit:
            break
    if bad and not skip_bad_files:
        raise ValueError(f"unreadable image(s): {', '.join(bad[:5])}"
                         f"{' and %d more' % (len(bad) - 5) if len(bad) > 5 else ''}; "
                         f"pass --skip-bad-files to skip them")
    if not out:
        raise ValueError(f"image folder {folder} has no images PIL can open: pass --images DIR "
                         f"with images")
    return np.stack(out)


def _resize_center(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def denormalize(x: np.ndarray, mean, std) -> np.ndarray:
    """Normalised float (..., 3) back to uint8 for display."""
    img = x * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def render_grid(methods, preset="imagenet", images_dir=None, mixing_dir=None, out="grid.png",
                rows=2, views=5, seed=0, executor="numpy", all_ops=False,
                skip_bad_files=False) -> str:
    from ..mixing.bank import load_mixing_bank
    from ..mixing.builtin import builtin_mixing_bank
    from .samples import sample_photos

    size = make_config("none", preset).image_size
    if images_dir is None:
        images = sample_photos(rows, size, seed=seed, min_scale=0.25)
    else:
        images = load_image_folder(images_dir, size, rows, skip_bad_files)
    rows = len(images)
    side = mixing_side(size)
    if mixing_dir is None:
        bank = builtin_mixing_bank(count=16, side=side, seed=seed)
    else:
        bank = load_mixing_bank(mixing_dir, side=side, skip_bad_files=skip_bad_files)
    run = get_executor(executor)

    tiles = []
    for method in methods:
        overrides = {"all_ops": True} if all_ops and method not in ("none", "layermix") else {}
        cfg = make_config(method, preset, **overrides)
        batch = np.repeat(images, views, axis=0)
        plan = sample_plan(cfg, len(batch), make_rng(seed, 0, 0, 0), len(bank), bank.side)
        pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, size)
                if "mix_index" in plan.arrays else None)
        out_views = denormalize(run.apply(batch, pics, plan)[0], cfg.mean, cfg.std)
        for r in range(rows):
            tiles.append((method, images[r], out_views[r * views:(r + 1) * views]))

    scale = max(1, 96 // size)  # CIFAR-size crops are enlarged to be visible
    tile = size * scale
    pad = 4
    width = _LABEL_W + (views + 1) * (tile + pad)
    canvas = Image.new("RGB", (width, len(tiles) * (tile + pad) + 20), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((_LABEL_W, 4), "clean", fill=(0, 0, 0))
    draw.text((_LABEL_W + tile + pad, 4), f"{views} augmented views ({preset} preset)",
              fill=(0, 0, 0))
    for row, (method, clean, aug) in enumerate(tiles):
        y = 20 + row * (tile + pad)
        draw.text((4, y + tile // 2 - 6), method, fill=(0, 0, 0))
        for col, img in enumerate([clean] + list(aug)):
            pil = Image.fromarray(img)
            if scale > 1:
                pil = pil.resize((tile, tile), Image.NEAREST)
            canvas.paste(pil, (_LABEL_W + col * (tile + pad), y))
    out = str(out)
    with atomic_write(out) as f:
        canvas.save(f, format="PNG")
    return out
