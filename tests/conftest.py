import numpy as np
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU with CuPy (skipped without one)")
    config.addinivalue_line("markers", "slow: slow test (still part of CI)")


def pytest_collection_modifyitems(config, items):
    from ipmix_dali.device import gpu_available

    if gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU with CuPy on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def assert_gpu_close(got, want, std=(0.229, 0.224, 0.225)):
    """The documented GPU-vs-CPU tolerance (float_ops.mix_multiply, docs/gpu.md): CUDA's
    double pow is within 2 ulp, not correctly rounded, so at most GPU_MISMATCH_SHARE of the
    values may differ, each by at most one uint8 level after normalisation (1 / (255 std))."""
    from ipmix_dali.executors.float_ops import GPU_MISMATCH_SHARE

    got = np.asarray(got, dtype=np.float32)
    want = np.asarray(want, dtype=np.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    differ = got != want
    assert differ.mean() <= GPU_MISMATCH_SHARE, f"{differ.mean():.2e} of the values differ"
    if differ.any():
        worst = float(np.abs(got - want)[differ].max())
        assert worst <= 1 / (255 * min(std)) + 1e-5, f"off by {worst * 255 * min(std):.2f} levels"


@pytest.fixture
def gpu_close():
    """``gpu_close(got, want)``: :func:`assert_gpu_close`."""
    return assert_gpu_close


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def photos224():
    """Three 224 px crops of real photographs (uint8 (3, 224, 224, 3)), shared by the tests."""
    from ipmix_dali.tools.samples import sample_photos

    return sample_photos(3, 224, seed=4, min_scale=0.3)


@pytest.fixture
def spoil_jpeg():
    """``spoil(path)``: keep the JPEG's header up to its quantisation tables, replace the rest
    with random bytes and an end-of-image marker: the header check passes, DALI's decoder fails
    (``nvImageCodec failure``, no file name)."""
    def spoil(path, seed=0, size=3000):
        data = open(path, "rb").read()
        dqt = data.index(b"\xff\xdb")
        garbage = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
        with open(path, "wb") as f:
            f.write(data[:dqt] + garbage + b"\xff\xd9")

    return spoil


@pytest.fixture
def without_a_compiler(monkeypatch):
    """``without_a_compiler()``: from then on host builds point at a compiler that does not
    exist, and the native path's cached modules are dropped so that the next use builds again
    (and fails, as on a machine without g++)."""
    def apply():
        from ipmix_dali.executors import native
        from ipmix_dali.kernels import host

        real = host.HostModule

        def no_compiler(filename, extra_flags=(), compiler=None, serial=False):
            return real(filename, extra_flags=extra_flags + ("-DIPMIX_NO_CXX",),
                        compiler="/nonexistent/g++", serial=serial)

        monkeypatch.setattr(host, "HostModule", no_compiler)
        monkeypatch.setattr(native, "_states", {})

    return apply
