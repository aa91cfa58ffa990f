"""warp_affine (NumPy) against cv2.warpAffine, bilinear with BORDER_REFLECT_101, float32 images:
bit for bit, for the elastic transform's matrices, the identity, and maps that sample far outside
the image (reflected more than once)."""
import cv2
import numpy as np
import pytest

from ipmix_dali.corruptions.cv_warp import SIMD_BLOCK_COLUMNS, _fma_f32, invert_affine, warp_affine
from ipmix_dali.corruptions.params import CIFAR, IMAGENET


def cv2_warp(images, matrices):
    return np.stack([cv2.warpAffine(img, m, img.shape[1::-1], flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101)
                     for img, m in zip(images, matrices)])


def elastic_matrices(rng, n, h, w, offsets):
    """The ImageNet-C elastic transform's affine maps: three control points around the centre
    moved by up to ``offset`` px each (one offset per image, cycled)."""
    centre = np.float32((h, w)) // 2
    square = min(h, w) // 3
    pts1 = np.float32([centre + square, [centre[0] + square, centre[1] - square],
                       centre - square])
    out = []
    for k in range(n):
        c = offsets[k % len(offsets)]
        pts2 = pts1 + rng.uniform(-c, c, size=pts1.shape).astype(np.float32)
        out.append(cv2.getAffineTransform(pts1, pts2))
    return np.stack(out)


def far_matrices(h, w):
    """Identity, sub-pixel and multi-image shifts, a flip, scalings, shears and rotations: maps
    whose samples leave the image, some by several image sizes."""
    mats = [np.float64([[1, 0, 0], [0, 1, 0]]),
            np.float64([[1, 0, 0.5], [0, 1, -0.25]]),
            np.float64([[1, 0, -3.3 * w], [0, 1, 2.6 * h]]),
            np.float64([[-1, 0, w - 1], [0, 1, 0]]),
            np.float64([[0.5, 0, 0], [0, 2, 0]]),
            np.float64([[3, 0.2, -5], [0.1, -2.5, 7]])]
    mats += [cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.3) for angle in (3, 30, 90, 200)]
    return np.stack(mats)


def preset_offsets(preset, side):
    """The elastic transform's control-point offsets c[2] of every severity of a preset, plus
    the 1 %..7 % of the side the brief gives."""
    return [c[2] for c in preset["elastic_transform"]] + [side * f for f in (0.01, 0.04, 0.07)]


def assert_identical(got, want):
    assert got.dtype == np.float32 and got.shape == want.shape
    if not np.array_equal(got, want):
        same = float(np.mean(got == want))
        as_u8 = lambda v: np.uint8(np.clip(v, 0, 1) * 255)  # noqa: E731
        raise AssertionError(f"identical {same:.6f}, max |diff| {np.abs(got - want).max():.3g}, "
                             f"uint8 differing {np.mean(as_u8(got) != as_u8(want)):.6f}")


@pytest.fixture(scope="module")
def photos(photos224):
    return photos224.astype(np.float32) / 255


def test_photos_224_elastic_and_far_maps(photos):
    rng = np.random.default_rng(0)
    mats = np.concatenate([elastic_matrices(rng, 8, 224, 224, preset_offsets(IMAGENET, 244)),
                           far_matrices(224, 224)])
    images = photos[np.arange(len(mats)) % 3]
    assert_identical(warp_affine(images, mats), cv2_warp(images, mats))


@pytest.mark.parametrize("h, w, preset", [(224, 224, IMAGENET), (32, 32, CIFAR),
                                          (57, 91, CIFAR), (91, 57, CIFAR)])
def test_random_images(h, w, preset):
    rng = np.random.default_rng(h * 1000 + w)
    n = 24 if h * w < 2000 else 8
    mats = np.concatenate([elastic_matrices(rng, n, h, w, preset_offsets(preset, max(h, w))),
                           far_matrices(h, w)])
    images = rng.random((len(mats), h, w, 3), dtype=np.float32)
    assert_identical(warp_affine(images, mats), cv2_warp(images, mats))


def test_scalar_tail_columns_and_tiny_images():
    """Widths that are not a multiple of the SIMD block use OpenCV's scalar loop for the last
    columns (other rounding); 1-pixel sides replicate instead of reflecting."""
    rng = np.random.default_rng(7)
    for h, w in [(9, SIMD_BLOCK_COLUMNS - 1), (5, SIMD_BLOCK_COLUMNS + 1), (17, 33), (1, 9), (9, 1)]:
        mats = np.concatenate([elastic_matrices(rng, 6, h, w, [0.3 * max(h, w)]),
                               far_matrices(h, w)])
        images = rng.random((len(mats), h, w, 3), dtype=np.float32)
        assert_identical(warp_affine(images, mats), cv2_warp(images, mats))


def test_value_ranges():
    """Tiny, binary, large signed, uint8-derived and constant images."""
    rng = np.random.default_rng(11)
    images = rng.random((6, 57, 91, 3), dtype=np.float32)
    images[0] *= np.float32(1e-30)
    images[1] = (images[1] > 0.5).astype(np.float32)
    images[2] = images[2] * 2000 - 1000
    images[3] = np.round(images[3] * 255).astype(np.float32) / 255
    images[4] = (images[4] < 0.5) * np.float32(2 ** -24)
    images[5] = 1
    mats = elastic_matrices(rng, 6, 57, 91, [91 * 0.07])
    assert_identical(warp_affine(images, mats), cv2_warp(images, mats))


def test_inverse_matches_cv2():
    rng = np.random.default_rng(3)
    mats = np.concatenate([elastic_matrices(rng, 50, 224, 224, [244 * 0.2]), far_matrices(57, 91)])
    want = np.stack([cv2.invertAffineTransform(m) for m in mats])
    np.testing.assert_array_equal(invert_affine(mats).astype(np.float32), want.astype(np.float32))


def test_fma_rounds_once():
    """Sums that float64 rounds onto a float32 halfway point, where rounding again (to even)
    goes the wrong way: the exact a*b + c lies below the halfway point in the first case, above
    it in the second."""
    a = np.float32([2.0 ** -24 * (1 + 2.0 ** -23), 2.0 ** -24 * (1 + 2.0 ** -12)])
    b = np.float32([1 - 2.0 ** -23, 1 - 2.0 ** -12 + 2.0 ** -24])
    c = np.float32([1 + 2.0 ** -23, 1 + 2.0 ** -22])
    # exact: 1 + 2**-23 + 2**-24 - 2**-70  and  1 + 2**-22 + 2**-24 + 2**-60
    want = np.float32([1 + 2.0 ** -23, 1 + 3 * 2.0 ** -23])
    twice = (a.astype(np.float64) * b + c).astype(np.float32)
    assert not np.any(twice == want)
    np.testing.assert_array_equal(_fma_f32(a, b, c, np), want)


def test_rejects_other_inputs():
    with pytest.raises(ValueError):
        warp_affine(np.zeros((1, 4, 4, 3), np.float64), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError):
        warp_affine(np.zeros((2, 4, 4, 3), np.float32), np.zeros((1, 2, 3)))
