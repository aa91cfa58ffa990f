"""ipmix_dali.transforms: the per-sample transforms in a real torch DataLoader (workers, pickling,
seeding) and the batch modules, against the executors on the same plans."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ipmix_dali import make_config, make_rng, sample_plan  # noqa: E402
from ipmix_dali.executors import get_executor  # noqa: E402
from ipmix_dali.mixing import builtin_mixing_bank, write_fractal_set  # noqa: E402
from ipmix_dali.tools.samples import sample_photos  # noqa: E402
from ipmix_dali.transforms import AugMix, BatchIPMix, BatchLayerMix, IPMix, LayerMix, PixMix  # noqa: E402

SIZE = 32


class Photos(torch.utils.data.Dataset):
    def __init__(self, transform, n=6):
        self.images = sample_photos(n, SIZE, seed=3)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i]))


@pytest.mark.parametrize("cls", [IPMix, PixMix, AugMix, LayerMix])
def test_transform_equals_the_reference_executor_on_its_plan(cls):
    """The transform's views are the reference (PIL, per sample) executor's on the plan of the
    key it drew: the reference code's distribution, by construction and by value."""
    tf = cls(preset="cifar", jsd=True, seed=5)
    image = sample_photos(1, SIZE, seed=9)
    torch.manual_seed(11)
    clean, v1, v2 = tf(torch.from_numpy(image[0]).permute(2, 0, 1))  # a CHW uint8 tensor
    assert clean.shape == v1.shape == (3, SIZE, SIZE) and v1.dtype == torch.float32
    torch.manual_seed(11)
    key = int(torch.randint(0, 2 ** 62, (1,)))
    cfg = tf.config
    bank = tf._augmenter.bank
    plan = sample_plan(cfg, 1, make_rng(5, key), len(bank) if bank else 0,
                       bank.side if bank else 0)
    pics = bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, SIZE) if bank else None
    want = get_executor("reference").apply(image, pics, plan)[:, 0]
    got = np.stack([v1.numpy(), v2.numpy()]).transpose(0, 2, 3, 1)
    diff = np.abs(got - want) * 0.5 * 255  # CIFAR std 0.5: grey levels
    assert float(diff.max()) <= 1.01 and float((diff > 0.01).mean()) < 0.01, float(diff.max())
    assert torch.allclose(clean, (torch.from_numpy(image[0]).permute(2, 0, 1) / 255 - 0.5) / 0.5)


def test_dataloader_workers_are_seeded_and_reproducible(tmp_path):
    """Picklable into 2 workers; the mixing set folder is loaded once per worker (memory-mapped);
    torch.manual_seed repeats a run, every sample gets its own plan."""
    write_fractal_set(str(tmp_path / "mix"), 4, 40, seed=1)
    tf = IPMix(mixing_set=str(tmp_path / "mix"), preset="cifar", jsd=True)

    def epoch():
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(Photos(tf), batch_size=3, num_workers=2)
        return [torch.cat(views) for views in loader]

    a, b = epoch(), epoch()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    views = torch.cat(a).reshape(2, 3, 3, 3, SIZE, SIZE)  # batches, (clean, v1, v2), samples
    assert not torch.equal(views[:, 1], views[:, 2])  # two independent views
    assert tf._augmenter is None  # the parent never loaded the bank: each worker did


def test_wrong_size_is_one_line():
    with pytest.raises(ValueError, match=r"takes 32x32 RGB uint8 images \(crop first"):
        IPMix(preset="cifar")(np.zeros((40, 40, 3), np.uint8))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("cls, method", [(BatchIPMix, "ipmix"), (BatchLayerMix, "layermix")])
def test_batch_module_on_the_cpu(layout, cls, method):
    images = sample_photos(4, SIZE, seed=2)
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    module = cls(mixing_set=bank, preset="cifar", jsd=True, seed=7)
    x = torch.from_numpy(images)
    x = x.permute(0, 3, 1, 2).contiguous() if layout == "NCHW" else x
    clean, v1, v2 = module(x, epoch=2, step=5)
    cfg = make_config(method, "cifar", jsd=True)
    plan = sample_plan(cfg, 4, make_rng(7, 0, 2, 5), len(bank), bank.side)
    pics = bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, SIZE)
    want = get_executor("numpy").apply(images, pics, plan)
    got = torch.stack([v1, v2]).numpy()
    if layout == "NCHW":
        assert v1.shape == (4, 3, SIZE, SIZE)
        got = got.transpose(0, 1, 3, 4, 2)
    assert np.array_equal(got, want)
    again = module(x, epoch=2, step=5)[1]
    assert torch.equal(again, v1) and not torch.equal(module(x, epoch=2, step=6)[1], v1)


@pytest.mark.gpu
def test_batch_module_on_cuda_equals_the_cpu(gpu_close):
    images = sample_photos(8, 224, seed=2)
    bank = builtin_mixing_bank(count=4, side=256, seed=1)
    module = BatchIPMix(mixing_set=bank, jsd=True, seed=3)
    cpu = module(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), epoch=1, step=2)
    gpu = module(torch.from_numpy(images).cuda().permute(0, 3, 1, 2).contiguous(), epoch=1,
                 step=2)
    for c, g in zip(cpu, gpu):
        assert g.is_cuda
        gpu_close(g.cpu().numpy(), c.numpy())
