"""The trainer: JSD loss and schedule values, and a run killed with SIGKILL that resumes exactly."""
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nvidia.dali")

from ipmix_dali.train.losses import jsd_loss  # noqa: E402
from ipmix_dali.train.schedule import warmup_cosine  # noqa: E402


def test_jsd_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, 7, generator=g) for _ in range(3)]
    y = torch.tensor([0, 3, 6, 2, 2])
    p = [torch.softmax(x.double(), 1) for x in logits]
    m = ((p[0] + p[1] + p[2]) / 3).clamp(1e-7, 1)
    kl = sum((pi * (pi.log() - m.log())).sum() / 5 for pi in p) / 3
    ce = -torch.log_softmax(logits[0].double(), 1)[torch.arange(5), y].mean()
    want = float(ce + 12 * kl)
    assert float(jsd_loss(*logits, y)) == pytest.approx(want, rel=1e-5)
    same = jsd_loss(logits[0], logits[0], logits[0], y)
    assert float(same) == pytest.approx(float(ce), rel=1e-5)  # identical views: JS = 0


def test_warmup_cosine_values():
    assert [warmup_cosine(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]
    assert warmup_cosine(2, 10, 2) == 1.0
    assert warmup_cosine(6, 10, 2) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 2) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(5, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


@pytest.fixture(scope="module")
def run_data(tmp_path_factory):
    from ipmix_dali.mixing.builtin import write_fractal_set
    from ipmix_dali.tools.samples import write_jpeg_tree

    root = tmp_path_factory.mktemp("trainer")
    write_jpeg_tree(root / "data" / "train", classes=3, per_class=6, size=(96, 80), seed=1)
    write_jpeg_tree(root / "data" / "val", classes=3, per_class=2, size=(96, 80), seed=2)
    write_fractal_set(str(root / "mix"), 4, 80, 1, "png")
    return root


def _cmd(root, out, *extra):
    return [sys.executable, "-m", "ipmix_dali.train", "--data", str(root / "data"),
            "--arch", "resnet18", "--method", "ipmix", "--jsd", "--mixing-set",
            str(root / "mix"), "--image-size", "64", "--val-resize", "72", "--epochs", "2",
            "--batch-size", "4", "--lr", "0.02", "--warmup-epochs", "0.5", "--threads", "1",
            "--checkpoint-every", "2", "--out", str(out), *extra]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _step_losses(out):
    with open(out / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}, [r for r in rows if "val_top1" in r]


def test_killed_run_resumes_with_the_same_losses(run_data, tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cmd(run_data, ref_out), check=True, env=_env(), capture_output=True)
    ref, ref_val = _step_losses(ref_out)
    # 2 epochs x 4 steps (18 files, batch 4: the partial last batch is dropped)
    assert sorted(ref) == list(range(1, 9))

    proc = subprocess.Popen(_cmd(run_data, out), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and len(_step_losses(out)[0]) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(_step_losses(out)[0])
    assert 5 <= killed_at < 8, killed_at
    subprocess.run(_cmd(run_data, out, "--resume", "auto"), check=True, env=_env(),
                   capture_output=True)
    got, got_val = _step_losses(out)
    assert sorted(got) == sorted(ref)
    for step in ref:
        assert abs(got[step] - ref[step]) <= 1e-6, (step, got[step], ref[step])
    assert [v["val_top1"] for v in got_val][-1] == ref_val[-1]["val_top1"]
    assert json.loads((out / "summary.json").read_text())["steps"] == 8


def test_sigterm_saves_a_checkpoint_and_exits_143(run_data, tmp_path):
    out = tmp_path / "term"
    # losses read back every 3 steps: the signal is seen at the next read-back
    proc = subprocess.Popen(_cmd(run_data, out, "--checkpoint-every", "0", "--sync-every", "3"),
                            env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (
            (out / "metrics.jsonl").exists() and len(_step_losses(out)[0]) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143  # 128 + SIGTERM: schedulers and torchrun see an unfinished run
    assert "stopped by SIGTERM" in stdout
    step = int(stdout.split("checkpoint at step ")[1].split(";")[0])
    assert (out / f"checkpoint_step{step:09d}.pt").exists()
    state = torch.load(out / f"checkpoint_step{step:09d}.pt", weights_only=True)
    assert state["step"] == step and state["world_size"] == 1
    # one loader state per rank; the pipeline makes 5 batches per epoch, the 5th dropped (the
    # epoch's last step leaves the loader at position 4 of 5 until the next epoch starts)
    assert state["loader"][0]["batches_consumed"] == (step - 1) // 4 * 5 + (step - 1) % 4 + 1
    assert state["config"]["method"] == "ipmix"


def _torchrun(nproc, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "ipmix_dali.train", *args]


def test_two_process_ddp_matches_one_process_same_global_batch(tmp_path):
    """torchrun with 2 CPU processes (gloo) x batch 4 == 1 process x batch 8, step by step, also
    when the losses are read back in blocks of steps (``--sync-every``).

    ``--data synthetic`` gives both runs the same samples per global step; GroupNorm keeps the
    forward pass independent of how the global batch is split (BatchNorm's statistics are not).
    The kernels of batch 4 and batch 8 round differently (~1e-7); lr 0.001 keeps that there
    (at 0.002 the loss jumps at step 2 and the difference grows to 4e-5 by step 11).
    """
    common = ["--data", "synthetic", "--arch", "resnet18", "--norm", "group", "--num-classes",
              "5", "--image-size", "32", "--synthetic-size", "48", "--epochs", "2",
              "--method", "none", "--lr", "0.001", "--threads", "1", "--no-bn-weight-decay"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_cmd_plain(common, one, 8), check=True, env=_env(), capture_output=True)
    # the two-process run reads its losses back every 5 steps (as on a GPU), the other every step
    res = subprocess.run(_torchrun(2, *common, "--batch-size", "4", "--sync-every", "5",
                                   "--out", str(two)), env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    a, _ = _step_losses(one)
    b, _ = _step_losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 13))  # only rank 0 logged, once per step
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    assert a[12] < a[1]  # it learns the fixed pool
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2


def _cmd_plain(common, out, batch):
    return [sys.executable, "-m", "ipmix_dali.train", *common, "--batch-size", str(batch),
            "--out", str(out)]


def test_two_process_dali_shards_and_all_reduced_validation(run_data, tmp_path):
    out = tmp_path / "ddp"
    args = ["--data", str(run_data / "data"), "--arch", "resnet18", "--method", "augmix",
            "--image-size", "64", "--val-resize", "72", "--epochs", "1", "--batch-size", "4",
            "--threads", "1", "--checkpoint-every", "0", "--out", str(out)]
    res = subprocess.run(_torchrun(2, *args), env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    losses, val = _step_losses(out)
    # 18 files: shards of 9, 2 batches of 4 on each rank (the partial third is dropped)
    assert sorted(losses) == [1, 2]
    assert val[0]["val_samples"] == 6   # both ranks' val shards (3 + 3), summed
    (ckpt,) = [p for p in out.iterdir() if p.name.startswith("checkpoint_step")]
    state = torch.load(ckpt, weights_only=True)
    assert state["world_size"] == 2 and len(state["loader"]) == 2
    assert [s["batches_consumed"] for s in state["loader"]] == [3, 3]
    assert (out / "tb").is_dir() and any((out / "tb").iterdir())  # TensorBoard events


def test_recipe_then_flags():
    import argparse

    from ipmix_dali.train.config import RECIPES, add_train_arguments, config_from_args

    p = add_train_arguments(argparse.ArgumentParser())
    cfg = config_from_args(p.parse_args(["--recipe", "resnet50-90ep", "--data", "x"]))
    assert (cfg.lr, cfg.lr_reference_batch, cfg.momentum, cfg.epochs) == (0.256, 256, 0.875, 90)
    assert cfg.weight_decay == 1 / 32768 and cfg.no_bn_weight_decay and cfg.channels_last
    cfg = config_from_args(p.parse_args(["--recipe", "ipmix-imagenet", "--data", "x",
                                         "--lr", "0.1", "--epochs", "3"]))
    assert (cfg.lr, cfg.epochs) == (0.1, 3)  # explicit flags win
    assert (cfg.method, cfg.jsd, cfg.batch_size, cfg.min_lr) == ("ipmix", True, 128, 1e-6)
    assert set(RECIPES) == {"ipmix-imagenet", "resnet50-90ep"}
    with pytest.raises(ValueError, match="unknown --recipe"):
        config_from_args(argparse.Namespace(recipe="nope"))
    with pytest.raises(SystemExit):  # argparse's choices
        p.parse_args(["--recipe", "nope"])


def test_init_weights_loads_released_formats_and_names_mismatches(tmp_path):
    import torchvision

    from ipmix_dali.train.config import TrainConfig
    from ipmix_dali.train.loop import build_model

    src = torchvision.models.resnet18(num_classes=4)
    released = {"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}
    torch.save(released, tmp_path / "released.pth")  # the IPMix/PixMix checkpoint layout
    model = build_model(TrainConfig(arch="resnet18", init_weights=str(tmp_path / "released.pth")), 4)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 src.state_dict().values()))
    with pytest.raises(ValueError, match="does not fit resnet18 with 10 classes"):
        build_model(TrainConfig(arch="resnet18", init_weights=str(tmp_path / "released.pth")), 10)


def test_aug_options_reach_the_method_config():
    from ipmix_dali.config import make_config
    from ipmix_dali.train.config import parse_aug_options

    opts = parse_aug_options("k=2,t=1,beta=3.5,all_ops=true,patch_sizes=4:8:16,overflow=clip")
    assert opts == {"k": 2, "t": 1, "beta": 3.5, "all_ops": True, "patch_sizes": (4, 8, 16),
                    "overflow": "clip"}
    cfg = make_config("ipmix", "imagenet", **opts)
    assert (cfg.k, cfg.t, cfg.beta, cfg.all_ops, cfg.patch_sizes, cfg.overflow) == (
        2, 1, 3.5, True, (4, 8, 16), "clip")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_aug_options("k3")
    with pytest.raises(ValueError, match="no option"):
        make_config("ipmix", "imagenet", **parse_aug_options("depth=3"))



def test_torchelastic_restart_implies_resume_auto(tmp_path, monkeypatch, capsys):
    """A worker of a torchrun restart (TORCHELASTIC_RESTART_COUNT > 0) resumes from the newest
    checkpoint although its command line, the first attempt's, says --resume none."""
    from ipmix_dali.train.config import TrainConfig
    from ipmix_dali.train.loop import train

    cfg = TrainConfig(data="synthetic", out=str(tmp_path / "run"), arch="resnet18",
                      method="none", num_classes=4, synthetic_size=16, batch_size=8,
                      image_size=32, val_resize=32, threads=1, tensorboard=False,
                      norm="group", resume="none")
    assert train(dataclasses.replace(cfg, epochs=1))["steps"] == 2
    capsys.readouterr()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    summary = train(dataclasses.replace(cfg, epochs=2, allow_config_change=True))
    text = capsys.readouterr().out
    assert "torchelastic restart 1: --resume none taken as --resume auto" in text
    assert f"resumed from {tmp_path / 'run' / 'checkpoint_step000000002.pt'} at epoch 1" in text
    assert summary["steps"] == 4
    steps = [json.loads(line)["step"] for line in open(tmp_path / "run" / "metrics.jsonl")
             if "loss" in line]
    assert steps == [1, 2, 3, 4]  # epoch 0 kept, not trained again


@pytest.mark.parametrize("gib, kind", [(8.0, "bank"), (1e-6, "reader")])
def test_mixing_memory_budget_chooses_bank_or_second_reader(run_data, tmp_path, gib, kind):
    """--mixing-memory-gb: a mixing set that fits is kept in memory (the stage crops the bank);
    a larger one is read by a second DALI reader ("Mix"), whose crops the stage receives."""
    import torch

    from ipmix_dali.train.config import TrainConfig
    from ipmix_dali.train.distributed import Dist
    from ipmix_dali.train.loop import build_loaders

    cfg = TrainConfig(data=str(run_data / "data"), out=str(tmp_path / "o"), method="ipmix",
                      jsd=True, mixing_set=str(run_data / "mix"), image_size=64, val_resize=72,
                      batch_size=4, threads=1, device="cpu", mixing_memory_gb=gib)
    loader, _, classes = build_loaders(cfg, Dist(), torch.device("cpu"))
    assert classes == 3
    assert (loader.stage.bank is not None) == (kind == "bank")
    images, labels = next(iter(loader))  # (clean, view 1, view 2) concatenated
    assert images.shape == (12, 3, 64, 64) and labels.shape == (4,)
    assert not torch.equal(images[4:8], images[:4])
    if kind == "reader":  # the 4 mixing pictures, one epoch of the "Mix" reader
        assert loader.pipeline.reader_meta("Mix")["epoch_size"] == 4
    else:
        with pytest.raises(RuntimeError):
            loader.pipeline.reader_meta("Mix")
