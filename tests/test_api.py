"""ipmix_dali.augment on NumPy arrays and CPU torch tensors (the CuPy path is a gpu test)."""
import numpy as np
import pytest
import torch

from ipmix_dali import augment, make_config, make_rng, sample_plan
from ipmix_dali.executors import get_executor
from ipmix_dali.executors.float_ops import normalize_u8
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.tools.samples import sample_photos


@pytest.fixture(scope="module")
def images():
    return sample_photos(6, 32, seed=21)


def test_augment_equals_plan_and_executor(images):
    bank = builtin_mixing_bank(count=8, side=36, seed=2)
    out = augment(images, bank, method="ipmix", preset="cifar", seed=3, epoch=1, iteration=7)
    cfg = make_config("ipmix", "cifar")
    plan = sample_plan(cfg, 6, make_rng(3, 0, 1, 7), len(bank), bank.side)
    pics = bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, 32)
    expected = get_executor("numpy").apply(images, pics, plan)[0]
    assert out.dtype == np.float32 and out.shape == (6, 32, 32, 3)
    assert np.array_equal(out, expected)
    # a plain uint8 array works as a bank too
    again = augment(images, np.asarray(bank.images), method="ipmix", preset="cifar", seed=3,
                    epoch=1, iteration=7)
    assert np.array_equal(again, out)


def test_augment_jsd_and_torch(images):
    clean, v1, v2 = augment(images, method="pixmix", preset="cifar", jsd=True, seed=1)
    assert np.array_equal(clean, normalize_u8(images, (0.5,) * 3, (0.5,) * 3))
    assert not np.array_equal(v1, v2)
    t = augment(torch.from_numpy(images), method="augmix", preset="cifar", seed=4)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert np.array_equal(t.numpy(), augment(images, method="augmix", preset="cifar", seed=4))


def test_augment_errors(images):
    with pytest.raises(ValueError, match="uint8"):
        augment(images.astype(np.float32), method="none", preset="cifar")
    with pytest.raises(TypeError):
        augment(images.tolist(), method="none", preset="cifar")
    with pytest.raises(ValueError, match="image_size 224"):
        augment(images, method="none", preset="imagenet")


def test_the_documented_gpu_tolerance(gpu_close):
    """What the GPU tests allow (they run only on a GPU; the rule itself is checked here)."""
    want = np.zeros(100_000, np.float32)
    got = want.copy()
    got[:90] = 1 / (255 * 0.229)  # 9e-4 of the values one level away: allowed
    gpu_close(got, want)
    got[:101] = 1 / (255 * 0.229)  # 1.01e-3 of the values: too many
    with pytest.raises(AssertionError, match="of the values differ"):
        gpu_close(got, want)
    got = want.copy()
    got[0] = 0.05  # more than two levels
    with pytest.raises(AssertionError, match="levels"):
        gpu_close(got, want)


@pytest.mark.gpu
def test_augment_cupy_and_cuda_tensor_match_numpy(images, gpu_close):
    import cupy

    expected = augment(images, method="ipmix", preset="cifar", seed=5)
    got = augment(cupy.asarray(images), method="ipmix", preset="cifar", seed=5)
    gpu_close(cupy.asnumpy(got), expected)
    t = augment(torch.from_numpy(images).cuda(), method="ipmix", preset="cifar", seed=5)
    assert t.is_cuda
    gpu_close(t.cpu().numpy(), expected)
