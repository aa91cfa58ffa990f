"""Bad input and interruptions, as a user meets them: each gives a one-line error naming the
thing and the fix, or a correct result; nothing already written is lost or overwritten."""
import io
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("nvidia.dali")

from ipmix_dali.cli import main  # noqa: E402
from ipmix_dali.tools.samples import write_jpeg_tree
from ipmix_dali.train.config import TrainConfig  # noqa: E402
from ipmix_dali.train.loop import train  # noqa: E402


def _synthetic(out, **kw):
    base = dict(data="synthetic", out=str(out), arch="resnet18", method="none", num_classes=4,
                synthetic_size=16, batch_size=8, image_size=32, val_resize=32, epochs=1,
                threads=1, tensorboard=False, log_every=1, norm="group")
    base.update(kw)
    return TrainConfig(**base)


def _one_line_error(capsys, argv, *fragments, code=2):
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# --- 1, 12: signals ------------------------------------------------------------------------
def test_signal_stops_training_and_restores_the_handlers(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    cfg = _synthetic(tmp_path / "run", synthetic_size=400, epochs=3)
    done = threading.Event()

    def term_once_training():  # not a fixed delay: imports alone may take seconds on a busy machine
        while signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]:
            if done.wait(0.01):
                return
        if not done.wait(1.0):
            os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=term_once_training, daemon=True)
    killer.start()
    try:
        summary = train(cfg)
    finally:
        done.set()
        killer.join()
    assert summary["stopped"]["signal"] == "SIGTERM" and summary["stopped"]["exit_code"] == 143
    step = summary["stopped"]["step"]
    assert (tmp_path / "run" / f"checkpoint_step{step:09d}.pt").exists()
    assert not (tmp_path / "run" / "summary.json").exists()  # nothing claims it finished
    assert {s: signal.getsignal(s) for s in before} == before  # Ctrl-C works again


def test_demo_stops_when_its_training_is_stopped(tmp_path):
    """SIGTERM during the demo's training: exit 143, a message, no report claiming 8 epochs."""
    out = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "ipmix_dali", "demo", "--out", str(out),
                             "--epochs", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 0 [") or "loss" in line:  # training is under way
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    text = "".join(lines) + rest
    assert proc.returncode == 143, text[-2000:]
    assert "[demo] stopped by SIGTERM while training baseline" in text
    assert not (out / "report.md").exists() and not (out / "report.json").exists()


# --- 2, 3: resuming into a run folder --------------------------------------------------------
def test_crop_resize_is_compared_as_it_resolves_and_old_runs_resized_with_dali():
    """A checkpoint's crop_resize is what it resolved to: "auto" on the CPU is "pillow", on the
    GPU "dali"; a checkpoint from before the option (no field) resized with DALI, so resuming
    it on the CPU needs --crop-resize dali to continue with the same crops."""
    import dataclasses

    from train.config import TrainConfig, config_changes

    cpu = dataclasses.asdict(TrainConfig(device="cpu"))
    assert config_changes(cpu, TrainConfig(device="cpu", crop_resize="pillow")) == {}
    assert config_changes(cpu, TrainConfig(device="cpu", crop_resize="dali")) == {
        "crop_resize": ("auto", "dali")}
    gpu = dataclasses.asdict(TrainConfig(device="gpu"))
    assert config_changes(gpu, TrainConfig(device="gpu", crop_resize="dali")) == {}
    old = {k: v for k, v in cpu.items() if k != "crop_resize"}
    assert config_changes(old, TrainConfig(device="cpu")) == {"crop_resize": ("dali", "auto")}
    assert config_changes(old, TrainConfig(device="cpu", crop_resize="dali")) == {}
    assert config_changes({}, TrainConfig(device="cpu")) == {}  # no saved config: nothing to hold


def test_resume_refuses_other_settings_and_leaves_the_run_alone(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(_synthetic(out))["epochs"] == 1
    config = (out / "config.json").read_text()
    with pytest.raises(ValueError, match=r"other settings \(lr 0\.01 -> 0\.1, seed 0 -> 3\)"):
        train(_synthetic(out, lr=0.1, seed=3))
    with pytest.raises(ValueError, match=r"arch 'resnet18' -> 'resnet34'"):  # no RuntimeError
        train(_synthetic(out, arch="resnet34"))
    with pytest.raises(ValueError, match="pass --allow-config-change"):
        train(_synthetic(out, epochs=2))
    assert (out / "config.json").read_text() == config  # not rewritten to claim new values
    longer = train(_synthetic(out, epochs=2, allow_config_change=True))
    assert longer["epochs"] == 2
    assert json.loads((out / "config.json").read_text())["epochs"] == 2


def test_rerunning_a_finished_run_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    first = train(_synthetic(out))
    summary = (out / "summary.json").read_text()
    stamp = (out / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    again = train(_synthetic(out))
    assert again["complete"] and again["epochs"] == first["epochs"] == 1
    assert "is complete (1 epochs" in capsys.readouterr().out
    assert (out / "summary.json").read_text() == summary
    assert (out / "summary.json").stat().st_mtime_ns == stamp


# --- 5, 8: flags ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv, fragment", [
    (["--amp", "nosuch"], "invalid choice: 'nosuch'"),
    (["--norm", "layer"], "invalid choice: 'layer'"),
])
def test_invalid_choices_are_refused_by_argparse(capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "synthetic", *argv])
    assert info.value.code == 2 and fragment in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragments", [
    (["--aug", "all_ops=maybe"], ["--aug all_ops=maybe: all_ops takes true or false"]),
    (["--aug", "k=abc"], ["--aug k=abc: k takes an integer"]),
    (["--aug", "depth=3"], ["ipmix has no option 'depth'"]),
    (["--epochs", "0"], ["--epochs must be >= 1, got 0"]),
    (["--batch-size", "0"], ["--batch-size must be >= 1, got 0"]),
    (["--device", "gpu"], ["no CUDA GPU available for --device gpu: use --device cpu"]),
    (["--device", "cuda"], ["no CUDA GPU available for --device gpu"]),  # torch's name
])
def test_bad_values_are_one_line_errors(tmp_path, capsys, argv, fragments):
    write_jpeg_tree(tmp_path / "d" / "train", classes=2, per_class=2, size=(40, 40))
    write_jpeg_tree(tmp_path / "d" / "val", classes=2, per_class=1, size=(40, 40))
    _one_line_error(capsys, ["train", "--data", str(tmp_path / "d"), "--out",
                             str(tmp_path / "o"), "--method", "ipmix", "--mixing-set",
                             str(tmp_path / "d" / "train"), *argv], *fragments)
    assert not (tmp_path / "o").exists()  # refused before any work


def test_on_off_flags_have_both_forms():
    import argparse

    from ipmix_dali.train.config import add_train_arguments, config_from_args

    p = add_train_arguments(argparse.ArgumentParser())
    cfg = config_from_args(p.parse_args(["--data", "x", "--no-nesterov", "--no-tensorboard",
                                         "--no-drop-last"]))
    assert (cfg.nesterov, cfg.tensorboard, cfg.drop_last) == (False, False, False)
    assert config_from_args(p.parse_args(["--data", "x"])).drop_last  # the default


# --- 6, 9: files the decoders cannot handle ------------------------------------------------
def _huge_jpeg(path, width=30000, height=30000):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    path.write_bytes(bytes(data))


def test_decompression_bombs_are_bad_files(tmp_path):
    from ipmix_dali.datasets import scan_image_folder

    write_jpeg_tree(tmp_path, classes=2, per_class=3, size=(40, 40))
    bomb = tmp_path / "n00000001" / "bomb.JPEG"
    _huge_jpeg(bomb)
    with pytest.raises(ValueError, match=r"bomb\.JPEG \(30000x30000 pixels, over the limit of "
                                         r"89,478,485 \(--max-image-pixels\)\)"):
        scan_image_folder(tmp_path)
    files = scan_image_folder(tmp_path, skip_bad_files=True)
    assert len(files) == 6 and [p for p, _ in files.skipped] == [str(bomb)]
    assert len(scan_image_folder(tmp_path, max_pixels=None)) == 7  # no limit


def test_undecodable_jpeg_is_named_and_skippable(tmp_path, monkeypatch, spoil_jpeg):
    """Valid markers, garbage compressed data: DALI's decoder fails without naming the file.
    The loader finds and names it; --skip-bad-files then leaves it out."""
    from ipmix_dali import make_config
    from ipmix_dali.datasets import scan_image_folder
    from ipmix_dali.loader import train_loader

    monkeypatch.setenv("IPMIX_DALI_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "tree"
    write_jpeg_tree(root, classes=2, per_class=8, size=(96, 80), seed=0)
    victim = scan_image_folder(root).files[5]
    spoil_jpeg(victim)
    cfg = make_config("none", "imagenet", image_size=64)
    with pytest.raises(ValueError) as info:
        loader = train_loader(scan_image_folder(root), cfg, batch_size=4)
        for _ in range(2):
            for _batch in loader:
                pass
    assert str(info.value).startswith(f"cannot decode {victim}: DALI's decoder fails")
    assert "--skip-bad-files" in str(info.value)
    files = scan_image_folder(root, skip_bad_files=True)
    assert [p for p, _ in files.skipped] == [victim]
    loader = train_loader(files, cfg, batch_size=4)
    assert sum(len(labels) for _, labels in loader) == 15  # every remaining file, once


# --- 7: a last batch of one image ----------------------------------------------------------
def test_last_partial_batch_is_dropped_by_default(tmp_path):
    write_jpeg_tree(tmp_path / "d" / "train", classes=5, per_class=5, size=(40, 40))  # 25
    write_jpeg_tree(tmp_path / "d" / "val", classes=5, per_class=1, size=(40, 40))
    cfg = TrainConfig(data=str(tmp_path / "d"), out=str(tmp_path / "o"), arch="resnet18",
                      method="none", batch_size=8, image_size=32, val_resize=32, epochs=1,
                      threads=1, tensorboard=False)
    summary = train(cfg)  # BatchNorm never sees a batch of one
    assert summary["steps"] == 3 and summary["val_samples"] == 5  # validation keeps every image


# --- 10: checkpoints that do not load ------------------------------------------------------
def test_eval_suggests_unsafe_pickle_only_for_real_pickles(tmp_path):
    import argparse

    from ipmix_dali.eval.load_model import load_model

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(ValueError) as info:
        load_model(str(garbage), "resnet18", 10)
    assert "--unsafe-pickle" not in str(info.value) and "damaged" in str(info.value)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(ValueError, match="if you trust the file, pass --unsafe-pickle"):
        load_model(str(pickled), "resnet18", 10)


# --- 11: a full disk -----------------------------------------------------------------------
def test_full_disk_while_checkpointing_is_one_line(tmp_path, monkeypatch):
    import errno

    from ipmix_dali import atomic
    from ipmix_dali.atomic import DiskFullError
    from ipmix_dali.train.checkpoint import load_latest, save_checkpoint

    state = {"model": {"w": torch.zeros(1 << 20)}, "step": 1}  # 4 MiB
    first = save_checkpoint(str(tmp_path), 1, state)
    real_open = open

    class Full(io.RawIOBase):
        def __init__(self, f):
            self.f, self.n = f, 0

        def writable(self):
            return True

        def write(self, b):
            self.n += len(b)
            if self.n > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def fileno(self):
            return self.f.fileno()

        def flush(self):
            self.f.flush()

        def close(self):
            self.f.close()
            super().close()

    monkeypatch.setattr(atomic, "open", lambda path, mode: Full(real_open(path, mode)),
                        raising=False)
    with pytest.raises(DiskFullError) as info:
        save_checkpoint(str(tmp_path), 2, state)
    message = str(info.value)
    assert "\n" not in message and "checkpoint_step000000002.pt" in message
    assert "needs about 4 MiB" in message and f"the previous checkpoint {first} is intact" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    monkeypatch.delattr(atomic, "open")
    path, loaded = load_latest(str(tmp_path))
    assert path == first and loaded["step"] == 1
    # no temporary file left; checkpoint_last.pt still names the intact one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt",
                                                          "checkpoint_step000000001.pt"]
    assert os.readlink(tmp_path / "checkpoint_last.pt") == "checkpoint_step000000001.pt"


# --- 13: file modes ------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    from ipmix_dali.atomic import atomic_path, write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "report.json", {"a": 1})
        with atomic_path(tmp_path / "bank.npy") as tmp:
            np.save(tmp, np.zeros(3))
    finally:
        os.umask(old)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "bank.npy").stat().st_mode & 0o777 == mode


# --- 4: make-corrupted into a folder of another set ----------------------------------------
def test_make_corrupted_refuses_to_mix_settings(tmp_path, capsys):
    src = tmp_path / "src"
    write_jpeg_tree(src, classes=1, per_class=2, size=(40, 36))
    out = str(tmp_path / "c")
    base = ["make-corrupted", "--src", str(src), "--out", out, "--size", "32",
            "--corruptions", "gaussian_noise", "--severities", "1"]
    assert main(base) == 0
    manifest = open(os.path.join(out, "manifest.json")).read()
    for extra, fragment in ((["--seed", "1"], "seed 0 -> 1"), (["--size", "24"], "size 32 -> 24")):
        argv = [a for a in base]
        if extra[0] == "--size":
            argv[argv.index("--size") + 1] = extra[1]
        else:
            argv += extra
        _one_line_error(capsys, argv, "holds a set made with other settings", fragment,
                        "new --out")
    assert open(os.path.join(out, "manifest.json")).read() == manifest
    assert main(base) == 0  # the same settings resume


def test_train_cli_exit_codes(tmp_path):
    """torchrun and schedulers read the exit status: 143 after SIGTERM (test_train.py), 2 for
    bad input, 0 when done."""
    res = subprocess.run([sys.executable, "-m", "ipmix_dali.train", "--data", "synthetic",
                          "--epochs", "0"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().endswith("--epochs must be >= 1, got 0")


# --- round 2 (issue 22) --------------------------------------------------------------------
@pytest.fixture
def small_tree(tmp_path):
    """train/ of 2 x 12 JPEGs and val/ of 2 x 2, 40 px."""
    write_jpeg_tree(tmp_path / "d" / "train", classes=2, per_class=12, size=(40, 40))
    write_jpeg_tree(tmp_path / "d" / "val", classes=2, per_class=2, size=(40, 40))
    return tmp_path / "d"


def _tree_argv(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--arch", "resnet18", "--method",
            "none", "--image-size", "32", "--val-resize", "32", "--epochs", "1", "--threads",
            "1", "--no-tensorboard", *extra]


# 2: a batch larger than the training set
def test_batch_larger_than_the_training_set_is_refused_or_partial(small_tree, tmp_path, capsys):
    _one_line_error(capsys, _tree_argv(small_tree, tmp_path / "o", "--batch-size", "64"),
                    "--batch-size 64 > 24 training images per process in",
                    "lower --batch-size to at most 24", "--no-drop-last")
    assert not (tmp_path / "o").exists()  # refused before any work
    summary = train(TrainConfig(data=str(small_tree), out=str(tmp_path / "p"), arch="resnet18",
                                method="none", batch_size=64, image_size=32, val_resize=32,
                                epochs=1, threads=1, tensorboard=False, drop_last=False))
    assert summary["steps"] == 1 and summary["val_samples"] == 4  # one batch of all 24
    lines = (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["epoch"] == 0


# 3: --resume to a damaged checkpoint; --resume auto's fallback says what is redone
def _synthetic_argv(out, *extra):
    return ["train", "--data", "synthetic", "--out", str(out), "--arch", "resnet18", "--method",
            "none", "--num-classes", "4", "--synthetic-size", "16", "--batch-size", "8",
            "--image-size", "32", "--val-resize", "32", "--epochs", "2", "--threads", "1",
            "--no-tensorboard", "--log-every", "1", "--norm", "group", *extra]


def test_resume_from_a_damaged_checkpoint_names_the_intact_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(_synthetic(out, epochs=2))["steps"] == 4  # checkpoints at steps 2 and 4
    newest, intact = out / "checkpoint_step000000004.pt", out / "checkpoint_step000000002.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 2])  # a copy that stopped half-way
    _one_line_error(capsys, _synthetic_argv(out, "--resume", str(newest)),
                    f"--resume {newest} does not load: the file is a truncated or damaged "
                    f"PyTorch checkpoint (PytorchStreamReader failed reading zip archive",
                    f"the intact checkpoint next to it is {intact}: pass --resume {intact}")
    _one_line_error(capsys, _synthetic_argv(out, "--resume", str(out / "checkpoint_last.pt")),
                    "checkpoint_last.pt does not load",  # the link to the damaged file
                    f"the intact checkpoint next to it is {intact}")
    noise = tmp_path / "alone" / "random.pt"
    noise.parent.mkdir()
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    _one_line_error(capsys, _synthetic_argv(tmp_path / "o2", "--resume", str(noise)),
                    "the file is not a PyTorch checkpoint (neither a zip archive nor a pickle)",
                    "no intact checkpoint is next to it: pass --resume none to start over")

    capsys.readouterr()
    assert main(_synthetic_argv(out)) == 0  # --resume auto falls back, and says so
    text = capsys.readouterr().out
    assert (f"resumed from {intact} at epoch 1, step 2 (the newer checkpoint_step000000004.pt "
            f"did not load: the steps after 2 are trained again)") in text
    assert torch.load(newest, weights_only=True)["step"] == 4  # written again, whole

    for name in ("checkpoint_step000000002.pt", "checkpoint_step000000004.pt"):
        (out / name).write_bytes(b"\0" * 100)
    _one_line_error(capsys, _synthetic_argv(out, "--epochs", "3", "--allow-config-change"),
                    f"--resume auto: none of the 2 checkpoints in {out} loads",
                    "--resume none to start over")
    assert (out / "metrics.jsonl").exists()  # not deleted by a silent start from scratch


# 5: eval --checkpoint on a file that is not a checkpoint
def test_eval_names_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 2.3}\n{"step": 2, "loss": 2.1}\n')
    err = _one_line_error(capsys, ["eval", "--checkpoint", str(metrics), "--arch", "resnet18",
                                   "--num-classes", "4", "--imagenet-val", str(tmp_path),
                                   "--out", str(tmp_path / "ev"), "--device", "cpu"],
                          f"cannot load checkpoint {metrics}: the file is text, not a PyTorch "
                          f"checkpoint (it begins '{{\"step\": 1, \"loss\": 2.3}}')",
                          "pass the .pt file a training wrote")
    assert "weights_only" not in err and "--unsafe-pickle" not in err and "2.6" not in err


# 4: an --out that cannot be written
def test_output_dir_that_cannot_be_written_is_refused_first(capsys):
    import tempfile

    import torchvision  # noqa: F401 - imported before the user changes (user nobody may not read it)

    base = tempfile.mkdtemp(prefix="ipmix-ro-")
    for name in ("parent", "run"):
        os.mkdir(os.path.join(base, name), 0o555)  # read-only for everybody but root
    os.chmod(base, 0o755)
    try:
        root = os.geteuid() == 0
        if root:  # root writes anywhere: try as user nobody
            os.setegid(65534)
            os.seteuid(65534)
        try:
            new = os.path.join(base, "parent", "r1")
            _one_line_error(capsys, _synthetic_argv(new),
                            f"--out {new}: cannot write there (it would be created in "
                            f"{base}/parent): Permission denied")
            _one_line_error(capsys, _synthetic_argv(os.path.join(base, "run"), "--output-dir",
                                                    os.path.join(base, "run")),
                            f"--out {base}/run: cannot write there: Permission denied",
                            "choose a folder you can write")
        finally:
            if root:
                os.seteuid(0)
                os.setegid(0)
    finally:
        import shutil

        shutil.rmtree(base)


# 6: a folder in an ImageNet-C tree that is no corruption
def test_unknown_imagenet_c_folders_are_named_on_screen_and_in_the_report(tmp_path):
    from ipmix_dali.eval.evaluate import EvalConfig, evaluate

    root = tmp_path / "c"
    for cell in ("gaussian_noise", "spatter", "my_blur", "noise/fancy_noise"):
        for s in range(1, 6):
            write_jpeg_tree(root / cell / str(s), classes=2, per_class=2, size=(32, 32), seed=s)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, 2)).eval()
    logs = []
    res = evaluate(EvalConfig("tiny", tmp_path / "ev", arch="tiny", num_classes=2,
                              imagenet_c=root, crop=32, batch_size=4, threads=1, device="cpu"),
                   model=model, log=logs.append)
    ic = res["imagenet_c"]
    assert set(ic["per_corruption"]) == {"gaussian_noise", "spatter"}
    assert ic["ignored_folders"] == ["my_blur", "noise/fancy_noise"]
    assert (f"ImageNet-C: ignored 2 folder(s) of {root} that are no ImageNet-C corruption: "
            f"my_blur, noise/fancy_noise (name a folder after one of the 19 corruptions to "
            f"evaluate it)") in logs
    assert "ImageNet-C: evaluated as extras, not in the mCE: spatter" in logs
    report = (tmp_path / "ev" / "report.md").read_text()
    assert ("Ignored folders (no ImageNet-C corruption, not evaluated): my_blur, "
            "noise/fancy_noise.") in report
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert saved["imagenet_c"]["ignored_folders"] == ["my_blur", "noise/fancy_noise"]


# 7: two trainings into one --out
def test_second_training_into_a_busy_out_is_refused_and_a_stale_lock_taken_over(
        tmp_path, capsys, caplog):
    import socket
    import time

    out = tmp_path / "run"
    lock = out / "train.lock"
    first = subprocess.Popen([sys.executable, "-m", "ipmix_dali.train",
                              *_synthetic_argv(out, "--synthetic-size", "40000")[1:]],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 180
        while not (lock.exists() and lock.read_text()) and first.poll() is None:
            assert time.monotonic() < deadline, "the first training never took the lock"
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read()
        holder = json.loads(lock.read_text())
        assert (holder["pid"], holder["host"]) == (first.pid, socket.gethostname())
        _one_line_error(capsys, _synthetic_argv(out),
                        f"{out} is in use by another training (pid {first.pid} on "
                        f"{socket.gethostname()}, since {holder['started']}; lock {lock}): "
                        f"wait for it to end, or train into another --out")
    finally:
        first.kill()  # SIGKILL: no cleanup, the lock file stays behind
        first.wait()
    assert json.loads(lock.read_text())["pid"] == first.pid
    assert not list(out.glob("checkpoint_step*.pt"))  # killed within its first epoch
    with caplog.at_level("WARNING", logger="ipmix_dali.train"):
        assert train(_synthetic(out))["epochs"] == 1
    assert (f"took over the lock {lock} of a training that is gone (pid {first.pid} on "
            f"{socket.gethostname()}") in caplog.text
    assert not lock.exists()  # a run that ends removes its lock
