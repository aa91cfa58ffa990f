"""torchrun --max-restarts: a worker killed with SIGKILL (mid-epoch, during validation, while
writing a checkpoint) is restarted by torchrun, resumes by itself from the newest checkpoint
that loads, and ends with the weights of an uninterrupted run, bit for bit (2 gloo ranks on
CPU). The kills come from the test hook ``IPMIX_DALI_FAULT`` (``ipmix_dali/train/faults.py``),
which fires only in torchrun's first attempt."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nvidia.dali")

from ipmix_dali.train.faults import ENV  # noqa: E402

RUN_TIMEOUT = 240  # s per torchrun; about 10-20 s on 2 cores


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ipmix_dali.tools.samples import write_jpeg_tree

    root = tmp_path_factory.mktemp("elastic")
    # 36 training images: 18 per rank, 4 steps of 4 per epoch (the partial batch dropped)
    write_jpeg_tree(root / "data" / "train", classes=3, per_class=12, size=(48, 40), seed=1)
    write_jpeg_tree(root / "data" / "val", classes=3, per_class=4, size=(48, 40), seed=2)
    return root / "data"


def _torchrun(data, out, fault=None):
    """The same command for every run: 2 epochs x 4 steps, checkpoints at steps 2, 4, 6, 8
    and at the epoch ends (steps 4 and 8), validation after each epoch."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--max-restarts=1", "-m", "ipmix_dali.train", "--data", str(data),
           "--arch", "resnet18", "--norm", "group", "--method", "none", "--image-size", "32",
           "--val-resize", "32", "--epochs", "2", "--batch-size", "4", "--lr", "0.002",
           "--threads", "1", "--stage-workers", "1", "--checkpoint-every", "2",
           "--log-every", "1", "--no-tensorboard", "--out", str(out)]
    env = {k: v for k, v in os.environ.items()
           if k != ENV and not k.startswith(("TORCHELASTIC_", "MASTER_"))}
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env[ENV] = fault
    # torchrun in its own process group: a hang is ended (workers included) and fails the test
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # torchrun stops its workers on SIGTERM
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in {RUN_TIMEOUT} s (fault {fault}):\n"
                    f"{stdout[-3000:]}\n{stderr[-6000:]}")
    assert proc.returncode == 0, f"{stdout[-3000:]}\n{stderr[-6000:]}"
    return stdout, stderr


def _records(out):
    with open(out / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if "loss" in r], [r for r in rows if "val_top1" in r]


def _final(out):
    return torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    stdout, _ = _torchrun(data, out)
    assert "torchelastic restart" not in stdout
    steps, epochs = _records(out)
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert [r["epoch"] for r in epochs] == [0, 1]
    return out


@pytest.mark.parametrize("fault, resumed, epoch", [
    ("rank1:step3", 2, 0),          # mid-epoch, its step's gradient all-reduce never completes
    ("rank1:val", 4, 0),            # epoch 0's validation: the step-4 checkpoint is the
                                    # epoch's last step, taken before it (the epoch-end one not)
    ("rank0:ckpt_write@6", 4, 1),   # rank 0, half of the step-6 checkpoint in its temp file
])
def test_killed_worker_restarts_and_ends_like_an_uninterrupted_run(data, baseline, tmp_path,
                                                                   fault, resumed, epoch):
    out = tmp_path / "run"
    stdout, stderr = _torchrun(data, out, fault)
    rank = fault[4]
    assert f"{ENV}: rank {rank} kills itself (SIGKILL)" in stderr
    assert f"torchelastic restart 1: --resume auto (the newest checkpoint in {out})" in stdout
    assert f"resumed from {out / f'checkpoint_step{resumed:09d}.pt'} at epoch {epoch}, " \
           f"step {resumed}\n" in stdout
    if fault.startswith("rank0:ckpt_write"):  # the previous checkpoint loaded, no rename done
        assert "took over the lock" in stderr  # rank 0 held OUT/train.lock when it died
        assert "removed 1 unfinished checkpoint write(s) of an interrupted run: " \
               ".checkpoint_step000000006.pt." in stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not (out / "train.lock").exists()

    want, got = _final(baseline), _final(out)
    assert (got["step"], got["epoch"]) == (want["step"], want["epoch"]) == (8, 2)
    assert want["model"].keys() == got["model"].keys()
    for name, tensor in want["model"].items():
        assert torch.equal(got["model"][name], tensor), name
    for a, b in zip(want["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])

    (want_steps, want_epochs), (got_steps, got_epochs) = _records(baseline), _records(out)
    assert [r["step"] for r in got_steps] == list(range(1, 9))  # each step once, in order
    assert [r["loss"] for r in got_steps] == [r["loss"] for r in want_steps]
    assert [r["epoch"] for r in got_epochs] == [0, 1]
    for key in ("val_top1", "val_top5", "val_loss", "val_samples"):
        assert [r[key] for r in got_epochs] == [r[key] for r in want_epochs], key
    assert json.loads((out / "summary.json").read_text())["steps"] == 8


def test_fresh_namespace_ignores_a_dead_attempts_keys():
    """The root cause of the restarted workers' hang: torchrun's store keeps the killed
    attempt's keys. Rank 1 starting first reads the dead rank 0's token, gets no answer, and
    meets the new rank 0 in a namespace no earlier start used."""
    from datetime import timedelta

    import torch.distributed as dist

    from ipmix_dali.train.distributed import fresh_namespace

    server = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, timeout=timedelta(seconds=30))
    client = dist.TCPStore("127.0.0.1", server.port, 1, is_master=False,
                           timeout=timedelta(seconds=30))
    server.set("ipmix_dali/pg/leader", "dead")  # what the first attempt left
    server.set("ipmix_dali/pg/dead/welcome/1", "the dead rank 1's token")
    got = {}
    member = threading.Thread(target=lambda: got.setdefault(1, fresh_namespace(client, 1, 2)))
    member.start()
    time.sleep(0.3)  # rank 1 is waiting for an answer in the dead namespace
    got[0] = fresh_namespace(server, 0, 2)
    member.join(10)
    assert got[0] == got[1] != "ipmix_dali/pg/dead"


def test_loader_restored_after_the_epochs_last_batch_ends_that_epoch(data):
    """A checkpoint taken at the epoch's last step (before the iterator said the epoch ended):
    the restored loader ends the epoch, then hands out the next one's batches, as the original
    did (DALI's checkpoint there is the next epoch's start)."""
    import argparse

    from ipmix_dali.train.config import add_train_arguments, config_from_args
    from ipmix_dali.train.distributed import Dist
    from ipmix_dali.train.loop import build_loaders

    cfg = config_from_args(add_train_arguments(argparse.ArgumentParser()).parse_args(
        ["--data", str(data), "--method", "augmix", "--image-size", "32", "--val-resize", "32",
         "--batch-size", "4", "--threads", "1", "--stage-workers", "1", "--device", "cpu"]))
    original = build_loaders(cfg, Dist(1, 2, 0), torch.device("cpu"))[0]
    assert len(original) == 4
    for _ in zip(range(4), original):
        pass
    state = original.state_dict()
    restored = build_loaders(cfg, Dist(1, 2, 0), torch.device("cpu"))[0]
    restored.load_state_dict(state)
    assert list(original) == [] and list(restored) == []
    for (a, la), (b, lb) in zip(original, restored, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert restored.state_dict()["batches_consumed"] == original.state_dict()["batches_consumed"]


def test_fault_hook_fires_only_where_named(monkeypatch):
    from ipmix_dali.train import faults

    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    assert not faults._armed("step", 3)  # unset: nothing
    monkeypatch.setenv(ENV, "rank1:step3")
    assert faults._armed("step", 3)
    assert not faults._armed("step", 2) and not faults._armed("val")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # the restarted workers run through
    assert not faults._armed("step", 3)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    monkeypatch.setenv(ENV, "rank0:ckpt_write@6")
    assert not faults._armed("ckpt_write", 6)  # another rank
    monkeypatch.setenv("RANK", "0")
    assert faults._armed("ckpt_write", 6) and not faults._armed("ckpt_write", 4)
    monkeypatch.setenv(ENV, "rank0:ckpt_write")
    assert faults._armed("ckpt_write", 2)
    f = object()
    monkeypatch.setenv(ENV, "rank0:val")
    assert faults.checkpoint_file(f, 2, lambda: 100) is f  # unarmed: the file itself
    monkeypatch.setenv(ENV, "rank0:sometime")
    with pytest.raises(ValueError, match="rank<R>:step<N>"):
        faults.at_step(1)
