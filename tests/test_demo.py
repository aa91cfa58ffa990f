"""The demo's pieces: the digits ImageFolder and the corruption subset's formulas."""
import numpy as np
import pytest
from PIL import Image

from ipmix_dali.datasets import scan_image_folder
from ipmix_dali.demo import DEMO_CORRUPTIONS, corrupt, write_digits_folder


def test_digits_folder_split_and_pixels(tmp_path):
    counts = write_digits_folder(tmp_path, seed=0)
    assert counts == {"train": 1438, "val": 359} and sum(counts.values()) == 1797
    train, val = scan_image_folder(tmp_path / "train"), scan_image_folder(tmp_path / "val")
    assert train.classes == val.classes == [str(d) for d in range(10)]
    assert not set(map(lambda p: p.rsplit("/", 1)[1], train.files)) & set(
        map(lambda p: p.rsplit("/", 1)[1], val.files))  # disjoint scans
    img = np.asarray(Image.open(val.files[0]))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert img.max() > 200 and img.min() < 30  # ink on paper, not blank
    assert write_digits_folder(tmp_path, seed=0) == counts  # rerun keeps the files


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)


def test_contrast_is_the_imagenet_c_formula(batch):
    x = batch.astype(np.float64) / 255
    for s, c in enumerate(DEMO_CORRUPTIONS["contrast"], 1):
        m = x.mean(axis=(1, 2, 3), keepdims=True)
        want = np.round(np.clip((x - m) * c + m, 0, 1) * 255)
        assert np.array_equal(corrupt(batch, "contrast", s), want.astype(np.uint8))


def test_noise_statistics_and_monotone_severities(batch):
    grey = np.full((8, 64, 64, 3), 128, np.uint8)
    stds = []
    for s, c in enumerate(DEMO_CORRUPTIONS["gaussian_noise"], 1):
        noise = corrupt(grey, "gaussian_noise", s).astype(np.float64) / 255 - 128 / 255
        stds.append(noise.std())
        if c <= 0.18:  # clipping at 0 and 1 is negligible below 2.8 sigma
            assert noise.std() == pytest.approx(c, rel=0.05)
    assert stds == sorted(stds)
    diffs = [np.abs(corrupt(batch, name, s).astype(int) - batch).mean()
             for name in ("gaussian_blur", "pixelate", "jpeg_compression") for s in (1, 5)]
    for lo, hi in zip(diffs[::2], diffs[1::2]):
        assert hi > lo  # severity 5 changes more than severity 1
    assert np.array_equal(corrupt(batch, "gaussian_noise", 3, seed=1),
                          corrupt(batch, "gaussian_noise", 3, seed=1))
