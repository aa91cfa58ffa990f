"""The training loop, read top to bottom: data, model, optimizer, resume, epochs, checkpoints.

    ipmix-dali train --data DIR --method ipmix --jsd --mixing-set MIX --out runs/r1

``DIR`` holds ImageFolder trees ``train/`` and ``val/``. The DALI training pipeline runs the
augmentation as one batched stage (:mod:`ipmix_dali.pipeline`); validation is shorter side 256,
centre crop 224. State for an exact resume: model, optimizer, scheduler, scaler, epoch and step,
the loader's state (DALI checkpoint + batches consumed), torch's RNG and the config, written
atomically every ``checkpoint_every`` steps and at each epoch end; SIGTERM/SIGINT save and exit.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ipmix_dali.atomic import write_json
from ipmix_dali.train.checkpoint import load_latest, save_checkpoint
from ipmix_dali.train.losses import jsd_loss
from ipmix_dali.train.schedule import warmup_cosine

log = logging.getLogger("ipmix_dali.train")


@dataclass
class TrainConfig:
    """Every flag of ``ipmix-dali train`` (defaults: the IPMix ImageNet recipe, spec 3.5)."""

    data: str = ""
    out: str = "runs/train"
    arch: str = "resnet50"
    init_weights: Optional[str] = None
    method: str = "ipmix"
    preset: str = "imagenet"
    jsd: bool = False
    mixing_set: Optional[str] = None
    image_size: int = 224
    val_resize: int = 256
    epochs: int = 180
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    no_bn_weight_decay: bool = False
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0
    amp: str = "none"          # none | bf16 | fp16
    channels_last: bool = False
    device: str = "cpu"        # cpu | gpu
    threads: int = 2
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0: at epoch ends only
    resume: str = "auto"       # auto | none | PATH
    skip_bad_files: bool = False
    log_every: int = 10


def _model(cfg: TrainConfig, num_classes: int):
    import torchvision

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    model = torchvision.models.get_model(cfg.arch, weights=None, num_classes=num_classes)
    if cfg.init_weights:
        state = torch.load(cfg.init_weights, map_location="cpu", weights_only=True)
        state = state.get("model", state.get("state_dict", state))
        state = {k.removeprefix("module."): v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"--init-weights {cfg.init_weights} does not fit {cfg.arch} with "
                             f"{num_classes} classes: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}")
    return model


def _param_groups(model, cfg: TrainConfig):
    if not cfg.no_bn_weight_decay:
        return [{"params": list(model.parameters()), "weight_decay": cfg.weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # BN weights/biases and all biases
    return [{"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def evaluate(model, loader, device, channels_last=False):
    """Top-1 and top-5 accuracy (%) and mean cross-entropy over every validation sample."""
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = model(images).float()
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += int((top[:, 0] == labels).sum())
            correct5 += int((top == labels[:, None]).any(dim=1).sum())
            total += len(labels)
    model.train()
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total,
            "loss": loss_sum / total, "samples": total}


class _Stop:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next step and exits."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.requested = True


def _append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_jsonl(path, step):
    """Drop the step records after ``step`` (written before a crash, redone after resume)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [ln for ln in f if json.loads(ln).get("step", -1) <= step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(keep)
    os.replace(tmp, path)


def train(cfg: TrainConfig) -> dict:
    from ipmix_dali.config import make_config
    from ipmix_dali.datasets import scan_image_folder
    from ipmix_dali.loader import train_loader, val_loader

    # --- data: checked before any work -------------------------------------------------------
    train_files = scan_image_folder(os.path.join(cfg.data, "train"),
                                    skip_bad_files=cfg.skip_bad_files)
    val_files = scan_image_folder(os.path.join(cfg.data, "val"), skip_bad_files=cfg.skip_bad_files)
    if val_files.classes != train_files.classes:
        raise ValueError(f"{cfg.data}: val/ has classes {val_files.classes[:5]}..., train/ has "
                         f"{train_files.classes[:5]}...: both need the same class folders")
    extra = {}
    if cfg.method == "ipmix" and cfg.image_size < 224:
        extra["patch_sizes"] = tuple(p for p in (4, 8, 16, 32, 64, 224) if p <= cfg.image_size)
    aug = make_config(cfg.method, cfg.preset, jsd=cfg.jsd, image_size=cfg.image_size, **extra)
    bank = None
    if cfg.method in ("pixmix", "ipmix", "layermix"):
        if not cfg.mixing_set:
            raise ValueError(f"--method {cfg.method} needs --mixing-set DIR (a folder of images; "
                             f"`ipmix-dali make-mixing-set` writes fractals)")
        from ipmix_dali.mixing_set import load_mixing_bank

        side = max(cfg.image_size, round(cfg.image_size * 256 / 224))
        bank = load_mixing_bank(cfg.mixing_set, side=side, skip_bad_files=cfg.skip_bad_files)
    device = torch.device("cuda" if cfg.device == "gpu" else "cpu")
    loader = train_loader(train_files, aug, batch_size=cfg.batch_size, bank=bank,
                          device=cfg.device, num_threads=cfg.threads, seed=cfg.seed,
                          jsd_output="concat")
    val = val_loader(val_files, batch_size=cfg.batch_size, device=cfg.device,
                     resize=cfg.val_resize, crop=cfg.image_size, num_threads=cfg.threads,
                     mean=aug.mean, std=aug.std)

    # --- model, optimizer, schedule --------------------------------------------------------
    model = _model(cfg, train_files.num_classes).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(_param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov)
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)

    # --- resume -----------------------------------------------------------------------------
    os.makedirs(cfg.out, exist_ok=True)
    metrics_path = os.path.join(cfg.out, "metrics.jsonl")
    step, epoch = 0, 0
    state = None
    if cfg.resume == "auto":
        path, state = load_latest(cfg.out)
    elif cfg.resume not in ("none", ""):
        path, state = cfg.resume, torch.load(cfg.resume, map_location="cpu", weights_only=True)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["torch_rng"])
        step, epoch = state["step"], state["epoch"]
        _truncate_jsonl(metrics_path, step)
        log.info("resumed from %s at epoch %d, step %d", path, epoch, step)
    elif os.path.exists(metrics_path):
        os.remove(metrics_path)

    def snapshot():
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "loader": loader.state_dict(), "torch_rng": torch.get_rng_state(),
                "step": step, "epoch": epoch, "config": dataclasses.asdict(cfg)}

    # --- epochs -----------------------------------------------------------------------------
    stop = _Stop()
    write_json(os.path.join(cfg.out, "config.json"), dataclasses.asdict(cfg))
    model.train()
    summary = {}
    while epoch < cfg.epochs:
        t_epoch, t_wait, seen = time.perf_counter(), 0.0, 0
        t_ready = time.perf_counter()
        for images, labels in loader:
            t_wait += time.perf_counter() - t_ready
            images, labels = images.to(device), labels.to(device)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images)
                if cfg.jsd:
                    loss = jsd_loss(*logits.float().chunk(3), labels,
                                    label_smoothing=cfg.label_smoothing)
                else:
                    loss = F.cross_entropy(logits.float(), labels,
                                           label_smoothing=cfg.label_smoothing)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {step}: lower --lr or "
                                         f"use --amp bf16")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            seen += len(labels)
            _append_jsonl(metrics_path, {"step": step, "epoch": epoch, "loss": value, "lr": lr})
            if step % max(1, cfg.log_every) == 0:
                rate = seen / (time.perf_counter() - t_epoch)
                print(f"epoch {epoch} step {step}/{total_steps} loss {value:.4f} "
                      f"lr {lr:.5f} {rate:.1f} img/s data-wait "
                      f"{100 * t_wait / (time.perf_counter() - t_epoch):.0f}%", flush=True)
            if stop.requested or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                save_checkpoint(cfg.out, step, snapshot())
                if stop.requested:
                    print(f"stopped by signal: checkpoint at step {step}", flush=True)
                    return {"stopped_at_step": step}
            t_ready = time.perf_counter()
        epoch += 1
        metrics = evaluate(model, val, device, cfg.channels_last)
        elapsed = time.perf_counter() - t_epoch
        record = {"epoch": epoch - 1, "step": step, "val_top1": metrics["top1"],
                  "val_top5": metrics["top5"], "val_loss": metrics["loss"],
                  "train_img_per_s": seen / elapsed, "data_wait": t_wait / elapsed}
        _append_jsonl(metrics_path, record)
        print(f"epoch {epoch - 1}: val top-1 {metrics['top1']:.2f}% top-5 {metrics['top5']:.2f}% "
              f"({seen / elapsed:.1f} img/s, data wait {100 * t_wait / elapsed:.0f}%)", flush=True)
        save_checkpoint(cfg.out, step, snapshot())
        summary = {"epochs": epoch, "steps": step, **{f"val_{k}": v for k, v in metrics.items()}}
    write_json(os.path.join(cfg.out, "summary.json"), summary)
    return summary


def config_from_args(args) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def add_train_arguments(p):
    d = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", default=None)
        else:
            kind = type(f.default) if f.default not in (None, "") else str
            p.add_argument(flag, type=kind, default=None,
                           help=f"default {getattr(d, f.name)!r}")
    return p


def main(argv=None) -> int:
    import argparse

    p = add_train_arguments(argparse.ArgumentParser(prog="ipmix_dali.train"))
    cfg = config_from_args(p.parse_args(argv))
    if not cfg.data:
        p.error("--data DIR is required (ImageFolder train/ and val/)")
    try:
        train(cfg)
    except ValueError as exc:
        print(f"ipmix-dali train: error: {exc}", file=sys.stderr)
        return 2
    return 0
