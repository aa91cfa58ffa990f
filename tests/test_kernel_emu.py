"""The CPU kernel emulator on kernels/smoke.cu: the CUDA hash and wrap cast of common.cuh equal
their NumPy twins (ops/masks.py, float_ops.to_uint8_wrap) element for element."""
import numpy as np
import pytest

from ipmix_dali.executors import float_ops as fo
from ipmix_dali.ops import masks
from ipmix_dali.testing.emulator import EmulatedModule


@pytest.fixture(scope="module")
def smoke():
    return EmulatedModule("smoke.cu")


def test_hash_matches_numpy(smoke):
    idx = np.arange(1 << 16, dtype=np.uint32)
    out = np.zeros(idx.size, dtype=np.float32)
    smoke.launch("smoke_uniform", ((idx.size + 255) // 256,), (256,),
                 (np.uint32(12345), idx, out, np.int32(idx.size)))
    assert np.array_equal(out, masks.uniform_from_hash(np.uint32(12345), idx))


def test_wrap_cast_matches_numpy(smoke):
    c = np.concatenate([np.linspace(-3, 3, 60_001, dtype=np.float32),
                        np.float32([1e6, -1e6, 3e9, -3e9, 1e30, np.inf, -np.inf, np.nan])])
    out = np.zeros(c.size, dtype=np.uint8)
    smoke.launch("smoke_wrap_u8", ((c.size + 255) // 256,), (256,), (c, out, np.int32(c.size)))
    assert np.array_equal(out, fo.to_uint8_wrap(c))


def test_argument_checks(smoke):
    out = np.zeros(4, dtype=np.float32)
    with pytest.raises(TypeError, match="needs np.uint32"):
        smoke.launch("smoke_uniform", (1,), (4,), (12345, np.arange(4, dtype=np.uint32), out,
                                                  np.int32(4)))
    with pytest.raises(KeyError):
        smoke.launch("nope", (1,), (1,), ())


def test_float16_conversion_matches_numpy(smoke):
    """ipmix_f16_bits (the executors' float16 outputs) rounds like NumPy's astype(float16):
    2^20 random bit patterns plus every boundary case (subnormal halves, ties, overflow)."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    special = np.float32([0.0, -0.0, 65504, 65519.99, 65520, -65520, 6.1e-5, 2 ** -14,
                          2 ** -24, 2 ** -25, 2 ** -25 * 1.0000001, 3 * 2 ** -26, 1e-8,
                          np.inf, -np.inf, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 0.1, -2.1179,
                          2.64])
    x = np.concatenate([bits.view(np.float32), special])
    x = x[~np.isnan(x)]  # NaN payloads: see the next test
    out = np.zeros(x.size, dtype=np.uint16)
    smoke.launch("smoke_f16", ((x.size + 255) // 256,), (256,), (x, out, np.int32(x.size)))
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    assert np.array_equal(out, want)


def test_float16_conversion_keeps_nan(smoke):
    x = np.float32([np.nan, -np.nan])
    out = np.zeros(2, dtype=np.uint16)
    smoke.launch("smoke_f16", (1,), (32,), (x, out, np.int32(2)))
    assert np.isnan(out.view(np.float16)).all()


def test_emulator_keeps_subnormals_like_numpy(smoke):
    """No flush to zero on the host either (the GPU build passes --ftz=false)."""
    a = np.float32([1e-20, 3e-39, 1.5e-38, 2.0])
    b = np.float32([1e-20, 0.5, 0.25, 1e-45])
    out = np.zeros(4, dtype=np.float32)
    smoke.launch("smoke_mul", (1,), (32,), (a, b, out, np.int32(4)))
    assert np.array_equal(out, a * b) and (out[:3] != 0).all()
