"""The GPU fractal renderer (kernels/fractal.cu, ipmix_dali/mixing/fractals_gpu.py) equals the NumPy
renderer (builtin_mixing.render_fractals) pixel for pixel.

Without a GPU the kernels run in the CPU emulator (testing/emulator.py) through the same driver
(fractal_gpu.render_indices) with the real constants (1000 walkers x 100 steps); with one, the
CuPy path is compared at 256 px for several seeds.
"""
import numpy as np
import pytest

from ipmix_dali.mixing import fractals as bm
from ipmix_dali.mixing import fractals_gpu as fg
from ipmix_dali.testing import cupy_standin
from ipmix_dali.testing.emulator import EmulatedModule


@pytest.fixture
def emu():
    """The driver on the CuPy stand-in, its kernels in the CPU emulator."""
    with cupy_standin.installed(mode="emulate"):
        yield


@pytest.fixture
def rounds(monkeypatch):
    """Sizes of the driver's rounds (a fractal drawn again after a rejection adds a round)."""
    seen = []
    pack = fg.pack_systems

    def spy(systems):
        seen.append(len(systems))
        return pack(systems)

    monkeypatch.setattr(fg, "pack_systems", spy)
    return seen


def test_constants_are_the_real_ones():
    assert (bm.WALKERS, bm.STEPS, bm.BURN_IN) == (1000, 100, 8)
    assert bm.MAX_COUNT == 92_000 and len(bm.log1p_table()) == bm.MAX_COUNT + 1


def test_emulated_kernels_equal_numpy_small(emu, rounds):
    got = fg.render_indices(range(2), size=48, seed=3)
    ref = bm.render_fractals(2, 48, seed=3)
    assert got.shape == (2, 48, 48, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref)
    assert rounds == [2]
    assert all(img.std() > 10 for img in got)  # real pictures, not blank


def test_emulated_kernels_equal_numpy_with_a_redraw(emu, rounds):
    # Fractal 1 of seed 11 at 256 px covers too few pixels on its first system: redrawn in a
    # second round, whose images go to their own output slots.
    got = fg.render_indices([0, 1, 2], size=256, seed=11)
    np.testing.assert_array_equal(got, bm.render_fractals(3, 256, seed=11))
    assert rounds == [3, 1]


@pytest.mark.parametrize("size", [37, 64, 100])
def test_emulated_kernels_equal_numpy_sizes_and_indices(emu, size):
    # Odd sizes (background upsampling, centring) and a non-contiguous set of indices.
    idx = [5, 0, 9]
    got = fg.render_indices(idx, size=size, seed=2)
    ref = bm.render_fractals(10, size, seed=2)[idx]
    np.testing.assert_array_equal(got, ref)


def test_emulated_kernels_equal_numpy_many(emu):
    got = fg.render_indices(range(24), size=96, seed=7)
    np.testing.assert_array_equal(got, bm.render_fractals(24, 96, seed=7))


def _system(a, b, start=None, seed=7):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = a.shape[0]
    coef = np.zeros((bm.MAX_MAPS, 7))
    coef[:n] = np.stack([a[:, 0, 0], a[:, 0, 1], b[:, 0], a[:, 1, 0], a[:, 1, 1], b[:, 1],
                         0.5 * np.arange(n) / max(n - 1, 1)], axis=1)
    cum = np.ones(bm.MAX_MAPS)
    cum[:n] = np.cumsum(np.full(n, 1.0 / n))
    start = np.zeros(2) if start is None else np.asarray(start, np.float64)
    return bm.IFSSystem(n, cum, coef, start, seed)


def test_emulated_bounds_equal_numpy_including_degenerate():
    emu = EmulatedModule("fractal.cu")  # the two bounds kernels on their own
    rng = bm._fractal_rng(0, 0)
    real = None
    while real is None:
        real = bm.draw_system(rng)
    shrink = 0.5 * np.eye(2)
    systems = [
        real,
        _system([np.zeros((2, 2))] * 2, [[0.2, 0.1], [0.2, 0.1]]),     # one point
        _system([shrink, shrink], [[0.0, 0.0], [1.0, 0.0]], start=[np.inf, 0.0]),  # not finite
        _system([np.eye(2) * 3.0, np.eye(2) * 3.0], [[1.0, 0.0], [0.0, 1.0]]),     # explodes
    ]
    packed = fg.pack_systems(systems)
    nf, W = len(systems), bm.WALKERS
    wbox = np.zeros(nf * W * 4)
    wbad = np.zeros(nf * W, np.int32)
    args = (packed["nmaps"], packed["cum"], packed["coef"], packed["start"], packed["wseed"])
    emu.launch("fractal_walk_bounds", fg._grid(nf * W), (fg.BLOCK,),
               args + (wbox, wbad, np.int32(nf), np.int32(W), np.int32(bm.STEPS),
                       np.int32(bm.BURN_IN)))
    box = np.zeros(nf * 4)
    bad = np.zeros(nf, np.int32)
    emu.launch("fractal_reduce_bounds", (1,), (fg.BLOCK,),
               (wbox, wbad, box, bad, np.int32(nf), np.int32(W)))
    verdicts = []
    for k, system in enumerate(systems):
        with np.errstate(all="ignore"):
            ref_box, ref_bad = bm.bounds(*bm.chaos_game(system)[:2])
        assert bool(bad[k]) == ref_bad, k
        if not ref_bad:
            np.testing.assert_array_equal(box[4 * k:4 * k + 4], ref_box)
        verdicts.append(bm.raster_params(box[4 * k:4 * k + 4], bool(bad[k]), 64)
                        == bm.raster_params(ref_box, ref_bad, 64))
        assert verdicts[-1], k
    assert [bm.raster_params(box[4 * k:4 * k + 4], bool(bad[k]), 64) is None
            for k in range(nf)] == [False, True, True, True]


def test_packing_shapes():
    rng = bm._fractal_rng(1, 0)
    systems = [s for s in (bm.draw_system(rng) for _ in range(3)) if s is not None]
    p = fg.pack_systems(systems)
    k = len(systems)
    assert p["cum"].shape == (k, bm.MAX_MAPS) and p["coef"].shape == (k, bm.MAX_MAPS, 7)
    assert p["wseed"].dtype == np.uint32 and p["nmaps"].dtype == np.int32
    r = fg.pack_raster([None, (0.0, 1.0, 2.0, 3.0, 4.0)])
    assert r["valid"].tolist() == [0, 1] and r["rparam"][1].tolist() == [0, 1, 2, 3, 4]
    c = fg.pack_colour([bm.draw_colour(rng, 80), bm.draw_colour(rng, 80)])
    assert c["cparam"].shape == (2, 3) and c["bg"].shape == (2, 64, 64, 3)
    assert c["bg"].dtype == np.float32


def test_no_gpu_is_a_one_line_value_error():
    from ipmix_dali.device import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU available for --device gpu: use --device cpu"):
        fg.render_fractals_gpu(1, 64)


@pytest.mark.gpu
@pytest.mark.parametrize("seed", [0, 1, 11, 123])
def test_gpu_equals_numpy_256(seed):
    got = fg.render_fractals_gpu(24, 256, seed=seed)
    np.testing.assert_array_equal(got, bm.render_fractals(24, 256, seed=seed))


@pytest.mark.gpu
def test_gpu_chunks_indices_and_sizes():
    idx = [3, 17, 4, 40]
    got = fg.render_fractals_gpu(len(idx), 100, seed=5, indices=idx, chunk=3)
    np.testing.assert_array_equal(got, bm.render_fractals(41, 100, seed=5)[idx])
    np.testing.assert_array_equal(fg.render_fractals_gpu(3, 48, seed=9),
                                  bm.render_fractals(3, 48, seed=9))


@pytest.mark.gpu
def test_make_mixing_set_gpu_equals_cpu(tmp_path):
    from PIL import Image

    from ipmix_dali.cli import main

    for device in ("cpu", "gpu"):
        assert main(["make-mixing-set", "--out", str(tmp_path / device), "--count", "5",
                     "--size", "64", "--seed", "4", "--device", device]) == 0
    for i in range(5):
        name = f"fractal_4_{i:06d}.png"
        assert np.array_equal(np.asarray(Image.open(tmp_path / "cpu" / name)),
                              np.asarray(Image.open(tmp_path / "gpu" / name)))
