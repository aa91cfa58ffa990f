"""The reference executor: the project's ground truth, one sample at a time.

It follows the reference repositories step by step (docs/augmentations.md §1-5): PIL ops on PIL images
(hzlsaber/IPMix ``IPMix_utils.py``, andyzoujm/pixmix ``pixmix_utils.py``,
google-research/augmix ``augmentations.py``), the float stages of ``ToTensor``/mixing/``Normalize``
in float32 (:mod:`.float_ops`), IPMix's ``patch_mixing`` crop -> mix -> ``ToPILImage`` -> paste,
and LayerMix's ``laddermix`` on torchvision v2 float tensors. The only difference from running the
reference code is where the random decisions come from: the plan.

Output of :meth:`ReferenceExecutor.apply`: float32 (V, N, H, W, 3), normalised, channels last.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ..ops import masks
from ..ops.table import MIX_OPS, PIL_OPS
from ..plans import IMG, PARTNER_AUGMENTED, Plan
from . import float_ops as fo
from .base import check_inputs, output_array


def pil_apply(op_id: int, img: Image.Image, param: float, image_size: int) -> Image.Image:
    """One PIL op exactly as the reference calls it, with its already-mapped parameter."""
    name = PIL_OPS[op_id]
    s = image_size
    if name == "autocontrast":
        return ImageOps.autocontrast(img, param)  # cutoff 0 == the AugMix/PixMix call
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "posterize":
        return ImageOps.posterize(img, int(param))
    if name == "rotate":
        return img.rotate(int(param), resample=Image.BILINEAR)
    if name == "solarize":
        return ImageOps.solarize(img, int(param))
    if name == "shear_x":
        return img.transform((s, s), Image.AFFINE, (1, param, 0, 0, 1, 0), resample=Image.BILINEAR)
    if name == "shear_y":
        return img.transform((s, s), Image.AFFINE, (1, 0, 0, param, 1, 0), resample=Image.BILINEAR)
    if name == "translate_x":
        return img.transform((s, s), Image.AFFINE, (1, 0, int(param), 0, 1, 0),
                             resample=Image.BILINEAR)
    if name == "translate_y":
        return img.transform((s, s), Image.AFFINE, (1, 0, 0, 0, 1, int(param)),
                             resample=Image.BILINEAR)
    if name == "color":
        return ImageEnhance.Color(img).enhance(param)
    if name == "contrast":
        return ImageEnhance.Contrast(img).enhance(param)
    if name == "brightness":
        return ImageEnhance.Brightness(img).enhance(param)
    if name == "sharpness":
        return ImageEnhance.Sharpness(img).enhance(param)
    if name == "mirror":
        return ImageOps.mirror(img)
    if name == "invert":
        return ImageOps.invert(img)
    raise ValueError(f"unknown PIL op id {op_id}")


def mix_float(mix_op: int, x: np.ndarray, y: np.ndarray, a, b, mask_p, mask_seed) -> np.ndarray:
    """One pixel-mixing op on float HWC images in [0, 1] (the patch, or the whole image)."""
    name = MIX_OPS[mix_op]
    if name == "add":
        return fo.mix_add(x, y, a, b)
    if name == "multiply":
        return fo.mix_multiply(x, y, a, b)
    h, w = x.shape[:2]
    if name == "random_pixels":
        mask = masks.pixel_mask(mask_seed, mask_p, h, w)[..., None]
    else:
        mask = masks.elem_mask(mask_seed, mask_p, h, w, x.shape[2])
    return fo.mix_select(x, y, mask)


class ReferenceExecutor:
    """Per-sample ground truth. ``apply(images, mixing_pictures, plan)``.

    Args of apply:
        images: uint8 (N, S, S, 3), the cropped and flipped training images.
        mixing_pictures: uint8 (N, S, S, 3), each sample's mixing picture already cropped per
            the plan (``MixingBank.crops(plan.mix_index, plan.mix_top, plan.mix_left, S)``);
            ``None`` for methods without one.
        plan: from :func:`ipmix_dali.plans.sample_plan`.
    """

    name = "reference"

    def apply(self, images: np.ndarray, mixing_pictures, plan: Plan, out=None,
              dtype="float32") -> np.ndarray:
        check_inputs(images, mixing_pictures, plan)
        cfg = plan.config
        out = output_array(np, out, (plan.views,) + images.shape, dtype)
        for i in range(plan.n):
            x = Image.fromarray(images[i])
            pic = None if mixing_pictures is None else Image.fromarray(mixing_pictures[i])
            for v in range(plan.views):
                out[v, i] = getattr(self, "_" + plan.method)(x, pic, plan, i, v, cfg)
        return out

    def normalize(self, images: np.ndarray, config, out=None, dtype="float32") -> np.ndarray:
        out = output_array(np, out, images.shape, dtype)
        for i in range(images.shape[0]):
            out[i] = self._pre(Image.fromarray(images[i]), config)
        return out

    # -- methods ---------------------------------------------------------------------------
    @staticmethod
    def _pre(img: Image.Image, cfg) -> np.ndarray:
        return fo.normalize(fo.to_float(np.asarray(img)), cfg.mean, cfg.std)

    def _none(self, x, pic, plan, i, v, cfg):
        return self._pre(x, cfg)

    def _augmix(self, x, pic, plan, i, v, cfg):
        chains = []
        for c in range(cfg.width):
            y = x.copy()
            for d in range(int(plan.depth[i, v, c])):
                y = pil_apply(int(plan.op[i, v, c, d]), y, float(plan.param[i, v, c, d]),
                              cfg.image_size)
            chains.append(self._pre(y, cfg))
        return fo.combine(self._pre(x, cfg), chains, plan.weights[i, v], plan.m[i, v])

    def _ipmix(self, x, pic, plan, i, v, cfg):
        to_u8 = fo.to_uint8_wrap if cfg.overflow == "wrap" else fo.to_uint8_clip
        chains = []
        for c in range(cfg.k):
            y = x.copy()
            for s in range(int(plan.length[i, v, c])):
                if plan.branch[i, v, c] == IMG:
                    y = pil_apply(int(plan.op[i, v, c, s]), y, float(plan.param[i, v, c, s]),
                                  cfg.image_size)
                    continue
                if plan.partner[i, v, c, s] == PARTNER_AUGMENTED:
                    partner = pil_apply(int(plan.partner_op[i, v, c, s]), x.copy(),
                                        float(plan.partner_param[i, v, c, s]), cfg.image_size)
                else:
                    partner = pic
                left, top = int(plan.left[i, v, c, s]), int(plan.top[i, v, c, s])
                box = (left, top, left + int(plan.width[i, v, c, s]),
                       top + int(plan.height[i, v, c, s]))
                a_patch = fo.to_float(np.asarray(y.crop(box)))
                b_patch = fo.to_float(np.asarray(partner.crop(box)))
                mixed = mix_float(int(plan.mix_op[i, v, c, s]), a_patch, b_patch,
                                  plan.a[i, v, c, s], plan.b[i, v, c, s],
                                  plan.mask_p[i, v, c, s], int(plan.mask_seed[i, v, c, s]))
                y = y.copy()
                y.paste(Image.fromarray(to_u8(mixed)), (left, top))
            chains.append(self._pre(y, cfg))
        return fo.combine(self._pre(x, cfg), chains, plan.weights[i, v], plan.m[i, v])

    def _pixmix(self, x, pic, plan, i, v, cfg):
        if plan.start_aug[i, v]:
            z = fo.to_float(np.asarray(pil_apply(int(plan.start_op[i, v]), x.copy(),
                                                 float(plan.start_param[i, v]), cfg.image_size)))
        else:
            z = fo.to_float(np.asarray(x))
        for r in range(int(plan.rounds[i, v])):
            if plan.partner_aug[i, v, r] == 1:
                partner = fo.to_float(np.asarray(pil_apply(
                    int(plan.partner_op[i, v, r]), x.copy(), float(plan.partner_param[i, v, r]),
                    cfg.image_size)))
            else:
                partner = fo.to_float(np.asarray(pic))
            z = fo.clip01(mix_float(int(plan.mix_op[i, v, r]), z, partner, plan.a[i, v, r],
                                    plan.b[i, v, r], 0, 0))
        return fo.normalize(z, cfg.mean, cfg.std)

    def _layermix(self, x, pic, plan, i, v, cfg):
        # LayerMix runs on torchvision float tensors; torch is imported only here.
        from .layermix_ops import apply_layermix_op_torch, to_float_torch

        op = int(plan.op[i, v])
        steps = int(plan.steps[i, v])
        params = plan.param[i, v]
        xt = to_float_torch(np.array(x))
        img = apply_layermix_op_torch(op, xt.clone(), float(params[0]))
        if steps >= 1:
            img2 = apply_layermix_op_torch(op, xt.clone(), float(params[1]))
            img = self._torch_blend(img, img2, plan, i, v, 0)
        if steps >= 2:
            img = self._torch_blend(img, to_float_torch(np.array(pic)), plan, i, v, 1)
            img = apply_layermix_op_torch(op, img, float(params[2]))
        hwc = img.permute(1, 2, 0).contiguous().numpy().astype(np.float32)
        return fo.normalize(hwc, cfg.mean, cfg.std)

    @staticmethod
    def _torch_blend(img1, img2, plan, i, v, j):
        """One LayerMix blend in torch (the reference's tensors), then torch.clip(., 0, 1)."""
        import torch

        name = MIX_OPS[int(plan.blend_op[i, v, j])]
        a, b = plan.a[i, v, j], plan.b[i, v, j]
        if name == "add":
            out = (a * (img1 * 2 - 1) + b * (img2 * 2 - 1) + 1) / 2
        elif name == "multiply":
            out = ((img1 * 2) ** a) * ((img2 * 2).clip(1e-37) ** b) / 2
        else:
            _, h, w = img1.shape
            if name == "random_pixels":
                m = masks.pixel_mask(int(plan.mask_seed[i, v, j]), plan.mask_p[i, v, j], h, w)[None]
            else:
                m = np.moveaxis(masks.elem_mask(int(plan.mask_seed[i, v, j]),
                                                plan.mask_p[i, v, j], h, w), -1, 0)
            mask = torch.from_numpy(np.ascontiguousarray(m)).to(torch.float32)
            out = mask * img1 + (1 - mask) * img2
        return torch.clip(out, 0, 1)
