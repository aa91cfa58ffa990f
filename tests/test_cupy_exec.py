"""On a GPU: the CuPy executor against the NumPy executor (same plans and inputs)."""
import pytest

from ipmix_dali import make_config, make_rng, sample_plan
from ipmix_dali.executors import get_executor
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.tools.samples import sample_photos


@pytest.fixture(autouse=True)
def numpy_twins(monkeypatch):
    """The CPU side is the NumPy twins (the native CPU path runs these same kernels, so it
    would compare them with themselves)."""
    monkeypatch.setenv("IPMIX_DALI_NATIVE", "0")


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["none", "augmix", "pixmix", "ipmix", "layermix"])
@pytest.mark.parametrize("preset, size, side", [("cifar", 32, 36), ("imagenet", 224, 256)])
def test_cupy_executor_equals_numpy(method, preset, size, side, gpu_close):
    import cupy

    images = sample_photos(8, size, seed=2)
    bank = builtin_mixing_bank(count=6, side=side, seed=4)
    cfg = make_config(method, preset, jsd=True)
    plan = sample_plan(cfg, len(images), make_rng(1, 0, 0, 7), len(bank), bank.side)
    pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, size)
            if "mix_index" in plan.arrays else None)
    want = get_executor("numpy").apply(images, pics, plan)
    got = cupy.asnumpy(get_executor("cupy").apply(cupy.asarray(images),
                                                  None if pics is None else cupy.asarray(pics),
                                                  plan))
    # Bit-exact but for the device pow of multiply (<= 2 ulp in double, rare after rounding).
    gpu_close(got, want)
