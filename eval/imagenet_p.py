"""ImageNet-P at difficulty 1 (hendrycks/robustness ``ImageNet-P/test.py``, docs/evaluation.md §3).

Layout ``root/<perturbation>/<wnid>/<file>.mp4``; frames decoded with OpenCV (BGR -> RGB), no
resize, ToTensor + Normalize (``--mean/--std``); every frame goes through the model (one
:class:`~.runner.Evaluator`: ``--amp``, ``--channels-last``). Per video: the flip rate and
the top-5 distance between consecutive frames, or between every frame and the first for the
noise perturbations (their frames are independent draws). FP_p and T5D_p are means over videos;
mFR and mT5D divide by AlexNet's values measured with this same code (``measure_alexnet``), over
the 10 test perturbations.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ipmix_dali.config import IMAGENET_MEAN, IMAGENET_STD

from .metrics import top5_distance
from .runner import Evaluator

__all__ = ["P_PERTURBATIONS", "P_VALIDATION", "evaluate_imagenet_p", "measure_alexnet",
           "imagenet_p", "read_video"]

P_PERTURBATIONS = ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow",
                   "brightness", "translate", "rotate", "tilt", "scale")
P_VALIDATION = ("speckle_noise", "gaussian_blur", "spatter", "shear")


def read_video(path) -> np.ndarray:
    """(frames, H, W, 3) uint8 RGB frames of an ImageNet-P sequence."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("ImageNet-P needs OpenCV: pip install opencv-python-headless") from exc
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if len(frames) < 2:
        raise ValueError(f"{path}: {len(frames)} frame(s) decoded, a sequence needs at least 2 "
                         f"(a truncated or unreadable video: re-extract it)")
    return np.stack(frames)


def _sequence_stats(logits: np.ndarray, noise: bool):
    preds = logits.argmax(1)
    ref = np.zeros(len(preds) - 1, dtype=np.int64) if noise else np.arange(len(preds) - 1)
    cur = np.arange(1, len(preds))
    flips = float(np.mean(preds[cur] != preds[ref]))
    t5d = float(np.mean([top5_distance(logits[r], logits[c]) for r, c in zip(ref, cur)]))
    return flips, t5d


def evaluate_imagenet_p(model, root, device="cpu", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        perturbations=None, alexnet=None,
                        log=print) -> dict:
    """Flip probability and top-5 distance per perturbation; mFR / mT5D when ``alexnet`` (a dict
    {"fp": {p: v}, "t5d": {p: v}}) covers the 10 test perturbations. ``model``: a torch model or
    an :class:`~.runner.Evaluator` (its device, memory format and amp)."""
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise ValueError(f"ImageNet-P folder {root} does not exist: pass --imagenet-p DIR "
                         f"(perturbation/wnid/*.mp4)")
    found = [p for p in P_PERTURBATIONS + P_VALIDATION if os.path.isdir(os.path.join(root, p))]
    if perturbations:
        found = [p for p in found if p in perturbations]
    if not found:
        raise ValueError(f"{root} has none of the ImageNet-P perturbation folders "
                         f"({', '.join(P_PERTURBATIONS[:3])}, ...)")
    ev = Evaluator.of(model, device=device, log=log)
    out = {"difficulty": 1, "per_perturbation": {}}
    for p in found:
        fps, t5ds = [], []
        folder = os.path.join(root, p)
        videos = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(folder) for f in fs
                        if f.endswith(".mp4"))
        if not videos:
            raise ValueError(f"{folder} has no .mp4 sequences")
        for path in videos:
            frames = read_video(path)
            with torch.no_grad():
                logits = ev.logits(ev.inputs(frames, mean, std)).cpu().numpy()
            fp, t5d = _sequence_stats(logits, noise="noise" in p)
            fps.append(fp)
            t5ds.append(t5d)
        out["per_perturbation"][p] = {"flip_probability": 100 * float(np.mean(fps)),
                                      "top5_distance": float(np.mean(t5ds)),
                                      "videos": len(videos)}
        log(f"  imagenet-p {p}: FP {100 * np.mean(fps):.2f}%, T5D {np.mean(t5ds):.3f}")
    if alexnet:
        per = out["per_perturbation"]
        if all(p in per and p in alexnet["fp"] and p in alexnet["t5d"] for p in P_PERTURBATIONS):
            for p in P_PERTURBATIONS:  # a zero normaliser (AlexNet never flipped) has no ratio
                fp, t5 = alexnet["fp"][p], alexnet["t5d"][p]
                per[p]["fr"] = 100 * per[p]["flip_probability"] / fp if fp > 0 else None
                per[p]["t5d_ratio"] = 100 * per[p]["top5_distance"] / t5 if t5 > 0 else None
            frs = [per[p]["fr"] for p in P_PERTURBATIONS]
            t5s = [per[p]["t5d_ratio"] for p in P_PERTURBATIONS]
            out["mfr"] = float(np.mean(frs)) if None not in frs else None
            out["mt5d"] = float(np.mean(t5s)) if None not in t5s else None
        else:
            out["missing_for_mfr"] = [p for p in P_PERTURBATIONS if p not in per]
    return out


def measure_alexnet(weights, root, device="cpu", log=print) -> dict:
    """AlexNet's FP (%) and T5D per perturbation, measured with this code (the normalisers):
    torchvision's AlexNet, so ImageNet's normalisation and float32 whatever ``--mean/--std`` and
    ``--amp`` say of the model under test."""
    import torchvision

    model = torchvision.models.alexnet(weights=None)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    res = evaluate_imagenet_p(model, root, device, log=log)
    return {"fp": {p: v["flip_probability"] for p, v in res["per_perturbation"].items()},
            "t5d": {p: v["top5_distance"] for p, v in res["per_perturbation"].items()}}


def imagenet_p(run) -> dict:
    """The protocol of ``--imagenet-p`` (with ``--alexnet-p`` / ``--measure-alexnet``)."""
    import json

    from ipmix_dali.atomic import write_json

    cfg, normalisers = run.config, None
    if cfg.measure_alexnet:
        run.log("ImageNet-P with AlexNet (the normalisers)")
        normalisers = measure_alexnet(cfg.measure_alexnet, cfg.imagenet_p, cfg.device, run.log)
        write_json(os.path.join(cfg.out, "alexnet_p.json"), normalisers)
    elif cfg.alexnet_p:
        with open(cfg.alexnet_p) as f:
            normalisers = json.load(f)
    run.log("ImageNet-P (difficulty 1)")
    return evaluate_imagenet_p(run.evaluator, cfg.imagenet_p, alexnet=normalisers, log=run.log,
                               **cfg.normalisation("imagenet"))
