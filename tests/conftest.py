import numpy as np
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU with CuPy (skipped without one)")
    config.addinivalue_line("markers", "slow: slow test (still part of CI)")


def _has_gpu():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU with CuPy on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def photos224():
    """Three 224 px crops of real photographs (uint8 (3, 224, 224, 3)), shared by the tests."""
    from ipmix_dali.samples import sample_photos

    return sample_photos(3, 224, seed=4, min_scale=0.3)
