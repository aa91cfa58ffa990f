"""The GPU pipeline stage (AugmentStage(device="gpu") with the CuPy executor) run without a GPU
through the CuPy stand-in: its pixels against the CPU stage's, the DALI-facing layout of its
outputs, the bank upload's synchronisation, and its error handling."""
import numpy as np
import pytest

from ipmix_dali import make_config
from ipmix_dali.executors import get_executor
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.pipeline import AugmentStage
from ipmix_dali.testing import cupy_standin
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


def test_bank_upload_is_chunked_synchronised_and_holds_no_pinned_memory(crops, monkeypatch):
    """The bank goes up once, in chunks copied from pageable memory (``ndarray.set``: CuPy's
    ``asarray`` would stage it through a pinned block of the bank's size and its pinned pool
    would keep that block for the whole run), then the upload is waited for: DALI runs the stage
    on its own non-blocking stream, which does not wait for the legacy default stream. A second
    stage on the same bank and device reuses the resident copy."""
    from ipmix_dali import device as device_mod

    bank = builtin_mixing_bank(count=4, side=36, seed=3)  # fresh: nothing resident yet
    picture = bank.images[0].nbytes
    monkeypatch.setattr(device_mod, "UPLOAD_CHUNK_BYTES", 2 * picture)
    with cupy_standin.installed(mode="count", record=True) as device:
        stage = AugmentStage(_cfg("ipmix", True), bank, get_executor("cupy"), 0, 0, 5,
                             device="gpu")
        # one allocation, 4 pictures in chunks of 2, one wait
        assert device.log[:4] == [("alloc", ""), ("h2d", "set"), ("h2d", "set"),
                                  ("sync", "stream")], device.log
        assert device.pinned_bytes == 0 and device.h2d_bytes == bank.images.nbytes
        again = AugmentStage(_cfg("pixmix", False), bank, get_executor("cupy"), 0, 0, 5,
                             device="gpu")
        assert again._bank_images is stage._bank_images and device.counts["h2d"] == 2
        import cupy

        device.log.clear()
        stage([cupy.asarray(c) for c in crops])
        assert "sync" not in [kind for kind, _ in device.log]  # nothing else waits


def test_gpu_stage_runs_on_its_pipelines_device(crops):
    """A pipeline with device_id=1: DALI's worker threads make device 1 current when they call
    the stage, but the stage is built on the caller's thread (device 0 current). The bank must
    be uploaded to device 1 and the batch's tables and launches must go there too; a bank on
    device 0 read by kernels on device 1 is what the stand-in refuses (a GPU would read another
    GPU's memory)."""
    bank = builtin_mixing_bank(count=4, side=36, seed=3)
    cfg = _cfg("ipmix", True)
    want = AugmentStage(cfg, bank, get_executor("numpy"), 7, 1, 5)(list(crops))
    with cupy_standin.installed(mode="emulate", devices=2) as device:
        import cupy

        stage = AugmentStage(cfg, bank, get_executor("cupy"), 7, 1, 5, device="gpu",
                             device_id=1)
        assert device.current == 0 and stage._bank_images.device_id == 1
        with cupy.cuda.Device(1):  # as DALI's thread for device_id=1
            inputs = [cupy.asarray(c) for c in crops]
            got = stage(inputs)
        with cupy.cuda.Device(0):  # a caller thread left on device 0: the stage switches
            got_again = AugmentStage(cfg, bank, get_executor("cupy"), 7, 1, 5, device="gpu",
                                     device_id=1)(inputs)
        for w, g, g2 in zip(want, got, got_again):
            for ws, gs, gs2 in zip(w, g, g2):
                assert gs.device_id == 1
                assert np.array_equal(cupy.asnumpy(gs), ws)
                assert np.array_equal(cupy.asnumpy(gs2), ws)


def test_standin_refuses_arrays_of_another_device(monkeypatch):
    """The stand-in's rule that the device-id tests rely on."""
    from ipmix_dali.kernels import build as _kernels

    monkeypatch.setattr(_kernels, "_FUNCTIONS", {})
    with cupy_standin.installed(mode="emulate", devices=2):
        import cupy

        from ipmix_dali.kernels.build import get_function

        with cupy.cuda.Device(1):
            a = cupy.asarray(np.float32([1.0, 2.0]))
        out = cupy.zeros(2, dtype=cupy.float32)
        kernel = get_function("smoke.cu", "smoke_mul")
        with pytest.raises(RuntimeError, match="device 0 with an array of device 1"):
            kernel((1,), (32,), (a, a, out, np.int32(2)))
        with pytest.raises(RuntimeError, match="device 0 with an array of device 1"):
            a + 1
        with cupy.cuda.Device(1):
            assert kernel is not get_function("smoke.cu", "smoke_mul")  # per-device cache
            out1 = cupy.zeros(2, dtype=cupy.float32)
            get_function("smoke.cu", "smoke_mul")((1,), (32,), (a, a, out1, np.int32(2)))
            assert cupy.asnumpy(out1).tolist() == [1.0, 4.0]


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


def test_dali_augment_takes_the_device_id_of_the_pipeline_being_defined(monkeypatch):
    """ipmix_dali.dali.augment in a user's pipeline with device_id=1 builds its stage for GPU 1
    (the bank goes there), whatever device is current while the graph is defined."""
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def, types

    import ipmix_dali.dali
    from ipmix_dali import pipeline as pipeline_mod

    built = []

    class Recorded(AugmentStage):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            built.append(self)

    monkeypatch.setattr(pipeline_mod, "AugmentStage", Recorded)
    bank = builtin_mixing_bank(count=2, side=36, seed=3)
    with cupy_standin.installed(mode="count", devices=2):
        @pipeline_def(batch_size=2, num_threads=1, device_id=1)
        def user_pipeline():
            images = fn.external_source(name="x", device="gpu", layout="HWC",
                                        dtype=types.UINT8)
            return ipmix_dali.dali.augment(images, "ipmix", preset="cifar", mixing_set=bank)

        user_pipeline()
    assert [s.device_id for s in built] == [1] and built[0]._bank_images.device_id == 1


def test_cupy_stream_of_a_torch_stream():
    """CuPy 14 takes a foreign stream through the CUDA stream protocol (no ExternalStream, which
    warns there on every call); an object without the protocol gets ExternalStream with its
    device. (torch.cuda.Stream implements __cuda_stream__; it cannot be made without a GPU, so
    a minimal protocol object stands for it.)"""
    import types

    from ipmix_dali.device import cupy_stream

    class ProtocolStream:
        cuda_stream = 1234
        device = types.SimpleNamespace(index=1)

        def __cuda_stream__(self):
            return (0, self.cuda_stream)

    class OldStream:
        cuda_stream = 99
        device = types.SimpleNamespace(index=1)

    with cupy_standin.installed(mode="count", devices=2):
        import cupy

        new = cupy_stream(ProtocolStream())
        assert type(new) is cupy.cuda.Stream and new.ptr == 1234
        old = cupy_stream(OldStream())
        assert isinstance(old, cupy.cuda.ExternalStream) and (old.ptr, old.device_id) == (99, 1)
