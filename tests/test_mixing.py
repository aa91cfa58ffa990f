"""Mixing-picture banks (folder -> cached memmap) and the built-in fractal mixing set."""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ipmix_dali.mixing import bank as bank_module
from ipmix_dali.mixing.bank import MixingBank, bank_from_array, load_mixing_bank
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.mixing.fractals import _sample_singular_values, render_fractals, sample_ifs

SIDE = 64


@pytest.fixture(scope="module")
def photos():
    from sklearn.datasets import load_sample_images

    return [np.ascontiguousarray(img) for img in load_sample_images().images]  # 427x640 each


def _crop(photos, k, top, left, h, w):
    return photos[k][top:top + h, left:left + w]


def _jpeg_bytes(arr, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path, photos):
    """Pictures of every common mode, nested folders, a hidden picture and a text file."""
    root = tmp_path / "mix"
    (root / "a" / "b").mkdir(parents=True)
    Image.fromarray(_crop(photos, 0, 50, 80, 150, 110)).save(root / "a" / "photo1.jpg", quality=92)
    Image.fromarray(_crop(photos, 1, 100, 200, 90, 170)).save(root / "a" / "b" / "photo2.png")
    Image.fromarray(_crop(photos, 0, 200, 300, 120, 96)).convert("L").save(root / "gray.png")
    Image.fromarray(_crop(photos, 1, 10, 10, 100, 130)).convert("CMYK").save(root / "cmyk.jpg")
    rgba = Image.fromarray(_crop(photos, 0, 250, 400, 80, 120)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(120, dtype=np.uint8) * 2, (80, 1))))
    rgba.save(root / "rgba.png")
    # Smaller than SIDE: upscaled.
    Image.fromarray(_crop(photos, 1, 300, 300, 40, 50)).convert("P", palette=Image.ADAPTIVE).save(
        root / "pal.gif")
    Image.fromarray(_crop(photos, 0, 0, 0, 70, 70)).save(root / ".hidden.jpg")
    (root / "notes.txt").write_text("not a picture\n")
    return root


EXPECTED_ORDER = ["a/b/photo2.png", "a/photo1.jpg", "cmyk.jpg", "gray.png", "pal.gif", "rgba.png"]


def _reference_entry(path, side):
    """Shorter side -> side (PIL BILINEAR, torchvision sizing), then a centre crop."""
    with Image.open(path) as img:
        img = img.convert("RGB")
    w, h = img.size
    nw, nh = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
    img = img.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - side) / 2)), int(round((nw - side) / 2))
    return np.asarray(img)[top:top + side, left:left + side]


def _no_temp_files(cache: Path):
    return [p.name for p in cache.iterdir() if p.name.startswith(".") or "tmp" in p.name]


# ---------------------------------------------------------------------------------------------
# Building a bank

def test_bank_shape_order_and_pixels(image_folder, tmp_path):
    bank = load_mixing_bank(image_folder, side=SIDE, cache_dir=tmp_path / "cache")
    assert len(bank) == 6 and bank.side == SIDE
    assert bank.images.shape == (6, SIDE, SIDE, 3) and bank.images.dtype == np.uint8
    assert bank.paths == [str(image_folder / p) for p in EXPECTED_ORDER]
    assert bank.skipped == []
    for i, rel in enumerate(EXPECTED_ORDER):
        np.testing.assert_array_equal(bank.images[i], _reference_entry(image_folder / rel, SIDE),
                                      err_msg=rel)
    # The entries are not trivially equal to one another (real, distinct content).
    assert len({bank.images[i].tobytes() for i in range(6)}) == 6
    assert all(bank.images[i].std() > 10 for i in range(6))


def test_entries_match_torchvision_resize_centercrop(image_folder, tmp_path):
    T = pytest.importorskip("torchvision.transforms")
    bank = load_mixing_bank(image_folder, side=SIDE, cache_dir=tmp_path / "cache")
    tf = T.Compose([T.Resize(SIDE), T.CenterCrop(SIDE)])
    for i, rel in enumerate(EXPECTED_ORDER):
        with Image.open(image_folder / rel) as img:
            ref = np.asarray(tf(img.convert("RGB")))
        np.testing.assert_array_equal(bank.images[i], ref, err_msg=rel)


def test_deterministic_across_workers_and_folders(image_folder, tmp_path):
    one = load_mixing_bank(image_folder, side=SIDE, cache_dir=tmp_path / "c1", workers=1)
    two = load_mixing_bank(image_folder, side=SIDE, cache_dir=tmp_path / "c2", workers=2)
    np.testing.assert_array_equal(np.asarray(one.images), np.asarray(two.images))
    assert one.paths == two.paths
    assert bank_module.list_candidate_files(image_folder) == EXPECTED_ORDER


def test_16bit_grey_is_scaled_to_8_bits(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    a16 = (np.arange(SIDE * SIDE, dtype=np.uint32).reshape(SIDE, SIDE) * 16).astype(np.uint16)
    Image.fromarray(a16).save(folder / "g16.png")
    with Image.open(folder / "g16.png") as img:
        assert img.mode.startswith("I")
    bank = load_mixing_bank(folder, side=SIDE, cache_dir=tmp_path / "cache")
    expected = (a16 >> 8).astype(np.uint8)
    np.testing.assert_array_equal(bank.images[0], np.repeat(expected[..., None], 3, axis=2))


# ---------------------------------------------------------------------------------------------
# Cache

def test_cache_is_reused_without_decoding(image_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    built = np.array(first.images)
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cached bank was decoded again")

    monkeypatch.setattr(Image, "open", no_decoding)
    second = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    assert second.cache_path == first.cache_path
    np.testing.assert_array_equal(np.asarray(second.images), built)
    assert second.paths == first.paths


def test_cache_invalidated_by_change_and_side(image_folder, tmp_path, photos):
    cache = tmp_path / "cache"
    first = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    # Another side is another bank.
    other = load_mixing_bank(image_folder, side=SIDE + 8, cache_dir=cache)
    assert other.cache_path != first.cache_path and other.side == SIDE + 8
    # Rewrite one picture with different content (and a different mtime).
    target = image_folder / "gray.png"
    Image.fromarray(_crop(photos, 1, 0, 0, 120, 96)).convert("L").save(target)
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    changed = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    assert changed.cache_path != first.cache_path
    i = EXPECTED_ORDER.index("gray.png")
    np.testing.assert_array_equal(changed.images[i], _reference_entry(target, SIDE))
    assert not np.array_equal(changed.images[i], first.images[i])
    # A new file is a change too.
    Image.fromarray(_crop(photos, 0, 5, 5, 80, 80)).save(image_folder / "a" / "new.png")
    grown = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    assert len(grown) == 7 and grown.paths[1] == str(image_folder / "a" / "new.png")
    assert _no_temp_files(cache) == []


def test_incomplete_cache_is_rebuilt(image_folder, tmp_path):
    cache = tmp_path / "cache"
    first = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    expected = np.array(first.images)
    manifest = Path(first.cache_path).with_suffix(".json")
    # A crash before the manifest was written: .npy present, no manifest.
    manifest.unlink()
    again = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(again.images), expected)
    assert manifest.exists()
    # A manifest that does not match its array (truncated .npy) is not trusted.
    del first, again
    Path(manifest.with_suffix(".npy")).write_bytes(b"garbage")
    third = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(third.images), expected)
    assert _no_temp_files(cache) == []


def test_default_cache_dir_from_environment(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("IPMIX_DALI_CACHE", str(tmp_path / "envcache"))
    bank = load_mixing_bank(image_folder, side=SIDE)
    assert Path(bank.cache_path).parent == tmp_path / "envcache"
    assert bank_module.default_cache_dir() == tmp_path / "envcache"


def test_progress_goes_to_stderr(image_folder, tmp_path, capsys):
    load_mixing_bank(image_folder, side=SIDE, cache_dir=tmp_path / "cache", progress=True)
    assert "6/6" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Errors

def _truncated_jpeg(path: Path, arr):
    data = _jpeg_bytes(arr)
    path.write_bytes(data[: len(data) // 2])


def test_truncated_jpeg_raises_one_line_naming_file(image_folder, tmp_path, photos):
    cache = tmp_path / "cache"
    bad = image_folder / "a" / "broken.jpg"
    _truncated_jpeg(bad, _crop(photos, 0, 0, 0, 200, 200))
    with pytest.raises(ValueError) as info:
        load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(bad) in msg and "--skip-bad-files" in msg and "1 unreadable file" in msg
    # Nothing half-written is left behind and nothing is cached.
    assert list(cache.iterdir()) == []


def test_many_bad_files_are_all_counted(tmp_path, photos):
    folder = tmp_path / "mix"
    folder.mkdir()
    Image.fromarray(_crop(photos, 0, 0, 0, 80, 80)).save(folder / "good.png")
    for i in range(7):
        (folder / f"bad{i}.jpg").write_bytes(b"this is not a jpeg" * (i + 1))
    with pytest.raises(ValueError) as info:
        load_mixing_bank(folder, side=SIDE, cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert "\n" not in msg and "7 unreadable files" in msg and "and 2 more" in msg
    assert all(str(folder / f"bad{i}.jpg") in msg for i in range(5))
    assert str(folder / "bad6.jpg") not in msg


def test_skip_bad_files_counts_and_warns(image_folder, tmp_path, photos, caplog):
    cache = tmp_path / "cache"
    broken = image_folder / "a" / "broken.jpg"
    _truncated_jpeg(broken, _crop(photos, 1, 0, 0, 200, 200))
    (image_folder / "fake.png").write_bytes(b"\x89PNG not really")
    with caplog.at_level(logging.WARNING, logger="ipmix_dali.mixing"):
        bank = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache, skip_bad_files=True)
    assert len(bank) == 6 and bank.images.shape == (6, SIDE, SIDE, 3)
    assert bank.paths == [str(image_folder / p) for p in EXPECTED_ORDER]
    assert sorted(p for p, _ in bank.skipped) == [str(broken), str(image_folder / "fake.png")]
    records = [r for r in caplog.records if r.name == "ipmix_dali.mixing"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "skipped 2" in records[0].getMessage() and "\n" not in records[0].getMessage()
    for i, rel in enumerate(EXPECTED_ORDER):
        np.testing.assert_array_equal(bank.images[i], _reference_entry(image_folder / rel, SIDE))
    assert _no_temp_files(cache) == []
    # The cached bank remembers what was skipped: still an error without the flag.
    with pytest.raises(ValueError, match="--skip-bad-files"):
        load_mixing_bank(image_folder, side=SIDE, cache_dir=cache)
    again = load_mixing_bank(image_folder, side=SIDE, cache_dir=cache, skip_bad_files=True)
    assert again.cache_path == bank.cache_path and len(again.skipped) == 2


@pytest.mark.parametrize("kind", ["missing", "empty", "text_only", "hidden_only"])
def test_no_images_message(tmp_path, kind):
    folder = tmp_path / "mix"
    if kind != "missing":
        folder.mkdir()
    if kind == "text_only":
        (folder / "README.txt").write_text("hello")
        (folder / "sub").mkdir()
        (folder / "sub" / "data.csv").write_text("1,2\n")
    if kind == "hidden_only":
        Image.new("RGB", (80, 80), (10, 20, 30)).save(folder / ".thumb.png")
        (folder / ".git").mkdir()
        Image.new("RGB", (80, 80)).save(folder / ".git" / "x.png")
    with pytest.raises(ValueError) as info:
        load_mixing_bank(folder, side=SIDE, cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert "\n" not in msg and str(folder) in msg
    assert "--mixing-set DIR" in msg and "ipmix-dali make-mixing-set" in msg
    assert ("does not exist" in msg) if kind == "missing" else ("has no images" in msg)


# ---------------------------------------------------------------------------------------------
# Crops and in-memory banks

@pytest.mark.parametrize("memmap", [False, True])
def test_crops_equal_slicing(image_folder, tmp_path, memmap):
    if memmap:
        bank = load_mixing_bank(image_folder, side=SIDE, cache_dir=tmp_path / "cache")
    else:
        rng0 = np.random.default_rng(3)
        bank = bank_from_array(rng0.integers(0, 256, (6, SIDE, SIDE, 3), dtype=np.uint8))
    rng = np.random.default_rng(0)
    size = 40
    n = 50
    index = rng.integers(0, len(bank), n)
    top = rng.integers(0, SIDE - size + 1, n).astype(np.int32)
    left = rng.integers(0, SIDE - size + 1, n).astype(np.int32)
    out = bank.crops(index, top, left, size)
    assert out.shape == (n, size, size, 3) and out.dtype == np.uint8
    for i in range(n):
        np.testing.assert_array_equal(
            out[i], bank.images[index[i], top[i]:top[i] + size, left[i]:left[i] + size])
    full = bank.crops(np.arange(len(bank)), np.zeros(len(bank)), np.zeros(len(bank)), SIDE)
    np.testing.assert_array_equal(full, np.asarray(bank.images))
    assert bank.crops(np.zeros(0), np.zeros(0), np.zeros(0), size).shape == (0, size, size, 3)
    with pytest.raises(ValueError, match="top/left"):
        bank.crops([0], [SIDE - size + 1], [0], size)
    with pytest.raises(ValueError, match="index"):
        bank.crops([len(bank)], [0], [0], size)


def test_bank_from_array_validates():
    ok = np.zeros((2, 8, 8, 3), np.uint8)
    bank = bank_from_array(ok)
    assert isinstance(bank, MixingBank) and len(bank) == 2 and bank.side == 8
    assert len(bank.paths) == 2 and bank.skipped == []
    for bad in [np.zeros((2, 8, 9, 3), np.uint8), np.zeros((2, 8, 8, 3), np.float32),
                np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8, 4), np.uint8)]:
        with pytest.raises(ValueError):
            bank_from_array(bad)


# ---------------------------------------------------------------------------------------------
# Built-in fractals

def test_singular_values_follow_sigma_factor():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 8))
        sigma = rng.uniform((5 + n) / 2, (6 + n) / 2)
        sv = _sample_singular_values(n, sigma, rng)
        assert sv.shape == (n, 2)
        assert np.all(sv >= 0) and np.all(sv[:, 0] <= 1 + 1e-12) and np.all(sv[:, 1] <= sv[:, 0] + 1e-12)
        assert abs((sv[:, 0] + 2 * sv[:, 1]).sum() - sigma) < 1e-9
    for _ in range(100):
        a, b = sample_ifs(rng)
        n = a.shape[0]
        assert 2 <= n <= 7 and a.shape == (n, 2, 2) and b.shape == (n, 2)
        assert np.all(np.abs(b) <= 1)
        s = np.linalg.svd(a, compute_uv=False)  # (n, 2), descending
        total = (s[:, 0] + 2 * s[:, 1]).sum()
        assert (5 + n) / 2 - 1e-9 <= total <= (6 + n) / 2 + 1e-9
        assert np.all(s <= 1 + 1e-9)


def test_render_fractals_deterministic_and_independent_of_count():
    a = render_fractals(3, 96, seed=5)
    b = render_fractals(3, 96, seed=5)
    assert a.shape == (3, 96, 96, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    more = render_fractals(5, 96, seed=5)
    np.testing.assert_array_equal(more[:3], a)
    assert not np.array_equal(render_fractals(3, 96, seed=6), a)
    assert len({img.tobytes() for img in more}) == 5


def _edge_share(img):
    x = img.astype(np.int32)
    c = x[1:-1, 1:-1]
    lap = np.abs(4 * c - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]).max(-1)
    return float((lap > 40).mean())


def test_fractals_are_not_degenerate():
    imgs = render_fractals(12, 128, seed=0)
    # Backgrounds are plain or smooth noise (no sharp detail); the fractal's fine structure is.
    shares = [_edge_share(img) for img in imgs]
    assert min(shares) > 0.03, shares
    # Several distinct dominant hues across the set (hue of the bright pixels, 12 bins).
    bins = set()
    for img in imgs:
        hsv = np.asarray(Image.fromarray(img).convert("HSV")).reshape(-1, 3).astype(np.int32)
        bright = hsv[(hsv[:, 2] >= 128) & (hsv[:, 1] >= 60)]
        assert len(bright) > 0.01 * len(hsv)
        bins.add(int(np.bincount(bright[:, 0] * 12 // 256, minlength=12).argmax()))
    assert len(bins) >= 4, bins
    # Not noise either: the picture is mostly calm (background), the fractal a minority of detail.
    assert max(shares) < 0.6


def test_builtin_mixing_bank():
    bank = builtin_mixing_bank(count=4, side=64, seed=1)
    assert len(bank) == 4 and bank.side == 64 and bank.images.dtype == np.uint8
    np.testing.assert_array_equal(bank.images, render_fractals(4, 64, seed=1))
    assert not bank.images.flags.writeable
    assert len(set(bank.paths)) == 4
    crops = bank.crops([0, 3], [0, 10], [5, 0], 32)
    np.testing.assert_array_equal(crops[1], bank.images[3, 10:42, 0:32])
    with pytest.raises(ValueError):
        builtin_mixing_bank(count=0)
