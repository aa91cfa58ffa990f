"""The NumPy batch executor (CPU): the reference's semantics on a whole batch.

Same plan in, same pixels out as :class:`~.reference.ReferenceExecutor`: the PIL ops are the
batch twins of :mod:`.np_ops` (grouped by op id, each group one vectorised call), the float stages
are :mod:`.float_ops` in the reference's operation order. It is also the CPU stage of the DALI
pipeline, so it works in chunks of samples to bound memory, and loops in Python only over IPMix's
patch steps (small boxes of varying size).

Output of :meth:`NumpyExecutor.apply`: float32 (V, N, H, W, 3), normalised, channels last.
"""
from __future__ import annotations

import numpy as np

from ..ops import masks
from ..ops.table import MIX_OP_ID
from ..plans import PARTNER_AUGMENTED, Plan
from . import float_ops as fo
from .reference import _check_inputs

_ADD, _MUL = MIX_OP_ID["add"], MIX_OP_ID["multiply"]
_PIX, _ELEM = MIX_OP_ID["random_pixels"], MIX_OP_ID["random_elems"]


def apply_ops_grouped(images: np.ndarray, op_ids: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Apply a PIL op per row (op id -1: unchanged), one batch call per distinct op id."""
    from .np_ops import apply_pil_op

    out = images.copy()
    for op in np.unique(op_ids):
        if op < 0:
            continue
        rows = np.nonzero(op_ids == op)[0]
        out[rows] = apply_pil_op(int(op), images[rows], params[rows].astype(np.float64))
    return out


def apply_layermix_grouped(images: np.ndarray, op_ids: np.ndarray, params: np.ndarray):
    """Apply a LayerMix float op per row (float32 NHWC), one batch call per distinct op id."""
    from .layermix_ops import apply_layermix_op_np

    out = images.copy()
    for op in np.unique(op_ids):
        if op < 0:
            continue
        rows = np.nonzero(op_ids == op)[0]
        out[rows] = apply_layermix_op_np(int(op), images[rows], params[rows].astype(np.float64))
    return out


def batch_masks(kind: int, seeds: np.ndarray, ps: np.ndarray, h: int, w: int) -> np.ndarray:
    """Masks of several rows at once: (r, h, w, 1) for random_pixels, (r, h, w, 3) for elems."""
    seeds = seeds.astype(np.uint32)[:, None, None, None]
    ps = ps.astype(np.float32)[:, None, None, None]
    if kind == _PIX:
        idx = np.arange(h * w, dtype=np.uint32).reshape(1, h, w, 1)
    else:  # element index (c * h + y) * w + x, laid out channels last
        idx = (np.arange(3, dtype=np.uint32)[None, None, None, :] * np.uint32(h * w)
               + np.arange(h * w, dtype=np.uint32).reshape(1, h, w, 1))
    return masks.uniform_from_hash(seeds, idx) < ps


def mix_rows(kind: np.ndarray, x: np.ndarray, y: np.ndarray, a, b, mask_p, mask_seed):
    """Pixel-mix rows of float images (r, h, w, 3) with per-row op, coefficients and masks."""
    out = np.empty_like(x)
    h, w = x.shape[1:3]
    for op in np.unique(kind):
        rows = np.nonzero(kind == op)[0]
        if op == _ADD:
            out[rows] = fo.mix_add(x[rows], y[rows], a[rows, None, None, None],
                                   b[rows, None, None, None])
        elif op == _MUL:
            out[rows] = fo.mix_multiply(x[rows], y[rows], a[rows, None, None, None],
                                        b[rows, None, None, None])
        else:
            m = batch_masks(int(op), mask_seed[rows], mask_p[rows], h, w)
            out[rows] = fo.mix_select(x[rows], y[rows], m)
    return out


def slice_plan(plan: Plan, start: int, stop: int) -> Plan:
    """The plan of samples [start, stop): every array is indexed by sample first."""
    return Plan(plan.method, plan.config, {k: v[start:stop] for k, v in plan.arrays.items()})


class NumpyExecutor:
    """Batch executor on the CPU.

    Args:
        chunk_size: samples processed together (bounds the float working set, about
            chunk_size * views * chains * H * W * 3 * 4 bytes).
    """

    name = "numpy"

    def __init__(self, chunk_size: int = 32):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

    def apply(self, images: np.ndarray, mixing_pictures, plan: Plan) -> np.ndarray:
        _check_inputs(images, mixing_pictures, plan)
        out = np.empty((plan.views,) + images.shape, dtype=np.float32)
        run = getattr(self, "_" + plan.method)
        for start in range(0, plan.n, self.chunk_size):
            stop = min(start + self.chunk_size, plan.n)
            pics = None if mixing_pictures is None else mixing_pictures[start:stop]
            out[:, start:stop] = run(images[start:stop], pics, slice_plan(plan, start, stop),
                                     plan.config)
        return out

    # Each method returns (V, n, H, W, 3) float32 for one chunk.
    @staticmethod
    def _pre(images_u8, cfg):
        return fo.normalize_u8(images_u8, cfg.mean, cfg.std)

    def _none(self, x, pics, plan, cfg):
        return np.broadcast_to(self._pre(x, cfg)[None], (plan.views,) + x.shape).copy()

    def _combine(self, x, chains_u8, plan, cfg):
        """(1 - m) * pre(x) + m * sum_c w_c * pre(y_c); chains_u8 is (n, V, K, H, W, 3)."""
        clean = self._pre(x, cfg)[:, None]  # (n, 1, H, W, 3)
        weights = plan.weights[..., None, None, None]  # (n, V, K, 1, 1, 1)
        mix = np.zeros(chains_u8.shape[:2] + chains_u8.shape[3:], dtype=np.float32)
        for c in range(chains_u8.shape[2]):
            mix = mix + weights[:, :, c] * self._pre(chains_u8[:, :, c], cfg)
        m = plan.m[..., None, None, None]
        out = (np.float32(1) - m) * clean + m * mix
        return np.moveaxis(out, 1, 0)

    def _augmix(self, x, pics, plan, cfg):
        n, (v, k, d) = len(x), plan.op.shape[1:]
        y = np.broadcast_to(x[:, None, None], (n, v, k) + x.shape[1:]).reshape(
            (n * v * k,) + x.shape[1:]).copy()
        for s in range(d):
            y = apply_ops_grouped(y, plan.op[..., s].ravel(), plan.param[..., s].ravel())
        return self._combine(x, y.reshape((n, v, k) + x.shape[1:]), plan, cfg)

    def _ipmix(self, x, pics, plan, cfg):
        n, (v, k, t) = len(x), plan.op.shape[1:]
        shape = x.shape[1:]
        to_u8 = fo.to_uint8_wrap if cfg.overflow == "wrap" else fo.to_uint8_clip
        y = np.broadcast_to(x[:, None, None], (n, v, k) + shape).reshape((n * v * k,) + shape).copy()
        sample = np.repeat(np.arange(n), v * k)  # sample index of every chain row
        flat = {name: plan.arrays[name].reshape(n * v * k, t) for name in (
            "op", "param", "mix_op", "left", "top", "width", "height", "a", "b", "mask_p",
            "mask_seed", "partner", "partner_op", "partner_param")}
        for s in range(t):
            y = apply_ops_grouped(y, flat["op"][:, s], flat["param"][:, s])
            rows = np.nonzero(flat["mix_op"][:, s] >= 0)[0]
            if len(rows) == 0:
                continue
            # Partner of each P step: the mixing picture, or one op on the clean input.
            partner = pics[sample[rows]]
            aug = np.nonzero(flat["partner"][rows, s] == PARTNER_AUGMENTED)[0]
            if len(aug):
                partner[aug] = apply_ops_grouped(x[sample[rows[aug]]],
                                                 flat["partner_op"][rows[aug], s],
                                                 flat["partner_param"][rows[aug], s])
            for j, r in enumerate(rows):
                l0, t0 = int(flat["left"][r, s]), int(flat["top"][r, s])
                box = (slice(t0, t0 + int(flat["height"][r, s])),
                       slice(l0, l0 + int(flat["width"][r, s])))
                pa = fo.to_float(y[r][box])[None]
                pb = fo.to_float(partner[j][box])[None]
                mixed = mix_rows(flat["mix_op"][r:r + 1, s], pa, pb, flat["a"][r:r + 1, s],
                                 flat["b"][r:r + 1, s], flat["mask_p"][r:r + 1, s],
                                 flat["mask_seed"][r:r + 1, s])
                y[r][box] = to_u8(mixed[0])
        return self._combine(x, y.reshape((n, v, k) + shape), plan, cfg)

    def _pixmix(self, x, pics, plan, cfg):
        n, v = plan.rounds.shape
        shape = x.shape[1:]
        sample = np.repeat(np.arange(n), v)
        z = fo.to_float(apply_ops_grouped(x[sample], plan.start_op.ravel(),
                                          plan.start_param.ravel()))
        pics_f = fo.to_float(pics)
        r_max = plan.mix_op.shape[2]
        mix_op = plan.mix_op.reshape(n * v, r_max)
        for r in range(r_max):
            rows = np.nonzero(mix_op[:, r] >= 0)[0]
            if len(rows) == 0:
                continue
            partner = pics_f[sample[rows]]
            aug = np.nonzero(plan.partner_aug.reshape(n * v, r_max)[rows, r] == 1)[0]
            if len(aug):
                partner[aug] = fo.to_float(apply_ops_grouped(
                    x[sample[rows[aug]]], plan.partner_op.reshape(n * v, r_max)[rows[aug], r],
                    plan.partner_param.reshape(n * v, r_max)[rows[aug], r]))
            zero = np.zeros(len(rows), dtype=np.float32)
            z[rows] = fo.clip01(mix_rows(mix_op[rows, r], z[rows], partner,
                                         plan.a.reshape(n * v, r_max)[rows, r],
                                         plan.b.reshape(n * v, r_max)[rows, r], zero,
                                         zero.astype(np.uint32)))
        out = fo.normalize(z, cfg.mean, cfg.std).reshape((n, v) + shape)
        return np.moveaxis(out, 1, 0)

    def _layermix(self, x, pics, plan, cfg):
        from .layermix_ops import to_float_np

        n, v = plan.steps.shape
        shape = x.shape[1:]
        sample = np.repeat(np.arange(n), v)
        xf = to_float_np(x)[sample]
        op = plan.op.ravel()
        steps = plan.steps.ravel()
        param = plan.param.reshape(n * v, 3)
        blend = plan.blend_op.reshape(n * v, 2)
        a, b = plan.a.reshape(n * v, 2), plan.b.reshape(n * v, 2)
        mp, ms = plan.mask_p.reshape(n * v, 2), plan.mask_seed.reshape(n * v, 2)
        img = apply_layermix_grouped(xf, op, param[:, 0])
        rows = np.nonzero(steps >= 1)[0]
        if len(rows):
            img2 = apply_layermix_grouped(xf[rows], op[rows], param[rows, 1])
            img[rows] = fo.clip01(mix_rows(blend[rows, 0], img[rows], img2, a[rows, 0],
                                           b[rows, 0], mp[rows, 0], ms[rows, 0]))
        rows = np.nonzero(steps >= 2)[0]
        if len(rows):
            pic = to_float_np(pics)[sample[rows]]
            img[rows] = fo.clip01(mix_rows(blend[rows, 1], img[rows], pic, a[rows, 1],
                                           b[rows, 1], mp[rows, 1], ms[rows, 1]))
            img[rows] = apply_layermix_grouped(img[rows], op[rows], param[rows, 2])
        out = fo.normalize(img, cfg.mean, cfg.std).reshape((n, v) + shape)
        return np.moveaxis(out, 1, 0)
