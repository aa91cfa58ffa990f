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
