"""box_resize against Pillow's Image.resize(size, Image.BOX): the very same bytes, every case."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ipmix_dali.corruptions.params import PRESETS
from ipmix_dali.corruptions.pil_resample import box_resize, box_taps, vertical_pass_first
from ipmix_dali.tools.samples import sample_photos

IMAGENET_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
CIFAR_PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)


def pil_box_resize(images: np.ndarray, size) -> np.ndarray:
    """The reference: PIL, one image at a time."""
    return np.stack([np.asarray(Image.fromarray(img).resize(size, Image.BOX)) for img in images])


def assert_same_as_pil(images: np.ndarray, size) -> np.ndarray:
    ours = box_resize(images, size, xp=np)
    expected = pil_box_resize(images, size)
    assert ours.dtype == np.uint8 and ours.shape == expected.shape
    if not np.array_equal(ours, expected):
        wrong = np.argwhere(ours != expected)
        pytest.fail(f"{images.shape[1:3]} -> size {size}: {len(wrong)} values differ, first at "
                    f"{wrong[0].tolist()} ({ours[tuple(wrong[0])]} vs {expected[tuple(wrong[0])]})")
    return ours


def random_images(n, height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def photos32():
    return sample_photos(3, 32, seed=4, min_scale=0.3)


def test_pixelate_factors_are_the_corruption_parameters():
    assert PRESETS["imagenet"]["pixelate"] == IMAGENET_PIXELATE
    assert PRESETS["cifar"]["pixelate"] == CIFAR_PIXELATE


def check_pixelate(images, factor):
    """Down to (int(w*c), int(h*c)) and back up to (w, h), as the pixelate corruption does."""
    height, width = images.shape[1:3]
    small = assert_same_as_pil(images, (int(width * factor), int(height * factor)))
    assert_same_as_pil(small, (width, height))


@pytest.mark.parametrize("factor", IMAGENET_PIXELATE)
def test_pixelate_imagenet_224(factor, photos224):
    check_pixelate(photos224, factor)
    check_pixelate(random_images(2, 224, 224, seed=1), factor)


@pytest.mark.parametrize("factor", CIFAR_PIXELATE)
def test_pixelate_cifar_32(factor, photos32):
    check_pixelate(photos32, factor)
    check_pixelate(random_images(4, 32, 32, seed=2), factor)


@pytest.mark.parametrize("factor", IMAGENET_PIXELATE + CIFAR_PIXELATE)
@pytest.mark.parametrize("height, width", [(57, 91), (91, 57)])
def test_pixelate_odd_non_square(height, width, factor, photos224):
    check_pixelate(np.ascontiguousarray(photos224[:, 10:10 + height, 20:20 + width]), factor)
    check_pixelate(random_images(2, height, width, seed=3), factor)


@pytest.mark.parametrize("size", [
    (112, 112), (100, 150), (150, 100), (224, 100), (100, 224),   # one axis kept: one pass only
    (300, 50), (50, 300), (200, 50), (223, 17), (17, 223),       # one down, one up; both orders
    (333, 401), (449, 448), (1, 1), (1, 224), (224, 1),
])
def test_arbitrary_sizes_224(size, photos224):
    assert_same_as_pil(photos224, size)


def test_every_size_of_a_small_image():
    # Every output width 1..60 (down and up from 37), each with a few heights (from 23).
    images = random_images(2, 23, 37, seed=5)
    heights = np.random.default_rng(6).integers(1, 50, (60, 3))
    for width in range(1, 61):
        for height in heights[width - 1]:
            assert_same_as_pil(images, (width, int(height)))


@pytest.mark.parametrize("height, width, size", [
    ((1, 9, (4, 5))), ((9, 1, (5, 4))), ((1, 1, (7, 3))), ((2, 3, (1, 1))),
])
def test_degenerate_sizes(height, width, size):
    assert_same_as_pil(random_images(2, height, width, seed=7), size)


def test_same_size_is_an_equal_copy(photos224):
    out = box_resize(photos224, (224, 224))
    assert np.array_equal(out, photos224) and out is not photos224


def test_pass_order_matters_and_follows_pillow(photos224):
    # 224x224 -> 200x50: the height loses 174 pixels, more than twice the width's 24, so Pillow
    # 13 goes vertically first. Horizontal-then-vertical gives different pixels here, so the
    # other tests would catch a wrong order.
    size = (200, 50)
    assert vertical_pass_first(224, 224, *size)
    assert not vertical_pass_first(224, 224, 134, 134)          # pixelate: horizontal first
    horizontal_first = box_resize(box_resize(photos224, (200, 224)), size)
    vertical_first = box_resize(box_resize(photos224, (224, 50)), size)
    expected = pil_box_resize(photos224, size)
    assert np.array_equal(vertical_first, expected)
    assert not np.array_equal(horizontal_first, expected)
    assert np.array_equal(box_resize(photos224, size), expected)


def test_taps_are_pillow_box_weights():
    # 224 -> 56 (scale 4): each output pixel averages the 4 input pixels whose centres fall in
    # its box (half-open on the left), weight round(2**22 / 4) each.
    indices, weights = box_taps(224, 56)
    assert indices.shape == weights.shape == (56, 4)
    assert indices[:, 0].tolist() == list(range(0, 224, 4))
    assert (np.diff(indices, axis=1) == 1).all() and (weights == 1 << 20).all()
    # 32 -> 30 (scale 16/15): mostly one tap, two where two centres fall in the box.
    _, weights = box_taps(32, 30)
    assert set(weights.sum(axis=1).tolist()) == {1 << 22}
    assert {int((w > 0).sum()) for w in weights} == {1, 2}


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        box_resize(np.zeros((2, 8, 8, 3), np.float32), (4, 4))
    with pytest.raises(ValueError):
        box_resize(np.zeros((8, 8, 3), np.uint8), (4, 4))
    with pytest.raises(ValueError):
        box_resize(np.zeros((1, 8, 8, 3), np.uint8), (0, 4))
