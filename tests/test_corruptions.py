"""ImageNet-C-style corruptions: deterministic ones against independent reference formulas,
random ones by their statistics per severity, seeding, and make-corrupted's files."""
import colorsys
import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ipmix_dali.corruptions import ALL, STANDARD, corrupt, preset_for
from ipmix_dali.corruptions.params import CIFAR, IMAGENET
from ipmix_dali.tools.samples import sample_photos


@pytest.fixture(scope="module")
def photos():
    return sample_photos(3, 64, seed=4, min_scale=0.3)


def _close(got, want, tol=1):
    diff = np.abs(got.astype(np.int64) - np.asarray(want, np.int64))
    assert diff.max() <= tol, diff.max()
    return diff


def test_contrast_formula(photos):
    for s, c in enumerate(IMAGENET["contrast"], 1):
        x = photos / 255.0
        m = x.mean(axis=(1, 2), keepdims=True)
        want = np.uint8(np.clip((x - m) * c + m, 0, 1) * 255)
        assert np.array_equal(corrupt(photos, "contrast", s, preset="imagenet"), want)


def test_brightness_and_saturate_match_colorsys(photos):
    img = photos[0][:16, :16]
    for name, field in (("brightness", 2), ("saturate", 1)):
        for s in range(1, 6):
            c = IMAGENET[name][s - 1]
            want = np.empty(img.shape)
            for (i, j), px in np.ndenumerate(img[..., 0]):
                hsv = list(colorsys.rgb_to_hsv(*(img[i, j] / 255.0)))
                if name == "brightness":
                    hsv[2] = min(max(hsv[2] + c, 0), 1)
                else:
                    hsv[1] = min(max(hsv[1] * c[0] + c[1], 0), 1)
                want[i, j] = np.clip(colorsys.hsv_to_rgb(*hsv), 0, 1) * 255
            _close(corrupt(img, name, s, preset="imagenet"), np.uint8(want))


def test_pixelate_and_jpeg_are_the_pil_calls(photos):
    img = photos[1]
    for s in range(1, 6):
        c = IMAGENET["pixelate"][s - 1]
        pil = Image.fromarray(img)
        want = pil.resize((int(64 * c), int(64 * c)), Image.BOX).resize((64, 64), Image.BOX)
        assert np.array_equal(corrupt(img, "pixelate", s, preset="imagenet"), np.asarray(want))
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=IMAGENET["jpeg_compression"][s - 1])
        want = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        assert np.array_equal(corrupt(img, "jpeg_compression", s, preset="imagenet"), want)


def _cv_gauss(sigma, n):
    k = np.exp(-(np.arange(n) - (n - 1) / 2) ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def test_defocus_blur_is_an_antialiased_disk(photos):
    img = photos[2]
    for s in range(1, 6):
        radius, alias = IMAGENET["defocus_blur"][s - 1]
        # a 17 x 17 grid and a 3-tap anti-alias blur up to radius 8, then (2r+1)^2 and 5 taps
        grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
        xx, yy = np.meshgrid(grid, grid)
        disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
        disk /= disk.sum()
        g = _cv_gauss(alias, 3 if radius <= 8 else 5)
        kernel = ndimage.correlate1d(ndimage.correlate1d(disk, g, 0, mode="mirror"), g, 1,
                                     mode="mirror")
        x = img / 255.0
        want = np.stack([ndimage.correlate(x[..., d], kernel, mode="mirror") for d in range(3)],
                        axis=2)
        _close(corrupt(img, "defocus_blur", s, preset="imagenet"),
               np.uint8(np.clip(want, 0, 1) * 255))


def test_noise_statistics_per_severity():
    grey = np.full((8, 48, 48, 3), 102, np.uint8)  # 0.4: no clipping at the low severities
    x = 102 / 255
    for s in range(1, 6):
        g = corrupt(grey, "gaussian_noise", s, preset="imagenet") / 255.0
        c = IMAGENET["gaussian_noise"][s - 1]
        if c <= 0.12:
            assert g.std() == pytest.approx(c, rel=0.05) and g.mean() == pytest.approx(x, abs=0.01)
        lam = IMAGENET["shot_noise"][s - 1]
        sh = corrupt(grey, "shot_noise", s, preset="imagenet") / 255.0
        if lam >= 12:
            assert sh.var() == pytest.approx(x / lam, rel=0.1)  # Poisson: var = x / c
        imp = corrupt(grey, "impulse_noise", s, preset="imagenet")
        assert (imp != 102).mean() == pytest.approx(IMAGENET["impulse_noise"][s - 1], rel=0.1)
        assert set(np.unique(imp)) <= {0, 102, 255}
        sp = corrupt(grey, "speckle_noise", s, preset="imagenet") / 255.0
        cs = IMAGENET["speckle_noise"][s - 1]
        if cs <= 0.35:
            assert sp.std() == pytest.approx(x * cs, rel=0.06)


def test_blur_kernel_energy_and_spread():
    delta = np.zeros((1, 65, 65, 3), np.uint8)
    delta[0, 32, 32] = 255
    from ipmix_dali.corruptions.ops import OPS

    spreads = []
    yy = np.mgrid[:65, :65][0]
    for s in range(1, 6):
        sigma = IMAGENET["gaussian_blur"][s - 1]
        # before the uint8 truncation (which cuts the faint tails): energy kept, variance sigma^2
        b = OPS["gaussian_blur"](delta[0], sigma, None)[..., 0]
        assert b.sum() == pytest.approx(255.0, rel=1e-3 if sigma < 6 else 2e-2)
        var = (b / b.sum() * (yy - 32) ** 2).sum()
        assert var == pytest.approx(sigma ** 2, rel=0.03)
        big = np.zeros((129, 129, 3), np.uint8)  # room for the longest streak (41 px)
        big[64, 64] = 255
        m = OPS["motion_blur"](big, IMAGENET["motion_blur"][s - 1], np.random.default_rng(s))
        assert m.sum() == pytest.approx(3 * 255.0, rel=1e-6)  # a normalised kernel, 3 channels
        spreads.append(var)
    assert spreads == sorted(spreads)  # wider at every severity


def test_seeding_batches_and_presets(photos):
    for name in ALL:
        a = corrupt(photos, name, 3, seed=7)
        assert a.dtype == np.uint8 and a.shape == photos.shape
        assert np.array_equal(a, corrupt(photos, name, 3, seed=7))                 # same seed
        one = corrupt(photos[1:2], name, 3, seed=7, indices=[1])
        assert np.array_equal(a[1:2], one)                                        # per image
    random_ones = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                   "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform")
    for name in random_ones:
        assert not np.array_equal(corrupt(photos, name, 3, seed=7),
                                  corrupt(photos, name, 3, seed=8)), name
    assert preset_for(32) == "cifar" and preset_for(224) == "imagenet"
    small = sample_photos(2, 32, seed=1)
    c_cifar = corrupt(small, "contrast", 1)
    x = small / 255.0
    m = x.mean(axis=(1, 2), keepdims=True)
    assert np.array_equal(c_cifar, np.uint8(np.clip((x - m) * CIFAR["contrast"][0] + m, 0, 1)
                                            * 255))
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(small, "rain", 1)
    with pytest.raises(ValueError, match="severity must be 1-5"):
        corrupt(small, "fog", 6)


def test_matches_imagecorruptions_where_the_algorithms_agree():
    from ipmix_dali.corruptions.fidelity import compare, load_imagecorruptions

    if load_imagecorruptions() is None:
        pytest.skip("imagecorruptions not installed (docs/corruptions.md has the full table)")
    x = sample_photos(1, 224, seed=0)
    same = ("gaussian_noise", "shot_noise", "defocus_blur", "zoom_blur", "fog", "brightness",
            "contrast", "pixelate", "jpeg_compression", "speckle_noise", "gaussian_blur",
            "saturate")
    res = compare(x, same, log=lambda m: None)
    assert all(r["identical"] == 1.0 for r in res["rows"]), [
        (r["corruption"], r["severity"]) for r in res["rows"] if r["identical"] < 1]


def test_make_corrupted_layout_resume_and_in_memory_twin(tmp_path, capsys):
    from ipmix_dali.cli import main
    from ipmix_dali.corruptions.make import corrupted_arrays, preprocess
    from ipmix_dali.tools.samples import write_jpeg_tree

    src = write_jpeg_tree(tmp_path / "src", classes=2, per_class=2, size=(80, 60), seed=2)
    out = tmp_path / "c"
    args = ["make-corrupted", "--src", src, "--out", str(out), "--corruptions",
            "fog,pixelate", "--severities", "2-3", "--size", "32"]
    assert main(args) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.JPEG"))
    assert len(files) == 2 * 2 * 4 and files[0] == "fog/2/n00000000/img_0000.JPEG"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["written"] == 16 and manifest["preset"] == "cifar"
    assert "Not the canonical ImageNet-C" in (out / "README.txt").read_text()
    assert main(args) == 0
    assert json.loads((out / "manifest.json").read_text())["written"] == 0  # resumed: kept
    # the in-memory twin gives the pixels of the written files
    x = preprocess(os.path.join(src, "n00000001", "img_0001.JPEG"), 32)
    mem = corrupted_arrays(x[None], "fog", 3, seed=0, indices=[3])
    disk = np.asarray(Image.open(out / "fog" / "3" / "n00000001" / "img_0001.JPEG"))
    assert np.array_equal(mem[0], disk)
    assert main(["make-corrupted", "--src", src, "--out", str(out), "--corruptions",
                 "rain"]) == 2
    assert "unknown corruption" in capsys.readouterr().err


def test_standard_list_is_imagenet_c_order():
    assert STANDARD[:3] == ("gaussian_noise", "shot_noise", "impulse_noise")
    assert len(STANDARD) == 15 and len(ALL) == 19


@pytest.mark.parametrize("name", ALL)
def test_batched_twin_equals_per_image_corruptions(photos224, name):
    """The GPU code path run with NumPy/SciPy gives the per-image corruptions' pixels exactly
    (same draws, same float operations), at ImageNet and CIFAR sizes."""
    from ipmix_dali.corruptions.batched import corrupt_batched

    small = sample_photos(3, 32, seed=5)
    for images, preset in ((photos224, "imagenet"), (small, "cifar")):
        for s in (1, 3, 5):
            want = corrupt(images, name, s, seed=2, indices=[5, 6, 7], preset=preset)
            got = corrupt_batched(images, name, s, seed=2, indices=[5, 6, 7], preset=preset)
            assert got.dtype == np.uint8 and np.array_equal(got, want), (name, preset, s)


class _NumpyUnderAnotherName:
    """NumPy, but not ``numpy`` itself: the batched code then takes its CuPy branches (the
    one-kernel gathers, the copy to the host for shot noise and JPEG). It checks our branch
    logic on the CPU; CuPy's own functions are only checked by the ``gpu`` tests."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asnumpy(a):
        return np.asarray(a)


def test_device_branches_of_the_batched_code_give_the_same_pixels(photos):
    from scipy import ndimage

    from ipmix_dali.corruptions import image_rng
    from ipmix_dali.corruptions.batched import _OPS

    xp = _NumpyUnderAnotherName()
    for name in ALL:
        want = corrupt(photos, name, 4, seed=9, preset="imagenet")
        gens = [image_rng(9, i, name, 4) for i in range(len(photos))]
        got = _OPS[name](photos, IMAGENET[name][3], gens, xp, ndimage).astype(np.uint8)
        assert np.array_equal(got, want), name


def _glass_loop(offsets, h, w, delta):
    """The reference's sweeps, literally: pixel by pixel, bottom-right to top-left."""
    index = np.arange(h * w).reshape(h, w)
    for sweep in offsets:
        for i, r in enumerate(range(h - delta, delta, -1)):
            for j, col in enumerate(range(w - delta, delta, -1)):
                dx, dy = sweep[i, j]
                index[r, col] = index[r + dy, col + dx]
    return index.ravel()


def test_glass_sources_follow_the_sequential_sweeps():
    from ipmix_dali.corruptions.ops import glass_offsets, glass_sources

    rng = np.random.default_rng(0)
    for h, w, delta, iterations in ((9, 9, 1, 1), (20, 13, 2, 3), (40, 40, 4, 2), (5, 5, 2, 1),
                                    (6, 30, 3, 2)):
        offsets = np.stack([glass_offsets(rng, h, w, delta, iterations) for _ in range(3)])
        got = glass_sources(offsets, h, w, delta)
        for k in range(3):
            assert np.array_equal(got[k], _glass_loop(offsets[k], h, w, delta)), (h, w, delta)


def test_frost_texture_is_a_bright_cold_layer():
    from ipmix_dali.corruptions.ops import frost_texture

    t = np.stack([frost_texture(np.random.default_rng(i), 224, 224) for i in range(4)])
    r, g, b = (t[..., k].astype(float) for k in range(3))
    assert np.all(b >= g) and np.all(g >= r)  # blue-white tint on every pixel
    assert 0.45 < b.mean() / 255 < 0.8 and (b >= 250).mean() > 0.01  # haze plus bright crystals
    assert not np.array_equal(t[0], t[1])


@pytest.mark.gpu
@pytest.mark.parametrize("name", ALL)
def test_gpu_corruptions_equal_cpu(photos, photos224, name):
    import cupy

    for images in (photos, photos224):  # CIFAR parameters at 64 px, ImageNet's at 224
        for s in (1, 5):
            want = corrupt(images, name, s, seed=3)
            got = cupy.asnumpy(corrupt(cupy.asarray(images), name, s, seed=3, device="gpu"))
            diff = np.abs(got.astype(int) - want)
            where = (name, images.shape[1], s)
            assert diff.max() <= 1 and (diff == 0).mean() >= 0.999, where
            if name in GPU_EXACT:  # elementwise IEEE operations, gathers, integer arithmetic
                assert np.array_equal(got, want), where


# no reductions or float filters whose summation order the GPU may change
GPU_EXACT = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "motion_blur",
             "pixelate", "jpeg_compression")


@pytest.mark.gpu
def test_gpu_glass_sources_equal_the_host_ones():
    import cupy

    from ipmix_dali.corruptions.ops import glass_offsets, glass_sources

    rng = np.random.default_rng(1)
    offsets = np.stack([glass_offsets(rng, 224, 224, 4, 2) for _ in range(4)])
    got = glass_sources(cupy.asarray(offsets), 224, 224, 4, cupy)
    assert np.array_equal(cupy.asnumpy(got), glass_sources(offsets, 224, 224, 4))


def test_make_corrupted_gpu_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    from ipmix_dali.cli import main
    from ipmix_dali.device import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    rc = main(["make-corrupted", "--src", str(tmp_path), "--out", str(tmp_path / "o"),
               "--device", "gpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "GPU" in err and err.count("\n") == 1


@pytest.mark.gpu
def test_make_corrupted_gpu_writes_the_cpu_pixels(tmp_path):
    from ipmix_dali.corruptions.make import make_corrupted
    from ipmix_dali.tools.samples import write_jpeg_tree

    src = write_jpeg_tree(tmp_path / "src", classes=2, per_class=3, size=(80, 60), seed=2)
    names = ["gaussian_noise", "contrast", "fog"]
    make_corrupted(src, tmp_path / "cpu", names, [2, 4], size=32, progress=False)
    make_corrupted(src, tmp_path / "gpu", names, [2, 4], size=32, progress=False, device="gpu")
    for p in (tmp_path / "cpu").rglob("*.JPEG"):
        a = np.asarray(Image.open(p)).astype(int)
        b = np.asarray(Image.open(tmp_path / "gpu" / p.relative_to(tmp_path / "cpu"))).astype(int)
        assert np.abs(a - b).max() <= 3  # a 1-level difference can move a few JPEG values


def test_fidelity_table_has_a_gpu_column_only_when_measured():
    from ipmix_dali.corruptions.fidelity import markdown

    rows = [{"corruption": "fog", "severity": s, "identical": 1.0, "mad": 0.0,
             "psnr": float("inf"), "ms_ours": 1.5, "ms_imagecorruptions": 2.0}
            for s in range(1, 6)]
    cpu = markdown({"rows": rows, "gpu": None})
    assert "| fog | 100.0 % / 0.00 / inf |" in cpu and "| 1.5 | 2.0 |" in cpu
    assert "GPU speed: unmeasured" in cpu and "GPU (batch 64)" not in cpu
    gpu = markdown({"rows": rows, "gpu": {"ms_per_image_batch64": {"fog": 0.04}}})
    assert "| 1.5 | 2.0 | 0.04 |" in gpu and "unmeasured" not in gpu
    assert gpu.splitlines()[1].count("|---") == 10


def test_shifts_repeat_the_edges_on_both_branches():
    from ipmix_dali.corruptions.ops import shifted

    x = np.random.default_rng(0).integers(0, 256, (2, 37, 23, 3), dtype=np.uint8)
    for dx in range(-22, 23, 3):
        for dy in range(-36, 37, 5):
            d = (np.array([dx, -dy]), np.array([dy, -dx]))
            got = shifted(x, *d)
            assert np.array_equal(got, shifted(x, *d, _NumpyUnderAnotherName()))
            for k in range(2):
                r = np.clip(np.arange(37) - d[1][k], 0, 36)
                c = np.clip(np.arange(23) - d[0][k], 0, 22)
                assert np.array_equal(got[k], x[k][r][:, c]), (dx, dy, k)


def test_make_cifar_c_layout_values_resume_and_eval_reads_it(tmp_path, capsys):
    import torch

    from ipmix_dali.cli import main
    from ipmix_dali.corruptions.cifar_c import load_test_images
    from ipmix_dali.eval.cifar import evaluate_cifar_c as _cifar_c

    images = sample_photos(6, 32, seed=3)
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "test.npz", images=images, labels=labels)
    out = tmp_path / "c"
    args = ["make-corrupted", "--layout", "cifar-c", "--src", str(tmp_path / "test.npz"),
            "--out", str(out), "--corruptions", "fog,glass_blur", "--seed", "4"]
    assert main(args) == 0 and "CIFAR-C-style" in capsys.readouterr().out
    assert np.array_equal(np.load(out / "labels.npy"), np.tile(labels, 5).astype(np.uint8))
    for name in ("fog", "glass_blur"):
        data = np.load(out / f"{name}.npy")
        assert data.shape == (30, 32, 32, 3) and data.dtype == np.uint8
        for s in range(1, 6):  # severity-major, the corrupted pixels themselves (no JPEG)
            want = corrupt(images, name, s, seed=4, preset="cifar")
            assert np.array_equal(data[(s - 1) * 6:s * 6], want), (name, s)
    before = (out / "fog.npy").stat().st_mtime_ns
    assert main(args) == 0 and "(2 already there)" in capsys.readouterr().out  # resumes
    assert (out / "fog.npy").stat().st_mtime_ns == before
    assert main(args[:-1] + ["5"]) == 2  # another seed into the same folder: refused
    assert "other seed" in capsys.readouterr().err

    # an ImageFolder of 32 px PNGs gives the same images as the .npz
    for i, (img, y) in enumerate(zip(images, labels)):
        folder = tmp_path / "tree" / f"class{y}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    got, got_labels, _ = load_test_images(tmp_path / "tree")
    order = np.argsort([f"class{y}/{i}" for i, y in enumerate(labels)], kind="stable")
    assert np.array_equal(got, images[order]) and np.array_equal(got_labels, labels[order])

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32 * 3, 3)).eval()
    res = _cifar_c(model, str(out), "cpu", 8, log=lambda m: None)
    assert sorted(res["per_corruption"]) == ["fog", "glass_blur"] and len(res["missing"]) == 13
    x = torch.from_numpy(np.load(out / "fog.npy")).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    wrong = (model(x).argmax(1).numpy() != np.tile(labels, 5)).mean()
    assert res["per_corruption"]["fog"] == pytest.approx(100 * wrong)
