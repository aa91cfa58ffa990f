"""CuPy raw-kernel PIL ops (ipmix_dali.executors.cupy_ops) against np_ops, bit for bit, on a GPU.

Photo crops (ipmix_dali.tools.samples.sample_photos) at 224 and 32 px plus the edge images of
test_np_ops (constant, all 0, all 255, one constant channel, two grey levels), with test_np_ops's
parameter spreads (at 32 px every image with every parameter; at 224 px each parameter with 5
images, cycling over all), odd shapes and far off-range parameters, and table-sampled op draws.
The same kernels and launch sequence run on the CPU in test_kernels_emulated_ops.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_np_ops import _edge_cases, _odd_batches, _off_range_param, _pairs

from ipmix_dali.executors import np_ops
from ipmix_dali.ops import table
from ipmix_dali.ops.table import PIL_OPS
from ipmix_dali.tools.samples import sample_photos

pytestmark = pytest.mark.gpu


def _gpu(op_id, images, params):
    import cupy as cp

    from ipmix_dali.executors.cupy_ops import apply_pil_op_cupy

    dev = cp.asarray(images)
    before = dev.copy()
    out = apply_pil_op_cupy(op_id, dev, np.asarray(params, dtype=np.float64))
    assert isinstance(out, cp.ndarray) and out.dtype == cp.uint8 and out.shape == dev.shape
    assert out.data.ptr != dev.data.ptr
    assert bool((dev == before).all()), "input modified"
    return cp.asnumpy(out)


def _assert_same(op_id, images, params, what=""):
    params = np.asarray(params, dtype=np.float64)
    ours = _gpu(op_id, images, params)
    ref = np_ops.apply_pil_op(op_id, images, params, native=False)
    bad = np.nonzero(np.any(ours != ref, axis=(1, 2, 3)))[0]
    assert bad.size == 0, (f"{PIL_OPS[op_id]} {what}: {bad.size} images differ, first: image "
                           f"{bad[0]} param {params[bad[0]]}, "
                           f"{int((ours[bad[0]] != ref[bad[0]]).sum())} values")
    return ours


@pytest.fixture(scope="module")
def images():
    out = {}
    for s in (224, 32):
        nat = sample_photos(4, s, seed=s)
        out[s] = np.stack(list(nat) + _edge_cases(s, nat[0]))
    return out


@pytest.mark.parametrize("s", [224, 32])
@pytest.mark.parametrize("name", PIL_OPS)
def test_matches_np_ops(name, s, images):
    imgs = images[s]
    pairs = _pairs(name, s, len(imgs))
    idx = np.array([i for i, _ in pairs])
    params = np.array([p for _, p in pairs], dtype=np.float64)
    _assert_same(PIL_OPS.index(name), imgs[idx], params, f"size {s}")


@pytest.mark.parametrize("name", PIL_OPS)
def test_off_range_and_odd_shapes(name):
    rng = np.random.default_rng(11)
    wide = _off_range_param(name, rng)
    shapes = ((37, 53), (53, 37), (3, 2), (1, 1), (64, 48), (300, 301))
    for h, w, kind, imgs in _odd_batches(rng, shapes, 8):
        params = np.array([wide() for _ in range(8)], dtype=np.float64)
        _assert_same(PIL_OPS.index(name), imgs, params, f"{h}x{w} kind {kind}")


def test_rotate_fast_paths(images):
    angles = [0, 90, 180, 270, -90, -180, 360, 450, -720, 7.9, -7.9, 45, 89, 91]
    for imgs in (images[32][:3], np.ascontiguousarray(images[224][:2, :40, :60])):
        batch = np.concatenate([imgs] * len(angles))
        params = np.repeat(np.array(angles, dtype=np.float64), len(imgs))
        _assert_same(table.PIL_OP_ID["rotate"], batch, params)


def test_table_sampled_params(images):
    rng = np.random.default_rng(7)
    for s, n, severity in ((32, 400, 3.0), (32, 200, 10.0), (224, 128, 1.0), (224, 128, 9.0)):
        op_ids, params = table.sample_ops(rng, table.IPMIX_OPS_ALL, severity, s, n)
        imgs = images[s][rng.integers(0, len(images[s]), n)]
        for op in np.unique(op_ids):
            rows = np.nonzero(op_ids == op)[0]
            _assert_same(int(op), imgs[rows], params[rows], f"sampled, size {s}")


def test_large_batch(images):
    """A batch larger than one grid (grid-stride loops) and many histograms at once."""
    rng = np.random.default_rng(3)
    imgs = np.concatenate([images[224]] * 20)  # 180 x 224 x 224
    for name in ("equalize", "autocontrast", "rotate", "contrast", "sharpness"):
        params = rng.uniform(0, 30, len(imgs)) if name == "rotate" else rng.uniform(0, 9,
                                                                                    len(imgs))
        _assert_same(PIL_OPS.index(name), imgs, params, "large batch")


def test_current_stream_and_non_contiguous_input(images):
    """Runs on a non-default stream (no hidden synchronisation needed for correctness there)
    and accepts a non-contiguous view."""
    import cupy as cp

    from ipmix_dali.executors.cupy_ops import apply_pil_op_cupy

    imgs = images[32]
    params = np.linspace(0.1, 1.9, len(imgs))
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        dev = cp.asarray(imgs)
        outs = {op: apply_pil_op_cupy(op, dev, params) for op in range(len(PIL_OPS))}
        view = cp.asarray(np.concatenate([imgs, imgs], axis=2))[:, :, ::2]
        mirrored = apply_pil_op_cupy(PIL_OPS.index("mirror"), view, params)
    stream.synchronize()
    for op, out in outs.items():
        want = np_ops.apply_pil_op(op, imgs, params, native=False)
        assert np.array_equal(cp.asnumpy(out), want), op
    host_view = np.concatenate([imgs, imgs], axis=2)[:, :, ::2]
    assert np.array_equal(cp.asnumpy(mirrored), np_ops.mirror(host_view, params))


def test_empty_and_bad_arguments(images):
    import cupy as cp

    from ipmix_dali.executors.cupy_ops import apply_pil_op_cupy

    dev = cp.asarray(images[32])
    for op in range(len(PIL_OPS)):
        empty = apply_pil_op_cupy(op, dev[:0], np.zeros(0))
        assert empty.shape == (0, 32, 32, 3) and empty.dtype == cp.uint8
    with pytest.raises(ValueError):
        apply_pil_op_cupy(len(PIL_OPS), dev, np.zeros(len(dev)))
    with pytest.raises(ValueError):
        apply_pil_op_cupy(0, dev, np.zeros(len(dev) - 1))
    with pytest.raises(ValueError):
        apply_pil_op_cupy(0, dev.astype(cp.float32), np.zeros(len(dev)))
    with pytest.raises(ValueError):
        apply_pil_op_cupy(0, images[32], np.zeros(len(dev)))  # NumPy input
