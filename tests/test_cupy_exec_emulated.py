"""The CuPy executor's launch sequence run by the CPU kernel emulator, against the NumPy
executor: same plans and inputs, every method, JSD views (CI checks the GPU path this way; on a
GPU, tests/test_cupy_exec.py runs the same comparison with CuPy)."""
import numpy as np
import pytest

from kernel_emu import EmulatedModule

from ipmix_dali import make_config, make_rng, sample_plan
from ipmix_dali.builtin_mixing import builtin_mixing_bank
from ipmix_dali.executors import get_executor
from ipmix_dali.executors.cupy_exec import CupyExecutor
from ipmix_dali.samples import sample_photos


class EmulatorBackend:
    """NumPy arrays and kernels/*.cu run thread by thread on the CPU."""

    xp = np
    _modules = {}

    def launch(self, file, name, grid, block, args):
        mod = self._modules.get(file)
        if mod is None:
            mod = self._modules[file] = EmulatedModule(file)
        mod.launch(name, grid, block, args)

    def to_device(self, a):
        return np.ascontiguousarray(a)


@pytest.fixture(scope="module")
def data():
    images = sample_photos(3, 32, seed=21)
    bank = builtin_mixing_bank(count=4, side=36, seed=5)
    return images, bank


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
        got = CupyExecutor(EmulatorBackend()).apply(images, pics, plan)
        assert got.shape == want.shape == (2, 3, 32, 32, 3) and got.dtype == np.float32
        assert np.array_equal(got, want), (method, options, key,
                                           float(np.abs(got - want).max()))


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
    got = CupyExecutor(EmulatorBackend()).apply(images, pics, plan)
    assert np.array_equal(got, want), float(np.abs(got - want).max())
