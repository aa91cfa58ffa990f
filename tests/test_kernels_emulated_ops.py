"""The PIL-op kernels (kernels/lut_ops.cu, affine.cu, enhance.cu) run on the CPU through
kernels/emulator.py, with exactly the host preparation and launch sequence of the CuPy path
(cupy_ops.prepare_pil_op + execute_plan), against np_ops bit for bit.

Images: photo crops (ipmix_dali.tools.samples.sample_photos) at 32 and 64 px, the edge images of
test_np_ops (constant, all 0, all 255, one constant channel, two grey levels), and noise / few
levels / ramps at odd shapes (non-square, 3x2, 1x1). Parameters: the spreads of test_np_ops
(every image with every parameter, in one batch per op), parameters far outside the reference
ranges, and op/parameter draws of ops.table.sample_ops. No GPU needed.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_np_ops import _edge_cases, _odd_batches, _off_range_param, _params

from ipmix_dali.executors import cupy_ops, np_ops
from ipmix_dali.ops import table
from ipmix_dali.ops.table import PIL_OPS
from ipmix_dali.testing.emulator import EmulatedModule
from ipmix_dali.tools.samples import sample_photos

KERNEL_FILES = ("lut_ops.cu", "affine.cu", "enhance.cu")


@pytest.fixture(scope="module")
def modules():
    return {f: EmulatedModule(f) for f in KERNEL_FILES}


def run_emulated(modules, op_id, images, params):
    """apply_pil_op_cupy's sequence on the CPU emulator: same plan, same launches."""
    plan = cupy_ops.prepare_pil_op(op_id, images.shape, params)
    images = np.ascontiguousarray(images)
    out = np.full(images.shape, 0xA5, dtype=np.uint8)  # garbage: every byte must be written

    def launch(kl, args):
        modules[kl.file].launch(kl.name, grid=kl.grid, block=kl.block, args=args)

    return execute(plan, images, out, launch)


def execute(plan, images, out, launch):
    return cupy_ops.execute_plan(plan, images, out, to_device=np.ascontiguousarray,
                                 zeros=np.zeros, launch=launch)


def assert_same(modules, op_id, images, params, what=""):
    params = np.asarray(params, dtype=np.float64)
    before = images.copy()
    ours = run_emulated(modules, op_id, images, params)
    ref = np_ops.apply_pil_op(op_id, images, params, native=False)
    assert np.array_equal(images, before), "input modified"
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    bad = np.nonzero(np.any(ours != ref, axis=(1, 2, 3)))[0]
    assert bad.size == 0, (f"{PIL_OPS[op_id]} {what}: {bad.size} images differ, first: image "
                           f"{bad[0]} param {params[bad[0]]}, "
                           f"{int((ours[bad[0]] != ref[bad[0]]).sum())} values, max |diff| "
                           f"{int(np.abs(ours[bad[0]].astype(int) - ref[bad[0]]).max())}")
    return ours


@pytest.fixture(scope="module")
def images():
    """{size: (k, size, size, 3)}: photo crops (4 at 32 px, 2 at 64 px, 2 at 224 px), then
    the 5 edge images of test_np_ops built from the first crop."""
    out = {}
    for s, k in ((32, 4), (64, 2), (224, 2)):
        nat = sample_photos(k, s, seed=s)
        out[s] = np.stack(list(nat) + _edge_cases(s, nat[0]))
    return out


@pytest.mark.parametrize("s", [32, 64, 224])
@pytest.mark.parametrize("name", PIL_OPS)
def test_matches_np_ops(modules, images, name, s):
    """test_np_ops's parameter spread, all in one batch: at 32 and 64 px every image with every
    parameter, at 224 px (its own spread) each parameter with two images, cycling over all."""
    imgs = images[s]
    if s == 224:
        ps = _params(name, 224)
        pairs = [((2 * j + r) % len(imgs), p) for j, p in enumerate(ps) for r in range(2)]
    else:
        ps = _params(name, 32)  # the 32 px spread (translations up to +-10, step 1)
        if s == 64 and name.startswith("translate"):
            ps = ps + [-21.0, 21.0, 40.0, -64.0]
        pairs = [(i, p) for p in ps for i in range(len(imgs))]
    idx = np.array([i for i, _ in pairs])
    params = np.array([p for _, p in pairs], dtype=np.float64)
    ours = assert_same(modules, PIL_OPS.index(name), imgs[idx], params, f"size {s}")
    if name not in ("equalize", "autocontrast"):  # not a no-op on photos for some parameter
        assert np.any(ours[idx < len(imgs) - 5] != imgs[idx][idx < len(imgs) - 5])


@pytest.mark.parametrize("name", PIL_OPS)
def test_off_range_and_odd_shapes(modules, name):
    """Non-square and tiny images, noise / few levels / ramps, parameters far outside the
    reference ranges (as test_np_ops.test_matches_pil_off_range_and_odd_shapes)."""
    rng = np.random.default_rng(11)
    wide = _off_range_param(name, rng)
    shapes = ((37, 53), (53, 37), (3, 2), (2, 3), (1, 1), (64, 48))
    for h, w, kind, imgs in _odd_batches(rng, shapes, 8):
        params = np.array([wide() for _ in range(8)], dtype=np.float64)
        assert_same(modules, PIL_OPS.index(name), imgs, params, f"{h}x{w} kind {kind}")


def test_rotate_fast_paths_and_general(modules, images):
    """Multiples of 90 degrees (transpose paths on square images, bilinear on non-square ones
    for 90 / 270), mixed with general angles in one batch."""
    angles = [0, 90, 180, 270, -90, -180, 360, 450, -720, 7.9, -7.9, 45, 135, 89, 91, 269, 1]
    sq = images[32][:3]
    rect = np.ascontiguousarray(images[64][:2, :40, :60])
    for imgs in (sq, rect):
        batch = np.concatenate([imgs] * len(angles))
        params = np.repeat(np.array(angles, dtype=np.float64), len(imgs))
        assert_same(modules, table.PIL_OP_ID["rotate"], batch, params)


def test_table_sampled_params(modules, images):
    """Op ids and parameters drawn as the executors get them (IPMix's 15-op list)."""
    rng = np.random.default_rng(7)
    for s, n, severity in ((32, 300, 3.0), (32, 200, 10.0), (64, 120, 1.0), (64, 120, 9.0)):
        op_ids, params = table.sample_ops(rng, table.IPMIX_OPS_ALL, severity, s, n)
        imgs = images[s][rng.integers(0, len(images[s]), n)]
        for op in np.unique(op_ids):
            rows = np.nonzero(op_ids == op)[0]
            assert_same(modules, int(op), imgs[rows], params[rows], f"sampled, size {s}")


def test_grid_stride_loops(modules, images, monkeypatch):
    """Tiny grids (3 blocks of 32 threads) make every thread loop over many items."""
    monkeypatch.setattr(cupy_ops, "BLOCK", 32)
    monkeypatch.setattr(cupy_ops, "MAX_GRID", 3)
    imgs = np.concatenate([images[32], images[32][:3]])
    rng = np.random.default_rng(5)
    for op_id, name in enumerate(PIL_OPS):
        plan = cupy_ops.prepare_pil_op(op_id, imgs.shape, np.zeros(len(imgs)))
        assert all(kl.grid[0] <= 3 and kl.block[0] == 32 for kl in plan.launches)
        params = {"rotate": rng.integers(-30, 31, len(imgs)).astype(float),
                  "posterize": rng.integers(1, 9, len(imgs)).astype(float),
                  "solarize": rng.integers(0, 257, len(imgs)).astype(float),
                  "autocontrast": rng.uniform(0, 10, len(imgs)),
                  "translate_x": rng.integers(-10, 11, len(imgs)).astype(float),
                  "translate_y": rng.integers(-10, 11, len(imgs)).astype(float),
                  "shear_x": rng.uniform(-.3, .3, len(imgs)),
                  "shear_y": rng.uniform(-.3, .3, len(imgs))}.get(name,
                                                                  rng.uniform(.1, 1.9, len(imgs)))
        assert_same(modules, op_id, imgs, params, "small grid")


def test_plan_contract():
    """Launch sequences, host tables and argument checks of prepare_pil_op."""
    n, s = 3, 32
    shape = (n, s, s, 3)
    names = {name: [kl.name for kl in cupy_ops.prepare_pil_op(i, shape, np.ones(n)).launches]
             for i, name in enumerate(PIL_OPS)}
    assert names["equalize"] == ["lut_histogram", "lut_equalize_build", "lut_apply"]
    assert names["autocontrast"] == ["lut_histogram", "lut_autocontrast_build", "lut_apply"]
    assert names["contrast"] == ["enhance_grey_sum", "enhance_contrast"]
    assert names["rotate"] == ["affine_bilinear"] and names["mirror"] == ["lut_mirror"]
    for name in ("posterize", "solarize", "invert"):
        assert names[name] == ["lut_apply"]
    for name in ("color", "brightness", "sharpness"):
        assert names[name] == [f"enhance_{name}"]
    # LUTs of the per-value ops are np_ops evaluated on every value
    plan = cupy_ops.prepare_pil_op(table.PIL_OP_ID["posterize"], shape,
                                   np.array([1.0, 3.0, 8.0]))
    lut = plan.arrays["lut"]
    assert lut.shape == (n, 3, 256) and lut.dtype == np.uint8 and lut.flags.c_contiguous
    assert np.array_equal(lut[1, 2], np.arange(256) & 0xE0)
    # autocontrast cuts: Pillow's int(n * cutoff // 100), clamped to [-1, n + 1]
    plan = cupy_ops.prepare_pil_op(table.PIL_OP_ID["autocontrast"], shape,
                                   np.array([0.0, 7.25, 1e12]))
    assert plan.arrays["cuts"].tolist() == [0, int(1024 * 7.25 // 100), 1025]
    # kernels' scalar arguments are the exact NumPy types the emulator and CuPy expect
    for kl in plan.launches:
        for a in kl.args:
            assert isinstance(a, (str, np.int32)), (kl.name, a)
    # empty batches launch nothing; bad arguments raise
    assert cupy_ops.prepare_pil_op(0, (0, s, s, 3), np.zeros(0)).launches == []
    with pytest.raises(ValueError):
        cupy_ops.prepare_pil_op(len(PIL_OPS), shape, np.zeros(n))
    with pytest.raises(ValueError):
        cupy_ops.prepare_pil_op(0, shape, np.zeros(n - 1))
    with pytest.raises(ValueError):
        cupy_ops.prepare_pil_op(0, (n, s, s, 4), np.zeros(n))


def test_batch_equals_single_images(modules, images):
    """Per-image independence: a batch gives what each image gives alone."""
    imgs = images[64]
    rng = np.random.default_rng(9)
    for op_id, name in enumerate(PIL_OPS):
        params = rng.uniform(-30, 30, len(imgs)) if name in ("rotate", "translate_x") \
            else rng.uniform(0.1, 8, len(imgs))
        batch = run_emulated(modules, op_id, imgs, params)
        for i in (0, len(imgs) - 1):
            one = run_emulated(modules, op_id, imgs[i:i + 1], params[i:i + 1])
            assert np.array_equal(batch[i], one[0]), (name, i)
