"""The NumPy batch executor (CPU): the reference's semantics on a whole batch.

Same plan in, same pixels out as :class:`~.reference.ReferenceExecutor`: the PIL ops are the
batch twins of :mod:`.np_ops` (grouped by op id, each group one vectorised call), the float stages
are :mod:`.float_ops` in the reference's operation order. It is also the CPU stage of the DALI
pipeline, so it works in chunks of samples to bound memory, and loops in Python only over IPMix's
patch steps (small boxes of varying size). Where the kernels build for the host
(:mod:`.native_exec`), LayerMix's whole chain, the normalisation and AugMix / IPMix's
combination run as the GPU executor's kernels on the CPU instead: the same pixels, faster.

Output of :meth:`NumpyExecutor.apply`: float32 (V, N, H, W, 3), normalised, channels last.
"""
from __future__ import annotations

import numpy as np

from ..ops import masks
from ..ops.table import MIX_OP_ID
from ..plans import Plan
from . import base, native_exec
from . import float_ops as fo

_ADD, _MUL = MIX_OP_ID["add"], MIX_OP_ID["multiply"]
_PIX, _ELEM = MIX_OP_ID["random_pixels"], MIX_OP_ID["random_elems"]


def _apply_grouped(apply_op, images: np.ndarray, op_ids: np.ndarray, params: np.ndarray):
    """Apply an op per row (op id -1: unchanged), one batch call per distinct op id."""
    out = images.copy()
    for op in np.unique(op_ids):
        if op < 0:
            continue
        rows = np.nonzero(op_ids == op)[0]
        out[rows] = apply_op(int(op), images[rows], params[rows].astype(np.float64))
    return out


def apply_ops_grouped(images: np.ndarray, op_ids: np.ndarray, params: np.ndarray) -> np.ndarray:
    """PIL op twins (uint8 NHWC) per row."""
    from .np_ops import apply_pil_op

    return _apply_grouped(apply_pil_op, images, op_ids, params)


def apply_layermix_grouped(images: np.ndarray, op_ids: np.ndarray, params: np.ndarray):
    """LayerMix float op twins (float32 NHWC) per row."""
    from .layermix_ops import apply_layermix_op_np

    return _apply_grouped(apply_layermix_op_np, images, op_ids, params)


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


def mix_rows(kind: np.ndarray, x: np.ndarray, y: np.ndarray, a, b, mask_p, mask_seed,
             x_u8=None, y_u8=None):
    """Pixel-mix rows of float images (r, h, w, 3) with per-row op, coefficients and masks.

    ``x_u8`` / ``y_u8`` (optional) are the uint8 images x / y were made from by ``to_float``;
    given, multiply's powers come from 256-entry tables (:func:`float_ops.pow_tables`), which
    yields the same floats faster.
    """
    out = np.empty_like(x)
    h, w = x.shape[1:3]
    for op in np.unique(kind):
        rows = np.nonzero(kind == op)[0]
        if op == _ADD:
            out[rows] = fo.mix_add(x[rows], y[rows], a[rows, None, None, None],
                                   b[rows, None, None, None])
        elif op == _MUL and (x_u8 is not None or y_u8 is not None):
            ta = None if x_u8 is None else fo.pow_tables(a[rows], clamp=False)
            tb = None if y_u8 is None else fo.pow_tables(b[rows], clamp=True)
            for j, r in enumerate(rows):
                if ta is None:
                    pa = np.power((x[r] * np.float32(2)).astype(np.float64),
                                  np.float64(np.float32(a[r]))).astype(np.float32)
                else:
                    pa = np.take(ta[j], x_u8[r])
                if tb is None:
                    pb = np.power(np.maximum(y[r] * np.float32(2), np.float32(1e-37)).astype(
                        np.float64), np.float64(np.float32(b[r]))).astype(np.float32)
                else:
                    pb = np.take(tb[j], y_u8[r])
                out[r] = fo.mix_multiply_tables(pa, pb)
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


# Samples per chunk by default. Small chunks keep a chunk's working set (views x chains of
# uint8 and float32 pictures: ~3.6 MB per sample for IPMix + JSD at 224 px) near the caches;
# the per-chunk Python cost is small next to that. Measured CPU time per sample, one core,
# IPMix / LayerMix / AugMix + JSD at 224 px: chunk 32: 5.1 / 6.8 / 6.1 ms, 8: 4.3 / 6.3 / 5.0,
# 4: 3.9 / 5.2 / 5.0, 2: 3.8 / 5.3 / 5.1, 1: 4.0 / 4.9 / 5.2 (docs/cpu_stage.md).
DEFAULT_CHUNK_SIZE = 4


class NumpyExecutor:
    """Batch executor on the CPU.

    Args:
        chunk_size: samples processed together (bounds the float working set, about
            chunk_size * views * chains * H * W * 3 * 4 bytes; small is faster, see
            ``DEFAULT_CHUNK_SIZE``).
        threads: chunks run on this many threads (NumPy releases the GIL in its loops); a
            batch is then cut into at least this many chunks. Samples are independent given
            the plan, so the pixels do not depend on it.
    """

    name = "numpy"

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE, threads: int = 1):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.chunk_size, self.threads = chunk_size, threads
        self._pool = None

    def apply(self, images: np.ndarray, mixing_pictures, plan: Plan, out=None,
              dtype="float32") -> np.ndarray:
        base.check_inputs(images, mixing_pictures, plan)
        out = base.output_array(np, out, (plan.views,) + images.shape, dtype)
        run = getattr(self, "_" + plan.method)
        size = min(self.chunk_size, max(1, -(-plan.n // self.threads)))
        # LayerMix's whole chain, and "none"'s normalisation, run as the GPU's program compiled
        # for the host when they can (native_exec: the same pixels, about half the time); the
        # NumPy twin otherwise.
        native = plan.method in ("layermix", "none") and native_exec.available(plan.method)
        # The last step of PixMix (the normalisation), AugMix and IPMix (the combination)
        # likewise, straight into ``out``'s layout.
        own_out = plan.method in ("pixmix", "augmix", "ipmix") and native_exec.available("none")

        def chunk(start):
            stop = min(start + size, plan.n)
            pics = None if mixing_pictures is None else mixing_pictures[start:stop]
            part = slice_plan(plan, start, stop)
            if native:
                native_exec.apply(images[start:stop], pics, part, out=out[:, start:stop])
            elif own_out:
                run(images[start:stop], pics, part, plan.config, out=out[:, start:stop])
            else:
                out[:, start:stop] = run(images[start:stop], pics, part, plan.config)

        starts = range(0, plan.n, size)
        if self.threads > 1 and len(starts) > 1:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="numpy-exec")
            list(self._pool.map(chunk, starts))  # list(): re-raises a chunk's exception
        else:
            for start in starts:
                chunk(start)
        return out

    def normalize(self, images: np.ndarray, config, out=None, dtype="float32") -> np.ndarray:
        """(images / 255 - mean) / std: JSD's clean view."""
        out = base.output_array(np, out, images.shape, dtype)
        if native_exec.available("none"):  # one pass, no temporaries: no chunks needed
            return native_exec.normalize(images, config, out=out)
        for start in range(0, images.shape[0], self.chunk_size):
            stop = start + self.chunk_size
            out[start:stop] = self._pre(images[start:stop], config)
        return out

    # Each method returns (V, n, H, W, 3) float32 for one chunk.
    @staticmethod
    def _pre(images_u8, cfg):
        return fo.normalize_u8(images_u8, cfg.mean, cfg.std)

    def _none(self, x, pics, plan, cfg):
        return np.broadcast_to(self._pre(x, cfg)[None], (plan.views,) + x.shape)

    def _combine(self, x, chains_u8, plan, cfg, dirty=None, out=None):
        """(1 - m) * pre(x) + m * sum_c w_c * pre(y_c); chains_u8 is (n, V, K, H, W, 3).

        Same float32 operations in the same order as the reference (the sum starts at zero and
        adds the chains in order), done in place to save passes over memory. ``dirty`` (optional,
        (n * V * K, 4) rows of top, left, bottom, right) bounds where a chain differs from x:
        outside it pre(y_c) is pre(x), which is reused instead of recomputed (same floats).
        ``out`` given: the combination is written into it natively (``native_exec.combine``, the
        GPU's kernel on the host: the same floats, one pass into ``out``'s layout) and None is
        returned.
        """
        if out is not None:
            native_exec.combine(x, chains_u8, plan, cfg, out)
            return None
        n, v, k = chains_u8.shape[:3]
        h, w = chains_u8.shape[3:5]
        clean1 = self._pre(x, cfg)  # (n, H, W, 3)
        clean = clean1[:, None]
        weights = plan.weights[..., None, None, None]  # (n, V, K, 1, 1, 1)
        mix = np.zeros((n, v) + chains_u8.shape[3:], dtype=np.float32)
        if dirty is not None:
            dirty = dirty.reshape(n, v, k, 4)
            term = np.empty_like(mix)
        for c in range(k):
            wc = weights[:, :, c]
            if dirty is None:
                term = self._pre(chains_u8[:, :, c], cfg)
                term *= wc
            else:
                # w * pre(y_c): pre(x) * w where the chain left x as it was, recomputed only
                # inside its box (one pass for the clean area, no copy of pre(x) first)
                d = dirty[:, :, c]
                full = (d[..., 0] == 0) & (d[..., 1] == 0) & (d[..., 2] == h) & (d[..., 3] == w)
                np.multiply(clean, wc, out=term)
                if full.any():
                    term[full] = self._pre(chains_u8[:, :, c][full], cfg) * wc[full]
                for i, j in zip(*np.nonzero(~full & (d[..., 2] > d[..., 0]))):
                    t0, l0, t1, l1 = (int(val) for val in d[i, j])
                    term[i, j, t0:t1, l0:l1] = (self._pre(chains_u8[i, j, c, t0:t1, l0:l1], cfg)
                                                * wc[i, j])
            mix += term
        m = plan.m[..., None, None, None]
        mix *= m
        out = (np.float32(1) - m) * clean
        out += mix
        return np.moveaxis(out, 1, 0)

    def _augmix(self, x, pics, plan, cfg, out=None):
        n, (v, k, d) = len(x), plan.op.shape[1:]
        y = np.broadcast_to(x[:, None, None], (n, v, k) + x.shape[1:]).reshape(
            (n * v * k,) + x.shape[1:]).copy()
        for s in range(d):
            y = apply_ops_grouped(y, plan.op[..., s].ravel(), plan.param[..., s].ravel())
        return self._combine(x, y.reshape((n, v, k) + x.shape[1:]), plan, cfg, out=out)

    def _ipmix(self, x, pics, plan, cfg, out=None):
        n, (v, k, t) = len(x), plan.op.shape[1:]
        shape = x.shape[1:]
        to_u8 = fo.to_uint8_wrap if cfg.overflow == "wrap" else fo.to_uint8_clip
        y = np.broadcast_to(x[:, None, None], (n, v, k) + shape).reshape((n * v * k,) + shape).copy()
        sample, flat = base.ipmix_schedule(plan)  # sample of every chain row, per-row fields
        size = shape[0]
        dirty = np.zeros((n * v * k, 4), dtype=np.int64)  # box where y differs from x
        for s in range(t):
            y = apply_ops_grouped(y, flat["op"][:, s], flat["param"][:, s])
            dirty[flat["op"][:, s] >= 0] = (0, 0, size, size)
            rows = np.nonzero(flat["mix_op"][:, s] >= 0)[0]
            if len(rows) == 0:
                continue
            # Partner of each P step: the mixing picture, or one op on the clean input.
            partner = pics[sample[rows]]
            aug = np.nonzero(base.augmented_partners("ipmix", flat, rows, s))[0]
            if len(aug):
                partner[aug] = apply_ops_grouped(x[sample[rows[aug]]],
                                                 flat["partner_op"][rows[aug], s],
                                                 flat["partner_param"][rows[aug], s])
            for j, r in enumerate(rows):
                l0, t0 = int(flat["left"][r, s]), int(flat["top"][r, s])
                box = (slice(t0, t0 + int(flat["height"][r, s])),
                       slice(l0, l0 + int(flat["width"][r, s])))
                ua, ub = y[r][box][None], partner[j][box][None]
                mixed = mix_rows(flat["mix_op"][r:r + 1, s], fo.to_float(ua), fo.to_float(ub),
                                 flat["a"][r:r + 1, s], flat["b"][r:r + 1, s],
                                 flat["mask_p"][r:r + 1, s], flat["mask_seed"][r:r + 1, s],
                                 x_u8=ua, y_u8=ub)
                y[r][box] = to_u8(mixed[0])
                b = dirty[r]
                if b[2] > b[0]:  # union with the existing box
                    b[:] = (min(b[0], t0), min(b[1], l0), max(b[2], box[0].stop),
                            max(b[3], box[1].stop))
                else:
                    b[:] = (t0, l0, box[0].stop, box[1].stop)
        return self._combine(x, y.reshape((n, v, k) + shape), plan, cfg, dirty, out=out)

    def _pixmix(self, x, pics, plan, cfg, out=None):
        """``out`` given: the views are normalised into it natively (and None returned)."""
        n, v = plan.rounds.shape
        shape = x.shape[1:]
        sample, flat = base.pixmix_schedule(plan)
        start_u8 = apply_ops_grouped(x[sample], plan.start_op.ravel(), plan.start_param.ravel())
        z = fo.to_float(start_u8)
        fresh = np.ones(n * v, dtype=bool)  # z is still to_float(start_u8): tables apply to it
        native = native_exec.available("none")
        for r in range(flat["mix_op"].shape[1]):
            rows = np.nonzero(flat["mix_op"][:, r] >= 0)[0]
            if len(rows) == 0:
                continue
            # Partners stay uint8 (the mixing picture or one op on the clean input).
            partner = pics[sample[rows]]
            aug = np.nonzero(base.augmented_partners("pixmix", flat, rows, r))[0]
            if len(aug):
                partner[aug] = apply_ops_grouped(x[sample[rows[aug]]],
                                                 flat["partner_op"][rows[aug], r],
                                                 flat["partner_param"][rows[aug], r])
            todo = np.arange(len(rows))
            if native:  # the round's add blends in one native pass (mix_rows_full's kernel)
                add = flat["mix_op"][rows, r] == _ADD
                native_exec.mix_add_u8(z, rows[add], partner, todo[add], flat["a"][rows[add], r],
                                       flat["b"][rows[add], r])
                fresh[rows[add]] = False
                todo = todo[~add]
            for j, row in zip(todo.tolist(), rows[todo].tolist()):
                one = slice(row, row + 1)
                mixed = mix_rows(flat["mix_op"][one, r], z[one], fo.to_float(partner[j:j + 1]),
                                 flat["a"][one, r], flat["b"][one, r], None, None,
                                 x_u8=start_u8[one] if fresh[row] else None,
                                 y_u8=partner[j:j + 1])
                z[row] = fo.clip01(mixed[0])
                fresh[row] = False
        if out is not None:
            native_exec.normalize_views(z, n, v, cfg, out)
            return None
        views = fo.normalize(z, cfg.mean, cfg.std).reshape((n, v) + shape)
        return np.moveaxis(views, 1, 0)

    def _layermix(self, x, pics, plan, cfg):
        from .layermix_ops import to_float_np

        n, v = plan.steps.shape
        shape = x.shape[1:]
        sample, f = base.layermix_schedule(plan)
        xf = to_float_np(x)[sample]
        op, steps, param, blend = f["op"], f["steps"], f["param"], f["blend"]
        a, b, mp, ms = f["a"], f["b"], f["mask_p"], f["mask_seed"]
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
