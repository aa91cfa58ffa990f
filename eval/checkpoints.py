"""Load a checkpoint into a torchvision model: ours, plain state dicts, the IPMix/PixMix format."""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("ipmix_dali.eval")

__all__ = ["load_model", "extract_state_dict", "load_fitting"]


def extract_state_dict(obj) -> dict:
    """The parameter dict inside ``obj``: ``{"model": ...}`` (our trainer), ``{"state_dict": ...}``
    (IPMix/PixMix releases, DataParallel ``module.`` prefixes) or a plain state dict."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("the checkpoint holds no state dict: expected a dict of tensors, or one "
                         "under 'model' or 'state_dict'")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def load_model(path, arch: str = "resnet50", num_classes: int = 1000,
               unsafe_pickle: bool = False):
    """A torchvision ``arch`` with the weights of ``path``, in eval mode.

    ``weights_only=True`` unless ``unsafe_pickle`` (which runs the file's pickled code: only for
    files you trust). A wrong architecture or class count raises one ValueError listing the
    missing, unexpected and wrongly shaped keys.
    """
    import torchvision

    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path} does not exist: pass --checkpoint FILE")
    if unsafe_pickle:
        log.warning("loading %s with weights_only=False: the file can run arbitrary code", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except Exception as exc:  # noqa: BLE001
        hint = ("" if unsafe_pickle else "; if it holds other pickled objects and you trust "
                "it, pass --unsafe-pickle")
        raise ValueError(f"cannot load checkpoint {path}: {str(exc).splitlines()[0]}{hint}") \
            from None
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    load_fitting(model, extract_state_dict(obj), f"checkpoint {path}", arch, num_classes)
    return model.eval()


def load_fitting(model, state: dict, what: str, arch: str, num_classes: int) -> None:
    """``model.load_state_dict(state)``, or one ValueError naming the missing, unexpected and
    wrongly shaped keys (a wrong architecture or class count)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
               if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or resized:
        raise ValueError(f"{what} does not fit {arch} with {num_classes} classes: "
                         f"missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
                         f"unexpected keys {unexpected[:6]}"
                         f"{' ...' if len(unexpected) > 6 else ''}, wrong shapes {resized[:6]}: "
                         f"pass the right --arch / --num-classes")
    model.load_state_dict(state)
