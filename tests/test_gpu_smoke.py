"""GPU twins of the mask hash and the wrap cast (kernels/common.cuh) against NumPy."""
import numpy as np
import pytest

from ipmix_dali.executors import float_ops as fo
from ipmix_dali.ops import masks

pytestmark = pytest.mark.gpu


def test_uniform_and_wrap_match_numpy():
    import cupy as cp

    from ipmix_dali.kernels.build import get_function

    idx = np.arange(1 << 18, dtype=np.uint32)
    out = cp.empty(idx.size, dtype=cp.float32)
    get_function("smoke.cu", "smoke_uniform")(((idx.size + 255) // 256,), (256,),
                                               (np.uint32(12345), cp.asarray(idx), out,
                                                np.int32(idx.size)))
    assert np.array_equal(cp.asnumpy(out), masks.uniform_from_hash(np.uint32(12345), idx))
    c = np.concatenate([np.linspace(-3, 3, 100_001, dtype=np.float32),
                        np.float32([1e6, -1e6, 3e9, 1e30, np.inf, -np.inf, np.nan])])
    got = cp.empty(c.size, dtype=cp.uint8)
    get_function("smoke.cu", "smoke_wrap_u8")(((c.size + 255) // 256,), (256,),
                                              (cp.asarray(c), got, np.int32(c.size)))
    assert np.array_equal(cp.asnumpy(got), fo.to_uint8_wrap(c))
