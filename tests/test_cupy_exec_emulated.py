"""The CuPy executor run through the CuPy stand-in with the CPU kernel emulator, against the
NumPy executor: same plans and inputs, every method, JSD views, float16 and strided outputs
(CI checks the GPU path this way; on a GPU, tests/test_cupy_exec.py runs the same comparison
with CuPy)."""
import numpy as np
import pytest

from ipmix_dali import make_config, make_rng, sample_plan
from ipmix_dali.executors import get_executor
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.testing import cupy_standin
from ipmix_dali.tools.samples import sample_photos


@pytest.fixture(autouse=True)
def numpy_twins(monkeypatch):
    """The CPU side is the NumPy twins (the native CPU path runs these same kernels, so it
    would compare them with themselves)."""
    monkeypatch.setenv("IPMIX_DALI_NATIVE", "0")


@pytest.fixture(scope="module")
def data():
    images = sample_photos(3, 32, seed=21)
    bank = builtin_mixing_bank(count=4, side=36, seed=5)
    return images, bank


def run_emulated(images, pics, plan, **kwargs):
    with cupy_standin.installed(mode="emulate") as device:
        import cupy

        got = get_executor("cupy").apply(cupy.asarray(images),
                                         None if pics is None else cupy.asarray(pics), plan,
                                         **kwargs)
        assert isinstance(got, cupy.ndarray)
        return cupy.asnumpy(got), device.counts


CASES = [("augmix", {}), ("pixmix", {}), ("ipmix", {}), ("ipmix", {"overflow": "clip"}),
         ("ipmix", {"all_ops": True}), ("layermix", {}), ("none", {})]


@pytest.mark.parametrize("method, options", CASES)
def test_emulated_cupy_executor_equals_numpy(data, method, options):
    images, bank = data
    cfg = make_config(method, "cifar", jsd=True, **options)
    for key in range(2):
        plan = sample_plan(cfg, len(images), make_rng(9, 0, 0, key), len(bank), bank.side)
        pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, cfg.image_size)
                if "mix_index" in plan.arrays else None)
        want = get_executor("numpy").apply(images, pics, plan)
        got, counts = run_emulated(images, pics, plan)
        assert got.shape == want.shape == (2, 3, 32, 32, 3) and got.dtype == np.float32
        assert np.array_equal(got, want), (method, options, key,
                                           float(np.abs(got - want).max()))
        # One packed upload of every table (plus the inputs), no CuPy gathers or scatters.
        assert counts["gather"] == counts["scatter"] == 0, counts
        assert counts["h2d"] == (1 if pics is None else 2) + 1, counts


@pytest.mark.parametrize("method", ["ipmix", "augmix", "pixmix", "layermix"])
def test_emulated_cupy_executor_imagenet_preset_64px(method):
    images = sample_photos(2, 64, seed=3)
    bank = builtin_mixing_bank(count=3, side=72, seed=1)
    extra = {"patch_sizes": (4, 8, 16, 32, 64)} if method == "ipmix" else {}
    cfg = make_config(method, "imagenet", jsd=True, image_size=64, all_ops=True, **extra) \
        if method != "layermix" else make_config(method, "imagenet", jsd=True, image_size=64)
    plan = sample_plan(cfg, 2, make_rng(4, 1, 2, 3), len(bank), bank.side)
    pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, 64)
            if "mix_index" in plan.arrays else None)
    want = get_executor("numpy").apply(images, pics, plan)
    got, _ = run_emulated(images, pics, plan)
    assert np.array_equal(got, want), float(np.abs(got - want).max())


@pytest.mark.parametrize("method", ["ipmix", "pixmix", "none"])
def test_emulated_outputs_float16_and_channels_first(data, method):
    """``out=``: a float16 channels-first view gets the float32 views rounded like NumPy's
    astype(float16), in the same single pass."""
    images, bank = data
    cfg = make_config(method, "cifar", jsd=True)
    plan = sample_plan(cfg, len(images), make_rng(2, 0, 1, 0), len(bank), bank.side)
    pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, 32)
            if "mix_index" in plan.arrays else None)
    want = get_executor("numpy").apply(images, pics, plan)
    with cupy_standin.installed(mode="emulate"):
        import cupy

        physical = cupy.empty((2, 3, 3, 32, 32), dtype=cupy.float16)  # (V, N, C, H, W)
        view = physical.transpose(0, 1, 3, 4, 2)
        got = get_executor("cupy").apply(cupy.asarray(images),
                                         None if pics is None else cupy.asarray(pics), plan,
                                         out=view)
        assert got is view
        got = cupy.asnumpy(physical)
    assert np.array_equal(got.view(np.uint16),
                          np.moveaxis(want, -1, 2).astype(np.float16).view(np.uint16))


def test_emulated_crop_pictures_and_normalize(data):
    images, bank = data
    cfg = make_config("ipmix", "cifar", jsd=True)
    plan = sample_plan(cfg, len(images), make_rng(3), len(bank), bank.side)
    with cupy_standin.installed(mode="emulate") as device:
        import cupy

        ex = get_executor("cupy")
        pics = ex.crop_pictures(cupy.asarray(np.asarray(bank.images)), plan, 32)
        clean = ex.normalize(cupy.asarray(images), cfg)
        assert device.counts["kernel"] == 2
        pics, clean = cupy.asnumpy(pics), cupy.asnumpy(clean)
    assert np.array_equal(pics, bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, 32))
    assert np.array_equal(clean, get_executor("numpy").normalize(images, cfg))


@pytest.mark.parametrize("method", ["ipmix", "pixmix"])
def test_multiply_through_the_power_tables_equals_numpy(data, method):
    """Every mixing step a multiply: IPMix's patches read both powers from mix_pow_tables,
    PixMix's rounds the mixing partner's; the pixels are NumPy's, bit for bit."""
    from ipmix_dali.ops.table import MIX_OP_ID

    images, bank = data
    cfg = make_config(method, "cifar", jsd=True)
    plan = sample_plan(cfg, len(images), make_rng(4, 0, 0, 1), len(bank), bank.side)
    mix_op = plan.arrays["mix_op"]
    assert (mix_op >= 0).sum() > 4
    mix_op[mix_op >= 0] = MIX_OP_ID["multiply"]
    pics = bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, cfg.image_size)
    want = get_executor("numpy").apply(images, pics, plan)
    got, counts = run_emulated(images, pics, plan)
    assert np.array_equal(got, want), float(np.abs(got - want).max())
    assert counts["kernel"] > 0
