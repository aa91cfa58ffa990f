"""Host syncs per training step. On a GPU every read of a device value into Python (``.item()``,
``bool()``, ``float()``, ``.tolist()``, ``.cpu()``) waits for the device and stalls the input
pipeline; ``torch.cuda.set_sync_debug_mode`` counts them there (the ``gpu`` test below). On the
CPU the same reads are counted by wrapping those methods, so CI checks what the trainer's step
asks for: nothing between read-backs. Also: the GPU pipelines hand labels over on the GPU
(``labels.gpu()`` in the DALI graph), so ``labels.to(device)`` is no copy from pageable memory."""
import pytest
import torch

from ipmix_dali import make_config
from ipmix_dali.testing import cupy_standin
from ipmix_dali.tools.samples import write_jpeg_tree
from ipmix_dali.train.config import TrainConfig
from ipmix_dali.train.distributed import Dist
from ipmix_dali.train.loop import StopSignal, build_optimizer, train_one_epoch
from ipmix_dali.train.metrics import StepLog

READS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy")


class SyncCounter:
    """Counts the device-to-host reads a GPU would wait for (the CPU stand-in of
    ``set_sync_debug_mode``), with the read-backs of StepLog excluded on request."""

    def __init__(self, monkeypatch):
        self.count, self.paused = 0, False
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *a, _original=original, **k):
                if not self.paused:
                    self.count += 1
                return _original(tensor, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _steps(monkeypatch, tmp_path, fused, steps=4):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 5))
    cfg = TrainConfig(amp="fp16", grad_clip=1.0, log_every=100, sync_every=100)
    optimizer = build_optimizer(net, cfg, lr=0.1, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=True)  # fp16: the scaler's inf check runs
    batches = [(torch.rand(6, 3, 12, 12), torch.randint(0, 5, (6,))) for _ in range(steps)]
    log = StepLog(Dist(), torch.device("cpu"), str(tmp_path / "m.jsonl"), None, steps, 100, 100)
    counter = SyncCounter(monkeypatch)
    read_back = log.read_back

    def read_back_uncounted(*a):  # the one read-back per sync_every steps is allowed
        counter.paused = True
        try:
            return read_back(*a)
        finally:
            counter.paused = False

    log.read_back = read_back_uncounted
    with StopSignal() as stop:
        step, _, stopped = train_one_epoch(net, batches, optimizer, scheduler, scaler, cfg,
                                           torch.device("cpu"), torch.float16, 0, 0, log, stop,
                                           save=None)
    assert step == steps and not stopped
    return counter.count


def test_a_training_step_reads_nothing_back_with_the_fused_optimizer(monkeypatch, tmp_path):
    assert _steps(monkeypatch, tmp_path, fused=True) == 0


def test_the_unfused_optimizer_makes_gradscaler_sync_every_step(monkeypatch, tmp_path):
    """What the trainer avoided on the GPU (and what this counter catches)."""
    assert _steps(monkeypatch, tmp_path, fused=False) >= 4


@pytest.mark.parametrize("which", ["train", "val"])
def test_gpu_pipelines_hand_labels_over_on_the_gpu(tmp_path, which):
    """The graphs of the GPU pipelines (built without a GPU: DALI defines the graph on the
    host; the stage's CuPy is the stand-in) end with GPU labels."""
    from ipmix_dali.datasets import scan_image_folder
    from ipmix_dali.pipeline import train_pipeline, val_pipeline

    write_jpeg_tree(tmp_path / "t", classes=1, per_class=4, size=(40, 40), seed=1)
    files = scan_image_folder(str(tmp_path / "t"))
    with cupy_standin.installed(mode="count"):
        if which == "train":
            pipe, _ = train_pipeline(files, make_config("augmix", "cifar"), batch_size=4,
                                     device="gpu", device_id=0)
        else:
            pipe = val_pipeline(files, batch_size=4, device="gpu", device_id=0)
        pipe._build_graph()
    assert [o.device for o in pipe._graph_outputs] == ["gpu", "gpu"]


@pytest.mark.gpu
def test_no_host_sync_inside_a_cuda_training_step(tmp_path):
    """On a GPU: torch's own sync detector, set to raise, around a step that is not a
    read-back (fused SGD, GradScaler on fp16)."""
    from ipmix_dali.device import gpu_available

    if not gpu_available() or not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    device = torch.device("cuda")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 5)).to(device)
    cfg = TrainConfig(amp="fp16", log_every=100, sync_every=100)
    optimizer = build_optimizer(net, cfg, lr=0.1, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=True)
    batches = [(torch.rand(6, 3, 12, 12, device=device),
                torch.randint(0, 5, (6,), device=device)) for _ in range(3)]
    log = StepLog(Dist(), device, str(tmp_path / "m.jsonl"), None, 100, 100, 100)
    read_back = log.read_back

    def read_back_allowed(*a):  # the epoch's closing read-back may wait
        torch.cuda.set_sync_debug_mode("default")
        try:
            return read_back(*a)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    log.read_back = read_back_allowed
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with StopSignal() as stop:
            step, _, _ = train_one_epoch(net, batches, optimizer, scheduler, scaler, cfg,
                                         device, torch.float16, 0, 0, log, stop, save=None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step == 3
