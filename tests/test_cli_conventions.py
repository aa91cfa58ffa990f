"""The trainer's command line as torchvision and timm users expect it: help for every flag,
choices, --x/--no-x, their aliases, --device auto, checkpoint_last/best links, and a
config.json that says how the run was started."""
import argparse
import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nvidia.dali")

from ipmix_dali.train.config import (  # noqa: E402
    FIELD_HELP,
    TrainConfig,
    add_train_arguments,
    config_from_args,
    validate_config,
)
from ipmix_dali.train.loop import train  # noqa: E402


def test_every_flag_has_help_and_the_choices_are_listed():
    parser = add_train_arguments(argparse.ArgumentParser())
    text = parser.format_help()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and action.help.startswith(FIELD_HELP[action.dest])
    assert "{none,bf16,fp16}" in text and "{auto,cpu,gpu,cuda}" in text
    assert "{none,augmix,pixmix,ipmix,layermix}" in text
    assert "--nesterov, --no-nesterov" in text and "--tensorboard, --no-tensorboard" in text


def test_aliases_of_torchvision_and_timm():
    parser = add_train_arguments(argparse.ArgumentParser())
    cfg = config_from_args(parser.parse_args(["--data", "x", "--model", "resnet18",
                                              "--output-dir", "runs/a", "-b", "32", "-j", "6"]))
    assert (cfg.arch, cfg.out, cfg.batch_size, cfg.threads) == ("resnet18", "runs/a", 32, 6)
    cfg = config_from_args(parser.parse_args(["--data", "x", "--workers", "3"]))
    assert cfg.threads == 3


def test_device_auto_takes_the_gpu_only_when_one_is_usable():
    from ipmix_dali.device import gpu_available

    assert TrainConfig().device == "auto"
    cfg = validate_config(TrainConfig(data="synthetic"))
    assert cfg.device == ("gpu" if gpu_available() else "cpu")


def test_last_and_best_links_and_the_run_record(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(_tree(tmp_path)), out=str(out), arch="resnet18", method="none",
                      batch_size=4, image_size=32, val_resize=32, epochs=2, threads=1,
                      tensorboard=False)
    train(cfg)
    last = out / "checkpoint_last.pt"
    assert last.is_symlink() and os.readlink(last) == "checkpoint_step000000008.pt"
    best = out / "checkpoint_best.pt"
    assert best.exists() and not best.is_symlink()
    best_state = torch.load(best, weights_only=True)
    assert best_state["best_top1"] == max(
        r["val_top1"] for r in map(json.loads, open(out / "metrics.jsonl")) if "val_top1" in r)
    record = json.loads((out / "config.json").read_text())
    assert record["epochs"] == 2 and record["device"] == "cpu"  # the resolved device
    assert isinstance(record["command"], list) and record["git_commit"]
    assert record["versions"]["torch"] == torch.__version__
    assert record["versions"]["ipmix_dali"]


def _tree(tmp_path):
    from ipmix_dali.tools.samples import write_jpeg_tree

    root = tmp_path / "data"
    write_jpeg_tree(root / "train", classes=2, per_class=8, size=(40, 40), seed=1)
    write_jpeg_tree(root / "val", classes=2, per_class=2, size=(40, 40), seed=2)
    return root
