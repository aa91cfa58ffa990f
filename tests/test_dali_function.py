"""ipmix_dali.dali.augment inside a user's own @pipeline_def (the documented example, on the
CPU), against the executor on the same crops and plans."""
import numpy as np
import pytest

pytest.importorskip("nvidia.dali")

from ipmix_dali import make_config, make_rng, sample_plan  # noqa: E402
from ipmix_dali.executors import get_executor  # noqa: E402
from ipmix_dali.mixing import load_mixing_bank, write_fractal_set  # noqa: E402
from ipmix_dali.tools.samples import write_jpeg_tree  # noqa: E402


def test_documented_pipeline_runs_and_equals_the_executor(tmp_path):
    write_jpeg_tree(tmp_path / "train", classes=2, per_class=4, size=(80, 64), seed=1)
    write_fractal_set(str(tmp_path / "fractals"), 4, 72, seed=2)
    root, mix = str(tmp_path / "train"), str(tmp_path / "fractals")

    # The example of ipmix_dali/dali.py, with a 64 px crop (and the crops as a 5th output).
    from nvidia.dali import fn, pipeline_def, types

    import ipmix_dali.dali

    @pipeline_def(batch_size=4, num_threads=2, device_id=None, seed=3)
    def my_pipeline():
        jpegs, labels = fn.readers.file(file_root=root, random_shuffle=True, name="Reader")
        images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB)
        images = fn.resize(images, resize_x=64, resize_y=64)
        clean, view1, view2 = ipmix_dali.dali.augment(images, "ipmix", mixing_set=mix,
                                                      jsd=True, seed=0, image_size=64)
        return clean, view1, view2, labels, images

    pipe = my_pipeline()
    pipe.build()
    cfg = make_config("ipmix", jsd=True, image_size=64)
    bank = load_mixing_bank(mix, side=73)
    for batch in range(2):
        clean, view1, view2, labels, crops = (np.stack([np.asarray(t) for t in out])
                                              for out in pipe.run())
        assert view1.shape == (4, 3, 64, 64) and view1.dtype == np.float32
        plan = sample_plan(cfg, 4, make_rng(0, 0, 0, batch), len(bank), bank.side)
        pics = bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, 64)
        want = get_executor("numpy").apply(crops, pics, plan).transpose(0, 1, 4, 2, 3)
        assert np.array_equal(view1, want[0]) and np.array_equal(view2, want[1])
        assert np.allclose(clean, get_executor("numpy").normalize(crops, cfg).transpose(0, 3, 1, 2))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layout_dependent_ops_may_follow_the_stage(tmp_path, layout):
    """The stage's outputs carry their DALI layout ("CHW" / "HWC"), so a user's layout-dependent
    op after it works: a crop by window (needs to know which axes are H and W) and
    crop_mirror_normalize to a layout named by the user. Without output_layouts DALI refuses
    both."""
    write_jpeg_tree(tmp_path / "train", classes=1, per_class=4, size=(40, 40), seed=1)
    root = str(tmp_path / "train")
    from nvidia.dali import fn, pipeline_def, types

    import ipmix_dali.dali

    @pipeline_def(batch_size=4, num_threads=1, device_id=None, seed=3)
    def user_pipeline():
        jpegs, _ = fn.readers.file(file_root=root, name="Reader")
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        images = fn.resize(images, resize_x=32, resize_y=32)
        view = ipmix_dali.dali.augment(images, "augmix", preset="cifar", seed=0, layout=layout)
        window = fn.crop(view, crop=(8, 8), crop_pos_x=0.0, crop_pos_y=0.0)
        as_hwc = fn.crop_mirror_normalize(view, mean=0.0, std=1.0, output_layout="HWC",
                                          dtype=types.FLOAT)
        return view, window, as_hwc

    pipe = user_pipeline()
    pipe.build()
    view, window, as_hwc = pipe.run()
    assert view.layout() == layout[1:] and window.layout() == layout[1:]
    assert as_hwc.layout() == "HWC"
    v, w, h = (np.stack([np.asarray(t) for t in out]) for out in (view, window, as_hwc))
    hwc = v if layout == "NHWC" else v.transpose(0, 2, 3, 1)
    assert np.array_equal(h, hwc)
    assert np.array_equal(w, v[:, :8, :8] if layout == "NHWC" else v[:, :, :8, :8])


def test_train_pipeline_outputs_carry_their_layouts(tmp_path):
    from ipmix_dali.datasets import scan_image_folder
    from ipmix_dali.pipeline import train_pipeline

    write_jpeg_tree(tmp_path / "train", classes=1, per_class=4, size=(40, 40), seed=1)
    cfg = make_config("augmix", "cifar", jsd=True)
    pipe, _ = train_pipeline(scan_image_folder(str(tmp_path / "train")), cfg, batch_size=4,
                             layout="NHWC", emit_input=True)
    pipe.build()
    outs = pipe.run()
    assert [o.layout() for o in outs] == ["HWC", "HWC", "HWC", "", "HWC"]
