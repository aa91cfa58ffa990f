"""`ipmix-dali show` and `ipmix-dali bench-executors` through main([...]) on small real data."""
import json

import numpy as np
import pytest
from PIL import Image

from ipmix_dali.cli import main
from ipmix_dali.tools.samples import sample_photos
from ipmix_dali.tools.show import _LABEL_W, load_image_folder


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    photos = sample_photos(3, 96, seed=5)
    Image.fromarray(photos[0]).save(d / "a.jpg", quality=95)
    Image.fromarray(photos[1]).save(d / "sub" / "b.png")
    Image.fromarray(photos[2]).convert("L").save(d / "c.jpg")  # grayscale -> RGB
    return d


def test_show_with_folders_writes_grid_with_clean_tiles(tmp_path, image_dir):
    out = tmp_path / "grid.png"
    rc = main(["show", "--method", "ipmix,none", "--preset", "cifar", "--images", str(image_dir),
               "--rows", "2", "--views", "3", "--out", str(out)])
    assert rc == 0
    grid = np.asarray(Image.open(out))
    tile, pad = 32 * 3, 4  # cifar crops are enlarged 3x
    assert grid.shape == (20 + 4 * (tile + pad), _LABEL_W + 4 * (tile + pad), 3)
    clean = load_image_folder(image_dir, 32, 2)
    # first column of every row is the clean crop, enlarged with NEAREST
    for row, img in enumerate([clean[0], clean[1], clean[0], clean[1]]):
        y = 20 + row * (tile + pad)
        got = grid[y:y + tile:3, _LABEL_W:_LABEL_W + tile:3]
        assert np.array_equal(got, img)
    # method "none": every view equals the clean crop up to the float round trip
    y = 20 + 2 * (tile + pad)
    for col in range(1, 4):
        x = _LABEL_W + col * (tile + pad)
        assert np.abs(grid[y:y + tile:3, x:x + tile:3].astype(int) - clean[0]).max() <= 1


def test_show_defaults_use_shipped_photos_and_builtin_set(tmp_path):
    out = tmp_path / "g.png"
    assert main(["show", "--method", "pixmix", "--preset", "cifar", "--rows", "1", "--views",
                 "2", "--out", str(out)]) == 0
    grid = np.asarray(Image.open(out))
    aug = grid[20:20 + 96, _LABEL_W + 100:_LABEL_W + 196]
    assert aug.std() > 10  # a real image, not a blank tile


def test_show_errors_are_one_line(tmp_path, image_dir, capsys):
    rc = main(["show", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "missing" in err and "--images" in err
    (image_dir / "broken.jpg").write_bytes(open(image_dir / "a.jpg", "rb").read()[:300])
    rc = main(["show", "--preset", "cifar", "--images", str(image_dir), "--rows", "5",
               "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "broken.jpg" in err and "--skip-bad-files" in err and "\n" not in err
    rc = main(["show", "--preset", "cifar", "--method", "none", "--images", str(image_dir),
               "--rows", "5", "--skip-bad-files", "--out", str(tmp_path / "x.png")])
    assert rc == 0
    rc = main(["show", "--mixing-set", str(tmp_path / "nothing"), "--method", "ipmix",
               "--out", str(tmp_path / "y.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "nothing" in err and "\n" not in err


def test_bench_executors_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["bench-executors", "--methods", "none,ipmix", "--preset", "cifar", "--batch", "4",
               "--repeats", "1", "--jsd", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = {(r["method"], r["jsd"]): r for r in result["rows"]}
    assert set(rows) == {("none", False), ("ipmix", False), ("ipmix", True)}
    for r in rows.values():
        assert r["reference_ms_per_image"] > 0 and r["numpy_ms_per_image"] > 0
        assert r["speedup"] == pytest.approx(r["reference_ms_per_image"] / r["numpy_ms_per_image"],
                                             rel=0.02)
    assert result["image_size"] == 32 and result["machine"]["logical_cores"] >= 1
    assert result["machine"]["versions"]["numpy"] == np.__version__


def test_make_mixing_set_writes_resumable_deterministic_files(tmp_path, capsys):
    from ipmix_dali.mixing.bank import load_mixing_bank
    from ipmix_dali.mixing.fractals import render_fractals

    out = tmp_path / "fractals"
    assert main(["make-mixing-set", "--out", str(out), "--count", "3", "--size", "48",
                 "--seed", "9"]) == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"fractal_9_{i:06d}.png" for i in range(3)]
    expected = render_fractals(3, 48, seed=9)
    for i, f in enumerate(files):
        assert np.array_equal(np.asarray(Image.open(f)), expected[i])  # PNG: lossless
    # resume: existing files are kept, only the missing one is rendered
    files[1].unlink()
    mtime0 = files[0].stat().st_mtime_ns
    assert main(["make-mixing-set", "--out", str(out), "--count", "3", "--size", "48",
                 "--seed", "9"]) == 0
    assert "wrote 1 fractals" in capsys.readouterr().out
    assert files[0].stat().st_mtime_ns == mtime0
    assert np.array_equal(np.asarray(Image.open(files[1])), expected[1])
    assert not list(out.glob("*.tmp"))
    # the folder is a mixing set
    bank = load_mixing_bank(out, side=48, cache_dir=tmp_path / "cache")
    assert len(bank) == 3 and np.array_equal(bank.images[2], expected[2])
    assert main(["make-mixing-set", "--out", str(out), "--device", "gpu", "--count", "1"]) == 2


def test_bench_gpu_without_gpu_is_a_one_line_error(tmp_path, capsys):
    try:
        import cupy

        cupy.zeros(1)
        pytest.skip("a GPU is present")
    except Exception:
        pass
    rc = main(["bench-gpu", "--out", str(tmp_path / "g.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no usable CUDA GPU" in err and "\n" not in err
    assert not (tmp_path / "g.json").exists()


def test_bench_rows_json_and_chart(tmp_path, capsys):
    """`ipmix-dali bench` on a small generated tree: a row per (backend, method), JSON + PNG."""
    from ipmix_dali.tools.samples import write_jpeg_tree

    data = write_jpeg_tree(tmp_path / "data", classes=2, per_class=8, size=(200, 150), seed=3)
    out = tmp_path / "bench.json"
    rc = main(["bench", "--methods", "none,ipmix", "--backends", "reference,dali-cpu,dali-gpu",
               "--batch-size", "4", "--batches", "4", "--workers", "1", "--threads", "1",
               "--data", data, "--jsd", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = {(r["backend"], r["method"]): r for r in result["rows"]}
    assert set(rows) == {(b, m) for b in ("reference", "dali-cpu", "dali-gpu")
                         for m in ("none", "ipmix")}
    for b in ("reference", "dali-cpu"):
        r = rows[(b, "ipmix")]
        assert r["jsd"] is True and r["samples"] % 4 == 0 and r["samples"] > 0
        assert r["images_per_s"] == pytest.approx(3 * r["samples_per_s"], rel=1e-3)
        assert 0 < r["cpu_cores_used"] < 8 and r["peak_host_rss_mib"] > 50
    assert rows[("reference", "none")]["jsd"] is False  # nothing to make views of
    assert "no CUDA GPU" in rows[("dali-gpu", "ipmix")]["error"]
    assert "dali-cpu/reference ipmix per core" in result["ratios"]
    assert result["machine"]["versions"]["nvidia.dali"]
    chart = Image.open(result["chart"])
    assert chart.format == "PNG" and chart.size[0] > 300
    assert "samples/s" in capsys.readouterr().out


def test_bench_train_compares_pipeline_with_synthetic(tmp_path, capsys):
    """`ipmix-dali bench-train` on the CPU, tiny: both runs time their second half of steps."""
    out = tmp_path / "train.json"
    rc = main(["bench-train", "--device", "cpu", "--arch", "resnet18", "--batch-size", "4",
               "--images", "40", "--image-size", "64", "--amp", "none", "--threads", "1",
               "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert set(r["rows"]) == {"synthetic", "pipeline"} and r["train_images"] == 40
    for row in r["rows"].values():
        assert row["timed_steps"] >= 4 and row["steps_per_s"] > 0
        assert row["images_per_s"] == pytest.approx(4 * row["steps_per_s"])
    assert r["pipeline_over_synthetic"] == pytest.approx(
        r["rows"]["pipeline"]["steps_per_s"] / r["rows"]["synthetic"]["steps_per_s"], rel=1e-2)
    assert "target 0.95" in capsys.readouterr().out
