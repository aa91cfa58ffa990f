"""DALI CPU pipelines: agreement with the executor, exact resume, sharding, real-world files."""
import logging

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nvidia.dali")
torch = pytest.importorskip("torch")

from ipmix_dali import make_config  # noqa: E402
from ipmix_dali.datasets import check_image_file, read_file_list, scan_image_folder  # noqa: E402
from ipmix_dali.executors import get_executor  # noqa: E402
from ipmix_dali.loader import train_loader, val_loader  # noqa: E402
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.pipeline import AugmentStage, iters_per_epoch  # noqa: E402
from ipmix_dali.tools.samples import photo_like_image, write_jpeg_tree

BATCH = 4


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_jpeg_tree(root, classes=3, per_class=5, size=(160, 120), seed=1)  # 15 files
    return scan_image_folder(root)


@pytest.fixture(scope="module")
def bank():
    return builtin_mixing_bank(count=6, side=64, seed=2)


SIZE = 64


def _cfg(method, jsd=True):
    extra = {"patch_sizes": (4, 8, 16, 32, 64)} if method == "ipmix" else {}
    return make_config(method, "imagenet", jsd=jsd, image_size=SIZE, **extra)


def _epochs(loader, epochs):
    out = []
    for _ in range(epochs):
        for images, labels in loader:
            out.append((images, labels))
    return out


def _as_np(images):
    return [t.numpy() for t in images] if isinstance(images, tuple) else [images.numpy()]


def test_labels_and_epoch_length(tree):
    assert tree.classes == ["n00000000", "n00000001", "n00000002"]
    assert tree.labels == [0] * 5 + [1] * 5 + [2] * 5
    loader = val_loader(tree, batch_size=BATCH)
    batches = _epochs(loader, 1)
    assert len(loader) == len(batches) == 4 and loader.samples_per_epoch == 15
    assert [len(lab) for _, lab in batches] == [4, 4, 4, 3]  # partial last batch, no padding
    assert torch.cat([lab for _, lab in batches]).tolist() == tree.labels  # unshuffled, in order


@pytest.mark.parametrize("method", ["ipmix", "pixmix", "augmix", "layermix", "none"])
def test_pipeline_equals_executor_on_the_same_crops(tree, bank, method):
    """Each batch is the executor applied to the pipeline's own crops with the plan of its key
    (the pipeline's stage on 2 threads, the check on one)."""
    cfg = _cfg(method)
    loader = train_loader(tree, cfg, batch_size=BATCH, bank=bank, seed=5, emit_input=True,
                          last_batch_policy="fill", executor=get_executor("numpy", threads=2))
    ex = get_executor("numpy")
    stage = AugmentStage(cfg, bank if method != "augmix" and method != "none" else None, ex,
                         seed=5, shard_id=0, iters=loader.iters, layout="NHWC")
    seen = 0
    raw = [out[0] for _ in range(2) for out in loader._it]  # two epochs of raw outputs
    for b, out in enumerate(raw):  # the epoch part of the key changes after 4 batches
        crops = out["input"].numpy()
        assert crops.shape == (BATCH, SIZE, SIZE, 3) and crops.dtype == np.uint8
        assert stage.plan_key(b) == (5, 0, b // loader.iters, b % loader.iters)
        want = stage(list(crops))
        got = [out[k].numpy().transpose(0, 2, 3, 1) for k in ("clean", "view1", "view2")]
        for g, w in zip(got, want):
            assert np.array_equal(g, np.stack(w))
        seen += 1
    assert seen == 2 * loader.iters == 8
    # JSD: the views differ from each other and from the clean image
    assert not np.array_equal(got[1], got[2]) or method == "none"


def test_jsd_views_share_crop_and_mixing_picture(tree, bank):
    """The clean view is the normalised crop both views were made from; the plan holds one
    mixing picture per sample, which both views' chains use."""
    cfg = _cfg("ipmix")
    loader = train_loader(tree, cfg, batch_size=BATCH, bank=bank, seed=1, emit_input=True)
    out = next(iter(loader._it))[0]
    crops = out["input"].numpy().astype(np.float32) / 255
    mean = np.array(cfg.mean, np.float32)[:, None, None]
    std = np.array(cfg.std, np.float32)[:, None, None]
    clean = out["clean"].numpy() * std + mean
    assert np.abs(clean - crops.transpose(0, 3, 1, 2)).max() < 1e-6
    plan = loader.stage.plan(0, BATCH)
    assert plan.mix_index.shape == (BATCH,)  # one mixing picture per sample, for both views


def test_resume_mid_epoch_is_exact(tree, bank):
    cfg = _cfg("ipmix")
    kw = dict(batch_size=BATCH, bank=bank, seed=9)
    ref = _epochs(train_loader(tree, cfg, **kw), 3)
    for stop in (2, 5, 8):  # mid-epoch 1, mid-epoch 2, an epoch boundary
        loader = train_loader(tree, cfg, **kw)
        it = iter(loader)
        done = []
        while len(done) < stop:
            try:
                done.append(next(it))
            except StopIteration:
                it = iter(loader)
        state = loader.state_dict()
        resumed = train_loader(tree, cfg, **kw)
        resumed.load_state_dict(state)
        rest = []
        while len(done) + len(rest) < len(ref):
            try:
                rest.append(next(resumed))
            except StopIteration:
                pass
        for (im_a, lab_a), (im_b, lab_b) in zip(ref[stop:], rest):
            assert torch.equal(lab_a, lab_b)
            for a, b in zip(_as_np(im_a), _as_np(im_b)):
                assert np.array_equal(a, b)


def test_epochs_differ_and_seeds_repeat(tree, bank):
    cfg = _cfg("ipmix", jsd=False)
    a = _epochs(train_loader(tree, cfg, batch_size=BATCH, bank=bank, seed=3), 2)
    b = _epochs(train_loader(tree, cfg, batch_size=BATCH, bank=bank, seed=3), 2)
    c = _epochs(train_loader(tree, cfg, batch_size=BATCH, bank=bank, seed=4), 1)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert not torch.equal(a[0][0], a[4][0])          # epoch 2 reshuffles and re-draws
    assert not torch.equal(a[0][0], c[0][0])          # another seed
    # every sample once per epoch (reshuffled, shard padded by repetition only in the last batch)
    for epoch in (a[:4], a[4:]):
        labels = torch.cat([lab for _, lab in epoch]).tolist()
        assert sorted(labels) == sorted(tree.labels)


def test_shards_split_the_files(tree, bank):
    cfg = _cfg("none", jsd=False)
    assert iters_per_epoch(15, BATCH, 2) == 2  # shards of 7 and 8
    seen = []
    for shard in (0, 1):
        loader = val_loader(tree, batch_size=BATCH, shard_id=shard, num_shards=2)
        labels = torch.cat([lab for _, lab in _epochs(loader, 1)]).tolist()
        assert len(loader) == 2
        seen.append(labels)
    assert len(seen[0]) == 7 and len(seen[1]) == 8
    assert sorted(seen[0] + seen[1]) == sorted(tree.labels)
    train = [train_loader(tree, cfg, batch_size=BATCH, shard_id=s, num_shards=2, seed=0)
             for s in (0, 1)]
    assert [len(t) for t in train] == [2, 2]  # equal step counts on every rank (DDP)
    x0 = next(iter(train[0]))[0]
    x1 = next(iter(train[1]))[0]
    assert not torch.equal(x0, x1)


def test_float16_nhwc_and_concat_layout(tree, bank):
    cfg = _cfg("augmix")
    loader = train_loader(tree, cfg, batch_size=BATCH, dtype="float16", layout="NHWC",
                          jsd_output="concat", seed=0)
    images, labels = next(iter(loader))
    # NCHW in torch's order whatever the pipeline's layout; NHWC memory is channels_last
    assert images.dtype == torch.float16 and images.shape == (3 * BATCH, 3, SIZE, SIZE)
    assert images.is_contiguous(memory_format=torch.channels_last)
    ref = train_loader(tree, cfg, batch_size=BATCH, seed=0)
    (clean, v1, v2), _ = next(iter(ref))
    want = torch.cat([clean, v1, v2]).half()
    assert torch.equal(images, want)


def test_mixing_reader_mode_is_deterministic_and_resumable(tree, tmp_path):
    mix_root = tmp_path / "mix"
    write_jpeg_tree(mix_root, classes=1, per_class=5, size=(80, 70), seed=7)
    mixing_files = scan_image_folder(mix_root)
    cfg = _cfg("pixmix")
    kw = dict(batch_size=BATCH, mixing_files=mixing_files, mixing_side=64, seed=2)
    ref = _epochs(train_loader(tree, cfg, **kw), 2)
    again = _epochs(train_loader(tree, cfg, **kw), 2)
    assert all(torch.equal(a[0][1], b[0][1]) for a, b in zip(ref, again))
    loader = train_loader(tree, cfg, **kw)
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = loader.state_dict()
    resumed = train_loader(tree, cfg, **kw)
    resumed.load_state_dict(state)
    rest = [x for x in resumed]
    for a, b in zip(ref[3:4], rest):
        assert torch.equal(a[0][1], b[0][1])


def _special_tree(root):
    """A CMYK JPEG, a greyscale JPEG and a PNG named .JPEG, as ImageNet has them."""
    rng = np.random.default_rng(0)
    pic = Image.fromarray(photo_like_image(rng, 96, 80))
    (root / "a").mkdir(parents=True)
    pic.convert("CMYK").save(root / "a" / "cmyk.JPEG", quality=95)
    pic.convert("L").save(root / "a" / "grey.JPEG", quality=95)
    pic.save(root / "a" / "png.JPEG", format="PNG")
    return pic


def test_cmyk_grey_and_png_named_jpeg_decode_to_rgb(tmp_path):
    pic = _special_tree(tmp_path)
    files = scan_image_folder(tmp_path)
    assert [f.rsplit("/", 1)[1] for f in files.files] == ["cmyk.JPEG", "grey.JPEG", "png.JPEG"]
    loader = val_loader(files, batch_size=3, resize=80, crop=80, mean=(0, 0, 0), std=(1, 1, 1),
                        layout="NHWC")
    images, _ = next(iter(loader))
    assert images.shape == (3, 3, 80, 80)
    assert images.is_contiguous(memory_format=torch.channels_last)
    images = images.permute(0, 2, 3, 1).numpy()  # mean 0, std 1: values in [0, 1]
    rgb = np.asarray(pic.crop((8, 0, 88, 80)), np.float32) / 255  # centre crop of 96x80
    grey = np.asarray(pic.convert("L").crop((8, 0, 88, 80)), np.float32) / 255
    assert np.abs(images[2] - rgb).mean() < 1e-6                    # PNG: lossless
    assert np.abs(images[0] - rgb).mean() < 0.03                    # CMYK -> RGB
    assert np.abs(images[1] - grey[..., None]).mean() < 0.02        # grey -> 3 equal channels
    assert np.array_equal(images[1][..., 0], images[1][..., 2])


def _bad_tree(root):
    rng = np.random.default_rng(1)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(3):
        Image.fromarray(photo_like_image(rng, 64, 48)).save(root / "a" / f"ok{i}.JPEG")
    good = (root / "a" / "ok0.JPEG").read_bytes()
    (root / "b" / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (root / "b" / "garbage.JPEG").write_bytes(b"<html>not found</html>" * 4)
    (root / "b" / "empty.JPEG").write_bytes(b"")
    Image.fromarray(photo_like_image(rng, 64, 48)).save(root / "b" / "ok.JPEG")


def test_bad_files_are_named_or_skipped_and_counted(tmp_path, caplog):
    _bad_tree(tmp_path)
    assert check_image_file(str(tmp_path / "a" / "ok0.JPEG")) is None
    assert "truncated" in check_image_file(str(tmp_path / "b" / "truncated.JPEG"))
    with pytest.raises(ValueError) as err:
        scan_image_folder(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "3 bad image file(s)" in msg and "--skip-bad-files" in msg
    for name in ("truncated.JPEG", "garbage.JPEG", "empty.JPEG"):
        assert name in msg
    files = scan_image_folder(tmp_path, skip_bad_files=True)
    assert len(files) == 4 and len(files.skipped) == 3
    loader = val_loader(files, batch_size=2, resize=32, crop=32)
    with caplog.at_level(logging.WARNING, logger="ipmix_dali.loader"):
        n = sum(len(lab) for _, lab in loader)
    assert n == 4
    assert any("3 bad image file(s)" in r.getMessage() and "skipped" in r.getMessage()
               for r in caplog.records)


def test_missing_and_empty_inputs_fail_before_work(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no class folders"):
        scan_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.JPEG")
    with pytest.raises(ValueError, match="class folder.*with no images: b"):
        scan_image_folder(tmp_path)
    files = read_file_list_from(tmp_path)
    assert files.labels == [3] and files.files[0].endswith("x.JPEG")
    with pytest.raises(ValueError, match="needs mixing pictures"):
        train_loader(files, _cfg("ipmix"), batch_size=1)


def read_file_list_from(root):
    (root / "list.txt").write_text("# comment\na/x.JPEG 3\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected 'path label'"):
        (root / "bad.txt").write_text("a/x.JPEG three\n")
        read_file_list(root / "bad.txt")
    return read_file_list(root / "list.txt")


def test_val_matches_torchvision_resize_centre_crop(tree):
    """Shorter side 256 -> centre 224 in DALI vs torchvision on PIL, on the same files."""
    from torchvision import transforms as T

    loader = val_loader(tree, batch_size=5, resize=96, crop=80)
    images, _ = next(iter(loader))
    tf = T.Compose([T.Resize(96), T.CenterCrop(80), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    ref = torch.stack([tf(Image.open(f).convert("RGB")) for f in tree.files[:5]])
    diff = (images - ref).abs() * 0.226 * 255  # in grey levels
    # Decoders (libjpeg-turbo's vs PIL's IDCT/upsampling) and resampling differ slightly.
    assert diff.mean() < 1.5, diff.mean()
    assert float((diff > 8).float().mean()) < 0.01


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["ipmix", "pixmix", "augmix", "layermix"])
def test_gpu_stage_equals_cpu_stage_on_the_same_crops(tree, bank, method):
    """The GPU stage (CuPy executor, GPU-resident bank) against the CPU stage, same crops and plan."""
    import cupy

    cfg = _cfg(method)
    loader = train_loader(tree, cfg, batch_size=BATCH, bank=bank, seed=5, emit_input=True)
    crops = next(iter(loader._it))[0]["input"].numpy()
    mixing = bank if method in ("ipmix", "pixmix", "layermix") else None
    cpu = AugmentStage(cfg, mixing, get_executor("numpy"), 5, 0, loader.iters)
    gpu = AugmentStage(cfg, mixing, get_executor("cupy"), 5, 0, loader.iters, device="gpu")
    want = cpu(list(crops))
    got = gpu([cupy.asarray(c) for c in crops])
    for w, g in zip(want, got):
        diff = np.abs(np.stack(w) - cupy.asnumpy(cupy.stack(g))) * 0.226 * 255
        assert float((diff <= 1.01).mean()) >= 0.999, method


class _FailingExecutor:
    """The NumPy executor with a bug in its third batch."""

    def __init__(self):
        self.inner, self.calls = get_executor("numpy"), 0

    def normalize(self, *args, **kwargs):
        return self.inner.normalize(*args, **kwargs)

    def apply(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 3:
            raise ZeroDivisionError("a bug in the augmentation")
        return self.inner.apply(*args, **kwargs)


def test_stage_errors_surface_as_themselves_not_as_bad_files(tree, bank):
    """An exception inside the augmentation stage is re-raised as AugmentStageError naming the
    stage and batch, with the original exception (and its traceback) as the cause; it is not
    blamed on an image file."""
    from ipmix_dali.loader import AugmentStageError

    loader = train_loader(tree, _cfg("ipmix"), batch_size=BATCH, bank=bank, seed=1,
                          executor=_FailingExecutor(), prefetch_queue_depth=1)
    with pytest.raises(AugmentStageError) as info:
        for _ in loader:
            pass
    err = info.value
    assert "augmentation stage (ipmix) failed on batch 2" in str(err)
    assert "ZeroDivisionError: a bug in the augmentation" in str(err)
    assert "decode" not in str(err) and "--skip-bad-files" not in str(err)
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert err.__cause__.__traceback__.tb_next is not None  # the stage's own frames
