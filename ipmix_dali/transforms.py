"""The augmentations for torch users who keep their own data loading.

Per sample, in DataLoader workers (torchvision's conventions, like ``transforms.v2.AugMix``)::

    from torchvision import transforms as T
    from ipmix_dali.transforms import IPMix

    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                          IPMix(mixing_set="fractals/", jsd=True)])
    # dataset[i] -> (clean, view1, view2): normalised float CHW tensors

Per batch, on the GPU or the CPU (FFCV, webdataset or plain DataLoader users)::

    from ipmix_dali.transforms import BatchIPMix

    augment = BatchIPMix(mixing_set="fractals/", jsd=True).cuda()
    clean, view1, view2 = augment(uint8_batch_on_cuda, epoch=e, step=i)   # NCHW or NHWC

A per-sample transform draws its plan from a seed taken from torch's generator, so it is
seeded per DataLoader worker and per sample the way torchvision's random transforms are
(``torch.manual_seed`` makes a run repeat); a batch module's plan is a function of
``(seed, epoch, step)``. Both give exactly the pixels of the executors (NumPy on the CPU, the
CuPy kernels on CUDA tensors through DLPack, no copy) for the same plan, and so the reference
code's distribution (docs/augmentations.md).
"""
from __future__ import annotations

import numpy as np

from .config import MIXING_METHODS, make_config
from .mixing import as_mixing_bank

__all__ = ["IPMix", "PixMix", "AugMix", "LayerMix", "BatchIPMix", "BatchPixMix", "BatchAugMix",
           "BatchLayerMix", "MixTransform", "BatchMix"]


class MixTransform:
    """A per-sample augmentation (see the module docstring): PIL image or uint8 tensor
    (C, S, S) / array (S, S, 3) in, S = the config's image size; normalised float32 (3, S, S)
    tensor out, or (clean, view1, view2) with ``jsd``.

    Args:
        mixing_set: folder, MixingBank, uint8 array or None (built-in fractals); methods that
            mix only. Loaded once per worker, on first use (a folder bank is memory-mapped).
        preset: "imagenet" or "cifar" (the reference scripts' hyperparameters).
        jsd: return the clean view and two augmented views.
        seed: mixed into every plan's key (two transforms with other seeds differ).
        executor: "numpy" or "reference" (the same pixels); "auto" takes the faster one for a
            single image: the reference's torchvision steps for LayerMix, NumPy otherwise.
        **options: any option of the method (``make_config``), e.g. ``k=3``, ``image_size=64``.
    """

    method = "none"

    def __init__(self, mixing_set=None, preset: str = "imagenet", jsd: bool = False,
                 seed: int = 0, executor: str = "auto", **options):
        self.config = make_config(self.method, preset, jsd=jsd, **options)
        self.mixing_set = mixing_set
        self.seed = int(seed)
        if executor == "auto":
            executor = "reference" if self.method == "layermix" else "numpy"
        if executor not in ("numpy", "reference"):
            raise ValueError(f"executor must be 'auto', 'numpy' or 'reference', got {executor!r}")
        self.executor = executor
        self._augmenter = None

    def __repr__(self):
        return (f"{type(self).__name__}(preset and options={self.config}, "
                f"mixing_set={self.mixing_set!r}, seed={self.seed})")

    def __getstate__(self):  # workers load the bank themselves (a memory map, not a copy)
        state = dict(self.__dict__)
        state["_augmenter"] = None
        return state

    def _image(self, img) -> np.ndarray:
        size = self.config.image_size
        if hasattr(img, "convert"):  # PIL
            arr = np.asarray(img.convert("RGB"))
        else:
            arr = np.asarray(img.numpy() if hasattr(img, "numpy") else img)
            if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[2] != 3:
                arr = arr.transpose(1, 2, 0)  # torchvision's CHW
        if arr.dtype != np.uint8 or arr.shape != (size, size, 3):
            raise ValueError(f"{type(self).__name__} takes {size}x{size} RGB uint8 images (crop "
                             f"first, e.g. RandomResizedCrop({size})), got {arr.dtype} "
                             f"{arr.shape}; pass image_size=... for another size")
        return np.ascontiguousarray(arr)[None]

    def __call__(self, img):
        import torch

        x = self._image(img)
        if self._augmenter is None:  # once per worker: the bank is memory-mapped there
            from .augmenter import Augmenter
            from .executors import get_executor

            executor = (get_executor("numpy", chunk_size=1) if self.executor == "numpy"
                        else get_executor("reference"))
            bank = (as_mixing_bank(self.mixing_set, self.config.image_size)
                    if self.config.method in MIXING_METHODS else None)
            self._augmenter = Augmenter(self.config, bank, executor)
        # A fresh key per call from torch's generator: per worker (DataLoader seeds each
        # worker's generator) and per sample, reproducible under torch.manual_seed.
        key = int(torch.randint(0, 2 ** 62, (1,)))
        views = self._augmenter.views(x, self._augmenter.plan((self.seed, key), 1))
        # CHW views of the HWC arrays (no copy; default_collate stacks them like any tensor)
        out = [torch.from_numpy(v[0]).permute(2, 0, 1) for v in views]
        return tuple(out) if self.config.jsd else out[0]


class IPMix(MixTransform):
    """IPMix per sample (hzlsaber/IPMix): image-, patch- and pixel-level mixing chains."""

    method = "ipmix"


class PixMix(MixTransform):
    """PixMix per sample (andyzoujm/pixmix): rounds of mixing with a mixing picture."""

    method = "pixmix"


class AugMix(MixTransform):
    """AugMix per sample (google-research/augmix); needs no mixing set."""

    method = "augmix"


class LayerMix(MixTransform):
    """LayerMix per sample (ahmadmughees/LayerMix, ``laddermix``)."""

    method = "layermix"


def _torch_module():
    import torch

    return torch.nn.Module


class BatchMix(_torch_module()):
    """A batch augmentation as a ``torch.nn.Module`` (see the module docstring).

    ``forward(images, epoch=0, step=0)``: uint8 images (N, 3, S, S) or (N, S, S, 3) on CUDA
    (the CuPy executor, on the current torch stream, through DLPack) or the CPU (the NumPy
    executor); returns normalised float32 views in the input's layout, one tensor or (clean,
    view1, view2) with ``jsd``. The plan is ``make_rng(seed, rank, epoch, step)``: the same
    arguments give the same pixels.
    """

    method = "none"

    def __init__(self, mixing_set=None, preset: str = "imagenet", jsd: bool = False,
                 seed: int = 0, rank: int = 0, **options):
        super().__init__()
        self.config = make_config(self.method, preset, jsd=jsd, **options)
        self.mixing_set, self.seed, self.rank = mixing_set, int(seed), int(rank)
        self._bank = None

    def forward(self, images, epoch: int = 0, step: int = 0):
        from .api import augment

        if self.config.method in MIXING_METHODS and self._bank is None:
            self._bank = as_mixing_bank(self.mixing_set, self.config.image_size)
        channels_first = images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3
        x = images.permute(0, 2, 3, 1) if channels_first else images
        views = augment(x.contiguous(), self._bank, seed=self.seed, shard=self.rank, epoch=epoch,
                        iteration=step, config=self.config)
        views = views if isinstance(views, tuple) else (views,)
        if channels_first:
            views = tuple(v.permute(0, 3, 1, 2) for v in views)
        return views if self.config.jsd else views[0]


class BatchIPMix(BatchMix):
    method = "ipmix"


class BatchPixMix(BatchMix):
    method = "pixmix"


class BatchAugMix(BatchMix):
    method = "augmix"


class BatchLayerMix(BatchMix):
    method = "layermix"
