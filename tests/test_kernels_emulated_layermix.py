"""LayerMix's float-op kernels (kernels/layermix_ops.cu) run on the CPU through
kernels/emulator.py, with exactly the host preparation and launch sequence of the CuPy path
(cupy_layermix.prepare_layermix_op / prepare_to_float + cupy_ops.execute_plan), against the NumPy
twin layermix_ops.apply_layermix_op_np bit for bit.

"Bit for bit" here means equal float32 bit patterns (the sign of zero included) everywhere except
at NaNs, where only the positions must agree (NaN payloads are hardware-specific).

Images: photo crops (ipmix_dali.tools.samples.sample_photos) at 32 px, two at 48, 64 and 224 px,
the uint8 edge images of test_layermix_ops (noise, constant, constant channel, all 0, all 1,
equalize's step == 0 / step == 1 channels, two levels, ramp), float images outside [0, 1]
(negative values, constant out-of-range channel, -0.0, subnormals, huge values that wrap in
equalize's uint8 cast, +-inf, NaN), and odd shapes (non-square, 1x1, 2x3, 3x2). Parameters:
test_layermix_ops's spread (LayerMix's draws, here at magnitudes 1, 3 and 10, plus its extra
values) and values beyond LayerMix's ranges, every image with every parameter in one batch per
op. No GPU needed.
"""
from __future__ import annotations

import numpy as np
import pytest

from ipmix_dali.executors import cupy_layermix as cl
from ipmix_dali.executors import layermix_ops as lm
from ipmix_dali.executors.cupy_ops import execute_plan
from ipmix_dali.ops.table import LAYERMIX_OP_ID, LAYERMIX_OPS, layermix_param
from ipmix_dali.testing.emulator import EmulatedModule
from ipmix_dali.tools.samples import sample_photos

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


@pytest.fixture(scope="module")
def mod():
    return EmulatedModule("layermix_ops.cu")


def _execute(mod, plan, images, out):
    def launch(kl, args):
        assert kl.file == "layermix_ops.cu"
        mod.launch(kl.name, grid=kl.grid, block=kl.block, args=args)

    return execute_plan(plan, images, out, to_device=np.ascontiguousarray, zeros=np.zeros,
                        launch=launch)


def run_emulated(mod, op_id, images, params):
    """apply_layermix_op_cupy's sequence on the CPU emulator: same plan, same launches."""
    plan = cl.prepare_layermix_op(op_id, images.shape, params)
    images = np.ascontiguousarray(images)
    # garbage with a marker bit pattern: every element must be written
    out = np.full(images.shape, 0x7FBADBAD, dtype=np.uint32).view(np.float32)
    return _execute(mod, plan, images, out)


def to_float_emulated(mod, images_u8):
    plan = cl.prepare_to_float(images_u8.shape)
    out = np.full(images_u8.shape, 0x7FBADBAD, dtype=np.uint32).view(np.float32)
    return _execute(mod, plan, np.ascontiguousarray(images_u8), out)


def mismatch(ours, ref):
    """Boolean mask of the elements that differ: bit patterns, NaNs compared by position."""
    nan_o, nan_r = np.isnan(ours), np.isnan(ref)
    return (ours.view(np.uint32) != ref.view(np.uint32)) & ~(nan_o & nan_r)


def assert_same(mod, op_id, images, params, what=""):
    params = np.asarray(params, dtype=np.float64)
    before = images.copy()
    ours = run_emulated(mod, op_id, images, params)
    ref = lm.apply_layermix_op_np(op_id, images, params, native=False)
    assert np.array_equal(images.view(np.uint32), before.view(np.uint32)), "input modified"
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    bad_mask = mismatch(ours, ref)
    bad = np.nonzero(bad_mask.reshape(len(images), -1).any(axis=1))[0]
    if bad.size:
        i = bad[0]
        where = tuple(np.argwhere(bad_mask[i])[0])
        raise AssertionError(
            f"{LAYERMIX_OPS[op_id]} {what}: {bad.size} of {len(images)} images differ; first: "
            f"image {i} param {params[i] if params.ndim else params!r}, "
            f"{int(bad_mask[i].sum())} values, at {where}: ours {ours[i][where]!r} "
            f"twin {ref[i][where]!r}")
    return ours


# ---------------------------------------------------------------------------------------------
# images and parameters
# ---------------------------------------------------------------------------------------------
def _edge_u8(s=32):
    """test_layermix_ops's uint8 edge images (s x s)."""
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    const = np.full((s, s, 3), 128, np.uint8)
    const_channel = noise.copy()
    const_channel[..., 1] = 77
    zeros = np.zeros((s, s, 3), np.uint8)
    ones = np.full((s, s, 3), 255, np.uint8)
    sparse = np.full((s, s, 3), 200, np.uint8)
    sparse[:3, :, 0] = 10     # 96 pixels below the top value: step == 0, channel left as is
    sparse[:20, :20, 1] = 3   # 400 pixels below the top value: step == 1
    two_level = np.where(rng.random((s, s, 1)) < 0.5, 0, 255).astype(np.uint8).repeat(3, 2)
    ramp = np.arange(s * s * 3).reshape(s, s, 3).astype(np.uint8)
    return np.stack([noise, const, const_channel, zeros, ones, sparse, two_level, ramp])


def _float_edge(s=32):
    """float32 images outside LayerMix's [0, 1]: the values the twin still defines."""
    rng = np.random.default_rng(17)
    out = []
    a = rng.uniform(-0.6, 1.6, (s, s, 3)).astype(np.float32)
    a[..., 2] = 1.3                      # constant channel outside the range
    out.append(a)
    b = rng.uniform(0, 1, (s, s, 3)).astype(np.float32)
    b[..., 0] = -0.0                     # a channel of negative zeros
    b[::3, ::2, 1] = -0.0                # -0.0 among positive values (no +0 in that channel)
    b[1::4, :, 2] = np.float32(1e-40)    # subnormals
    b[2::4, :, 2] = -np.float32(1e-42)
    out.append(b)
    c = rng.uniform(-3e9, 3e9, (s, s, 3)).astype(np.float32)  # wraps in equalize's int cast
    c[::5, :, 0] = 1e30
    c[1::5, :, 0] = -1e30
    c[..., 1] = rng.integers(-300, 300, (s, s)) / np.float32(255.999)  # exact multiples
    out.append(c)
    d = rng.uniform(0, 1, (s, s, 3)).astype(np.float32)
    d[3, 4, 0] = np.inf
    d[5, 6, 1] = -np.inf
    d[7, 8, 2] = np.nan
    d[9, :, 2] = np.inf
    out.append(d)
    return np.stack(out)


def _spread(name, size):
    """test_layermix_ops's parameter spread (LayerMix's draws, at magnitudes 1, 3 and 10 here,
    and its extra values) plus values beyond LayerMix's ranges."""
    u = np.linspace(0.0, 1.0, 7)
    negate = np.arange(7) % 2 == 1
    drawn = [layermix_param(name, u, negate, m, size) for m in (1, 3, 10)]
    extra = {
        "posterize": list(range(9)),
        "posterize_increasing": [0.0, 4.0, 8.0, 3.9],
        "solarize": [-0.2, -0.05, 0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.1],
        "solarize_increasing": [-0.2, 0.1, 0.5, 0.7],
        "rotate": [0.1, -0.1, 9.0, -9.0, 4.37, 135.0, 179.99, -270.5, 33.3, -44.9, 300.0,
                   0.0, 90.0, 180.0, 270.0, -90.0, 360.0, 450.0, 1e-9, -1e-20],
        "shear_x": list(np.degrees(np.arctan([0.09, -0.1, 0.095]))) + [45.0, -60.0, 80.0,
                                                                       -1e-3],
        "shear_y": list(np.degrees(np.arctan([-0.09, 0.1, -0.095]))) + [-45.0, 60.0, -80.0,
                                                                        1e-3],
        "translate_x": [0.1, -0.1, 0.5, -3.0, 21.9, -21.9, 40.0, -33.3, 31.5, 16.0, 1e-4],
        "translate_y": [-0.1, 0.1, -0.5, 3.0, -21.9, 21.9, -40.0, 33.3, -31.5, -16.0, -1e-4],
    }.get(name, [])
    values = np.concatenate([np.asarray(extra, dtype=np.float64)] + drawn)
    return np.unique(values) if name not in ("equalize", "autocontrast", "grayscale") \
        else np.zeros(1)


@pytest.fixture(scope="module")
def images():
    """{key: float32 batch}: 6 photos at 32 px + 8 uint8 and 4 float edge images; 2 photos at
    48 and at 64 px."""
    out = {}
    photos = lm.to_float_np(sample_photos(6, 32, seed=32))
    out[32] = np.concatenate([photos, lm.to_float_np(_edge_u8(32)), _float_edge(32)])
    out[48] = lm.to_float_np(sample_photos(2, 48, seed=48))
    out[64] = lm.to_float_np(sample_photos(2, 64, seed=64))
    return out


def _all_pairs(imgs, params):
    idx = np.repeat(np.arange(len(imgs)), len(params))
    return np.ascontiguousarray(imgs[idx]), np.tile(params, len(imgs))


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------
def test_to_float(mod):
    every = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    photos = sample_photos(3, 32, seed=3)
    for u8 in (every, photos, _edge_u8(8)):
        ours = to_float_emulated(mod, u8)
        assert ours.dtype == np.float32
        assert np.array_equal(ours.view(np.uint32), lm.to_float_np(u8).view(np.uint32))
    assert cl.prepare_to_float((0, 32, 32, 3)).launches == []
    with pytest.raises(ValueError):
        cl.prepare_to_float((2, 8, 8, 4))


@pytest.mark.parametrize("name", LAYERMIX_OPS)
def test_matches_twin_32px(mod, images, name):
    """Every 32 px image (photos, uint8 and float edge images) with every parameter."""
    batch, params = _all_pairs(images[32], _spread(name, 32))
    ours = assert_same(mod, LAYERMIX_OP_ID[name], batch, params, "32 px")
    if name not in ("equalize", "autocontrast"):
        assert np.any(mismatch(ours, batch))  # not a no-op


@pytest.mark.parametrize("s", [48, 64])
@pytest.mark.parametrize("name", LAYERMIX_OPS)
def test_matches_twin_larger(mod, images, name, s):
    batch, params = _all_pairs(images[s], _spread(name, s))
    assert_same(mod, LAYERMIX_OP_ID[name], batch, params, f"{s} px")


@pytest.mark.parametrize("name", LAYERMIX_OPS)
def test_matches_twin_224px(mod, images, name):
    """Two 224 px photos (LayerMix's training size), each parameter with one of them."""
    imgs = lm.to_float_np(sample_photos(2, 224, seed=224))
    params = _spread(name, 224)
    idx = np.arange(len(params)) % len(imgs)
    assert_same(mod, LAYERMIX_OP_ID[name], np.ascontiguousarray(imgs[idx]), params, "224 px")


@pytest.mark.parametrize("name", LAYERMIX_OPS)
def test_odd_shapes(mod, name):
    """Non-square and tiny images: noise, few levels (ties, equal neighbours), ramps."""
    rng = np.random.default_rng(11)
    spread = _spread(name, 32)
    for h, w in ((24, 40), (37, 53), (53, 37), (3, 2), (2, 3), (1, 1)):
        noise = rng.random((4, h, w, 3), dtype=np.float32)
        levels = (rng.integers(0, 3, (4, h, w, 3)) * np.float32(0.5)).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        ramp = np.stack([xx / max(1, w - 1), yy / max(1, h - 1), (xx + yy) % 7 / 6.0],
                        -1).astype(np.float32)
        imgs = np.concatenate([noise, levels, ramp[None]])
        params = rng.choice(spread, len(imgs))
        assert_same(mod, LAYERMIX_OP_ID[name], imgs, params, f"{h}x{w}")


@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
def test_rotate_special_angles(mod, images, hw):
    """rotate's exact fast paths (0 / 180, and 90 / 270 on square images only) and the
    ``angle % 360`` reduction, mixed with general angles in one batch."""
    h, w = hw
    angles = np.array([0.0, 90.0, 180.0, 270.0, -90.0, 360.0, 450.0, -180.0, -720.0, 1e-9,
                       -1e-20, 7.9, 89.0, 91.0, 269.0, 45.0])
    src = np.ascontiguousarray(lm.to_float_np(sample_photos(2, 40, seed=4))[:, :h, :w])
    batch = np.concatenate([src] * len(angles))
    params = np.repeat(angles, len(src))
    plan = cl.prepare_layermix_op(LAYERMIX_OP_ID["rotate"], batch.shape, params)
    modes = plan.arrays["mode"].reshape(len(angles), len(src))[:, 0].tolist()
    if h == w:
        assert modes[:9] == [1, 3, 2, 4, 4, 1, 3, 2, 1]
    else:
        assert modes[:9] == [1, 0, 2, 0, 0, 1, 0, 2, 1]
    assert modes[9:] == [0] * 7  # -1e-20 % 360 == 360.0: the general path, as the twin
    assert_same(mod, LAYERMIX_OP_ID["rotate"], batch, params, f"{h}x{w}")


def test_solarize_threshold_in_float32(mod):
    """Pixels just below, on and just above float32(threshold)."""
    rows = []
    thrs = [0.7, 0.3, 0.1, 0.5, -0.2, 1.0]
    for thr in thrs:
        t32 = np.float32(thr)
        vals = np.array([np.nextafter(t32, np.float32(-2)), t32, np.nextafter(t32, np.float32(2))],
                        dtype=np.float32)
        rows.append(np.broadcast_to(vals, (4, 4, 3)))
    imgs = np.ascontiguousarray(np.stack(rows))
    for op in ("solarize", "solarize_increasing"):
        assert_same(mod, LAYERMIX_OP_ID[op], imgs, thrs)


@pytest.mark.parametrize("lanes_pixels", [1, 5, 64, 5000])
def test_autocontrast_reduction_widths(mod, images, monkeypatch, lanes_pixels):
    """The min / max reduction gives the same result whatever the pixels per thread."""
    monkeypatch.setattr(cl, "MINMAX_PIXELS_PER_LANE", lanes_pixels)
    imgs = np.concatenate([images[32], images[64][:, :32, :32]])
    assert_same(mod, LAYERMIX_OP_ID["autocontrast"], imgs, np.zeros(len(imgs)),
                f"{lanes_pixels} px per lane")


def test_grid_stride_loops(mod, images, monkeypatch):
    """Tiny grids (3 blocks of 32 threads) make every thread loop over many items."""
    from ipmix_dali.executors import cupy_ops

    monkeypatch.setattr(cupy_ops, "BLOCK", 32)  # grid_geometry's, for every kernel family
    monkeypatch.setattr(cupy_ops, "MAX_GRID", 3)
    imgs = images[32]
    rng = np.random.default_rng(5)
    for op_id, name in enumerate(LAYERMIX_OPS):
        params = rng.choice(_spread(name, 32), len(imgs))
        plan = cl.prepare_layermix_op(op_id, imgs.shape, params)
        assert all(kl.grid[0] <= 3 and kl.block[0] == 32 for kl in plan.launches)
        assert_same(mod, op_id, imgs, params, "small grid")
    u8 = sample_photos(2, 32, seed=1)
    assert np.array_equal(to_float_emulated(mod, u8), lm.to_float_np(u8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_images_and_wide_params(mod, seed):
    """Random float images (in and out of [0, 1], uint8 levels, sprinkled +-inf, NaN, subnormals,
    huge values) at random odd sizes, with parameters far beyond LayerMix's ranges. (No channel
    holds both +0.0 and -0.0: which one NumPy's min / max reduction returns is unspecified, and
    autocontrast's result sign depends on it.)"""
    rng = np.random.default_rng(100 + seed)
    h, w = (int(v) for v in rng.integers(1, 41, 2))
    k = 12
    kinds = [rng.random((k, h, w, 3), dtype=np.float32),
             rng.uniform(-2, 3, (k, h, w, 3)).astype(np.float32),
             rng.integers(0, 256, (k, h, w, 3)).astype(np.float32) * lm._INV255]
    imgs = np.concatenate(kinds)
    special = np.float32([np.inf, -np.inf, np.nan, 1e-39, -1e-44, 1e30, -7e20, 3e9])
    spots = rng.random(imgs.shape) < 0.01
    spots[: 2 * k] = False  # leave the first two kinds clean
    imgs[spots] = rng.choice(special, int(spots.sum()))
    wide = {
        "posterize": lambda: float(rng.integers(0, 9)),
        "solarize": lambda: rng.uniform(-0.5, 1.5),
        "rotate": lambda: rng.choice([rng.uniform(-400, 400), float(rng.integers(-8, 9) * 90)]),
        "shear_x": lambda: rng.uniform(-89, 89), "shear_y": lambda: rng.uniform(-89, 89),
        "translate_x": lambda: rng.uniform(-1.5, 1.5) * w,
        "translate_y": lambda: rng.uniform(-1.5, 1.5) * h,
    }
    for op_id, name in enumerate(LAYERMIX_OPS):
        draw = wide.get(name.replace("_increasing", ""), lambda: 0.0)
        params = np.array([draw() for _ in range(len(imgs))], dtype=np.float64)
        assert_same(mod, op_id, imgs, params, f"random {h}x{w}")


def test_batch_equals_single_images(mod, images):
    """Per-image independence: a batch gives what each image gives alone."""
    imgs = images[32][:6]
    rng = np.random.default_rng(9)
    for op_id, name in enumerate(LAYERMIX_OPS):
        params = rng.choice(_spread(name, 32), len(imgs))
        batch = run_emulated(mod, op_id, imgs, params)
        for i in (0, len(imgs) - 1):
            one = run_emulated(mod, op_id, imgs[i:i + 1], params[i:i + 1])
            assert not mismatch(batch[i], one[0]).any(), (name, i)


def test_bit_exact_comparison_is_sensitive(images):
    """The comparison can tell the fused multiply-adds from plain float32 arithmetic: without
    them grayscale and the geometric ops differ from the twin (so the tests above check them)."""
    imgs = images[32][:4]
    r, g, b = (imgs[..., k] for k in range(3))
    plain = (r * lm._GRAY_R + g * np.float32(lm._GRAY_G)) + b * np.float32(lm._GRAY_B)
    twin = lm.apply_layermix_op_np(LAYERMIX_OP_ID["grayscale"], imgs, 0, native=False)[..., 0]
    assert np.any(plain != twin)
    for name in GEOMETRIC:
        params = np.full(len(imgs), 7.3)
        exact = lm.apply_layermix_op_np(LAYERMIX_OP_ID[name], imgs, params, native=False)
        fast = lm.apply_layermix_op_np(LAYERMIX_OP_ID[name], imgs, params, exact=False)
        assert np.any(mismatch(exact, fast)), name


def test_plan_contract():
    """Launch sequences, host tables and argument checks of prepare_layermix_op."""
    n, s = 3, 32
    shape = (n, s, s, 3)
    names = {name: [kl.name for kl in cl.prepare_layermix_op(i, shape, np.ones(n)).launches]
             for i, name in enumerate(LAYERMIX_OPS)}
    assert names["equalize"] == ["layermix_equalize_hist", "layermix_equalize_lut",
                                 "layermix_equalize_apply"]
    assert names["autocontrast"] == ["layermix_minmax", "layermix_autocontrast_apply"]
    for name in ("posterize", "posterize_increasing"):
        assert names[name] == ["layermix_posterize"]
    for name in ("solarize", "solarize_increasing"):
        assert names[name] == ["layermix_solarize"]
    assert names["grayscale"] == ["layermix_grayscale"]
    for name in GEOMETRIC:
        assert names[name] == ["layermix_affine_bilinear"]
    # host tables: the twin's expressions
    plan = cl.prepare_layermix_op(LAYERMIX_OP_ID["posterize"], shape, [0.0, 3.9, 8.0])
    assert plan.arrays["post"].dtype == np.float32
    assert plan.arrays["post"].tolist() == [[1, 0, 1], [8, 7, 0.125], [256, 255, 1 / 256]]
    plan = cl.prepare_layermix_op(LAYERMIX_OP_ID["solarize"], shape, [0.7, 0.3, -1.0])
    assert np.array_equal(plan.arrays["thr"], np.float32([0.7, 0.3, -1.0]))
    plan = cl.prepare_layermix_op(LAYERMIX_OP_ID["translate_x"], shape, [2.0, -3.0, 0.0])
    assert plan.arrays["mode"].tolist() == [0, 0, 0]
    assert np.array_equal(plan.arrays["coef"][:, 4], np.float32([-2.0, 3.0, 0.0]) / 16)
    # scalar arguments are the exact NumPy types the emulator and CuPy expect
    for i in range(len(LAYERMIX_OPS)):
        for kl in cl.prepare_layermix_op(i, shape, np.ones(n)).launches:
            for a in kl.args:
                assert isinstance(a, (str, np.int32, np.float32)), (kl.name, a)
    # the twin's float32 constants are passed bit for bit
    gray = cl.prepare_layermix_op(LAYERMIX_OP_ID["grayscale"], shape, 0).launches[0].args[-3:]
    assert [np.float64(a) for a in gray] == [np.float64(lm._GRAY_R), lm._GRAY_G, lm._GRAY_B]
    # scalars broadcast; empty batches launch nothing; bad arguments raise
    assert cl.prepare_layermix_op(LAYERMIX_OP_ID["solarize"], shape, 0.5).arrays["thr"].shape \
        == (n,)
    for i in range(len(LAYERMIX_OPS)):
        assert cl.prepare_layermix_op(i, (0, s, s, 3), np.zeros(0)).launches == []
        assert cl.prepare_layermix_op(i, (2, 0, s, 3), np.zeros(2)).launches == []
    with pytest.raises(ValueError):
        cl.prepare_layermix_op(len(LAYERMIX_OPS), shape, np.zeros(n))
    with pytest.raises(ValueError):
        cl.prepare_layermix_op(-1, shape, np.zeros(n))
    with pytest.raises(ValueError):
        cl.prepare_layermix_op(0, shape, np.zeros(n - 1))
    with pytest.raises(ValueError):
        cl.prepare_layermix_op(0, (n, s, s, 4), np.zeros(n))
    for bad in (-1.0, 9.0, np.nan):
        with pytest.raises(ValueError, match="posterize bits"):
            cl.prepare_layermix_op(LAYERMIX_OP_ID["posterize"], shape, [1.0, bad, 2.0])


def test_module_imports_without_cupy():
    """The CuPy path is imported lazily: the module (and its planning) works without CuPy."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['cupy'] = None\n"
            "from ipmix_dali.executors import cupy_layermix as cl\n"
            "p = cl.prepare_layermix_op(7, (2, 8, 8, 3), [10.0, 20.0])\n"
            "print(len(p.launches))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "1", res.stderr
