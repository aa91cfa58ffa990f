"""The native CPU warp (ipmix_dali.executors.native): the GPU's layermix_affine_bilinear kernel
compiled for the host gives the NumPy twin's pixels bit for bit, for every geometric op, size,
special angle and extreme parameter; the executors' LayerMix batches are the same with it on
and off; without a compiler it falls back to the twin with one warning."""
import logging

import numpy as np
import pytest

from ipmix_dali import make_config, make_rng, sample_plan
from ipmix_dali.executors import layermix_ops as lm
from ipmix_dali.executors import native
from ipmix_dali.executors.numpy_exec import NumpyExecutor
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.ops.table import LAYERMIX_OPS
from ipmix_dali.tools.samples import sample_photos

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
OP = {name: LAYERMIX_OPS.index(name) for name in GEOMETRIC}


@pytest.fixture(autouse=True)
def native_on(monkeypatch):
    monkeypatch.setenv(native.ENV, "1")
    if native.module() is None:
        pytest.fail(f"the native warp did not build here: {native.error('layermix_ops.cu')}")


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def _same(op_id, images, params):
    params = np.asarray(params, dtype=np.float64)
    before = images.copy()
    got = native.geometric(op_id, images, params)
    want = lm.apply_layermix_op_np(op_id, images, params, native=False)
    assert np.array_equal(_bits(images), _bits(before)), "input modified"
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(_bits(got), _bits(want))
    assert np.array_equal(_bits(lm.apply_layermix_op_np(op_id, images, params)), _bits(want))


@pytest.mark.parametrize("name", GEOMETRIC)
@pytest.mark.parametrize("shape", [(224, 224), (32, 32), (24, 40)])
def test_native_equals_twin(name, shape):
    rng = np.random.default_rng(OP[name])
    u8 = sample_photos(6, shape[0], seed=OP[name])
    if shape[1] != shape[0]:
        u8 = np.ascontiguousarray(np.resize(u8, (6,) + shape + (3,)))
    images = lm.to_float_np(u8)
    limit = 30.0 if name in ("rotate", "shear_x", "shear_y") else shape[1] * 0.3
    _same(OP[name], images, rng.uniform(-limit, limit, 6))


@pytest.mark.parametrize("name", GEOMETRIC)
def test_native_extremes_and_special_angles(name):
    """Past the border, large angles and shears, rotate's exact fast paths, float noise that
    is not an image (values outside [0, 1], NaN and inf pixels)."""
    params = {
        "rotate": [0.0, 90.0, 180.0, 270.0, -90.0, 450.0, 1e-9, 135.0, -270.5, 179.99],
        "shear_x": [45.0, -60.0, 80.0, -1e-3, 0.0, 30.0, -10.0, 5.0, 1e-6, -45.0],
        "shear_y": [-45.0, 60.0, -80.0, 1e-3, 0.0, -30.0, 10.0, -5.0, -1e-6, 45.0],
        "translate_x": [40.0, -33.3, 31.5, -0.5, 16.0, 1e-4, 0.0, -40.0, 0.25, 3.0],
        "translate_y": [-40.0, 33.3, -31.5, 0.5, -16.0, -1e-4, 0.0, 40.0, -0.25, -3.0],
    }[name]
    rng = np.random.default_rng(9)
    images = rng.normal(0.5, 2.0, (len(params), 32, 32, 3)).astype(np.float32)
    images[1, 3, 4, 0] = np.nan
    images[2, 10, 11, 2] = np.inf
    _same(OP[name], images, params)
    # a non-square batch takes rotate's 90 / 270 through the general warp
    _same(OP[name], rng.random((len(params), 20, 36, 3), dtype=np.float32), params)


def test_native_takes_any_layout_and_empty_batches():
    rng = np.random.default_rng(4)
    images = rng.random((5, 32, 32, 3), dtype=np.float32)[::-1, :, ::-1]  # negative strides
    _same(OP["rotate"], images, [17.0, -3.0, 90.0, 44.0, 181.0])
    empty = np.zeros((0, 8, 8, 3), np.float32)
    assert native.geometric(OP["shear_x"], empty, np.zeros(0)).shape == empty.shape


def test_layermix_batches_equal_with_native_on_and_off(monkeypatch):
    """The CPU executor's LayerMix views (with JSD: two augmented views) are the same pixels
    with the native warp and with the NumPy twin."""
    cfg = make_config("layermix", "cifar", jsd=True)
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    images = sample_photos(12, 32, seed=2, min_scale=0.3)
    for iteration in range(3):
        plan = sample_plan(cfg, 12, make_rng(5, 0, 0, iteration), len(bank), bank.side)
        assert any(LAYERMIX_OPS[int(o)] in GEOMETRIC for o in plan.arrays["op"].ravel())
        pics = bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, 32)
        monkeypatch.setenv(native.ENV, "0")
        twin = NumpyExecutor().apply(images, pics, plan)
        monkeypatch.setenv(native.ENV, "1")
        got = NumpyExecutor().apply(images, pics, plan)
        assert np.array_equal(_bits(got), _bits(twin)), iteration


def test_without_a_compiler_the_twin_runs_with_one_warning(without_a_compiler, caplog):
    without_a_compiler()
    images = np.random.default_rng(1).random((2, 16, 16, 3), dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="ipmix_dali.native"):
        first = lm.apply_layermix_op_np(OP["rotate"], images, [10.0, 20.0])
        again = lm.apply_layermix_op_np(OP["shear_y"], images, [10.0, 20.0])
    warnings = [r for r in caplog.records if "native CPU warp is unavailable" in r.message]
    assert len(warnings) == 1 and "install g++" in warnings[0].getMessage()
    assert native.module() is None
    assert np.array_equal(first, lm.apply_layermix_op_np(OP["rotate"], images, [10.0, 20.0],
                                                         native=False))
    assert np.array_equal(again, lm.apply_layermix_op_np(OP["shear_y"], images, [10.0, 20.0],
                                                         native=False))


def test_switched_off_by_the_environment(monkeypatch, caplog):
    monkeypatch.setenv(native.ENV, "0")
    assert native.module() is None and not native.enabled()
    assert native.geometric(OP["rotate"], np.zeros((1, 8, 8, 3), np.float32), [3.0]) is None
    monkeypatch.setenv(native.ENV, "1")
    assert native.enabled() and native.module() is not None
    assert "-O3" in native.host_flags()
    monkeypatch.setenv(native.ENV, "off")  # not a value: kept on, one warning
    with caplog.at_level(logging.WARNING, logger="ipmix_dali.native"):
        assert native.enabled() and native.enabled()
    assert [r.getMessage() for r in caplog.records] == [
        "IPMIX_DALI_NATIVE='off': use 0 (the NumPy twin) or 1 (the native warp); kept on"]


def test_a_non_fused_grid_runs_the_twin(monkeypatch):
    """The kernel rounds the affine grid's matmul as the fused form (GRID_MATMUL_FMA, the
    default). Set to a torch that does not fuse it, the geometric ops run the twin (the native
    kernel would be off by an ulp in the coordinates)."""
    monkeypatch.setattr(lm, "GRID_MATMUL_FMA", False)
    images = np.random.default_rng(2).random((3, 32, 32, 3), dtype=np.float32)
    assert native.geometric(OP["rotate"], images, np.array([10.0, -7.0, 33.0])) is None
    got = lm.apply_layermix_op_np(OP["rotate"], images, [10.0, -7.0, 33.0])
    assert np.array_equal(got, lm.apply_layermix_op_np(OP["rotate"], images, [10.0, -7.0, 33.0],
                                                       native=False))


def test_an_unwritable_cache_runs_the_twin(monkeypatch, caplog):
    from ipmix_dali.kernels import host

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/tmp/ipmix_dali_kernel_emu")

    monkeypatch.setattr(host, "HostModule", unwritable)
    monkeypatch.setattr(native, "_states", {})
    images = np.random.default_rng(3).random((1, 8, 8, 3), dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="ipmix_dali.native"):
        got = lm.apply_layermix_op_np(OP["translate_x"], images, [2.5])
    assert "Permission denied" in caplog.records[0].getMessage()
    assert np.array_equal(got, lm.apply_layermix_op_np(OP["translate_x"], images, [2.5],
                                                       native=False))


def _pixel_and_row_kernels(source, plan, images, pixel_kernel, fills):
    """``plan`` run with its per-pixel kernel (one thread) and with the per-row form on one
    thread and on 3 blocks of 5 threads (the grid-stride loop), into outputs prefilled with
    each of ``fills``: the outputs, by (kernel, grid, fill). The kernel file is built with the
    native path's flags but not serial (the native module runs one thread only)."""
    from ipmix_dali.executors.cupy_ops import execute_plan
    from ipmix_dali.kernels.host import HostModule

    mod = HostModule(source, extra_flags=native.host_flags())

    outs = {}
    for kernel, grid, block in [(pixel_kernel, (1, 1, 1), (1, 1, 1)),
                                (pixel_kernel + "_rows", (1, 1, 1), (1, 1, 1)),
                                (pixel_kernel + "_rows", (3, 1, 1), (5, 1, 1))]:
        def launch(kl, args):
            assert kl.name == pixel_kernel
            mod.launch(kernel, grid=grid, block=block, args=args)

        for fill in fills:
            out = np.full_like(images, fill)
            outs[(kernel, grid, fill)] = execute_plan(plan, images, out,
                                                      to_device=np.ascontiguousarray,
                                                      zeros=np.zeros, launch=launch)
    return outs


@pytest.mark.parametrize("shape", [(24, 40), (7, 33), (1, 70)])
def test_row_kernel_equals_pixel_kernel_on_any_grid(shape):
    """The host runs ``layermix_affine_bilinear_rows`` (one thread per row, chunks of 32
    pixels; widths that are not a multiple of 32 here); it is a GPU kernel too: launched on
    several blocks and threads (the grid-stride loop), it writes the per-pixel kernel's bits."""
    from ipmix_dali.executors.cupy_layermix import prepare_layermix_op

    rng = np.random.default_rng(sum(shape))
    images = rng.normal(0.5, 1.0, (6,) + shape + (3,)).astype(np.float32)
    params = np.array([17.0, 90.0, -33.0, 180.0, 1e-6, 271.0])
    plan = prepare_layermix_op(OP["rotate"], images.shape, params)
    outs = _pixel_and_row_kernels("layermix_ops.cu", plan, images, "layermix_affine_bilinear",
                                  (np.nan,))
    want = outs[("layermix_affine_bilinear", (1, 1, 1), np.nan)]
    for got in outs.values():
        np.testing.assert_array_equal(_bits(got), _bits(want))
    assert not np.isnan(want).all(axis=(1, 2, 3)).any()


# --- the PIL ops' warp (AugMix, PixMix, IPMix): kernels/affine.cu on the host ------------------

PIL_GEOMETRIC = native.PIL_NATIVE_OPS


def _pil_same(name, images, params):
    from ipmix_dali.executors import np_ops
    from ipmix_dali.ops.table import PIL_OPS

    op_id = PIL_OPS.index(name)
    params = np.asarray(params, dtype=np.float64)
    before = images.copy()
    got = native.pil_geometric(op_id, images, params)
    want = np_ops.apply_pil_op(op_id, images, params, native=False)
    assert np.array_equal(images, before), "input modified"
    assert got.dtype == np.uint8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np_ops.apply_pil_op(op_id, images, params), want)
    return got


@pytest.mark.parametrize("name", PIL_GEOMETRIC)
@pytest.mark.parametrize("shape", [(224, 224), (32, 32), (24, 40)])
def test_pil_native_equals_twin(name, shape):
    rng = np.random.default_rng(len(name) + shape[1])
    images = sample_photos(6, shape[0], seed=shape[1])
    if shape[1] != shape[0]:
        images = np.ascontiguousarray(np.resize(images, (6,) + shape + (3,)))
    limit = 30.0 if name == "rotate" else 0.3
    got = _pil_same(name, images, rng.uniform(-limit, limit, 6))
    assert (got != images).any()


@pytest.mark.parametrize("name", PIL_GEOMETRIC)
def test_pil_native_extremes_and_special_angles(name):
    """Rotate's exact fast paths (0, 90, 180, 270 and their equivalents) mixed with general
    angles in one batch, shears far past the border and tiny ones, noise images."""
    params = {
        "rotate": [0.0, 90.0, 180.0, 270.0, -90.0, 450.0, 1e-9, 135.0, -270.5, 179.99],
        "shear_x": [3.0, -2.5, 0.3, -1e-3, 0.0, 1.0, -1.0, 1e-6, 7.5, -0.3],
        "shear_y": [-3.0, 2.5, -0.3, 1e-3, 0.0, -1.0, 1.0, -1e-6, -7.5, 0.3],
    }[name]
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, (len(params), 32, 32, 3), dtype=np.uint8)
    _pil_same(name, images, params)
    # a non-square batch takes rotate's 90 / 270 through the general warp
    _pil_same(name, rng.integers(0, 256, (len(params), 20, 36, 3), dtype=np.uint8), params)


def test_pil_native_takes_any_layout_and_empty_batches():
    rng = np.random.default_rng(12)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)[::-1, :, ::-1]
    _pil_same("rotate", images, [17.0, -3.0, 90.0, 44.0, 181.0])
    from ipmix_dali.ops.table import PIL_OPS

    empty = np.zeros((0, 8, 8, 3), np.uint8)
    assert native.pil_geometric(PIL_OPS.index("shear_y"), empty, np.zeros(0)).shape == (0, 8, 8, 3)


@pytest.mark.parametrize("shape", [(24, 40), (7, 33), (1, 70)])
def test_pil_row_kernel_equals_pixel_kernel_on_any_grid(shape):
    """The host runs ``affine_bilinear_rows`` (one thread per row, chunks of 32 pixels); as a
    GPU kernel on several blocks and threads it writes the per-pixel kernel's bits, every mode
    in one batch."""
    from ipmix_dali.executors.cupy_ops import (
        AFFINE_COLS,
        AFFINE_GENERAL,
        AFFINE_ROWS,
        AFFINE_SHIFT,
        prepare_pil_op,
    )
    from ipmix_dali.ops.table import PIL_OPS

    rng = np.random.default_rng(sum(shape))
    images = rng.integers(0, 256, (6,) + shape + (3,), dtype=np.uint8)
    plan = prepare_pil_op(PIL_OPS.index("rotate"), images.shape,
                          np.array([17.0, 90.0, -33.0, 180.0, 0.0, 271.0]))
    plan.arrays["mode"][:] = [AFFINE_GENERAL, AFFINE_ROWS, AFFINE_COLS, AFFINE_SHIFT,
                              AFFINE_GENERAL, AFFINE_ROWS]
    plan.arrays["coef"][1, 1] = 0.7
    plan.arrays["coef"][2, 3] = -0.4
    plan.arrays["coef"][3, [2, 5]] = [3.0, -2.0]
    plan.arrays["coef"][5, 1] = -1.3
    # every output pixel written: the prefill does not show
    outs = _pixel_and_row_kernels("affine.cu", plan, images, "affine_bilinear", (7, 201))
    want = outs[("affine_bilinear", (1, 1, 1), 7)]
    for got in outs.values():
        np.testing.assert_array_equal(got, want)
    assert (want != 0).mean() > 0.5


def test_pil_native_switched_off_or_without_a_compiler_runs_the_twin(monkeypatch, caplog,
                                                                    without_a_compiler):
    from ipmix_dali.executors import np_ops
    from ipmix_dali.ops.table import PIL_OPS

    rot = PIL_OPS.index("rotate")
    images = np.random.default_rng(13).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    want = np_ops.apply_pil_op(rot, images, [10.0, 20.0], native=False)
    monkeypatch.setenv(native.ENV, "0")
    assert native.pil_geometric(rot, images, np.array([10.0, 20.0])) is None
    assert np.array_equal(np_ops.apply_pil_op(rot, images, [10.0, 20.0]), want)
    monkeypatch.setenv(native.ENV, "1")
    without_a_compiler()
    with caplog.at_level(logging.WARNING, logger="ipmix_dali.native"):
        first = np_ops.apply_pil_op(rot, images, [10.0, 20.0])
        again = np_ops.apply_pil_op(PIL_OPS.index("shear_x"), images, [0.1, 0.2])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "kernels/affine.cu" in warnings[0] and "g++" in warnings[0]
    assert np.array_equal(first, want)
    assert np.array_equal(again, np_ops.apply_pil_op(PIL_OPS.index("shear_x"), images,
                                                     [0.1, 0.2], native=False))


@pytest.mark.parametrize("method", ["augmix", "ipmix", "pixmix"])
def test_pil_batches_equal_with_native_on_and_off(monkeypatch, method):
    """The CPU executor's views (with JSD) are the same pixels with the native PIL warp and with
    the NumPy twin."""
    cfg = make_config(method, "cifar", jsd=True)
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    images = sample_photos(12, 32, seed=3, min_scale=0.3)
    for iteration in range(2):
        plan = sample_plan(cfg, 12, make_rng(6, 0, 0, iteration), len(bank), bank.side)
        pics = None if method == "augmix" else \
            bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, 32)
        monkeypatch.setenv(native.ENV, "0")
        twin = NumpyExecutor().apply(images, pics, plan)
        monkeypatch.setenv(native.ENV, "1")
        got = NumpyExecutor().apply(images, pics, plan)
        assert np.array_equal(_bits(got), _bits(twin)), (method, iteration)
