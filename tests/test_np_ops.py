"""NumPy batch PIL ops (ipmix_dali.executors.np_ops) against Pillow, image by image.

Natural images (crops of scikit-learn's two sample photographs, resized to 224 and 32) plus edge
cases (constant, all 0, all 255, one constant channel, two-level image), with parameters spread
over the reference ranges of docs/augmentations.md §1.3 and beyond. The contract of ops.table.TOLERANCE (LUT and
histogram ops exact; geometry and enhance ops off by at most 1 on at most 0.1% of the pixels) is
asserted everywhere; on x86-64, where Pillow's C float code is built without fused multiply-add,
every op is asserted bit-exact.
"""
from __future__ import annotations

import platform

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from ipmix_dali.executors import np_ops
from ipmix_dali.ops import table
from ipmix_dali.ops.table import PIL_FAMILY, PIL_OPS, TOLERANCE

# Pillow's float paths (Geometry.c bilinear in double, Blend.c / Filter.c in float) are reproduced
# operation by operation; that is bit-exact where the C compiler did not contract a*b+c into FMA.
EXACT_FLOAT = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def pil_ref(name: str, img: np.ndarray, p: float) -> np.ndarray:
    """The PIL call of docs/augmentations.md §1.3 for one image (what the reference repositories run)."""
    im = Image.fromarray(img)
    size = im.size
    if name == "autocontrast":
        out = ImageOps.autocontrast(im, p)
    elif name == "equalize":
        out = ImageOps.equalize(im)
    elif name == "posterize":
        out = ImageOps.posterize(im, int(p))
    elif name == "rotate":
        out = im.rotate(int(p), resample=Image.BILINEAR)
    elif name == "solarize":
        out = ImageOps.solarize(im, int(p))
    elif name == "shear_x":
        out = im.transform(size, Image.AFFINE, (1, p, 0, 0, 1, 0), resample=Image.BILINEAR)
    elif name == "shear_y":
        out = im.transform(size, Image.AFFINE, (1, 0, 0, p, 1, 0), resample=Image.BILINEAR)
    elif name == "translate_x":
        out = im.transform(size, Image.AFFINE, (1, 0, int(p), 0, 1, 0), resample=Image.BILINEAR)
    elif name == "translate_y":
        out = im.transform(size, Image.AFFINE, (1, 0, 0, 0, 1, int(p)), resample=Image.BILINEAR)
    elif name == "color":
        out = ImageEnhance.Color(im).enhance(p)
    elif name == "contrast":
        out = ImageEnhance.Contrast(im).enhance(p)
    elif name == "brightness":
        out = ImageEnhance.Brightness(im).enhance(p)
    elif name == "sharpness":
        out = ImageEnhance.Sharpness(im).enhance(p)
    elif name == "mirror":
        out = ImageOps.mirror(im)
    elif name == "invert":
        out = ImageOps.invert(im)
    else:
        raise ValueError(name)
    return np.asarray(out)


# --------------------------------------------------------------------------------------------
# Test images
# --------------------------------------------------------------------------------------------

_CROPS = (  # (photo index, top, left, side) in the 427x640 sample photographs
    (0, 0, 0, 427), (1, 0, 150, 427), (0, 120, 250, 200), (1, 60, 300, 300),
)


def _edge_cases(s: int, natural: np.ndarray) -> list:
    rng = np.random.default_rng(s)
    one_channel = natural.copy()
    one_channel[..., 1] = 77
    levels = np.array([[31, 90, 12], [205, 160, 240]], dtype=np.uint8)
    two_level = levels[(rng.random((s, s)) < 0.3).astype(int)]
    return [
        np.full((s, s, 3), 113, np.uint8),  # constant
        np.zeros((s, s, 3), np.uint8),  # all 0
        np.full((s, s, 3), 255, np.uint8),  # all 255
        one_channel,  # a single constant channel
        two_level,  # two grey levels only
    ]


@pytest.fixture(scope="module")
def images():
    """{size: (k, size, size, 3) uint8}: 4 natural crops then the 5 edge cases."""
    datasets = pytest.importorskip("sklearn.datasets")
    photos = datasets.load_sample_images().images  # china.jpg, flower.jpg
    out = {}
    for s in (224, 32):
        nat = [np.asarray(Image.fromarray(photos[k][t:t + d, l:l + d]).resize((s, s),
                                                                              Image.BILINEAR))
               for k, t, l, d in _CROPS]
        out[s] = np.stack(nat + _edge_cases(s, nat[0]))
    return out


N_NATURAL = len(_CROPS)


def _params(name: str, s: int) -> list:
    enhance = [float(v) for v in np.linspace(0.1, 1.9, 10)] + [0.118, 0.28, 0.64, 1.0, 0.0]
    shear = [float(v) for v in np.linspace(-0.3, 0.3, 13)] + [0.003, -0.003, 0.09, -0.0901]
    t = 74 if s == 224 else 10
    return {
        "autocontrast": [0, 0.5, 7, 7.25, 8, 8.7, 9.5, 9.9, 10],
        "equalize": [0], "mirror": [0], "invert": [0],
        "posterize": list(range(1, 9)),
        "rotate": list(range(-30, 31)),
        "solarize": [0, 1, 64, 128, 180, 200, 231, 254, 255, 256],
        "shear_x": shear, "shear_y": shear,
        "translate_x": sorted(set(range(-t, t + 1, 8 if s == 224 else 1)) | {-t, -1, 1, t}),
        "translate_y": sorted(set(range(-t, t + 1, 8 if s == 224 else 1)) | {-t, -1, 1, t}),
        "color": enhance, "contrast": enhance, "brightness": enhance, "sharpness": enhance,
    }[name]


def _off_range_param(name: str, rng):
    """A sampler of parameters far outside the reference ranges for op ``name``: rotations past
    90 degrees, big shears, translations past the border, cutoffs up to 100 % and beyond and
    negative, solarize thresholds and posterize bits out of range, blend factors < 0 and > 1."""
    return {
        "rotate": lambda: float(rng.integers(-400, 400)),
        "shear_x": lambda: rng.uniform(-1.5, 1.5), "shear_y": lambda: rng.uniform(-1.5, 1.5),
        "translate_x": lambda: rng.uniform(-60, 60), "translate_y": lambda: rng.uniform(-60, 60),
        "autocontrast": lambda: rng.choice([-2.0, 0.0, rng.uniform(0, 100), 100.0, 120.0, 1e9]),
        "solarize": lambda: float(rng.integers(-3, 260)),
        "posterize": lambda: float(rng.integers(-2, 11)),
    }.get(name, lambda: rng.uniform(-1.0, 3.0))


def _odd_batches(rng, shapes, n: int):
    """(h, w, kind, uint8 (n, h, w, 3)) for each shape: noise, few distinct values (many ties
    and equal neighbours), smooth ramps."""
    for h, w in shapes:
        for kind in range(3):
            if kind == 0:
                imgs = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
            elif kind == 1:
                imgs = rng.integers(0, 3, (n, h, w, 3)).astype(np.uint8) * 100
            else:
                yy, xx = np.mgrid[0:h, 0:w]
                ramp = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1),
                                 (xx + yy) % 256], -1).astype(np.uint8)
                imgs = np.stack([ramp] * n)
            yield h, w, kind, imgs


def _pairs(name: str, s: int, k: int):
    """(image index, param) pairs: at 32 every image with every parameter; at 224 each
    parameter with 5 images (cycling over all of them) and every image with >= 5 parameters."""
    ps = _params(name, s)
    if s == 32:
        return [(i, p) for p in ps for i in range(k)]
    reps = max(5, -(-5 * k // len(ps)))
    return [((j * reps + r) % k, p) for j, p in enumerate(ps) for r in range(reps)]


def _agreement(name: str, ours: np.ndarray, ref: np.ndarray):
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    return int(diff.max(initial=0)), float((diff == 0).mean()), int((diff != 0).sum())


def _assert_agrees(name: str, ours: np.ndarray, ref: np.ndarray, what: str = ""):
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    max_diff, identical, n_diff = _agreement(name, ours, ref)
    tol = TOLERANCE[PIL_FAMILY[name]]
    assert max_diff <= tol, f"{name} {what}: max |diff| {max_diff} > {tol}"
    assert identical >= (1.0 if tol == 0 else 0.999), f"{name} {what}: {identical:.6f} identical"
    if EXACT_FLOAT:
        assert n_diff == 0, f"{name} {what}: {n_diff} pixels differ (max {max_diff})"


# --------------------------------------------------------------------------------------------
# Agreement with Pillow
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("s", [224, 32])
@pytest.mark.parametrize("name", PIL_OPS)
def test_matches_pil(name, s, images):
    imgs = images[s]
    pairs = _pairs(name, s, len(imgs))
    idx = np.array([i for i, _ in pairs])
    params = np.array([p for _, p in pairs], dtype=np.float64)
    batch = imgs[idx]
    ours = np_ops.apply_pil_op(PIL_OPS.index(name), batch, params)
    # the native warp (rotate, shears; the default) and the NumPy twin: the same bits
    assert np.array_equal(ours, np_ops.apply_pil_op(PIL_OPS.index(name), batch, params,
                                                    native=False))
    ref = np.stack([pil_ref(name, imgs[i], p) for i, p in pairs])
    for j, (i, p) in enumerate(pairs):  # per image, for a readable failure
        _assert_agrees(name, ours[j], ref[j], f"size {s} image {i} param {p}")
    # every op does something on natural images for some parameter (guards a no-op that
    # happens to agree with an identity reference)
    changed = np.any(ours != batch, axis=(1, 2, 3))
    natural = idx < N_NATURAL
    assert changed[natural].any(), name


def test_table_sampled_params_match_reference(images):
    """Parameters drawn exactly as the executors get them (ops.table.sample_ops over IPMix's
    15-op list, severities 1..10), compared with reference.pil_apply."""
    from ipmix_dali.executors.reference import pil_apply

    rng = np.random.default_rng(7)
    for s, n, severity in ((32, 400, 3.0), (32, 200, 10.0), (224, 60, 1.0), (224, 60, 9.0)):
        op_ids, params = table.sample_ops(rng, table.IPMIX_OPS_ALL, severity, s, n)
        # bits = 0 (severity 10) raises in Pillow >= 10; covered by test_posterize_bits_out_of_range
        keep = ~((op_ids == table.PIL_OP_ID["posterize"]) & (params < 1))
        op_ids, params = op_ids[keep], params[keep]
        imgs = images[s][rng.integers(0, len(images[s]), len(op_ids))]
        for op in np.unique(op_ids):
            rows = np.nonzero(op_ids == op)[0]
            ours = np_ops.apply_pil_op(int(op), imgs[rows], params[rows])
            for j, r in enumerate(rows):
                ref = np.asarray(pil_apply(int(op), Image.fromarray(imgs[r]), params[r], s))
                _assert_agrees(PIL_OPS[op], ours[j], ref, f"size {s} param {params[r]}")


@pytest.mark.parametrize("name", ["rotate", "shear_x", "shear_y", "translate_x", "translate_y",
                                  "color", "contrast", "brightness", "sharpness", "autocontrast",
                                  "solarize", "equalize"])
def test_matches_pil_off_range_and_odd_shapes(name):
    """Non-square and tiny images, noise, few levels and ramps, parameters far outside the
    reference ranges (:func:`_off_range_param`; blend factors < 0 and > 1 where Pillow clips)."""
    rng = np.random.default_rng(11)
    wide = _off_range_param(name, rng)
    for h, w, kind, imgs in _odd_batches(rng, ((37, 53), (53, 37), (3, 2), (1, 1), (64, 48)), 6):
        params = np.array([wide() for _ in range(6)], dtype=np.float64)
        ours = np_ops.PIL_OP_FUNCS[name](imgs, params)
        for i in range(6):
            _assert_agrees(name, ours[i], pil_ref(name, imgs[i], params[i]),
                           f"{h}x{w} kind {kind} param {params[i]}")


def test_rotate_transpose_fast_paths(images):
    """Multiples of 90 degrees use Pillow's transpose shortcuts (square images)."""
    imgs = images[32][:3]
    for angle in (0, 90, 180, 270, -90, -180, 360, 450, -720):
        ours = np_ops.rotate(imgs, np.full(len(imgs), float(angle)))
        for i in range(len(imgs)):
            assert np.array_equal(ours[i], pil_ref("rotate", imgs[i], angle)), angle
    # and the non-square 90 degrees case goes through the bilinear transform, as in Pillow
    rect = images[224][:2, :40, :60].copy()
    ours = np_ops.rotate(rect, np.array([90.0, 270.0]))
    for i in range(2):
        _assert_agrees("rotate", ours[i], pil_ref("rotate", rect[i], [90, 270][i]))


def test_integer_params_truncate_like_int(images):
    """rotate / translate / posterize / solarize receive int(p): truncation toward zero."""
    img = images[32][:1]
    for name, p in (("rotate", 7.9), ("rotate", -7.9), ("translate_x", -3.7),
                    ("translate_y", 2.999), ("posterize", 3.9), ("solarize", 128.9)):
        ours = np_ops.PIL_OP_FUNCS[name](img, np.array([p]))[0]
        assert np.array_equal(ours, pil_ref(name, img[0], int(p))), (name, p)


def test_posterize_bits_out_of_range(images):
    """Pillow >= 10 raises for bits outside 1..8; np_ops keeps the old formula
    v & ~(2**(8-bits) - 1): bits <= 0 -> 0, bits >= 8 -> identity."""
    img = images[32][:2]
    with pytest.raises(ValueError):
        ImageOps.posterize(Image.fromarray(img[0]), 0)
    out = np_ops.posterize(img, np.array([0.0, -1.0]))
    assert out.dtype == np.uint8 and not out.any()
    assert np.array_equal(np_ops.posterize(img, np.array([8.0, 9.0])), img)
    assert np.array_equal(np_ops.posterize(img, np.array([1.0, 1.0])), img & 0x80)


def test_known_values():
    """A few hand-checked results (independent of Pillow)."""
    img = np.array([[[0, 100, 255], [10, 20, 30]], [[200, 201, 202], [7, 8, 9]]], np.uint8)[None]
    assert np.array_equal(np_ops.invert(img, [0])[0, 0, 0], [255, 155, 0])
    assert np.array_equal(np_ops.mirror(img, [0])[0, 0], img[0, 0, ::-1])
    assert np.array_equal(np_ops.solarize(img, [100])[0, 0, 0], [0, 155, 0])
    assert np.array_equal(np_ops.posterize(img, [4])[0, 1, 0], [192, 192, 192])
    # brightness 0.5: float32 0.5*v truncated; grey of (0, 100, 255): (38470*100 + 7471*255
    # + 32768) >> 16 = 88
    assert np.array_equal(np_ops.brightness(img, [0.5])[0, 0, 0], [0, 50, 127])
    assert np_ops.color(img, [0.0])[0, 0, 0].tolist() == [88, 88, 88]
    # translate by one pixel: output(x) = input(x + 1), zero fill at the right
    t = np_ops.translate_x(img, [1.0])[0]
    assert np.array_equal(t[:, 0], img[0, :, 1]) and not t[:, 1].any()
    # autocontrast: int(v * (255 / (hi - lo)) - lo * scale); channel 0 has lo 0, hi 200 and
    # 200 * 1.275 is 254.99999999999997 in float64, so even hi maps to 254 (as in Pillow)
    ac = np_ops.autocontrast(img, [0])[0]
    assert ac[..., 0].tolist() == [[0, 12], [254, 8]]


# --------------------------------------------------------------------------------------------
# API contract
# --------------------------------------------------------------------------------------------

def test_op_table_and_dispatch(images):
    assert tuple(np_ops.PIL_OP_FUNCS) == PIL_OPS
    imgs = images[32][:3]
    params = np.array([0.5, 1.0, 2.0])
    for op_id, name in enumerate(PIL_OPS):
        assert np.array_equal(np_ops.apply_pil_op(op_id, imgs, params),
                              np_ops.PIL_OP_FUNCS[name](imgs, params))
    with pytest.raises(ValueError):
        np_ops.apply_pil_op(len(PIL_OPS), imgs, params)
    with pytest.raises(ValueError):
        np_ops.apply_pil_op(0, imgs.astype(np.float32), params)
    with pytest.raises(ValueError):
        np_ops.apply_pil_op(0, imgs, params[:2])


@pytest.mark.parametrize("name", PIL_OPS)
def test_input_untouched_new_output(name, images):
    imgs = np.concatenate([images[32], images[32][:1]])  # 10 images
    before = imgs.copy()
    p = {"rotate": 13.0, "posterize": 3.0, "solarize": 128.0, "translate_x": 5.0,
         "translate_y": -5.0, "autocontrast": 8.0}.get(name, 0.3)
    params = np.full(len(imgs), p)
    params_before = params.copy()
    out = np_ops.PIL_OP_FUNCS[name](imgs, params)
    assert np.array_equal(imgs, before) and np.array_equal(params, params_before)
    assert out.dtype == np.uint8 and out.shape == imgs.shape and out.flags.c_contiguous
    assert not np.shares_memory(out, imgs)
    # per-image independence: a batch equals its images processed one at a time
    for i in (0, 5, 9):
        assert np.array_equal(out[i], np_ops.PIL_OP_FUNCS[name](imgs[i:i + 1], params[i:i + 1])[0])
    # empty batch
    empty = np_ops.PIL_OP_FUNCS[name](imgs[:0], params[:0])
    assert empty.shape == (0,) + imgs.shape[1:] and empty.dtype == np.uint8


def test_large_batch_of_small_images_blocks():
    """Blocks spanning several images (32x32) and row bands of one image (224x224) give the
    same result as single-image calls."""
    rng = np.random.default_rng(3)
    for s, n in ((32, 70), (224, 2)):
        imgs = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
        for name, params in (("rotate", rng.integers(-30, 31, n).astype(float)),
                             ("shear_x", rng.uniform(-.3, .3, n)),
                             ("shear_y", rng.uniform(-.3, .3, n)),
                             ("equalize", np.zeros(n)), ("autocontrast", rng.uniform(7, 10, n)),
                             ("color", rng.uniform(.1, 1.9, n)),
                             ("sharpness", rng.uniform(.1, 1.9, n))):
            batch = np_ops.PIL_OP_FUNCS[name](imgs, params)
            for i in range(0, n, 7):
                one = np_ops.PIL_OP_FUNCS[name](imgs[i:i + 1], params[i:i + 1])[0]
                assert np.array_equal(batch[i], one), (name, s, i)
