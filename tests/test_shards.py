"""Sharded tar input: make-shards writes webdataset-style shards with DALI indexes; the loader
reads them sharded per rank with exact resume; the trainer trains from them; bad samples are
named or left out."""
import json
import os
import tarfile
from collections import Counter

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nvidia.dali")

from ipmix_dali import make_config  # noqa: E402
from ipmix_dali.cli import main  # noqa: E402
from ipmix_dali.datasets import scan_image_folder  # noqa: E402
from ipmix_dali.loader import train_loader, val_loader  # noqa: E402
from ipmix_dali.shards import load_shards, make_shards  # noqa: E402
from ipmix_dali.tools.demo import write_digits_folder  # noqa: E402


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's digits as ImageFolders, and their train split as shards of 100."""
    root = tmp_path_factory.mktemp("digits")
    write_digits_folder(root / "folders")
    main(["make-shards", "--src", str(root / "folders" / "train"), "--out",
          str(root / "shards" / "train"), "--shard-size", "100"])
    (root / "shards" / "val").symlink_to(root / "folders" / "val")
    return root


def test_shards_hold_every_sample_with_its_label(digits):
    folder = scan_image_folder(digits / "folders" / "train")
    shards = load_shards(digits / "shards" / "train")
    assert len(shards) == len(folder) == 1438 and len(shards.tars) == 15
    assert shards.classes == folder.classes and shards.labels == folder.labels
    with tarfile.open(shards.tars[3]) as tar:
        names = tar.getnames()
        assert names[:3] == ["00000300.jpg", "00000300.cls", "00000300.label"]
        assert tar.extractfile("00000300.jpg").read() == open(folder.files[300], "rb").read()
        assert int(tar.extractfile("00000300.cls").read()) == folder.labels[300]
    index = open(shards.indexes[3]).read().splitlines()
    assert index[0] == "v1.2 100" and index[1].split()[:3] == ["jpg", "512",
                                                                str(len(open(folder.files[300], "rb").read()))]


def test_loader_from_shards_same_label_counts_per_epoch_and_rank(digits):
    cfg = make_config("none", "cifar", image_size=32)
    shards = load_shards(digits / "shards" / "train")
    counts = Counter()
    for rank in (0, 1):
        loader = train_loader(shards, cfg, batch_size=64, shard_id=rank, num_shards=2, seed=3)
        labels = torch.cat([lab for _, lab in loader]).tolist()
        assert len(labels) == 719  # shards of 719 + 719 (the pad of the last batch trimmed)
        counts.update(labels)
    assert counts == Counter(shards.labels)
    val = val_loader(scan_image_folder(digits / "folders" / "val"), batch_size=64)
    assert sum(len(lab) for _, lab in val) == 359


def test_resume_from_shards_is_exact(digits):
    cfg = make_config("augmix", "cifar", image_size=32, jsd=True)
    shards = load_shards(digits / "shards" / "train")
    kw = dict(batch_size=128, seed=5)
    ref = [x for x, _ in train_loader(shards, cfg, **kw)]
    loader = train_loader(shards, cfg, **kw)
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = loader.state_dict()
    resumed = train_loader(shards, cfg, **kw)
    resumed.load_state_dict(state)
    rest = [x for x, _ in resumed]
    assert len(rest) == len(ref) - 4
    for a, b in zip(ref[4:], rest):
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_trainer_takes_shards(digits, tmp_path):
    from ipmix_dali.train.config import TrainConfig
    from ipmix_dali.train.loop import train

    summary = train(TrainConfig(data=str(digits / "shards"), out=str(tmp_path / "run"),
                                arch="resnet18", method="none", preset="cifar", batch_size=128,
                                image_size=32, val_resize=32, epochs=1, threads=2,
                                tensorboard=False))
    assert summary["steps"] == 1438 // 128 and summary["val_samples"] == 359


def test_bad_files_are_named_or_left_out(tmp_path, monkeypatch, spoil_jpeg):
    from ipmix_dali.tools.samples import write_jpeg_tree

    monkeypatch.setenv("IPMIX_DALI_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    write_jpeg_tree(src, classes=2, per_class=4, size=(48, 40), seed=1)
    victim = scan_image_folder(src).files[2]
    spoil_jpeg(victim)
    with pytest.raises(ValueError, match=f"do not decode with DALI's decoder, first {victim}"):
        make_shards(src, tmp_path / "a", shard_size=3, progress=False)
    m = make_shards(src, tmp_path / "b", shard_size=3, skip_bad_files=True, progress=False)
    assert m["samples"] == 7 and m["skipped"][0][0] == victim
    assert json.loads((tmp_path / "b" / "dataset.json").read_text())["complete"]
    again = make_shards(src, tmp_path / "b", shard_size=3, skip_bad_files=True, progress=False)
    assert again["kept_shards"] == 3 and again["written_shards"] == 0  # resumed, nothing redone
    with pytest.raises(ValueError, match="other settings"):
        make_shards(src, tmp_path / "b", shard_size=4, skip_bad_files=True, progress=False)


@pytest.fixture
def cut_shards(tmp_path):
    """24 JPEGs as 3 shards of 10, 10 and 4; shard 1 cut to half its bytes (a copy that
    stopped), val/ a folder. Returns (data folder, shard 1's path, its original bytes)."""
    from ipmix_dali.tools.samples import write_jpeg_tree

    write_jpeg_tree(tmp_path / "src", classes=2, per_class=12, size=(40, 40))
    write_jpeg_tree(tmp_path / "d" / "val", classes=2, per_class=2, size=(40, 40))
    make_shards(tmp_path / "src", tmp_path / "d" / "train", shard_size=10, progress=False)
    cut = tmp_path / "d" / "train" / "shard-000001.tar"
    original = cut.read_bytes()
    cut.write_bytes(original[:len(original) // 2])
    return tmp_path / "d", cut, original


def test_truncated_shard_is_named_or_its_tail_left_out(cut_shards, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.setenv("IPMIX_DALI_CACHE", str(tmp_path / "cache"))
    data, cut, original = cut_shards
    with pytest.raises(ValueError) as info:
        load_shards(data / "train")
    assert str(info.value).startswith(
        f"shard {cut} is damaged: 25,600 bytes, its index needs at least 40,964 (truncated; "
        f"4 of 10 samples are cut off): run `ipmix-dali make-shards --src {tmp_path / 'src'} "
        f"--out {data / 'train'}` again")
    capsys.readouterr()
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--arch", "resnet18",
            "--method", "none", "--batch-size", "4", "--image-size", "32", "--val-resize", "32",
            "--epochs", "1", "--threads", "1", "--no-tensorboard"]
    assert main(argv) == 2  # DALI's reader raised a RuntimeError traceback mid-epoch
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"shard {cut} is damaged" in err, err

    shards = load_shards(data / "train", skip_bad_files=True)
    assert len(shards) == 20 and len(shards.skipped) == 4
    sources = json.loads((data / "train" / "dataset.json").read_text())["sources"]
    assert [p for p, _ in shards.skipped] == sources[16:20]  # the tail of shard 1
    assert shards.files == sources[:16] + sources[20:]
    loader = train_loader(shards, make_config("none", "cifar", image_size=32), batch_size=4)
    labels = torch.cat([lab for _, lab in loader]).tolist()
    assert Counter(labels) == Counter(shards.labels)  # every intact sample once, nothing else
    assert main([*argv, "--skip-bad-files"]) == 0

    m = make_shards(tmp_path / "src", data / "train", shard_size=10, progress=False)
    assert m["rewritten_shards"] == [str(cut)] and (m["written_shards"], m["kept_shards"]) == (1, 2)
    assert cut.read_bytes() == original and len(load_shards(data / "train")) == 24


def test_make_shards_verifies_what_it_wrote(tmp_path, monkeypatch):
    from ipmix_dali import shards as shards_module
    from ipmix_dali.tools.samples import write_jpeg_tree

    write_jpeg_tree(tmp_path / "src", classes=2, per_class=3, size=(40, 40))
    write = shards_module._write_shard

    def lossy_write(path, samples):  # a file system that drops the end of a write
        write(path, samples)
        os.truncate(path, 3000)

    monkeypatch.setattr(shards_module, "_write_shard", lossy_write)
    with pytest.raises(ValueError, match=r"shard-000000\.tar reads back damaged right after "
                                         r"writing it \(3,000 bytes"):
        make_shards(tmp_path / "src", tmp_path / "out", shard_size=4, progress=False)
