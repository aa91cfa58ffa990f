"""The CuPy executor (GPU): the NumPy executor's steps as raw-kernel launches on whole batches.

Same plan in, same pixels out as :class:`~.numpy_exec.NumpyExecutor`: the PIL ops run through
``cupy_ops`` (``lut_ops.cu``, ``affine.cu``, ``enhance.cu``), LayerMix's through ``cupy_layermix``,
and every float stage through ``kernels/mixing.cu`` (to_float, normalisation, the four pixel
mixes, IPMix's patch steps for all rows of a step in one launch, the Dirichlet/Beta
combination), compiled without FMA contraction so that each float operation rounds like
NumPy's. Per step, rows are grouped by op id (one launch sequence per op present); the plan's
small arrays go to the device asynchronously; nothing waits for the GPU.

The executor is written against a *backend* (array module + kernel launcher): ``CupyBackend``
on a GPU, and the CPU emulator of ``tests/kernel_emu.py`` with NumPy arrays in CI, which runs
exactly these launches thread by thread (``tests/test_cupy_exec_emulated.py``).

Output of :meth:`CupyExecutor.apply`: float32 (V, N, H, W, 3), normalised, channels last, on the
backend's device.
"""
from __future__ import annotations

import numpy as np

from ..ops.table import MIX_OP_ID
from ..plans import PARTNER_AUGMENTED, Plan
from .cupy_ops import BLOCK, MAX_GRID, execute_plan, prepare_pil_op

__all__ = ["CupyExecutor", "CupyBackend"]

_MIX_FILE = "mixing.cu"
_OUT_CLIP01, _OUT_WRAP_U8, _OUT_CLIP_U8 = 0, 1, 2
assert (MIX_OP_ID["add"], MIX_OP_ID["multiply"], MIX_OP_ID["random_pixels"],
        MIX_OP_ID["random_elems"]) == (0, 1, 2, 3), "mixing.cu numbers the mix ops 0..3"


def _geometry(count):
    blocks = max(1, min(MAX_GRID, -(-int(count) // BLOCK)))
    return (blocks, 1, 1), (BLOCK, 1, 1)


class CupyBackend:
    """CuPy arrays and ``RawModule`` kernels on the current stream."""

    def __init__(self):
        import cupy

        self.xp = cupy

    def launch(self, file, name, grid, block, args):
        from ._kernels import get_function

        get_function(file, name)(grid, block, args)

    def to_device(self, a):
        return self.xp.asarray(a)


class CupyExecutor:
    """Batch executor on the GPU (or on any backend with the same interface)."""

    name = "cupy"

    def __init__(self, backend=None):
        self.backend = backend or CupyBackend()
        self.xp = self.backend.xp

    # --- launches -----------------------------------------------------------------------------
    def _launch(self, name, count, *args):
        if count <= 0:
            return
        grid, block = _geometry(count)
        self.backend.launch(_MIX_FILE, name, grid, block, args)

    def _dev(self, a, dtype):
        return self.backend.to_device(np.ascontiguousarray(np.asarray(a, dtype=dtype)))

    def _run_plan(self, plan, images, out):
        """An ``OpPlan`` of cupy_ops / cupy_layermix on this backend."""
        return execute_plan(plan, images, out, to_device=self.backend.to_device,
                            zeros=self.xp.zeros,
                            launch=lambda kl, args: self.backend.launch(kl.file, kl.name,
                                                                        kl.grid, kl.block, args))

    def _grouped(self, prepare, images, op_ids, params):
        """An op per row (-1: unchanged), one plan per distinct op id: ``prepare(op, shape,
        params)`` is cupy_ops' (PIL ops, uint8) or cupy_layermix's (LayerMix ops, float32)."""
        out = images.copy()
        for op in np.unique(op_ids):
            if op < 0:
                continue
            rows = np.nonzero(op_ids == op)[0]
            index = self._dev(rows, np.int64)
            sub = self.xp.ascontiguousarray(images[index])
            out[index] = self._run_plan(prepare(int(op), sub.shape,
                                                params[rows].astype(np.float64)),
                                        sub, self.xp.empty_like(sub))
        return out

    def _pil_grouped(self, images, op_ids, params):
        return self._grouped(prepare_pil_op, images, op_ids, params)

    def _layermix_grouped(self, images, op_ids, params):
        from .cupy_layermix import prepare_layermix_op

        return self._grouped(prepare_layermix_op, images, op_ids, params)

    def _normalize(self, x, cfg):
        xp = self.xp
        out = xp.empty(x.shape, dtype=xp.float32)
        u8 = x.dtype == np.uint8
        dummy_u8, dummy_f = xp.zeros(1, xp.uint8), xp.zeros(1, xp.float32)
        self._launch("mix_normalize", x.size, x if u8 else dummy_u8, dummy_f if u8 else x, out,
                     np.int64(x.size), self._dev(cfg.mean, np.float32),
                     self._dev(cfg.std, np.float32), np.int32(1 if u8 else 0))
        return out

    def _to_float(self, x):
        out = self.xp.empty(x.shape, dtype=self.xp.float32)
        self._launch("mix_to_float", x.size, x, out, np.int64(x.size))
        return out

    def _combine(self, x, chains, plan, cfg):
        xp = self.xp
        n, v, k = chains.shape[:3]
        hw3 = int(np.prod(x.shape[1:]))
        out = xp.empty((v, n) + x.shape[1:], dtype=xp.float32)
        self._launch("mix_combine", v * n * hw3, x, chains, self._dev(plan.weights, np.float32),
                     self._dev(plan.m, np.float32), out, np.int32(n), np.int32(v), np.int32(k),
                     np.int64(hw3), self._dev(cfg.mean, np.float32),
                     self._dev(cfg.std, np.float32))
        return out

    def _mix_full(self, z, rows, partner, ops, a, b, p, seeds):
        """z[rows] = clip01(mix(z[rows], partner)) in place; partner uint8 or float32."""
        xp = self.xp
        hw = z.shape[1] * z.shape[2]
        u8 = partner.dtype == np.uint8
        dummy_u8, dummy_f = xp.zeros(1, xp.uint8), xp.zeros(1, xp.float32)
        r = len(rows)
        self._launch("mix_rows_full", r * hw * 3, z, self._dev(rows, np.int32),
                     partner if u8 else dummy_u8, dummy_f if u8 else partner,
                     np.int32(1 if u8 else 0), self._dev(ops, np.int32),
                     self._dev(a, np.float32), self._dev(b, np.float32),
                     self._dev(np.zeros(r) if p is None else p, np.float32),
                     self._dev(np.zeros(r) if seeds is None else seeds, np.uint32),
                     np.int32(r), np.int64(hw))

    # --- the methods --------------------------------------------------------------------------
    def apply(self, images, mixing_pictures, plan: Plan):
        from .reference import _check_inputs

        _check_inputs(images, mixing_pictures, plan)
        xp = self.xp
        images = xp.ascontiguousarray(images)
        pics = None if mixing_pictures is None else xp.ascontiguousarray(mixing_pictures)
        return getattr(self, "_" + plan.method)(images, pics, plan, plan.config)

    def _none(self, x, pics, plan, cfg):
        return self.xp.broadcast_to(self._normalize(x, cfg)[None], (plan.views,) + x.shape)

    def _chains(self, x, v, k):
        n = len(x)
        return self.xp.ascontiguousarray(self.xp.broadcast_to(
            x[:, None, None], (n, v, k) + x.shape[1:]).reshape((n * v * k,) + x.shape[1:]))

    def _augmix(self, x, pics, plan, cfg):
        n, (v, k, d) = len(x), plan.op.shape[1:]
        y = self._chains(x, v, k)
        for s in range(d):
            y = self._pil_grouped(y, plan.op[..., s].ravel(), plan.param[..., s].ravel())
        return self._combine(x, y.reshape((n, v, k) + x.shape[1:]), plan, cfg)

    def _ipmix(self, x, pics, plan, cfg):
        xp = self.xp
        n, (v, k, t) = len(x), plan.op.shape[1:]
        h, w = x.shape[1:3]
        y = self._chains(x, v, k)
        sample = np.repeat(np.arange(n), v * k)
        flat = {name: plan.arrays[name].reshape(n * v * k, t) for name in (
            "op", "param", "mix_op", "left", "top", "width", "height", "a", "b", "mask_p",
            "mask_seed", "partner", "partner_op", "partner_param")}
        out_mode = _OUT_WRAP_U8 if cfg.overflow == "wrap" else _OUT_CLIP_U8
        for s in range(t):
            y = self._pil_grouped(y, flat["op"][:, s], flat["param"][:, s])
            rows = np.nonzero(flat["mix_op"][:, s] >= 0)[0]
            if len(rows) == 0:
                continue
            partner = xp.ascontiguousarray(pics[self._dev(sample[rows], np.int64)])
            aug = np.nonzero(flat["partner"][rows, s] == PARTNER_AUGMENTED)[0]
            if len(aug):
                src = xp.ascontiguousarray(x[self._dev(sample[rows[aug]], np.int64)])
                partner[self._dev(aug, np.int64)] = self._pil_grouped(
                    src, flat["partner_op"][rows[aug], s], flat["partner_param"][rows[aug], s])
            top, left = flat["top"][rows, s].astype(np.int64), flat["left"][rows, s].astype(np.int64)
            # NumPy slicing stops at the image edge: the box (and its mask) is the clipped one.
            bh = np.clip(np.minimum(flat["height"][rows, s], h - top), 0, None)
            bw = np.clip(np.minimum(flat["width"][rows, s], w - left), 0, None)
            box = np.stack([top, left, bh, bw], axis=1)
            max_area = int((bh * bw).max())
            self._launch("mix_patch", len(rows) * max_area * 3, y, self._dev(rows, np.int32),
                         partner, self._dev(box, np.int32), self._dev(flat["mix_op"][rows, s],
                                                                      np.int32),
                         self._dev(flat["a"][rows, s], np.float32),
                         self._dev(flat["b"][rows, s], np.float32),
                         self._dev(flat["mask_p"][rows, s], np.float32),
                         self._dev(flat["mask_seed"][rows, s], np.uint32), np.int32(len(rows)),
                         np.int32(h), np.int32(w), np.int64(max_area), np.int32(out_mode))
        return self._combine(x, y.reshape((n, v, k) + x.shape[1:]), plan, cfg)

    def _pixmix(self, x, pics, plan, cfg):
        xp = self.xp
        n, v = plan.rounds.shape
        sample = np.repeat(np.arange(n), v)
        start = self._pil_grouped(xp.ascontiguousarray(x[self._dev(sample, np.int64)]),
                                  plan.start_op.ravel(), plan.start_param.ravel())
        z = self._to_float(start)
        r_max = plan.mix_op.shape[2]
        flat = {key: plan.arrays[key].reshape(n * v, r_max)
                for key in ("mix_op", "partner_aug", "partner_op", "partner_param", "a", "b")}
        for r in range(r_max):
            rows = np.nonzero(flat["mix_op"][:, r] >= 0)[0]
            if len(rows) == 0:
                continue
            partner = xp.ascontiguousarray(pics[self._dev(sample[rows], np.int64)])
            aug = np.nonzero(flat["partner_aug"][rows, r] == 1)[0]
            if len(aug):
                src = xp.ascontiguousarray(x[self._dev(sample[rows[aug]], np.int64)])
                partner[self._dev(aug, np.int64)] = self._pil_grouped(
                    src, flat["partner_op"][rows[aug], r], flat["partner_param"][rows[aug], r])
            self._mix_full(z, rows, partner, flat["mix_op"][rows, r], flat["a"][rows, r],
                           flat["b"][rows, r], None, None)
        out = self._normalize(z, cfg).reshape((n, v) + x.shape[1:])
        return xp.ascontiguousarray(xp.moveaxis(out, 1, 0))

    def _layermix(self, x, pics, plan, cfg):
        from .cupy_layermix import prepare_to_float

        xp = self.xp
        n, v = plan.steps.shape
        sample = np.repeat(np.arange(n), v)

        def to_float_lm(u8):
            return self._run_plan(prepare_to_float(u8.shape), u8,
                                  xp.empty(u8.shape, dtype=xp.float32))

        xf = xp.ascontiguousarray(to_float_lm(x)[self._dev(sample, np.int64)])
        op, steps = plan.op.ravel(), plan.steps.ravel()
        param = plan.param.reshape(n * v, 3)
        blend = plan.blend_op.reshape(n * v, 2)
        a, b = plan.a.reshape(n * v, 2), plan.b.reshape(n * v, 2)
        mp, ms = plan.mask_p.reshape(n * v, 2), plan.mask_seed.reshape(n * v, 2)
        img = self._layermix_grouped(xf, op, param[:, 0])
        rows = np.nonzero(steps >= 1)[0]
        if len(rows):
            sub = xp.ascontiguousarray(xf[self._dev(rows, np.int64)])
            img2 = self._layermix_grouped(sub, op[rows], param[rows, 1])
            self._mix_full(img, rows, img2, blend[rows, 0], a[rows, 0], b[rows, 0], mp[rows, 0],
                           ms[rows, 0])
        rows = np.nonzero(steps >= 2)[0]
        if len(rows):
            pic = xp.ascontiguousarray(to_float_lm(pics)[self._dev(sample[rows], np.int64)])
            self._mix_full(img, rows, pic, blend[rows, 1], a[rows, 1], b[rows, 1], mp[rows, 1],
                           ms[rows, 1])
            sub = xp.ascontiguousarray(img[self._dev(rows, np.int64)])
            img[self._dev(rows, np.int64)] = self._layermix_grouped(sub, op[rows],
                                                                    param[rows, 2])
        out = self._normalize(img, cfg).reshape((n, v) + x.shape[1:])
        return xp.ascontiguousarray(xp.moveaxis(out, 1, 0))
