"""Every GPU entry point's Python path, run without a GPU through the CuPy stand-in (emulated
kernels, real pixels) and compared with its CPU twin: argument errors, wrong names and bad
shapes in the GPU-only code surface here, in CI, before a GPU session."""
import json

import numpy as np
import pytest

from ipmix_dali import augment
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.mixing.fractals import render_fractals
from ipmix_dali.testing import cupy_standin
from ipmix_dali.tools.samples import sample_photos


@pytest.fixture(scope="module")
def photos():
    return sample_photos(2, 32, seed=6)


def test_bench_gpu_runs(tmp_path):
    """bench-gpu's whole GPU path (the stage, the executor with float16 output, fractals)."""
    from ipmix_dali.bench.gpu import run_gpu_bench

    out = tmp_path / "gpu.json"
    with cupy_standin.installed(mode="emulate"):
        result = run_gpu_bench(("none", "ipmix"), batch=2, size=32, repeats=1, out=str(out),
                               fractal_count=1, fractal_size=32)
    assert json.loads(out.read_text())["device"]["gpu"] == "CuPy stand-in (CPU)"
    assert [(r["method"], r["jsd"]) for r in result["rows"]] == [
        ("none", False), ("ipmix", False), ("ipmix", True)]
    assert [r["views"] for r in result["stage"]] == [1, 1, 3]
    assert all(r["samples_per_s"] > 0 for r in result["rows"] + result["stage"])


def test_bench_gpu_host_only_cli(tmp_path, capsys):
    from ipmix_dali.cli import main

    out = tmp_path / "host.json"
    assert main(["bench-gpu", "--host-only", "--methods", "augmix", "--batch", "8",
                 "--size", "32", "--repeats", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["jsd"]) for r in rows] == [("augmix", False), ("augmix", True)]
    assert rows[1]["counts"]["dlpack"] == 8 + 3 * 8
    assert "device ops" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["ipmix", "layermix"])
def test_augment_on_device_arrays(photos, method):
    bank = builtin_mixing_bank(count=3, side=36, seed=2)
    want = augment(photos, bank, method=method, preset="cifar", seed=3, jsd=True)
    with cupy_standin.installed(mode="emulate"):
        import cupy

        got = augment(cupy.asarray(photos), bank, method=method, preset="cifar", seed=3,
                      jsd=True)
        assert all(isinstance(g, cupy.ndarray) for g in got)
        got = [cupy.asnumpy(g) for g in got]
    for w, g in zip(want, got):
        assert np.array_equal(w, g)


def test_augment_on_a_second_gpu_keeps_the_bank_resident_there(photos):
    """augment() on arrays of GPU 1 called from a thread whose current device is 0 (a
    BatchIPMix on cuda:1): it runs on the images' device, the mixing bank is uploaded once to
    that GPU and cropped there (later batches upload only their small tables, not ~38 MB of
    crops per ImageNet batch)."""
    bank = builtin_mixing_bank(count=3, side=36, seed=2)
    want = [augment(photos, bank, method="ipmix", preset="cifar", seed=3, iteration=i,
                    jsd=True) for i in range(2)]
    with cupy_standin.installed(mode="emulate", devices=2) as device:
        import cupy

        with cupy.cuda.Device(1):
            x = cupy.asarray(photos)
        got, uploads = [], []
        for i in range(2):
            before = device.h2d_bytes
            views = augment(x, bank, method="ipmix", preset="cifar", seed=3, iteration=i,
                            jsd=True)
            uploads.append(device.h2d_bytes - before)
            assert device.current == 0 and all(v.device_id == 1 for v in views)
            got.append([cupy.asnumpy(v) for v in views])
        assert list(bank._resident) == [(id(cupy), 1)]
        # batch 0 carries the bank; batch 1 only its tables (less than one crop batch here)
        assert uploads[0] - uploads[1] >= bank.images.nbytes
        assert uploads[1] < photos.nbytes
    for w_batch, g_batch in zip(want, got):
        for w, g in zip(w_batch, g_batch):
            assert np.array_equal(w, g)


def test_single_op_entry_points(photos):
    from ipmix_dali.executors import layermix_ops, np_ops
    from ipmix_dali.executors.cupy_layermix import apply_layermix_op_cupy, to_float_cupy
    from ipmix_dali.executors.cupy_ops import apply_pil_op_cupy
    from ipmix_dali.ops.table import LAYERMIX_OPS, PIL_OPS

    params = np.array([20.0, -7.0])
    rot, lm_rot = PIL_OPS.index("rotate"), LAYERMIX_OPS.index("rotate")
    with cupy_standin.installed(mode="emulate"):
        import cupy

        x = cupy.asarray(photos)
        got = cupy.asnumpy(apply_pil_op_cupy(rot, x, params))
        xf = to_float_cupy(x)
        got_lm = cupy.asnumpy(apply_layermix_op_cupy(lm_rot, xf, params))
        xf = cupy.asnumpy(xf)
    assert np.array_equal(got, np_ops.apply_pil_op(rot, photos, params, native=False))
    assert np.array_equal(xf, layermix_ops.to_float_np(photos))
    twin = layermix_ops.apply_layermix_op_np(lm_rot, xf, params, native=False)
    assert np.array_equal(got_lm, twin)


def test_fractals_on_the_gpu_path():
    from ipmix_dali.mixing.fractals_gpu import render_fractals_gpu

    with cupy_standin.installed(mode="emulate"):
        got = render_fractals_gpu(2, 48, seed=3)
    assert np.array_equal(got, render_fractals(2, 48, seed=3))


def test_corruptions_on_the_gpu_path(photos):
    """All 19 corruptions through corrupt(device="gpu") (the batched CuPy/cupyx path)."""
    from ipmix_dali.corruptions import ALL, corrupt

    with cupy_standin.installed(mode="emulate"):
        import cupy

        x = cupy.asarray(photos)
        got = {name: cupy.asnumpy(corrupt(x, name, 3, seed=1, device="gpu")) for name in ALL}
    for name in ALL:
        assert np.array_equal(got[name], corrupt(photos, name, 3, seed=1)), name


def test_cli_gpu_commands(tmp_path):
    """make-mixing-set and make-corrupted with --device gpu write what --device cpu writes."""
    from PIL import Image

    from ipmix_dali.cli import main
    from ipmix_dali.tools.samples import write_jpeg_tree

    src = tmp_path / "src"
    write_jpeg_tree(src, classes=1, per_class=2, size=(40, 36), seed=2)
    for device in ("cpu", "gpu"):
        with cupy_standin.installed(mode="emulate"):
            assert main(["make-mixing-set", "--out", str(tmp_path / f"mix-{device}"),
                         "--count", "2", "--size", "32", "--seed", "4", "--device",
                         device]) == 0
            assert main(["make-corrupted", "--src", str(src), "--out",
                         str(tmp_path / f"c-{device}"), "--size", "32", "--corruptions",
                         "gaussian_noise,pixelate", "--severities", "2", "--device",
                         device]) == 0
    for kind in ("mix", "c"):
        cpu = sorted(p.relative_to(tmp_path / f"{kind}-cpu")
                     for p in (tmp_path / f"{kind}-cpu").rglob("*.png"))
        cpu += sorted(p.relative_to(tmp_path / f"{kind}-cpu")
                      for p in (tmp_path / f"{kind}-cpu").rglob("*.JPEG"))
        assert cpu
        for rel in cpu:
            assert np.array_equal(np.asarray(Image.open(tmp_path / f"{kind}-cpu" / rel)),
                                  np.asarray(Image.open(tmp_path / f"{kind}-gpu" / rel)))
