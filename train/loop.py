"""The training loop, read top to bottom: data, model, optimizer, resume, epochs, checkpoints.

    ipmix-dali train --data DIR --method ipmix --jsd --mixing-set MIX --out runs/r1
    torchrun --nproc_per_node=8 -m ipmix_dali.train --device gpu --recipe ipmix-imagenet ...

``DIR`` holds ImageFolder trees ``train/`` and ``val/`` (or ``--data synthetic``). Under torchrun
each process reads its shard (``shard_id = RANK``), losses and metrics are all-reduced, and only
rank 0 writes files; a checkpoint holds every rank's loader state. The DALI training pipeline
runs the augmentation as one batched stage (:mod:`ipmix_dali.pipeline`); validation is shorter
side ``--val-resize``, centre crop ``--image-size``. State for an exact resume: model,
optimizer, scheduler, scaler, epoch and step, the loader's state (DALI checkpoint + batches
consumed), torch's RNG and the config, written atomically every ``checkpoint_every`` steps and
at each epoch end; SIGTERM/SIGINT save and return (exit status 128 + the signal).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys

import torch
import torch.nn.functional as F

from ipmix_dali.atomic import DiskFullError, write_json
from ipmix_dali.train import faults
from ipmix_dali.train.checkpoint import (
    list_checkpoints,
    load_latest,
    load_resume_file,
    newer_than,
    remove_partial_writes,
    save_checkpoint,
)
from ipmix_dali.train.config import (
    TrainConfig,
    augmentation_config,
    config_changes,
    mixing_picture_side,
    validate_config,
)
from ipmix_dali.train.losses import jsd_loss
from ipmix_dali.train.metrics import EpochClock, StepLog, truncate_jsonl
from ipmix_dali.train.runlock import run_lock
from ipmix_dali.train.schedule import warmup_cosine

__all__ = ["train", "train_one_epoch", "evaluate", "build_model", "build_loaders",
           "build_optimizer", "run_cli", "main"]


# --- pieces ----------------------------------------------------------------------------------
def build_loaders(cfg: TrainConfig, d, device):
    """(train loader, val loader or None, number of classes), sharded by rank."""
    if cfg.data == "synthetic":
        from ipmix_dali.train.synthetic import SyntheticLoader

        loader = SyntheticLoader(cfg.batch_size, cfg.image_size, cfg.num_classes,
                                 cfg.synthetic_size, device, cfg.seed, d.rank, d.world,
                                 views=3 if cfg.jsd else 1, channels_last=cfg.channels_last)
        return loader, None, cfg.num_classes
    from ipmix_dali.config import MIXING_METHODS
    from ipmix_dali.loader import train_loader, val_loader
    from ipmix_dali.shards import open_split

    # Checked before any work: missing folders, empty classes, bad files. Each split is an
    # ImageFolder or a tar shard set (`ipmix-dali make-shards`).
    check = dict(skip_bad_files=cfg.skip_bad_files, max_pixels=cfg.max_image_pixels)
    train_files = open_split(os.path.join(cfg.data, "train"), **check)
    val_files = open_split(os.path.join(cfg.data, "val"), **check)
    if val_files.classes != train_files.classes:
        raise ValueError(f"{cfg.data}: val/ has classes {val_files.classes[:5]}..., train/ has "
                         f"{train_files.classes[:5]}...: both need the same class folders")
    aug = augmentation_config(cfg)
    bank = mixing_files = None
    if cfg.method in MIXING_METHODS:
        if not cfg.mixing_set:
            raise ValueError(f"--method {cfg.method} needs --mixing-set DIR (a folder of images; "
                             f"`ipmix-dali make-mixing-set` writes fractals)")
        from ipmix_dali.pipeline import choose_mixing_source

        kind, source = choose_mixing_source(cfg.mixing_set, mixing_picture_side(cfg),
                                            int(cfg.mixing_memory_gb * (1 << 30)),
                                            skip_bad_files=cfg.skip_bad_files)
        bank, mixing_files = (source, None) if kind == "bank" else (None, source)
    shard = dict(device=cfg.device, device_id=d.local_rank if cfg.device == "gpu" else None,
                 num_threads=cfg.threads, shard_id=d.rank, num_shards=d.world)
    # On a GPU with channels_last and AMP the stage writes float16 NHWC views: permuted to NCHW
    # they are channels_last tensors already (no conversion copy), and half the bytes.
    fast = dict(dtype="float16", layout="NHWC") if cfg.device == "gpu" and cfg.channels_last \
        and cfg.amp != "none" else {}
    if cfg.drop_last:
        _check_one_batch(train_files, cfg.batch_size, d.world)
    if cfg.device == "cpu":  # the stage on --stage-workers processes (the same pixels)
        from ipmix_dali.executors.pool import default_stage_workers, stage_executor, usable_cores

        # By default the ranks on this machine share its cores.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        fast["executor"] = stage_executor(
            cfg.stage_workers or default_stage_workers(max(1, usable_cores() // local)))
    loader = train_loader(train_files, aug, batch_size=cfg.batch_size, bank=bank,
                          mixing_files=mixing_files, mixing_side=mixing_picture_side(cfg),
                          seed=cfg.seed,
                          jsd_output="concat",
                          last_batch_policy="drop" if cfg.drop_last else "partial",
                          crop_resize=cfg.crop_resize, **shard, **fast)
    val = val_loader(val_files, batch_size=cfg.batch_size, resize=cfg.val_resize,
                     crop=cfg.image_size, mean=aug.mean, std=aug.std, **shard)
    return loader, val, train_files.num_classes


def _check_one_batch(files, batch_size: int, world: int) -> None:
    """With --drop-last every process needs one full batch: DALI's iterator refuses a shard
    smaller than the batch ("no data in the pipeline"), so refuse it first, with the numbers."""
    n = len(files)
    smallest = min(((i + 1) * n) // world - (i * n) // world for i in range(world))
    if smallest < batch_size:
        spread = f" ({n} over {world} processes)" if world > 1 else ""
        raise ValueError(f"--batch-size {batch_size} > {smallest} training images per process in "
                         f"{files.source}{spread} with --drop-last (an epoch would have no step): "
                         f"lower --batch-size to at most {smallest}, or pass --no-drop-last to "
                         f"train on the partial batch")


def build_model(cfg: TrainConfig, num_classes: int):
    """The torchvision ``--arch`` (GroupNorm with ``--norm group``), from ``--init-weights``."""
    import torchvision

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    extra = {}
    if cfg.norm == "group":
        extra["norm_layer"] = lambda c: torch.nn.GroupNorm(min(32, c), c)
    model = torchvision.models.get_model(cfg.arch, weights=None, num_classes=num_classes, **extra)
    if cfg.init_weights:
        from ipmix_dali.eval.load_model import extract_state_dict, load_fitting

        state = torch.load(cfg.init_weights, map_location="cpu", weights_only=True)
        load_fitting(model, extract_state_dict(state), f"--init-weights {cfg.init_weights}",
                     cfg.arch, num_classes)
    return model


def param_groups(model, cfg: TrainConfig):
    if not cfg.no_bn_weight_decay:
        return [{"params": list(model.parameters()), "weight_decay": cfg.weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # BN weights/biases and all biases
    return [{"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model, cfg: TrainConfig, lr: float, fused: bool = False):
    """SGD with momentum over :func:`param_groups`. ``fused`` (the trainer sets it on CUDA): one
    kernel for all parameters, and GradScaler's inf check stays on the device; the unfused
    optimizer makes GradScaler read ``found_inf`` back (``.item()``, a host sync) every step."""
    return torch.optim.SGD(param_groups(model, cfg), lr=lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov, fused=bool(fused))


def evaluate(model, loader, device, channels_last=False, dist_=None):
    """Top-1 and top-5 accuracy (%) and mean cross-entropy over every validation sample (summed
    over the ranks' shards), scored like every evaluation protocol
    (:class:`ipmix_dali.eval.runner.Scores`)."""
    from ipmix_dali.eval.runner import Scores

    model.eval()
    scores = Scores()
    with torch.no_grad():
        for images, labels in loader:
            images = images.to(device)
            labels = labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            scores.add(model(images), labels)
            faults.at_validation()  # a test hook (IPMIX_DALI_FAULT), nothing otherwise
    model.train()
    correct1, correct5, total, loss_sum = scores.top1, scores.top5, scores.n, scores.loss_sum
    if dist_ is not None:
        correct1, correct5, total, loss_sum = dist_.all_reduce_sum(
            [correct1, correct5, total, loss_sum], device)
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total,
            "loss": loss_sum / total, "samples": int(total)}


class StopSignal:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next read-back and returns.
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


# --- one epoch -------------------------------------------------------------------------------
def train_one_epoch(net, loader, optimizer, scheduler, scaler, cfg, device, amp_dtype, epoch,
                    step, log: StepLog, stop: StopSignal, save, world: int = 1):
    """One pass over the loader. Returns (step, clock, stopped): ``stopped`` when a signal
    came (the checkpoint of ``step`` is written then)."""
    clock = EpochClock()
    for images, labels in loader:
        clock.batch_arrived()
        faults.at_step(step + 1)  # a test hook (IPMIX_DALI_FAULT), nothing otherwise
        # On the GPU both already live there (the pipelines put the labels on the GPU inside
        # the DALI graph): no copy from pageable memory, no host sync.
        images = images.to(device)
        labels = labels.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = net(images)
            if cfg.jsd:  # the batch is (clean, view 1, view 2), one third each
                loss = jsd_loss(*logits.float().chunk(3), labels,
                                label_smoothing=cfg.label_smoothing)
            else:
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step()
        step += 1
        log.add(step, epoch, loss, lr_now)
        clock.step_done(len(labels) * world)
        checkpoint_due = bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
        epoch_end = step % log.steps_per_epoch == 0
        stopped = False
        if log.due or checkpoint_due or epoch_end:
            stopped = log.read_back(clock, stop.requested)
        if stopped or checkpoint_due:
            save(step, epoch)
        if stopped:
            return step, clock, True
    log.read_back(clock, stop.requested)  # an epoch shorter than steps_per_epoch says
    return step, clock, False


# --- the run ---------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> dict:
    """Train as ``cfg`` says; returns the run's summary. A run stopped by SIGTERM/SIGINT returns
    ``{"stopped": {"signal", "step", "exit_code"}}`` after its checkpoint; resuming a finished
    run returns its summary with ``"complete": True`` and writes nothing."""
    from ipmix_dali.train.distributed import init_distributed, shutdown

    cfg = validate_config(cfg)
    d = init_distributed(cfg.device)
    cfg = _elastic_resume(cfg, d)
    try:
        # rank 0 writes the run folder: it holds the lock (a second training is refused)
        with run_lock(cfg.out) if d.main else contextlib.nullcontext(), \
                contextlib.ExitStack() as closing:
            return _train(cfg, d, closing)
    finally:
        shutdown(d)


def _elastic_resume(cfg: TrainConfig, d) -> TrainConfig:
    """Under ``torchrun --max-restarts=N`` the workers of a restart (TORCHELASTIC_RESTART_COUNT
    > 0) resume from the newest checkpoint that loads, whatever --resume says: the command line
    is the first attempt's, and --resume none or PATH would start over or go back."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restarts <= 0:
        return cfg
    if d.main:
        taken = "" if cfg.resume == "auto" else " taken as --resume auto"
        print(f"torchelastic restart {restarts}: --resume {cfg.resume}{taken} (the newest "
              f"checkpoint in {cfg.out})", flush=True)
    return dataclasses.replace(cfg, resume="auto")


def _train(cfg: TrainConfig, d, closing) -> dict:
    device = torch.device(f"cuda:{d.local_rank}" if cfg.device == "gpu" else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels
    loader, val, num_classes = build_loaders(cfg, d, device)
    if hasattr(loader, "close"):  # its stage workers stop with the run, a signal's too
        closing.callback(loader.close)

    # model, optimizer, schedule
    model = build_model(cfg, num_classes).to(device)
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
    # Fused on CUDA; the CPU keeps the default (foreach) SGD, whose numbers the demo records.
    optimizer = build_optimizer(model, cfg, lr, fused=device.type == "cuda")
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    floor = cfg.min_lr / lr if lr > 0 else 0.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: floor + (1 - floor) * warmup_cosine(s, total_steps, warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)

    # resume: every rank reads the same file and takes its own loader state
    if d.main:
        os.makedirs(cfg.out, exist_ok=True)
        remove_partial_writes(cfg.out)  # a run killed while writing a checkpoint left them
    d.barrier()
    metrics_path = os.path.join(cfg.out, "metrics.jsonl")
    step, epoch = 0, 0
    path, state = None, None
    if cfg.resume == "auto":
        path, state = load_latest(cfg.out)
        if state is None and list_checkpoints(cfg.out):
            raise ValueError(f"--resume auto: none of the {len(list_checkpoints(cfg.out))} "
                             f"checkpoints in {cfg.out} loads (damaged): pass --resume none to "
                             f"start over (its metrics.jsonl is replaced), or --out NEW")
    elif cfg.resume not in ("none", ""):
        path, state = cfg.resume, load_resume_file(cfg.resume)
    if state is not None:
        _check_resumable(cfg, path, state, d.world)
        if state["epoch"] >= cfg.epochs:
            return _complete(cfg, state, d)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        loader.load_state_dict(state["loader"][d.rank])
        torch.set_rng_state(state["torch_rng"])
        step, epoch = state["step"], state["epoch"]
        if d.main:
            truncate_jsonl(metrics_path, step)
            redone = newer_than(cfg.out, step) if cfg.resume == "auto" else []
            print(f"resumed from {path} at epoch {epoch}, step {step}"
                  + (f" (the newer {', '.join(os.path.basename(p) for p in redone)} did not "
                     f"load: the steps after {step} are trained again)" if redone else ""),
                  flush=True)
    elif d.main and os.path.exists(metrics_path):
        os.remove(metrics_path)

    best_top1 = (state or {}).get("best_top1", float("-inf"))

    def save(step, epoch, best=False):
        loaders = d.gather(loader.state_dict())  # a collective: every rank calls it
        if d.main:
            save_checkpoint(cfg.out, step, best=best, state={
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "loader": loaders, "torch_rng": torch.get_rng_state(), "step": step,
                "epoch": epoch, "world_size": d.world, "config": dataclasses.asdict(cfg),
                "best_top1": best_top1})
        d.barrier()

    writer = None
    if d.main:
        write_json(os.path.join(cfg.out, "config.json"), run_record(cfg))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(os.path.join(cfg.out, "tb"), purge_step=step + 1)
    sync_every = cfg.sync_every or (cfg.log_every if device.type == "cuda" else 1)
    log = StepLog(d, device, metrics_path, writer, steps_per_epoch, cfg.log_every, sync_every)

    # epochs
    summary = {}
    net.train()
    with StopSignal() as stop:
        try:
            while epoch < cfg.epochs:
                step, clock, stopped = train_one_epoch(
                    net, loader, optimizer, scheduler, scaler, cfg, device, amp_dtype, epoch,
                    step, log, stop, save, d.world)
                if stopped:
                    name = signal.Signals(stop.signum).name if stop.signum else "a signal"
                    if d.main:
                        print(f"stopped by {name}: checkpoint at step {step}; rerun the same "
                              f"command to resume", flush=True)
                    return {"stopped": {"signal": name, "step": step,
                                        "exit_code": 128 + (stop.signum or signal.SIGTERM)}}
                epoch += 1
                record = {"epoch": epoch - 1, "step": step, "train_img_per_s": clock.rate,
                          "data_wait": clock.wait_share}
                if val is not None:
                    metrics = evaluate(net, val, device, cfg.channels_last, d)
                    record.update({"val_top1": metrics["top1"], "val_top5": metrics["top5"],
                                   "val_loss": metrics["loss"],
                                   "val_samples": metrics["samples"]})
                log.epoch_end(record, step)
                improved = "val_top1" in record and record["val_top1"] > best_top1
                best_top1 = max(best_top1, record.get("val_top1", best_top1))
                save(step, epoch, best=improved)
                summary = {"epochs": epoch, "steps": step, "world_size": d.world,
                           **{k: v for k, v in record.items() if k.startswith("val_")}}
        finally:
            log.close()
    if d.main:
        write_json(os.path.join(cfg.out, "summary.json"), summary)
    return summary


def run_record(cfg: TrainConfig) -> dict:
    """config.json: every setting, plus how the run was started (command line, git commit,
    library versions), so that a result can be traced back."""
    from ipmix_dali.provenance import machine_info, package_versions

    machine = machine_info()
    return {**dataclasses.asdict(cfg), "command": list(sys.argv),
            "git_commit": machine["git_commit"],
            "versions": package_versions(("ipmix_dali", "torch", "torchvision", "nvidia.dali",
                                          "cupy", "numpy", "PIL"))}


def _check_resumable(cfg: TrainConfig, path, state, world: int):
    """Refuse a checkpoint of a run with other settings (``--allow-config-change``: epochs may
    differ) or another process count, naming what differs."""
    changes = config_changes(state.get("config", {}), cfg)
    allowed = {"epochs"} if cfg.allow_config_change else set()
    refused = {k: v for k, v in changes.items() if k not in allowed}
    if refused:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(refused.items()))
        hint = ("" if set(refused) != {"epochs"} else
                "; to train longer or shorter pass --allow-config-change")
        raise ValueError(f"{path} is a run with other settings ({listed}): resume it with its "
                         f"own settings, or train into a new --out{hint}")
    if len(state["loader"]) != world:
        raise ValueError(f"{path} was written by {len(state['loader'])} processes, this run "
                         f"has {world}: resume with the same --nproc_per_node x nodes")


def _complete(cfg: TrainConfig, state, d) -> dict:
    """A finished run resumed: its summary, nothing written."""
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


# --- command line ----------------------------------------------------------------------------
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
    """``python -m ipmix_dali.train``: the flags of ``ipmix-dali train``."""
    import argparse

    from ipmix_dali.train.config import add_train_arguments, config_from_args

    p = add_train_arguments(argparse.ArgumentParser(prog="ipmix_dali.train"))
    try:
        return run_cli(config_from_args(p.parse_args(argv)), "ipmix_dali.train")
    except ValueError as exc:
        print(f"ipmix_dali.train: error: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:
        print(f"ipmix_dali.train: error: {exc}", file=sys.stderr)
        return 1
