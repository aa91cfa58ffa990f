"""The CPU kernel emulator on kernels/smoke.cu: the CUDA hash and wrap cast of common.cuh equal
their NumPy twins (ops/masks.py, float_ops.to_uint8_wrap) element for element."""
import numpy as np
import pytest
from ipmix_dali.kernels.emulator import EmulatedModule

from ipmix_dali.executors import float_ops as fo
from ipmix_dali.ops import masks


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
