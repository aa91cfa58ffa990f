"""The counter-based masks of random_pixels / random_elems (ops/masks.py)."""
import numpy as np

from ipmix_dali.executors.numpy_exec import batch_masks
from ipmix_dali.ops import masks
from ipmix_dali.ops.table import MIX_OP_ID


def test_uniforms_are_uniform_and_decorrelated():
    u = masks.uniform_from_hash(np.uint32(12345), np.arange(200_000, dtype=np.uint32))
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    expected = len(u) / 20
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 19 + 5 * np.sqrt(38), chi2  # df = 19
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # neighbours independent
    v = masks.uniform_from_hash(np.uint32(12346), np.arange(200_000, dtype=np.uint32))
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.01  # adjacent seeds independent
    assert not np.array_equal(u, v)


def test_pinned_values():
    # Pinned bit patterns (24-bit integers u * 2**24): the CUDA twin in kernels/common.cuh must
    # produce the same, and any change of the hash breaks resume of saved plans.
    u = masks.uniform_from_hash(np.uint32(7), np.arange(4, dtype=np.uint32))
    assert [int(x) for x in (u * 2 ** 24).astype(np.uint32)] == [6098509, 1015584, 16113923, 400695]
    u = masks.uniform_from_hash(np.uint32(0xFFFFFFFF), np.array([0, 150527], dtype=np.uint32))
    assert [int(x) for x in (u * 2 ** 24).astype(np.uint32)] == [5338582, 9810178]


def test_mask_rate_and_layout():
    m = masks.pixel_mask(99, 0.3, 224, 224)
    assert m.shape == (224, 224) and abs(m.mean() - 0.3) < 0.01
    e = masks.elem_mask(99, 0.7, 50, 60)
    assert e.shape == (50, 60, 3) and abs(e.mean() - 0.7) < 0.02
    # element (c, y, x) uses index (c*h + y)*w + x: channel 0 equals the pixel mask of the patch
    assert np.array_equal(e[..., 0], masks.pixel_mask(99, 0.7, 50, 60))
    assert not np.array_equal(e[..., 1], e[..., 0])
    assert masks.pixel_mask(5, 0.0, 8, 8).sum() == 0 and masks.pixel_mask(5, 1.0, 8, 8).all()


def test_batch_masks_equal_single():
    seeds = np.array([3, 4, 5], dtype=np.uint32)
    ps = np.array([0.2, 0.5, 0.9], dtype=np.float32)
    bp = batch_masks(MIX_OP_ID["random_pixels"], seeds, ps, 17, 9)
    be = batch_masks(MIX_OP_ID["random_elems"], seeds, ps, 17, 9)
    for i in range(3):
        assert np.array_equal(bp[i, ..., 0], masks.pixel_mask(seeds[i], ps[i], 17, 9))
        assert np.array_equal(be[i], masks.elem_mask(seeds[i], ps[i], 17, 9))
