"""The training loop, read top to bottom: data, model, optimizer, resume, epochs, checkpoints.

    ipmix-dali train --data DIR --method ipmix --jsd --mixing-set MIX --out runs/r1
    torchrun --nproc_per_node=8 -m ipmix_dali.train --device gpu --recipe ipmix-imagenet ...

``DIR`` holds ImageFolder trees ``train/`` and ``val/`` (or ``--data synthetic``). Under torchrun
each process reads its shard (``shard_id = RANK``), losses and metrics are all-reduced, and only
rank 0 writes files; a checkpoint holds every rank's loader state. The DALI training pipeline runs the
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

from ipmix_dali.atomic import DiskFullError, atomic_write, write_json
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
    max_image_pixels: int = 89_478_485  # larger images are bad files (Pillow's bomb limit)
    drop_last: bool = True         # drop each epoch's last partial batch (torchvision, timm)
    allow_config_change: bool = False  # --resume into a run with other --epochs
    log_every: int = 10
    sync_every: int = 0            # steps per host readback of the losses; 0: 1 on CPU, log_every on GPU
    aug: Optional[str] = None      # method options, "k=3,t=3,beta=4,all_ops=True,patch_sizes=4:8:16"
    recipe: Optional[str] = None   # ipmix-imagenet | resnet50-90ep (explicit flags override it)
    min_lr: float = 0.0            # the cosine ends here (the IPMix scripts: 1e-6)
    lr_reference_batch: int = 0    # >0: lr is per this many images, scaled by the global batch
    norm: str = "batch"            # batch | group (GroupNorm(32): per-rank batch-independent)
    compile: bool = False          # torch.compile the model
    tensorboard: bool = True       # event files under OUT/tb
    num_classes: int = 1000        # --data synthetic only (ImageFolder: the class folders)
    synthetic_size: int = 12800    # --data synthetic: samples per epoch


# Recipes: a recipe sets these fields; flags given on the command line override them.
RECIPES = {
    # hzlsaber/IPMix imagenet.py defaults (spec 3.5). Its lr 0.01 looks like a fine-tuning value
    # but the script trains from scratch: kept as the reference has it ([AMBIGUOUS] in the spec).
    "ipmix-imagenet": dict(arch="resnet50", method="ipmix", preset="imagenet", jsd=True,
                           epochs=180, batch_size=128, lr=0.01, momentum=0.9, nesterov=True,
                           weight_decay=5e-4, warmup_epochs=0.0, label_smoothing=0.0,
                           min_lr=1e-6),
    # NVIDIA DeepLearningExamples ResNet-50 v1.5 (dali_notes 5.1): lr 0.256 per 256 images,
    # momentum 0.875, wd 1/32768 without BN/bias decay, 8 warmup epochs, label smoothing 0.1,
    # AMP, channels_last.
    "resnet50-90ep": dict(arch="resnet50", method="none", jsd=False, epochs=90, batch_size=256,
                          lr=0.256, lr_reference_batch=256, momentum=0.875, nesterov=False,
                          weight_decay=1 / 32768, no_bn_weight_decay=True, warmup_epochs=8.0,
                          label_smoothing=0.1, amp="fp16", channels_last=True),
}


def _model(cfg: TrainConfig, num_classes: int):
    import torchvision

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    extra = {}
    if cfg.norm == "group":
        extra["norm_layer"] = lambda c: torch.nn.GroupNorm(min(32, c), c)
    elif cfg.norm != "batch":
        raise ValueError(f"--norm must be 'batch' or 'group', got {cfg.norm!r}")
    model = torchvision.models.get_model(cfg.arch, weights=None, num_classes=num_classes, **extra)
    if cfg.init_weights:
        from ipmix_dali.eval.checkpoints import extract_state_dict, load_fitting

        state = torch.load(cfg.init_weights, map_location="cpu", weights_only=True)
        load_fitting(model, extract_state_dict(state), f"--init-weights {cfg.init_weights}",
                     cfg.arch, num_classes)
    return model


def _param_groups(model, cfg: TrainConfig):
    if not cfg.no_bn_weight_decay:
        return [{"params": list(model.parameters()), "weight_decay": cfg.weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # BN weights/biases and all biases
    return [{"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def evaluate(model, loader, device, channels_last=False, dist_=None):
    """Top-1 and top-5 accuracy (%) and mean cross-entropy over every validation sample (summed
    over the ranks' shards)."""
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
    if dist_ is not None:
        correct1, correct5, total, loss_sum = dist_.all_reduce_sum(
            [correct1, correct5, total, loss_sum], device)
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total,
            "loss": loss_sum / total, "samples": int(total)}


class _Stop:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next step and returns.
    A context manager: the previous handlers are back when training returns (or raises)."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        return False

    def _handler(self, signum, frame):
        self.signum = signum


def _progress(epoch, done, total, loss, lr, rate, wait, tty):
    """The epoch's progress bar on a terminal (redrawn in place), a plain line in a log file."""
    width = 24
    filled = int(width * done / max(1, total))
    text = (f"epoch {epoch} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            f"loss {loss:.4f} lr {lr:.5f} {rate:.1f} img/s data-wait {100 * wait:.0f}%")
    if tty:
        print("\r" + text, end="\n" if done == total else "", flush=True)
    else:
        print(text, flush=True)


def _append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_jsonl(path, step):
    """Drop the step records after ``step`` (written before a crash, redone after resume)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [ln for ln in f if json.loads(ln).get("step", -1) <= step]
    with atomic_write(path, "w") as f:
        f.writelines(keep)


def parse_aug_options(text: Optional[str], method: str = "ipmix") -> dict:
    """``--aug "k=3,beta=4.0,all_ops=true,patch_sizes=4:8:16"`` -> typed options of
    ``make_config(method, ...)`` (:func:`ipmix_dali.config.parse_options`)."""
    from ipmix_dali.config import parse_options

    return parse_options(method, text)


# Choices of the string flags; "cuda" is torch's name for the GPU.
CHOICES = {"amp": ("none", "bf16", "fp16"), "device": ("cpu", "gpu"),
           "preset": ("imagenet", "cifar"), "norm": ("batch", "group")}
DEVICE_ALIASES = {"cuda": "gpu"}
# Fields that do not change what a run computes: they may differ when it is resumed.
OPERATIONAL = ("out", "resume", "threads", "log_every", "sync_every", "checkpoint_every",
               "tensorboard", "skip_bad_files", "max_image_pixels", "allow_config_change",
               "compile")


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Every value checked before any work, one-line ValueErrors naming the flag and the fix;
    returns the config with aliases resolved (``--device cuda`` is ``gpu``)."""
    from ipmix_dali.config import METHODS, make_config

    cfg = dataclasses.replace(cfg, device=DEVICE_ALIASES.get(cfg.device, cfg.device))
    if cfg.method not in METHODS:
        raise ValueError(f"--method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(cfg, name)!r}: choose one of "
                             f"{', '.join(choices)}")
    if cfg.recipe is not None and cfg.recipe not in RECIPES:
        raise ValueError(f"--recipe {cfg.recipe!r}: choose one of {', '.join(RECIPES)}")
    at_least = {"epochs": 1, "batch_size": 1, "threads": 1, "image_size": 8, "val_resize": 8,
                "log_every": 1, "max_image_pixels": 1, "checkpoint_every": 0, "sync_every": 0,
                "lr_reference_batch": 0, "num_classes": 1, "synthetic_size": 1}
    for name, low in at_least.items():
        if getattr(cfg, name) < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got "
                             f"{getattr(cfg, name)}")
    for name in ("lr", "momentum", "weight_decay", "warmup_epochs", "grad_clip", "min_lr"):
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ValueError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.data != "synthetic":
        # The augmentation's own checks (and --aug's types) now, not in the pipeline's thread.
        extra = _derived_aug_options(cfg)
        extra.update(parse_aug_options(cfg.aug, cfg.method))
        make_config(cfg.method, cfg.preset, jsd=cfg.jsd, image_size=cfg.image_size, **extra)
    if cfg.device == "gpu":
        from ipmix_dali.device import require_gpu

        require_gpu()
    return cfg


def _derived_aug_options(cfg: TrainConfig) -> dict:
    """IPMix's patch sizes follow the crop: those of the reference's list that fit it."""
    if cfg.method == "ipmix" and cfg.image_size < 224:
        return {"patch_sizes": tuple(p for p in (4, 8, 16, 32, 64, 224) if p <= cfg.image_size)}
    return {}


def config_changes(saved: dict, cfg: TrainConfig):
    """{field: (saved, now)} of the fields that define a run and differ from ``saved``."""
    now = dataclasses.asdict(cfg)
    return {k: (saved.get(k), v) for k, v in now.items()
            if k not in OPERATIONAL and k in saved and saved[k] != v}


def _data(cfg: TrainConfig, d, device):
    """(train loader, val loader or None, number of classes), sharded by rank."""
    if cfg.data == "synthetic":
        from ipmix_dali.train.synthetic import SyntheticLoader

        loader = SyntheticLoader(cfg.batch_size, cfg.image_size, cfg.num_classes,
                                 cfg.synthetic_size, device, cfg.seed, d.rank, d.world,
                                 views=3 if cfg.jsd else 1, channels_last=cfg.channels_last)
        return loader, None, cfg.num_classes
    from ipmix_dali.config import MIXING_METHODS, make_config
    from ipmix_dali.datasets import scan_image_folder
    from ipmix_dali.loader import train_loader, val_loader

    # Checked before any work: missing folders, empty classes, bad files.
    check = dict(skip_bad_files=cfg.skip_bad_files, max_pixels=cfg.max_image_pixels)
    train_files = scan_image_folder(os.path.join(cfg.data, "train"), **check)
    val_files = scan_image_folder(os.path.join(cfg.data, "val"), **check)
    if val_files.classes != train_files.classes:
        raise ValueError(f"{cfg.data}: val/ has classes {val_files.classes[:5]}..., train/ has "
                         f"{train_files.classes[:5]}...: both need the same class folders")
    extra = _derived_aug_options(cfg)
    extra.update(parse_aug_options(cfg.aug, cfg.method))
    aug = make_config(cfg.method, cfg.preset, jsd=cfg.jsd, image_size=cfg.image_size, **extra)
    bank = None
    if cfg.method in MIXING_METHODS:
        if not cfg.mixing_set:
            raise ValueError(f"--method {cfg.method} needs --mixing-set DIR (a folder of images; "
                             f"`ipmix-dali make-mixing-set` writes fractals)")
        from ipmix_dali.mixing_set import load_mixing_bank

        side = max(cfg.image_size, round(cfg.image_size * 256 / 224))
        bank = load_mixing_bank(cfg.mixing_set, side=side, skip_bad_files=cfg.skip_bad_files)
    shard = dict(device=cfg.device, device_id=d.local_rank if cfg.device == "gpu" else None,
                 num_threads=cfg.threads, shard_id=d.rank, num_shards=d.world)
    # On a GPU with channels_last and AMP the stage writes float16 NHWC views: permuted to NCHW
    # they are channels_last tensors already (no conversion copy), and half the bytes.
    fast = dict(dtype="float16", layout="NHWC") if cfg.device == "gpu" and cfg.channels_last \
        and cfg.amp else {}
    loader = train_loader(train_files, aug, batch_size=cfg.batch_size, bank=bank, seed=cfg.seed,
                          jsd_output="concat",
                          last_batch_policy="drop" if cfg.drop_last else "partial", **shard,
                          **fast)
    if len(loader) == 0:
        raise ValueError(f"{train_files.source}: {loader.samples_per_epoch} training images per "
                         f"process, fewer than one batch of {cfg.batch_size}: lower "
                         f"--batch-size, or pass --no-drop-last to train on the partial batch")
    val = val_loader(val_files, batch_size=cfg.batch_size, resize=cfg.val_resize,
                     crop=cfg.image_size, mean=aug.mean, std=aug.std, **shard)
    return loader, val, train_files.num_classes


def train(cfg: TrainConfig) -> dict:
    """Train as ``cfg`` says; returns the run's summary. A run stopped by SIGTERM/SIGINT returns
    ``{"stopped": {"signal", "step", "exit_code"}}`` after its checkpoint; resuming a finished
    run returns its summary with ``"complete": True`` and writes nothing."""
    from ipmix_dali.train.distributed import init_distributed, shutdown

    cfg = validate_config(cfg)
    d = init_distributed(cfg.device)
    try:
        return _train(cfg, d)
    finally:
        shutdown(d)


def _train(cfg: TrainConfig, d) -> dict:
    device = torch.device(f"cuda:{d.local_rank}" if cfg.device == "gpu" else "cpu")
    loader, val, num_classes = _data(cfg, d, device)

    # --- model, optimizer, schedule --------------------------------------------------------
    model = _model(cfg, num_classes).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if d.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if cfg.device == "gpu" else None)
    if cfg.compile:
        net = torch.compile(net)
    lr = cfg.lr * (cfg.batch_size * d.world / cfg.lr_reference_batch
                   if cfg.lr_reference_batch > 0 else 1.0)
    optimizer = torch.optim.SGD(_param_groups(model, cfg), lr=lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov)
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    floor = cfg.min_lr / lr if lr > 0 else 0.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: floor + (1 - floor) * warmup_cosine(s, total_steps, warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)

    # --- resume: every rank reads the same file and takes its own loader state --------------
    if d.main:
        os.makedirs(cfg.out, exist_ok=True)
    d.barrier()
    metrics_path = os.path.join(cfg.out, "metrics.jsonl")
    step, epoch = 0, 0
    state = None
    if cfg.resume == "auto":
        path, state = load_latest(cfg.out)
    elif cfg.resume not in ("none", ""):
        path, state = cfg.resume, torch.load(cfg.resume, map_location="cpu", weights_only=True)
    if state is not None:
        changes = config_changes(state.get("config", {}), cfg)
        allowed = {"epochs"} if cfg.allow_config_change else set()
        refused = {k: v for k, v in changes.items() if k not in allowed}
        if refused:
            listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(refused.items()))
            hint = ("" if set(refused) != {"epochs"} else
                    "; to train longer or shorter pass --allow-config-change")
            raise ValueError(f"{path} is a run with other settings ({listed}): resume it with "
                             f"its own settings, or train into a new --out{hint}")
        if state["epoch"] >= cfg.epochs:
            done = os.path.join(cfg.out, "summary.json")
            summary = {}
            if os.path.exists(done):
                with open(done) as f:
                    summary = json.load(f)
            if d.main:
                print(f"the run in {cfg.out} is complete ({state['epoch']} epochs, step "
                      f"{state['step']}; {done}): nothing to do. To train it longer pass "
                      f"--epochs N --allow-config-change", flush=True)
            return {**summary, "complete": True}
        if len(state["loader"]) != d.world:
            raise ValueError(f"{path} was written by {len(state['loader'])} processes, this run "
                             f"has {d.world}: resume with the same --nproc_per_node x nodes")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        loader.load_state_dict(state["loader"][d.rank])
        torch.set_rng_state(state["torch_rng"])
        step, epoch = state["step"], state["epoch"]
        if d.main:
            _truncate_jsonl(metrics_path, step)
            print(f"resumed from {path} at epoch {epoch}, step {step}", flush=True)
    elif d.main and os.path.exists(metrics_path):
        os.remove(metrics_path)

    def save(step, epoch):
        loaders = d.gather(loader.state_dict())  # a collective: every rank calls it
        if d.main:
            save_checkpoint(cfg.out, step, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "loader": loaders, "torch_rng": torch.get_rng_state(), "step": step,
                "epoch": epoch, "world_size": d.world, "config": dataclasses.asdict(cfg)})
        d.barrier()

    writer = None
    if d.main:
        write_json(os.path.join(cfg.out, "config.json"), dataclasses.asdict(cfg))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(os.path.join(cfg.out, "tb"), purge_step=step + 1)

    # --- epochs -----------------------------------------------------------------------------
    # Reading the loss back to the host waits for the GPU to finish the step, so the next
    # step's kernels are queued only then. On a GPU the losses stay on the device and are read
    # (with the one all-reduce that also carries the stop signal) every ``sync_every`` steps;
    # each step still gets its own metrics record.
    sync_every = cfg.sync_every or (cfg.log_every if device.type == "cuda" else 1)
    with _Stop() as stop:
        return _epochs(cfg, d, device, net, model, loader, val, optimizer, scheduler, scaler,
                       amp_dtype, steps_per_epoch, sync_every, metrics_path, writer, save, step,
                       epoch, stop)


def _epochs(cfg, d, device, net, model, loader, val, optimizer, scheduler, scaler, amp_dtype,
            steps_per_epoch, sync_every, metrics_path, writer, save, step, epoch, stop):
    net.train()
    summary = {}
    pending = []  # (step, epoch, loss on the device, lr) not yet read back

    def read_back(t_epoch, t_wait, seen):
        """Read the pending losses (mean over ranks), log them; True if any rank got a signal."""
        *sums, stops = d.all_reduce_sum(
            torch.stack([loss for _, _, loss, _ in pending]).double().tolist()
            + [float(stop.requested)], device)
        for (at, ep, _, lr_at), loss_sum in zip(pending, sums):
            value = loss_sum / d.world
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {at}: lower --lr or "
                                         f"use --amp bf16")
            if d.main:
                _append_jsonl(metrics_path, {"step": at, "epoch": ep, "loss": value,
                                             "lr": lr_at, "time": time.time()})
                if writer is not None:
                    writer.add_scalar("train/loss", value, at)
                    writer.add_scalar("train/lr", lr_at, at)
                tty = sys.stdout.isatty()
                if (tty and at == pending[-1][0]) or at % max(1, cfg.log_every) == 0:
                    _progress(ep, at - ep * steps_per_epoch, steps_per_epoch, value, lr_at,
                              seen / (time.perf_counter() - t_epoch),
                              t_wait / (time.perf_counter() - t_epoch), tty)
        pending.clear()
        return stops > 0

    while epoch < cfg.epochs:
        t_epoch, t_wait, seen = time.perf_counter(), 0.0, 0
        t_ready = time.perf_counter()
        for images, labels in loader:
            t_wait += time.perf_counter() - t_ready
            images, labels = images.to(device), labels.to(device)
            if images.shape[-1] == 3 and images.shape[1] != 3:  # NHWC from the GPU stage
                images = images.permute(0, 3, 1, 2)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(images)
                if cfg.jsd:
                    loss = jsd_loss(*logits.float().chunk(3), labels,
                                    label_smoothing=cfg.label_smoothing)
                else:
                    loss = F.cross_entropy(logits.float(), labels,
                                           label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            lr_now = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            seen += len(labels) * d.world
            pending.append((step, epoch, loss.detach(), lr_now))
            checkpoint_due = bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            epoch_end = step % steps_per_epoch == 0
            read_due = len(pending) >= sync_every or checkpoint_due or epoch_end
            stopped = read_back(t_epoch, t_wait, seen) if read_due else False
            if stopped or checkpoint_due:
                save(step, epoch)
                if stopped:
                    name = signal.Signals(stop.signum).name if stop.signum else "a signal"
                    if d.main:
                        print(f"stopped by {name}: checkpoint at step {step}; rerun the same "
                              f"command to resume", flush=True)
                        if writer is not None:
                            writer.close()
                    return {"stopped": {"signal": name, "step": step,
                                        "exit_code": 128 + (stop.signum or signal.SIGTERM)}}
            t_ready = time.perf_counter()
        if pending:  # an epoch shorter than steps_per_epoch says (a loader that ran dry)
            read_back(t_epoch, t_wait, seen)
        epoch += 1
        elapsed = time.perf_counter() - t_epoch
        record = {"epoch": epoch - 1, "step": step, "train_img_per_s": seen / elapsed,
                  "data_wait": t_wait / elapsed}
        if val is not None:
            metrics = evaluate(net, val, device, cfg.channels_last, d)
            record.update({"val_top1": metrics["top1"], "val_top5": metrics["top5"],
                           "val_loss": metrics["loss"], "val_samples": metrics["samples"]})
        if d.main:
            _append_jsonl(metrics_path, record)
            if writer is not None:
                for key in ("val_top1", "val_top5", "val_loss", "train_img_per_s", "data_wait"):
                    if key in record:
                        writer.add_scalar(f"epoch/{key}", record[key], step)
                writer.flush()
            val_text = (f"val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}% "
                        if "val_top1" in record else "")
            print(f"epoch {epoch - 1}: {val_text}({seen / elapsed:.1f} img/s, data wait "
                  f"{100 * t_wait / elapsed:.0f}%)", flush=True)
        save(step, epoch)
        summary = {"epochs": epoch, "steps": step, "world_size": d.world,
                   **{k: v for k, v in record.items() if k.startswith("val_")}}
    if d.main:
        write_json(os.path.join(cfg.out, "summary.json"), summary)
        if writer is not None:
            writer.close()
    return summary


def config_from_args(args) -> TrainConfig:
    """Defaults, then the ``--recipe``'s fields, then every flag given on the command line."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values = {}
    recipe = given.get("recipe")
    if recipe:
        if recipe not in RECIPES:
            raise ValueError(f"unknown --recipe {recipe!r}: choose from {', '.join(RECIPES)}")
        values.update(RECIPES[recipe])
    values.update(given)
    return TrainConfig(**values)


def add_train_arguments(p):
    """One flag per TrainConfig field: on/off flags as ``--x/--no-x``, the string choices as
    argparse ``choices`` (``--device cuda`` is accepted as ``gpu``)."""
    import argparse

    from ipmix_dali.config import METHODS

    d = TrainConfig()
    choices = dict(CHOICES, method=METHODS, recipe=tuple(RECIPES))
    choices["device"] = CHOICES["device"] + tuple(DEVICE_ALIASES)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f"default {'on' if f.default else 'off'}")
        else:
            kind = type(f.default) if f.default not in (None, "") else str
            p.add_argument(flag, type=kind, default=None, choices=choices.get(f.name),
                           help=f"default {getattr(d, f.name)!r}")
    return p


def run_cli(cfg: TrainConfig, prog: str = "ipmix-dali train") -> int:
    """Train and turn the result into an exit status: 0 done (or already complete), 128 + the
    signal's number when a signal stopped the run (143 for SIGTERM, 130 for SIGINT), so that
    schedulers and torchrun see that it did not finish."""
    if not cfg.data:
        raise ValueError("--data DIR (ImageFolder train/ and val/) or --data synthetic is "
                         "required")
    summary = train(cfg)
    if "stopped" in summary:
        stop = summary["stopped"]
        print(f"{prog}: stopped by {stop['signal']} at step {stop['step']} (checkpoint "
              f"written): rerun the same command to resume", file=sys.stderr)
        return int(stop["exit_code"])
    if not summary.get("complete"):
        print(f"summary: {summary}")
    return 0


def main(argv=None) -> int:
    import argparse

    p = add_train_arguments(argparse.ArgumentParser(prog="ipmix_dali.train"))
    try:
        return run_cli(config_from_args(p.parse_args(argv)), "ipmix_dali.train")
    except ValueError as exc:
        print(f"ipmix_dali.train: error: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:
        print(f"ipmix_dali.train: error: {exc}", file=sys.stderr)
        return 1
