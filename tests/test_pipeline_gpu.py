"""On a GPU: the real DALI GPU pipelines (nvJPEG "mixed" decode, the CuPy stage on DALI's
stream) against the NumPy executor on the same uint8 crops and plans, exact resume of the GPU
loader, float16 and NHWC outputs, and the GPU validation pipeline against the CPU one."""
import numpy as np
import pytest

pytest.importorskip("nvidia.dali")
torch = pytest.importorskip("torch")

from ipmix_dali import make_config  # noqa: E402
from ipmix_dali.datasets import scan_image_folder  # noqa: E402
from ipmix_dali.executors import get_executor  # noqa: E402
from ipmix_dali.loader import train_loader, val_loader  # noqa: E402
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.pipeline import AugmentStage  # noqa: E402
from ipmix_dali.tools.samples import write_jpeg_tree

pytestmark = pytest.mark.gpu

BATCH, SIZE = 8, 64
GREY = 0.226 * 255  # one grey level in normalised units (std ~0.226)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-gpu")
    write_jpeg_tree(root, classes=3, per_class=9, size=(160, 120), seed=3)  # 27 files
    return scan_image_folder(root)


@pytest.fixture(scope="module")
def bank():
    return builtin_mixing_bank(count=6, side=72, seed=2)


def _cfg(method, jsd):
    extra = {"patch_sizes": (4, 8, 16, 32, 64)} if method == "ipmix" else {}
    return make_config(method, "imagenet", jsd=jsd, image_size=SIZE, **extra)


@pytest.mark.parametrize("method", ["none", "augmix", "pixmix", "ipmix", "layermix"])
@pytest.mark.parametrize("jsd", [False, True])
def test_gpu_pipeline_equals_numpy_executor(tree, bank, method, jsd, gpu_close):
    cfg = _cfg(method, jsd)
    loader = train_loader(tree, cfg, batch_size=BATCH, bank=bank, seed=5, device="gpu",
                          emit_input=True, last_batch_policy="fill")
    mixing = bank if method in ("ipmix", "pixmix", "layermix") else None
    stage = AugmentStage(cfg, mixing, get_executor("numpy"), 5, 0, loader.iters)
    names = ("clean", "view1", "view2") if jsd else ("data",)
    batches = 0
    for b, out in enumerate(o[0] for _ in range(2) for o in loader._it):
        crops = out["input"].cpu().numpy()
        assert crops.shape == (BATCH, SIZE, SIZE, 3) and crops.dtype == np.uint8
        want = stage(list(crops))
        want = want if jsd else (want,)
        for name, w in zip(names, want):
            got = out[name]
            assert got.is_cuda and got.shape == (BATCH, 3, SIZE, SIZE)
            gpu_close(got.cpu().numpy(), np.stack(w))
        batches += 1
    assert batches >= 3


@pytest.mark.parametrize("method", ["ipmix", "pixmix"])
def test_gpu_loader_resume_is_exact(tree, bank, method):
    cfg = _cfg(method, True)
    kw = dict(batch_size=BATCH, bank=bank, seed=9, device="gpu")
    ref = [(tuple(t.cpu() for t in x), y.cpu()) for x, y in train_loader(tree, cfg, **kw)]
    loader = train_loader(tree, cfg, **kw)
    it = iter(loader)
    for _ in range(2):
        next(it)
    state = loader.state_dict()
    del it, loader
    resumed = train_loader(tree, cfg, **kw)
    resumed.load_state_dict(state)
    rest = [(tuple(t.cpu() for t in x), y.cpu()) for x, y in resumed]
    assert len(rest) == len(ref) - 2 >= 1
    for (xa, ya), (xb, yb) in zip(ref[2:], rest):
        assert torch.equal(ya, yb)
        for a, b in zip(xa, xb):
            assert torch.equal(a, b)


def test_gpu_float16_nhwc(tree, bank):
    cfg = _cfg("ipmix", True)
    kw = dict(batch_size=BATCH, bank=bank, seed=4, device="gpu")
    half = train_loader(tree, cfg, dtype="float16", layout="NHWC", jsd_output="concat", **kw)
    full = train_loader(tree, cfg, **kw)
    (images, labels), ((c, v1, v2), labels32) = next(iter(half)), next(iter(full))
    assert images.dtype == torch.float16 and images.shape == (3 * BATCH, 3, SIZE, SIZE)
    want = torch.cat([c, v1, v2]).half()
    assert torch.equal(labels.cpu(), labels32.cpu())
    assert torch.equal(images, want)  # float16 written by the kernel = float32 rounded
    # NCHW in torch's order, channels_last in memory: training takes it without another copy
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_gpu_val_pipeline_matches_cpu(tree):
    kw = dict(batch_size=BATCH, resize=72, crop=SIZE)
    gpu = torch.cat([x.cpu() for x, _ in val_loader(tree, device="gpu", **kw)])
    cpu = torch.cat([x for x, _ in val_loader(tree, **kw)])
    assert gpu.shape == cpu.shape == (len(tree), 3, SIZE, SIZE)
    diff = (gpu - cpu).abs() * GREY  # nvJPEG and libjpeg-turbo decode slightly differently
    assert float(diff.mean()) < 1.5 and float((diff > 8).float().mean()) < 0.01
