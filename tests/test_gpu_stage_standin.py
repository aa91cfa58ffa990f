"""The GPU pipeline stage (AugmentStage(device="gpu") with the CuPy executor) run without a GPU
through the CuPy stand-in: its pixels against the CPU stage's, the DALI-facing layout of its
outputs, the bank upload's synchronisation, and its error handling."""
import numpy as np
import pytest

from ipmix_dali import cupy_standin, make_config
from ipmix_dali.executors import get_executor
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.pipeline import AugmentStage
from ipmix_dali.tools.samples import sample_photos

SIZE = 32


@pytest.fixture(scope="module")
def crops():
    return list(sample_photos(3, SIZE, seed=8))


@pytest.fixture(scope="module")
def bank():
    return builtin_mixing_bank(count=4, side=36, seed=3)


def _cfg(method, jsd):
    return make_config(method, "cifar", jsd=jsd)


def _stages(method, jsd, bank, **kw):
    cfg = _cfg(method, jsd)
    mixing = bank if method in ("ipmix", "pixmix", "layermix") else None
    cpu = AugmentStage(cfg, mixing, get_executor("numpy"), 7, 1, 5, **kw)
    gpu = AugmentStage(cfg, mixing, get_executor("cupy"), 7, 1, 5, device="gpu", **kw)
    return cpu, gpu


@pytest.mark.parametrize("method", ["none", "augmix", "pixmix", "ipmix", "layermix"])
@pytest.mark.parametrize("jsd", [False, True])
def test_gpu_stage_equals_cpu_stage(crops, bank, method, jsd):
    """Same crops, same batch numbers: the same views, sample for sample, over 3 batches."""
    with cupy_standin.installed(mode="emulate"):
        import cupy

        cpu, gpu = _stages(method, jsd, bank)
        for _ in range(3):
            want = cpu(list(crops))
            got = gpu([cupy.asarray(c) for c in crops])
            want, got = (want, got) if jsd else ((want,), (got,))
            assert len(got) == (3 if jsd else 1)
            for w, g in zip(want, got):
                assert len(g) == len(crops)
                for ws, gs in zip(w, g):
                    assert isinstance(gs, cupy.ndarray) and gs.shape == (3, SIZE, SIZE)
                    assert np.array_equal(cupy.asnumpy(gs), ws)
        assert gpu.batches == cpu.batches == 3


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_gpu_stage_float16_layouts_and_strided_samples(crops, bank, layout):
    """float16 views in either layout equal the CPU stage's; on the GPU every sample is a
    strided view (DALI then copies a whole output with one batched kernel instead of one
    cudaMemcpyAsync per sample), on the CPU a dense one."""
    with cupy_standin.installed(mode="emulate"):
        import cupy

        cpu, gpu = _stages("ipmix", True, bank, dtype="float16", layout=layout)
        want = cpu(list(crops))
        got = gpu([cupy.asarray(c) for c in crops])
        shape = (3, SIZE, SIZE) if layout == "NCHW" else (SIZE, SIZE, 3)
        for w, g in zip(want, got):
            for ws, gs in zip(w, g):
                assert ws.dtype == gs.dtype == np.float16 and gs.shape == ws.shape == shape
                assert ws.flags.c_contiguous and not gs.flags.c_contiguous
                assert np.array_equal(cupy.asnumpy(gs).view(np.uint16), ws.view(np.uint16))


def test_bank_upload_is_synchronised_before_the_stage_runs(crops, bank):
    """The bank goes up on the stream current at construction (the legacy default stream);
    DALI runs the stage on its own non-blocking stream, so the upload must be waited for."""
    with cupy_standin.installed(mode="count", record=True) as device:
        stage = AugmentStage(_cfg("ipmix", True), bank, get_executor("cupy"), 0, 0, 5,
                             device="gpu")
        log = [kind for kind, _ in device.log]
        assert log[:2] == ["h2d", "sync"], device.log
        import cupy

        stage([cupy.asarray(c) for c in crops])
        assert "sync" not in [kind for kind, _ in device.log[2:]]  # nothing else waits


def test_stage_error_is_kept_with_its_batch(crops, bank):
    stage = AugmentStage(_cfg("ipmix", True), bank, get_executor("numpy"), 0, 0, 5)
    stage(list(crops))
    with pytest.raises(ValueError, match=r"shape \(30, 30, 3\), the config's image_size is 32"):
        stage([c[:30, :30] for c in crops])  # crops of the wrong size reach the executor
    assert isinstance(stage.error, ValueError) and stage.error_batch == 1
    assert stage.error.__traceback__ is not None


def test_gpu_stage_without_cupy_names_the_package(monkeypatch, bank):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(ImportError, match="pip install cupy-cuda12x"):
        AugmentStage(_cfg("ipmix", False), bank, get_executor("numpy"), 0, 0, 5, device="gpu")
