"""The CuPy executor (GPU): the NumPy executor's steps as raw-kernel launches on whole batches.

Same plan in, same pixels out as :class:`~.numpy_exec.NumpyExecutor`: the PIL ops run through
``cupy_ops`` (``lut_ops.cu``, ``affine.cu``, ``enhance.cu``), LayerMix's through ``cupy_layermix``,
and every float stage through ``kernels/mixing.cu`` (to_float, normalisation, the four pixel
mixes, IPMix's patch steps for all rows of a step in one launch, the Dirichlet/Beta
combination), compiled without FMA contraction or subnormal flushing so that each float
operation rounds like NumPy's.

Why it is built as a :class:`Program`: on a GPU the stage's Python runs on one host thread per
pipeline, and every CuPy call costs host time and a device operation. All per-batch tables
(row lists, LUTs, affine coefficients, mixing coefficients, boxes) depend only on the plan, so
the executor first walks the whole method on the host, collecting tables and launches, and then
runs it: **one** host-to-device copy of every table packed into one buffer, **one** memset for
every zero-initialised scratch buffer, and the launches in order on the current stream. Rows
that an op changes are gathered into a compact buffer (one ``copy_rows`` launch), each op runs
on its contiguous slice, and the results are scattered back (one launch): no CuPy fancy
indexing, no copy of untouched rows. Mixing partners are read in place (``prow``), and the
final kernels write the views in the caller's dtype and layout directly (``out``).

Nothing waits for the GPU; ``tests/test_cupy_exec_emulated.py`` runs these launches through the
CuPy stand-in with the CPU kernel emulator against the NumPy executor, and
``tests/test_gpu_host_overhead.py`` counts them.

Output of :meth:`CupyExecutor.apply`: float32 or float16 (V, N, H, W, 3), normalised, on the GPU,
written into ``out`` when given (any strides, e.g. a channels-first view).
"""
from __future__ import annotations

import math

import numpy as np

from ..ops.table import MIX_OP_ID
from ..plans import Plan
from . import base
from .cupy_ops import OpPlan, grid_geometry, prepare_pil_op

__all__ = ["CupyExecutor", "Program"]

_MIX_FILE = "mixing.cu"
_OUT_WRAP_U8, _OUT_CLIP_U8 = 1, 2
_TABLE_ALIGN = 16  # bytes: every table of the packed upload starts on this boundary
assert (MIX_OP_ID["add"], MIX_OP_ID["multiply"], MIX_OP_ID["random_pixels"],
        MIX_OP_ID["random_elems"]) == (0, 1, 2, 3), "mixing.cu numbers the mix ops 0..3"


class Ref:
    """A device buffer of a :class:`Program` (or rows [start, stop) of it), resolved at run."""

    __slots__ = ("kind", "index", "shape", "dtype", "start", "stop")

    def __init__(self, kind, index, shape, dtype, start=None, stop=None):
        self.kind, self.index = kind, index  # kind: "table", "scratch" or "buffer"
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.start, self.stop = start, stop

    def __getitem__(self, rows: slice) -> "Ref":
        base = self.start or 0
        start, stop, _ = rows.indices(self.shape[0])
        return Ref(self.kind, self.index, (stop - start,) + self.shape[1:], self.dtype,
                   base + start, base + stop)


class Program:
    """The device work of one batch, collected on the host, then run with one table upload,
    one memset and the launches in order."""

    def __init__(self):
        self._tables = []   # host arrays, uploaded packed
        self._scratch = []  # (shape, dtype), zeroed
        self._buffers = []  # (shape, dtype), uninitialised
        self._dummies = {}
        self.launches = []  # (file, name, grid, block, args)

    def table(self, array, dtype=None) -> Ref:
        a = np.ascontiguousarray(array, dtype=dtype)
        self._tables.append(a)
        return Ref("table", len(self._tables) - 1, a.shape, a.dtype)

    def scratch(self, shape, dtype) -> Ref:
        self._scratch.append((tuple(shape), np.dtype(dtype)))
        return Ref("scratch", len(self._scratch) - 1, tuple(shape), np.dtype(dtype))

    def buffer(self, shape, dtype) -> Ref:
        self._buffers.append((tuple(shape), np.dtype(dtype)))
        return Ref("buffer", len(self._buffers) - 1, tuple(shape), np.dtype(dtype))

    def dummy(self, dtype) -> Ref:
        """A one-element buffer for a kernel's unused pointer argument."""
        dtype = np.dtype(dtype)
        if dtype not in self._dummies:
            self._dummies[dtype] = self.scratch((1,), dtype)
        return self._dummies[dtype]

    def launch(self, file: str, name: str, count: int, *args):
        if count > 0:
            grid, block = grid_geometry(count)
            self.launches.append((file, name, grid, block, args))

    def host_step(self, fn, *args):
        """``fn(*args)`` in launch order, on the resolved arrays: only for a program run on the
        CPU (:mod:`.native_exec`, where they are NumPy arrays); a GPU run refuses it."""
        self.launches.append((None, fn, None, None, args))

    def add_op_plan(self, plan: OpPlan, images, out):
        """The launches of a cupy_ops / cupy_layermix OpPlan on ``images`` into ``out``."""
        names = {"images": images, "out": out}
        for key, value in plan.arrays.items():
            names[key] = self.table(value)
        for key, (shape, dtype) in plan.scratch.items():
            names[key] = self.scratch(shape, dtype)
        for kl in plan.launches:
            args = tuple(names[a] if isinstance(a, str) else a for a in kl.args)
            self.launches.append((kl.file, kl.name, kl.grid, kl.block, args))

    @staticmethod
    def _pack(items):
        """(byte offset, byte size) of (shape, dtype) items laid out one after another, each
        start aligned; and the total size."""
        places, total = [], 0
        for shape, dtype in items:
            nbytes = math.prod(shape) * dtype.itemsize
            places.append((total, nbytes))
            total += -(-nbytes // _TABLE_ALIGN) * _TABLE_ALIGN
        return places, total

    @staticmethod
    def _views(flat, items, places):
        return [flat[off:off + nbytes].view(dtype).reshape(shape)
                for (shape, dtype), (off, nbytes) in zip(items, places)]

    def run(self, xp, launch=None, arena=None):
        """Upload, allocate and launch on the current stream (CuPy or its stand-in).
        ``launch(file, name, grid, block, args)`` replaces the CUDA launch (the CPU's run:
        ``xp`` is NumPy then, and host steps run between the launches). ``arena(nbytes)``, if
        given, returns the memory of the uninitialised buffers as one uint8 array (the CPU's
        run reuses it: fresh pages cost a fault each)."""
        if launch is None:
            from ..kernels.build import get_function

            def launch(file, name, grid, block, args):
                get_function(file, name)(grid, block, args)
        resolved = {}
        if self._tables:
            items = [(a.shape, a.dtype) for a in self._tables]
            places, total = self._pack(items)
            host = np.zeros(total, dtype=np.uint8)
            for a, (off, nbytes) in zip(self._tables, places):
                host[off:off + nbytes] = a.reshape(-1).view(np.uint8)
            resolved["table"] = self._views(xp.asarray(host), items, places)
        if self._scratch:
            places, total = self._pack(self._scratch)
            resolved["scratch"] = self._views(xp.zeros(total, dtype=np.uint8), self._scratch,
                                              places)
        if arena is None:
            resolved["buffer"] = [xp.empty(shape, dtype) for shape, dtype in self._buffers]
        else:
            places, total = self._pack(self._buffers)
            resolved["buffer"] = self._views(arena(total), self._buffers, places)

        def value(arg):
            if not isinstance(arg, Ref):
                return arg
            array = resolved[arg.kind][arg.index]
            return array if arg.start is None else array[arg.start:arg.stop]

        host = xp is np
        for file, name, grid, block, args in self.launches:
            if file is None:
                if not host:
                    raise RuntimeError(f"{name.__name__} is a host step: this program runs on "
                                       "the CPU only")
                name(*(value(a) for a in args))
            else:
                launch(file, name, grid, block, tuple(value(a) for a in args))


def _rows(n) -> np.ndarray:
    return np.arange(n, dtype=np.int32)


class CupyExecutor:
    """Batch executor on the GPU (CuPy arrays in and out, on the current stream)."""

    name = "cupy"

    @property
    def xp(self):
        import cupy

        return cupy

    def _run(self, prog: Program):
        prog.run(self.xp)

    # --- public entry points ----------------------------------------------------------------
    def apply(self, images, mixing_pictures, plan: Plan, out=None, dtype="float32"):
        """Views (V, N, H, W, 3) of ``images`` (uint8 (N, S, S, 3)) under ``plan``, written into
        ``out`` (float32 or float16, any strides) or a new array of ``dtype``."""
        xp = self.xp
        base.check_inputs(images, mixing_pictures, plan)
        x = xp.ascontiguousarray(images)
        pics = None if mixing_pictures is None else xp.ascontiguousarray(mixing_pictures)
        out = base.output_array(xp, out, (plan.views,) + x.shape, dtype)
        prog = Program()
        getattr(self, "_" + plan.method)(prog, x, pics, plan, plan.config, out)
        self._run(prog)
        return out

    def normalize(self, images, config, out=None, dtype="float32"):
        """(images / 255 - mean) / std of uint8 (N, H, W, 3) images: JSD's clean view."""
        xp = self.xp
        x = xp.ascontiguousarray(images)
        out = base.output_array(xp, out, x.shape, dtype)
        prog = Program()
        self._emit_normalize(prog, x, x.shape[0], 1, 1, out[None], config)
        self._run(prog)
        return out

    def stack_samples(self, samples, role="images"):
        """One (N, ...) array of N same-shaped contiguous device arrays (DALI's per-sample
        inputs): one table of their addresses and one kernel (``xp.stack`` otherwise).
        ``role`` ("images" or "pictures") is the CPU pool's; one device pool serves both."""
        xp = self.xp
        first = samples[0]
        if not all(s.shape == first.shape and s.dtype == first.dtype and s.flags.c_contiguous
                   for s in samples):
            return xp.stack(samples)
        out = xp.empty((len(samples),) + tuple(first.shape), dtype=first.dtype)
        ptrs = np.array([s.data.ptr for s in samples], dtype=np.uint64)
        row_bytes = int(first.nbytes)
        word = row_bytes % 4 == 0 and not (ptrs % 4).any()
        prog = Program()
        prog.launch(_MIX_FILE, "gather_samples", len(samples) * (row_bytes // 4 if word
                                                                 else row_bytes),
                    prog.table(ptrs), out, np.int32(len(samples)), np.int64(row_bytes),
                    np.int32(word))
        self._run(prog)
        return out

    def crop_pictures(self, bank_images, plan: Plan, size: int):
        """The plan's mixing pictures from a device-resident bank (M, T, T, 3): one kernel."""
        xp = self.xp
        n = plan.n
        out = xp.empty((n, size, size, 3), dtype=xp.uint8)
        prog = Program()
        prog.launch(_MIX_FILE, "crop_bank", n * size * size * 3, bank_images,
                    prog.table(plan.mix_index, np.int32), prog.table(plan.mix_top, np.int32),
                    prog.table(plan.mix_left, np.int32), out, np.int32(n),
                    np.int32(bank_images.shape[1]), np.int32(size))
        self._run(prog)
        return out

    # --- building blocks ----------------------------------------------------------------------
    @staticmethod
    def _out_args(prog, out):
        """(out_f, out_h, half, s_v, s_n, s_y, s_x, s_c) of a (V, N, H, W, 3) output view."""
        size = out.dtype.itemsize
        strides = tuple(np.int64(s // size) for s in out.strides)
        if out.dtype == np.float16:
            return (prog.dummy(np.float32), out, np.int32(1)) + strides
        return (out, prog.dummy(np.uint16), np.int32(0)) + strides

    @staticmethod
    def _copy_rows(prog, src, src_rows, dst, dst_rows):
        """dst[dst_rows[j]] = src[src_rows[j]] in one launch (rows of any dtype)."""
        r = len(src_rows)
        if r == 0:
            return
        row_bytes = math.prod(src.shape[1:]) * np.dtype(src.dtype).itemsize
        word = row_bytes % 4 == 0
        prog.launch(_MIX_FILE, "copy_rows", r * (row_bytes // 4 if word else row_bytes), src,
                    prog.table(src_rows, np.int32), dst, prog.table(dst_rows, np.int32),
                    np.int32(r), np.int64(row_bytes), np.int32(word))

    def _apply_ops(self, prog, prepare, sources, op_ids, params, keep=None):
        """One op per row, on rows gathered from one or more sources.

        ``sources`` is a list of (device buffer, row indices); j indexes their concatenation,
        ``op_ids[j]`` / ``params[j]`` give its op (-1: none). Rows with an op, and rows where
        ``keep`` is set (op -1 then copies), are gathered into one compact buffer sorted by op
        id, so that each op runs once on one contiguous slice. Returns (result, position):
        row j's result is ``result[position[j]]`` (position -1: not computed)."""
        op_ids = np.asarray(op_ids)
        wanted = op_ids >= 0 if keep is None else (np.asarray(keep, bool) | (op_ids >= 0))
        sel = np.nonzero(wanted)[0]
        position = np.full(len(op_ids), -1, dtype=np.int32)
        if len(sel) == 0:
            return None, position
        order = sel[np.argsort(op_ids[sel], kind="stable")]
        r = len(order)
        position[order] = _rows(r)
        first = sources[0][0]
        shape = (r,) + tuple(first.shape[1:])
        tmp_in, tmp_out = prog.buffer(shape, first.dtype), prog.buffer(shape, first.dtype)
        start = 0
        for src, rows in sources:
            rows = np.asarray(rows)
            take = np.nonzero(wanted[start:start + len(rows)])[0]
            self._copy_rows(prog, src, rows[take], tmp_in, position[start + take])
            start += len(rows)
        ops, counts = np.unique(op_ids[order], return_counts=True)
        start = 0
        for op, count in zip(ops.tolist(), counts.tolist()):
            part = slice(start, start + count)
            if op < 0:
                self._copy_rows(prog, tmp_in, _rows(r)[part], tmp_out, _rows(r)[part])
            else:
                plan = prepare(op, (count,) + shape[1:],
                               np.asarray(params)[order[part]].astype(np.float64))
                prog.add_op_plan(plan, tmp_in[part], tmp_out[part])
            start += count
        return tmp_out, position

    def _scatter_back(self, prog, result, position, y, rows):
        """y[rows[j]] = result[position[j]] for every computed j."""
        done = np.nonzero(position >= 0)[0]
        if len(done):
            self._copy_rows(prog, result, position[done], y, np.asarray(rows)[done])

    def _ops_in_place(self, prog, prepare, y, op_ids, params, rows=None):
        """y[rows[j]] = op_j(y[rows[j]]) (all rows by default; op -1 leaves a row alone)."""
        rows = _rows(y.shape[0]) if rows is None else np.asarray(rows)
        result, position = self._apply_ops(prog, prepare, [(y, rows)], op_ids, params)
        self._scatter_back(prog, result, position, y, rows)

    def _partners(self, prog, x, sample_rows, aug_mask, op_ids, params, chain=None):
        """Partner rows for mix_patch / mix_rows_full: prow[j] = sample row of the mixing
        picture, or -1 - q for an augmented partner (one op on the clean input) at row q of the
        returned buffer. ``chain`` = (y, op_ids, params): that step's chain ops on y, done in
        the same gather and the same op launches, and written back to y."""
        prow = np.asarray(sample_rows, dtype=np.int32).copy()
        aug = np.nonzero(aug_mask)[0]
        sources, ops, values, keep = [], [], [], []
        if chain is not None:
            y, chain_ops, chain_params = chain
            sources.append((y, _rows(y.shape[0])))
            ops.append(np.asarray(chain_ops))
            values.append(np.asarray(chain_params))
            keep.append(np.zeros(y.shape[0], dtype=bool))
        sources.append((x, prow[aug]))
        ops.append(np.asarray(op_ids)[aug])
        values.append(np.asarray(params)[aug])
        keep.append(np.ones(len(aug), dtype=bool))
        result, position = self._apply_ops(prog, prepare_pil_op, sources, np.concatenate(ops),
                                           np.concatenate(values), np.concatenate(keep))
        n_chain = 0 if chain is None else chain[0].shape[0]
        if chain is not None:
            self._scatter_back(prog, result, position[:n_chain], chain[0], _rows(n_chain))
        if len(aug) == 0:
            return prow, prog.dummy(np.uint8)
        prow[aug] = -1 - position[n_chain:]
        return prow, result

    def _emit_normalize(self, prog, src, n, views, in_views, out, cfg):
        h, w = out.shape[2:4]
        u8 = np.dtype(src.dtype) == np.uint8
        args = self._out_args(prog, out)
        prog.launch(_MIX_FILE, "mix_normalize", views * n * h * w * 3,
                    src if u8 else prog.dummy(np.uint8), prog.dummy(np.float32) if u8 else src,
                    np.int32(u8), *args[:3], np.int32(n), np.int32(views), np.int32(in_views),
                    np.int32(h), np.int32(w), *args[3:],
                    prog.table(cfg.mean, np.float32), prog.table(cfg.std, np.float32))

    def _emit_combine(self, prog, x, chains, plan, cfg, out):
        n, v, k = plan.weights.shape
        h, w = x.shape[1:3]
        args = self._out_args(prog, out)
        prog.launch(_MIX_FILE, "mix_combine", v * n * h * w * 3, x, chains,
                    prog.table(plan.weights, np.float32), prog.table(plan.m, np.float32),
                    *args[:3], np.int32(n), np.int32(v), np.int32(k), np.int32(h), np.int32(w),
                    *args[3:], prog.table(cfg.mean, np.float32), prog.table(cfg.std, np.float32))

    # --- the methods --------------------------------------------------------------------------
    def _none(self, prog, x, pics, plan, cfg, out):
        self._emit_normalize(prog, x, x.shape[0], plan.views, 1, out, cfg)

    def _chains(self, prog, x, copies):
        """(n * copies) rows: row i * copies + c is a copy of x[i]."""
        n = x.shape[0]
        y = prog.buffer((n * copies,) + tuple(x.shape[1:]), np.uint8)
        self._copy_rows(prog, x, np.repeat(_rows(n), copies), y, _rows(n * copies))
        return y

    def _augmix(self, prog, x, pics, plan, cfg, out):
        v, k, d = plan.op.shape[1:]
        y = self._chains(prog, x, v * k)
        for s in range(d):
            self._ops_in_place(prog, prepare_pil_op, y, plan.op[..., s].ravel(),
                               plan.param[..., s].ravel())
        self._emit_combine(prog, x, y, plan, cfg, out)

    def _ipmix(self, prog, x, pics, plan, cfg, out):
        v, k, t = plan.op.shape[1:]
        h, w = x.shape[1:3]
        y = self._chains(prog, x, v * k)
        sample, flat = base.ipmix_schedule(plan)
        out_mode = _OUT_WRAP_U8 if cfg.overflow == "wrap" else _OUT_CLIP_U8
        for s in range(t):
            rows = np.nonzero(flat["mix_op"][:, s] >= 0)[0]
            if len(rows) == 0:
                self._ops_in_place(prog, prepare_pil_op, y, flat["op"][:, s],
                                   flat["param"][:, s])
                continue
            # The step's chain ops and its augmented partners' ops in one pass.
            prow, partner_b = self._partners(
                prog, x, sample[rows], base.augmented_partners("ipmix", flat, rows, s),
                flat["partner_op"][rows, s], flat["partner_param"][rows, s],
                chain=(y, flat["op"][:, s], flat["param"][:, s]))
            top, left = flat["top"][rows, s].astype(np.int64), flat["left"][rows, s].astype(np.int64)
            # NumPy slicing stops at the image edge: the box (and its mask) is the clipped one.
            bh = np.clip(np.minimum(flat["height"][rows, s], h - top), 0, None)
            bw = np.clip(np.minimum(flat["width"][rows, s], w - left), 0, None)
            max_area = int((bh * bw).max())
            ops, a, b = (prog.table(flat["mix_op"][rows, s], np.int32),
                         prog.table(flat["a"][rows, s], np.float32),
                         prog.table(flat["b"][rows, s], np.float32))
            pow_a, pow_b = self._pow_tables(prog, ops, a, b, len(rows), with_a=True)
            prog.launch(_MIX_FILE, "mix_patch", len(rows) * max_area * 3, y,
                        prog.table(rows, np.int32), pics, partner_b, prog.table(prow),
                        prog.table(np.stack([top, left, bh, bw], axis=1), np.int32), ops, a, b,
                        prog.table(flat["mask_p"][rows, s], np.float32),
                        prog.table(flat["mask_seed"][rows, s], np.uint32), pow_a, pow_b,
                        np.int32(len(rows)), np.int32(h), np.int32(w), np.int64(max_area),
                        np.int32(out_mode))
        self._emit_combine(prog, x, y, plan, cfg, out)

    @staticmethod
    def _pow_tables(prog, ops, a, b, r, with_a):
        """multiply's 256-entry power tables of r rows (mix_pow_tables): (pow_a, pow_b);
        pow_a is a dummy unless ``with_a``."""
        pow_b = prog.buffer((r, 256), np.float32)
        pow_a = prog.buffer((r, 256), np.float32) if with_a else prog.dummy(np.float32)
        prog.launch(_MIX_FILE, "mix_pow_tables", r * 256, ops, a, b, pow_a, pow_b,
                    np.int32(r), np.int32(with_a))
        return pow_a, pow_b

    def _mix_full(self, prog, z, rows, partner_a, partner_b, partner_f, prow, ops, a, b,
                  p=None, seeds=None):
        """z[rows] = clip01(mix(z[rows], partner)) in place (mix_rows_full)."""
        r = len(rows)
        hw = z.shape[1] * z.shape[2]
        u8 = partner_f is None
        ops, a, b = (prog.table(ops, np.int32), prog.table(a, np.float32),
                     prog.table(b, np.float32))
        pow_b = (self._pow_tables(prog, ops, a, b, r, with_a=False)[1] if u8
                 else prog.dummy(np.float32))
        prog.launch(_MIX_FILE, "mix_rows_full", r * hw * 3, z, prog.table(rows, np.int32),
                    partner_a if u8 else prog.dummy(np.uint8),
                    partner_b if u8 else prog.dummy(np.uint8),
                    prog.dummy(np.float32) if u8 else partner_f, np.int32(u8),
                    prog.table(prow, np.int32), ops, a, b,
                    prog.table(np.zeros(r) if p is None else p, np.float32),
                    prog.table(np.zeros(r) if seeds is None else seeds, np.uint32), pow_b,
                    np.int32(r), np.int64(hw))

    def _pixmix(self, prog, x, pics, plan, cfg, out):
        n, v = plan.rounds.shape
        sample, flat = base.pixmix_schedule(plan)
        start = self._chains(prog, x, v)
        self._ops_in_place(prog, prepare_pil_op, start, plan.start_op.ravel(),
                           plan.start_param.ravel())
        z = prog.buffer(start.shape, np.float32)
        prog.launch(_MIX_FILE, "mix_to_float", math.prod(start.shape), start, z,
                    np.int64(math.prod(start.shape)))
        for r in range(flat["mix_op"].shape[1]):
            rows = np.nonzero(flat["mix_op"][:, r] >= 0)[0]
            if len(rows) == 0:
                continue
            prow, partner_b = self._partners(prog, x, sample[rows],
                                             base.augmented_partners("pixmix", flat, rows, r),
                                             flat["partner_op"][rows, r],
                                             flat["partner_param"][rows, r])
            self._mix_full(prog, z, rows, pics, partner_b, None, prow, flat["mix_op"][rows, r],
                           flat["a"][rows, r], flat["b"][rows, r])
        self._emit_normalize(prog, z, n, v, v, out, cfg)

    def _layermix(self, prog, x, pics, plan, cfg, out):
        from .cupy_layermix import prepare_layermix_op, prepare_to_float

        n, v = plan.steps.shape
        sample, f = base.layermix_schedule(plan)
        xf = prog.buffer(x.shape, np.float32)
        prog.add_op_plan(prepare_to_float(x.shape), x, xf)
        img = prog.buffer((n * v,) + tuple(x.shape[1:]), np.float32)
        self._copy_rows(prog, xf, sample, img, _rows(n * v))
        op, steps, param, blend = f["op"], f["steps"], f["param"], f["blend"]
        a, b, mp, ms = f["a"], f["b"], f["mask_p"], f["mask_seed"]
        self._ops_in_place(prog, prepare_layermix_op, img, op, param[:, 0])
        rows = np.nonzero(steps >= 1)[0]
        if len(rows):
            img2, prow = self._apply_ops(prog, prepare_layermix_op, [(xf, sample[rows])],
                                         op[rows], param[rows, 1], keep=np.ones(len(rows), bool))
            self._mix_full(prog, img, rows, None, None, img2, prow, blend[rows, 0], a[rows, 0],
                           b[rows, 0], mp[rows, 0], ms[rows, 0])
        rows = np.nonzero(steps >= 2)[0]
        if len(rows):
            pf = prog.buffer(pics.shape, np.float32)
            prog.add_op_plan(prepare_to_float(pics.shape), pics, pf)
            self._mix_full(prog, img, rows, None, None, pf, sample[rows], blend[rows, 1],
                           a[rows, 1], b[rows, 1], mp[rows, 1], ms[rows, 1])
            self._ops_in_place(prog, prepare_layermix_op, img, op[rows], param[rows, 2], rows)
        self._emit_normalize(prog, img, n, v, v, out, cfg)
