"""The demo's pieces: the digits ImageFolder and its corruption groups (the corruptions
themselves are tested in test_corruptions.py)."""
import numpy as np
from PIL import Image

from ipmix_dali.datasets import scan_image_folder
from ipmix_dali.tools.demo import GROUPS, write_digits_folder


def test_digits_folder_split_and_pixels(tmp_path):
    counts = write_digits_folder(tmp_path, seed=0)
    assert counts == {"train": 1438, "val": 359} and sum(counts.values()) == 1797
    train, val = scan_image_folder(tmp_path / "train"), scan_image_folder(tmp_path / "val")
    assert train.classes == val.classes == [str(d) for d in range(10)]
    assert not set(map(lambda p: p.rsplit("/", 1)[1], train.files)) & set(
        map(lambda p: p.rsplit("/", 1)[1], val.files))  # disjoint scans
    img = np.asarray(Image.open(val.files[0]))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert img.max() > 200 and img.min() < 30  # ink on paper, not blank
    assert write_digits_folder(tmp_path, seed=0) == counts  # rerun keeps the files


def test_demo_groups_cover_the_15_corruptions_once():
    from ipmix_dali.corruptions import STANDARD

    flat = [c for names in GROUPS.values() for c in names]
    assert sorted(flat) == sorted(STANDARD) and len(flat) == 15
