"""The three entry points are adapters over one Augmenter: the DALI stage callable, the array
function and the batch nn.Module give the same pixels for the same plan key, and so does the
per-sample transform for its own key."""
import numpy as np
import pytest
import torch

from ipmix_dali import augment, make_config
from ipmix_dali.augmenter import Augmenter
from ipmix_dali.executors import get_executor
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.pipeline import AugmentStage
from ipmix_dali.tools.samples import sample_photos
from ipmix_dali.transforms import BatchIPMix, IPMix


@pytest.mark.parametrize("jsd", [False, True])
def test_stage_function_and_module_give_the_augmenters_pixels(jsd):
    images = sample_photos(3, 32, seed=8)
    bank = builtin_mixing_bank(count=4, side=36, seed=3)
    cfg = make_config("ipmix", "cifar", jsd=jsd)
    key = (3, 1, 1, 2)  # seed, shard, epoch, iteration
    aug = Augmenter(cfg, bank, get_executor("numpy"))
    want = aug.views(images, aug.plan(key, len(images)))
    assert len(want) == (3 if jsd else 1)

    # the DALI stage: batch 7 of a shard with 5 batches per epoch is (epoch 1, iteration 2)
    stage = AugmentStage(cfg, bank, get_executor("numpy"), 3, 1, 5, start_batch=7,
                         layout="NHWC")
    staged = stage(list(images))
    staged = staged if jsd else (staged,)
    function = augment(images, bank, method="ipmix", preset="cifar", seed=3, shard=1, epoch=1,
                       iteration=2, jsd=jsd)
    function = function if jsd else (function,)
    module = BatchIPMix(mixing_set=bank, preset="cifar", jsd=jsd, seed=3, rank=1)(
        torch.from_numpy(images), epoch=1, step=2)
    module = module if jsd else (module,)
    for w, s, f, m in zip(want, staged, function, module):
        assert np.array_equal(np.stack(s), w)
        assert np.array_equal(f, w)
        assert np.array_equal(m.numpy(), w)


def test_the_transform_is_the_augmenter_on_its_own_key():
    bank = builtin_mixing_bank(count=4, side=36, seed=3)
    image = sample_photos(1, 32, seed=9)
    tf = IPMix(mixing_set=bank, preset="cifar", jsd=True, seed=5, executor="numpy")
    torch.manual_seed(11)
    got = tf(image[0])
    torch.manual_seed(11)
    key = int(torch.randint(0, 2 ** 62, (1,)))
    aug = Augmenter(tf.config, bank, get_executor("reference"))
    want = aug.views(image, aug.plan((5, key), 1))
    for g, w in zip(got, want):
        assert np.array_equal(g.permute(1, 2, 0).numpy(), w[0])
