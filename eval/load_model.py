"""Load a checkpoint into a torchvision model: ours, plain state dicts, the IPMix/PixMix format."""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("ipmix_dali.eval")

__all__ = ["load_model", "extract_state_dict", "load_fitting", "why_not_loadable"]


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


def _is_pickle(path) -> bool:
    """Whether ``path`` holds a well-formed pickle (a torch zip's ``data.pkl`` or a legacy file),
    checked by walking its opcodes without running any of them."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return False
                data = z.read(name)
        else:
            with open(path, "rb") as f:
                data = f.read()
        for _ in pickletools.genops(data):
            pass
        return True
    except Exception:  # noqa: BLE001 - anything malformed: not a pickle
        return False


def why_not_loadable(path, exc: BaseException) -> str:
    """Why ``torch.load(path)`` raised ``exc``, in one line: not a checkpoint at all (a text
    file such as a metrics.jsonl, or neither a zip archive nor a pickle), a damaged or
    truncated archive, or a pickle that ``weights_only`` refused. Never torch's own
    paragraphs about ``weights_only``."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK\x03\x04"):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". ")[0]  # torch's first sentence; the rest is advice
        kind = "damaged" if zipfile.is_zipfile(path) else "truncated or damaged"
        return f"the file is a {kind} PyTorch checkpoint ({first})"
    if "Weights only load failed" in str(exc) and _is_pickle(path):
        return "weights_only=True refused it (it holds pickled objects besides tensors)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if head and text is not None and "\0" not in text:
        line = text.strip().splitlines()[0][:60] if text.strip() else ""
        return (f"the file is text, not a PyTorch checkpoint (it begins {line!r}): pass the .pt "
                f"file a training wrote (checkpoint_last.pt, checkpoint_best.pt)")
    return ("the file is not a PyTorch checkpoint (neither a zip archive nor a pickle): it is "
            "damaged or another kind of file")


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
        # --unsafe-pickle helps only with a real pickle that weights_only refused (it holds
        # objects other than tensors); not with a damaged or non-checkpoint file.
        refused = "Weights only load failed" in str(exc) and _is_pickle(path)
        if not refused:
            raise ValueError(f"cannot load checkpoint {path}: "
                             f"{why_not_loadable(path, exc)}") from None
        hint = ("; it holds pickled objects besides tensors: if you trust the file, pass "
                "--unsafe-pickle" if not unsafe_pickle else "")
        raise ValueError(f"cannot load checkpoint {path}: weights_only=True refused it"
                         f"{hint}") from None
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
