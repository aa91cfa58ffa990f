"""The CPU stage's crop resize and flip (ipmix_dali.crop_resize, kernels/resample.cu): Pillow
13's BILINEAR resize byte for byte (the twin and the compiled form, both pass orders, up and
down, one-pixel sides, the order's boundary), the GPU form of the kernel equal to the host form
on several grids, several threads equal to one, and the training pipeline's crops
equal to Pillow's resize of DALI's decoded crops."""
import numpy as np
import pytest
from PIL import Image

from ipmix_dali import crop_resize
from ipmix_dali.corruptions.pil_resample import vertical_pass_first
from ipmix_dali.executors import native
from ipmix_dali.kernels.host import HostModule


def pillow(crop, size, flip=False):
    out = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
    return out[:, ::-1] if flip else out


def random_cases(count, seed, max_side=600):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        h, w = (int(v) for v in rng.integers(1, max_side, 2))
        size = int(rng.choice([224, 32, 7, 300]))
        yield rng.integers(0, 256, (h, w, 3), dtype=np.uint8), size, bool(rng.integers(0, 2))


@pytest.fixture
def native_on(monkeypatch):
    monkeypatch.setenv(native.ENV, "1")
    if native.load(crop_resize.SOURCE) is None:
        pytest.fail(f"kernels/resample.cu did not build here: {native.error(crop_resize.SOURCE)}")


def test_the_compiled_resize_is_pillows(native_on):
    """150 random crops 1-600 px a side to 7, 32, 224 and 300 px (down, up, one axis each way,
    both pass orders), flipped or not: Pillow's bytes, in one call with mixed sizes too."""
    cases = list(random_cases(150, 0))
    for crop, size, flip in cases:
        got = crop_resize.resize_crops([crop], size, [flip])[0]
        np.testing.assert_array_equal(got, pillow(crop, size, flip), err_msg=str(crop.shape))
    batch = [(c, f) for c, s, f in cases if s == 224]
    got = crop_resize.resize_crops([c for c, _ in batch], 224, [f for _, f in batch])
    for g, (c, f) in zip(got, batch):
        np.testing.assert_array_equal(g, pillow(c, 224, f))


def test_the_twin_is_pillows():
    for crop, size, flip in random_cases(40, 1, max_side=400):
        got = crop_resize.resize_crops_twin([crop], size, [flip])[0]
        np.testing.assert_array_equal(got, pillow(crop, size, flip), err_msg=str(crop.shape))


def test_the_pass_order_at_its_boundary(native_on):
    """Every size within a few pixels of where Pillow 13 switches to the vertical pass first,
    and heights that grow while the width shrinks a lot (the horizontal pass stays first)."""
    rng = np.random.default_rng(2)
    checked = 0
    for out_h, out_w in ((224, 224), (50, 60)):
        for dh in range(-3, 4):
            for dw in (-40, -6, -2, -1, 0, 1, 2, 6, 40):
                h, w = out_h + dh, out_w + dw
                crop = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                expected = np.asarray(Image.fromarray(crop).resize((out_w, out_h), Image.BILINEAR))
                if out_h == out_w:
                    np.testing.assert_array_equal(
                        crop_resize.resize_crops([crop], out_h, [False])[0], expected)
                from ipmix_dali.corruptions.pil_resample import resize

                np.testing.assert_array_equal(resize(crop[None], (out_w, out_h), np,
                                                     "bilinear")[0], expected, err_msg=f"{h}x{w}")
                checked += 1
    assert checked == 2 * 7 * 9
    assert vertical_pass_first(200, 300, 224, 224) and not vertical_pass_first(300, 200, 224, 224)
    assert not vertical_pass_first(10, 220, 224, 224)  # the height grows: horizontal first


def test_a_crop_already_the_output_size_is_copied_and_flipped(native_on):
    crop = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    got = crop_resize.resize_crops([crop, crop], 32, [False, True])
    np.testing.assert_array_equal(got[0], crop)
    np.testing.assert_array_equal(got[1], crop[:, ::-1])


def test_into_out_with_a_sample_stride(native_on):
    """``out`` may be a view whose samples are apart (rows dense): the stage pool's shared block."""
    rng = np.random.default_rng(4)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((90, 70), (20, 300))]
    big = np.zeros((4, 40, 40, 3), np.uint8)
    out = big[::2]
    crop_resize.resize_crops(crops, 40, [True, False], out=out)
    np.testing.assert_array_equal(big[0], pillow(crops[0], 40, True))
    np.testing.assert_array_equal(big[2], pillow(crops[1], 40))
    assert not big[1].any() and not big[3].any()
    with pytest.raises(ValueError, match="out is uint8 \\(2, 41, 41, 3\\)"):
        crop_resize.resize_crops(crops, 40, [0, 0], out=np.zeros((2, 41, 41, 3), np.uint8))


def test_without_a_compiler_the_twin_gives_the_same_bytes(without_a_compiler, monkeypatch):
    monkeypatch.setenv(native.ENV, "1")
    cases = list(random_cases(6, 5, max_side=300))
    without_a_compiler()
    for crop, size, flip in cases:
        np.testing.assert_array_equal(crop_resize.resize_crops([crop], size, [flip])[0],
                                      pillow(crop, size, flip))
    assert native.error(crop_resize.SOURCE) is not None


def test_bad_crops_are_one_line_errors():
    good = np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="sample 1 is float32 \\(5, 5, 3\\).*output_type=RGB"):
        crop_resize.resize_crops([good, good.astype(np.float32)], 8, [0, 0])
    with pytest.raises(ValueError, match="sample 0 is uint8 \\(5, 5\\)"):
        crop_resize.resize_crops([good[..., 0]], 8, [0])
    with pytest.raises(ValueError, match="2 crops but 1 flips"):
        crop_resize.resize_crops([good, good], 8, [0])


# --- the GPU form (one thread per output pixel) against the host form ---------------------------

GRIDS = [((1, 1, 1), (1, 1, 1)), ((3, 1, 1), (5, 1, 1)), ((7, 1, 1), (64, 1, 1))]


def test_the_gpu_form_equals_the_host_form_on_any_grid(native_on):
    mod = HostModule(crop_resize.SOURCE, extra_flags=native.host_flags())
    rng = np.random.default_rng(6)
    shapes = [(37, 41), (13, 90), (90, 13), (16, 16), (200, 150), (5, 300)]
    crops = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in shapes]
    size, n = 16, len(crops)
    flips = np.array([i % 2 for i in range(n)], np.int32)
    args = (np.array([c.ctypes.data for c in crops], np.uint64),
            np.array([c.shape[0] for c in crops], np.int32),
            np.array([c.shape[1] for c in crops], np.int32), flips)
    expected = crop_resize.resize_crops(crops, size, flips)
    for grid, block in GRIDS:
        out = np.full((n, size, size, 3), 7, np.uint8)
        mod.launch("resample_pixels", grid=grid, block=block,
                   args=args + (out, np.int64(size * size * 3), np.int32(n), np.int32(size),
                                np.int32(size)))
        np.testing.assert_array_equal(out, expected, err_msg=str(grid))
    for c, f, e in zip(crops, flips, expected):
        np.testing.assert_array_equal(e, pillow(c, size, f))


# --- threads and the pipeline --------------------------------------------------------------------

def test_threads_resize_as_one_thread_in_the_background(native_on):
    """CropResizer: the batch cut into balanced shares on threads (the compiled resize releases
    the GIL) gives one thread's bytes; start() returns at once and wait() fills ``out``; an
    error in a thread is raised by wait() as itself."""
    from ipmix_dali.crop_resize import CropResizer

    cases = [(c, f) for c, s, f in random_cases(20, 7, max_side=500)]
    crops, flips = [c for c, _ in cases], [f for _, f in cases]
    expected = crop_resize.resize_crops(crops, 64, flips)
    resizer = CropResizer(3)
    try:
        out = np.zeros_like(expected)
        wait = resizer.start(crops, flips, 64, out)
        assert wait() is out
        np.testing.assert_array_equal(out, expected)
        small = np.zeros_like(expected[:1])
        resizer.start(crops[:1], flips[:1], 64, small)()  # one sample: on the caller's thread
        np.testing.assert_array_equal(small, expected[:1])
        with pytest.raises(ValueError, match="out is uint8"):
            resizer.start(crops, flips, 64, np.zeros((20, 63, 64, 3), np.uint8))()
        with pytest.raises(ValueError, match="sample 0 is float64"):
            resizer.start([np.zeros((4, 4, 3))], [0], 64, out[:1])
    finally:
        resizer.close()
    with pytest.raises(ValueError, match="threads must be >= 1"):
        CropResizer(0)


def test_balanced_parts():
    from ipmix_dali.crop_resize import balanced_parts

    assert balanced_parts([1] * 10, 2) == [(0, 5), (5, 10)]
    assert balanced_parts([1, 1, 1, 10], 2) == [(0, 3), (3, 4)]  # the nearer cut, not past it
    assert balanced_parts([1] * 7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert balanced_parts([5], 2) == [(0, 0), (0, 1)]  # every worker gets a (maybe empty) part
    assert balanced_parts([], 2) == [(0, 0), (0, 0)]


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory):
    from ipmix_dali.tools.samples import write_jpeg_tree

    root = tmp_path_factory.mktemp("crops")
    write_jpeg_tree(str(root), classes=2, per_class=4, seed=3)
    return str(root)


def _first_batch(files, mode, flip=True):
    from ipmix_dali import make_config
    from ipmix_dali.pipeline import train_pipeline

    cfg = make_config("none", "imagenet")
    pipe, _ = train_pipeline(files, cfg, batch_size=8, num_threads=1, seed=5, emit_input=True,
                             crop_resize=mode, flip=flip)
    pipe.build()
    out = pipe.run()
    return [np.array(t) for t in out[-1]]


def test_the_pipelines_crops_are_pillows_resize_of_dalis_crops(jpeg_tree):
    """crop_resize="pillow" (the CPU default) and "dali" draw the same boxes and flips (the same
    DALI random ops, seeded alike); Pillow's resize of the box DALI decodes is what "pillow"
    gives, and DALI's own resize differs from it by a little (its float filter)."""
    from nvidia.dali import fn, pipeline_def, types

    from ipmix_dali.datasets import scan_image_folder
    from ipmix_dali.pipeline import dali_seed

    files = scan_image_folder(jpeg_tree)
    ours = _first_batch(files, "auto")
    theirs = _first_batch(files, "dali")

    @pipeline_def(batch_size=8, num_threads=1, device_id=None, seed=dali_seed(5, 0))
    def crops():
        jpegs, _ = fn.readers.file(files=list(files.files), labels=list(files.labels),
                                   shard_id=0, num_shards=1, shuffle_after_epoch=True,
                                   pad_last_batch=True, name="Reader")
        images = fn.decoders.image_random_crop(
            jpegs, device="cpu", output_type=types.RGB, random_area=[0.08, 1.0],
            random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=10)
        return images, fn.random.coin_flip(probability=0.5)

    pipe = crops()
    pipe.build()
    boxes, flips = (list(t) for t in pipe.run())
    assert any(int(np.array(f)) for f in flips) and not all(int(np.array(f)) for f in flips)
    for got, box, flip, dali in zip(ours, boxes, flips, theirs):
        box = np.array(box)
        np.testing.assert_array_equal(got, pillow(box, 224, int(np.array(flip))))
        assert np.abs(got.astype(int) - dali.astype(int)).mean() < 3.0
    # without the flip: the same boxes, none mirrored
    for got, box in zip(_first_batch(files, "pillow", flip=False), boxes):
        np.testing.assert_array_equal(got, pillow(np.array(box), 224))


def test_the_gpu_pipeline_refuses_the_stage_resize():
    from ipmix_dali.pipeline import resolve_crop_resize

    assert resolve_crop_resize("auto", "cpu") == "pillow"
    assert resolve_crop_resize("auto", "gpu") == "dali"
    with pytest.raises(ValueError, match="runs on the CPU stage only"):
        resolve_crop_resize("pillow", "gpu")
    with pytest.raises(ValueError, match="crop_resize must be one of"):
        resolve_crop_resize("pil", "cpu")


def test_views_with_the_first_view_done_computes_only_the_rest():
    """The stage normalises JSD's clean view (or "none"'s view) on its resize threads and asks
    the Augmenter for the rest only; asking that of a plan without such a view is an error."""
    from ipmix_dali import make_config, make_rng, sample_plan
    from ipmix_dali.augmenter import Augmenter
    from ipmix_dali.executors.numpy_exec import NumpyExecutor
    from ipmix_dali.mixing.builtin import builtin_mixing_bank

    bank = builtin_mixing_bank(count=4, side=40)
    cfg = make_config("augmix", "imagenet", jsd=True, image_size=32)
    images = np.random.default_rng(9).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    plan = sample_plan(cfg, 3, make_rng(1, 0, 0, 0), len(bank), bank.side)
    aug = Augmenter(cfg, bank, NumpyExecutor())
    full = np.stack(aug.views(images, plan))
    out = np.full_like(full, np.nan)
    out[0] = 7.0  # "already done": must be left as it is
    aug.views(images, plan, out=out, first_view_done=True)
    assert (out[0] == 7.0).all()
    np.testing.assert_array_equal(out[1:], full[1:])
    plain = Augmenter(make_config("augmix", "imagenet", image_size=32), bank, NumpyExecutor())
    with pytest.raises(ValueError, match="first_view_done needs out, and a clean view"):
        plain.views(images, plan, out=out[1:], first_view_done=True)
