"""LayerMix's whole chain on the CPU as the GPU's program (ipmix_dali.executors.native_exec):
the NumPy twin's pixels bit for bit for every blend, output layout and dtype, chunking and
thread count; each host form of a kernel (one thread per row or image) writes its GPU form's
bits on any grid; host steps and serial modules refuse what they cannot do."""
import numpy as np
import pytest

from ipmix_dali import make_config, make_rng, sample_plan
from ipmix_dali.executors import native, native_exec
from ipmix_dali.executors.cupy_exec import CupyExecutor, Program
from ipmix_dali.executors.numpy_exec import NumpyExecutor
from ipmix_dali.kernels.host import HostModule
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.ops.table import LAYERMIX_OPS, MIX_OP_ID
from ipmix_dali.tools.samples import sample_photos


@pytest.fixture(autouse=True)
def native_on(monkeypatch):
    monkeypatch.setenv(native.ENV, "1")
    if not native_exec.available():
        pytest.fail(f"the native LayerMix path did not build here: "
                    f"{native.error('layermix_ops.cu') or native.error('mixing.cu')}")


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32}.get(a.itemsize, a.dtype))


def _twin(monkeypatch, images, pics, plan, **kwargs):
    monkeypatch.setenv(native.ENV, "0")
    try:
        return NumpyExecutor(**kwargs).apply(images, pics, plan)
    finally:
        monkeypatch.setenv(native.ENV, "1")


def _plans(cfg, n, bank, count, seed):
    for iteration in range(count):
        plan = sample_plan(cfg, n, make_rng(seed, 0, 0, iteration), len(bank), bank.side)
        yield plan, bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, cfg.image_size)


@pytest.mark.parametrize("jsd", [False, True])
def test_layermix_equals_the_twin_bit_for_bit(monkeypatch, jsd):
    """Several plans of 12 samples at 32 px: every op, every blend (multiply included, the
    NumPy host step), steps 0-2; the executor's default chunks."""
    cfg = make_config("layermix", "cifar", jsd=jsd)
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    images = sample_photos(12, 32, seed=2, min_scale=0.3)
    ops, blends = set(), set()
    for plan, pics in _plans(cfg, 12, bank, 6, seed=7):
        ops.update(LAYERMIX_OPS[int(o)] for o in plan.op.ravel())
        used = plan.blend_op[..., 0][plan.steps >= 1].tolist()
        blends.update(used + plan.blend_op[..., 1][plan.steps >= 2].tolist())
        want = _twin(monkeypatch, images, pics, plan)
        got = NumpyExecutor().apply(images, pics, plan)
        direct = native_exec.apply(images, pics, plan)
        assert got.shape == want.shape == direct.shape == (plan.views, 12, 32, 32, 3)
        np.testing.assert_array_equal(_bits(got), _bits(want))
        np.testing.assert_array_equal(_bits(direct), _bits(want))
    assert ops == set(LAYERMIX_OPS)
    assert blends == set(MIX_OP_ID.values())


def test_layermix_224px_jsd(monkeypatch):
    """The ImageNet preset's size (224 px: more than one chunk of the mask loop per row)."""
    cfg = make_config("layermix", "imagenet", jsd=True)
    bank = builtin_mixing_bank(count=3, side=256, seed=4)
    images = sample_photos(4, 224, seed=5)
    for plan, pics in _plans(cfg, 4, bank, 2, seed=3):
        want = _twin(monkeypatch, images, pics, plan)
        got = NumpyExecutor().apply(images, pics, plan)
        np.testing.assert_array_equal(_bits(got), _bits(want))


@pytest.mark.parametrize("layout, dtype", [("NCHW", np.float32), ("NCHW", np.float16),
                                           ("NHWC", np.float16)])
def test_any_output_layout_and_dtype(monkeypatch, layout, dtype):
    """The stage's buffers: channels-first (the contiguous fast path of mix_normalize_rows)
    or last, float32 or float16 (NumPy's rounding), written in place through strides."""
    cfg = make_config("layermix", "cifar", jsd=True)
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    images = sample_photos(5, 32, seed=6)
    plan, pics = next(_plans(cfg, 5, bank, 1, seed=11))
    want = _twin(monkeypatch, images, pics, plan).astype(dtype)
    shape = (plan.views, 5, 32, 32, 3)
    if layout == "NCHW":
        buf = np.full((plan.views, 5, 3, 32, 32), np.nan, dtype=dtype)
        out = buf.transpose(0, 1, 3, 4, 2)
    else:
        buf = np.full(shape, np.nan, dtype=dtype)
        out = buf
    result = NumpyExecutor(chunk_size=2).apply(images, pics, plan, out=out)
    assert result is out
    np.testing.assert_array_equal(_bits(out), _bits(want))


@pytest.mark.parametrize("layout, dtype", [("NCHW", np.float32), ("NCHW", np.float16),
                                           ("NHWC", np.float32)])
def test_none_and_the_clean_view_equal_the_twin(monkeypatch, layout, dtype):
    """"none" (its views are the normalised input) and JSD's clean view (``normalize``) run
    as mix_normalize on the host: NumPy's normalize_u8 bit for bit, into any layout."""
    images = sample_photos(5, 32, seed=12)
    cfg = make_config("none", "cifar")
    plan = sample_plan(cfg, 5, make_rng(1, 0, 0, 0))
    jsd_cfg = make_config("ipmix", "cifar", jsd=True)
    monkeypatch.setenv(native.ENV, "0")
    want = NumpyExecutor().apply(images, None, plan).astype(dtype)
    want_clean = NumpyExecutor().normalize(images, jsd_cfg).astype(dtype)
    monkeypatch.setenv(native.ENV, "1")
    for views in (plan.views, None):
        shape = ((views,) if views else ()) + (5, 32, 32, 3)
        if layout == "NCHW":
            buf = np.full(shape[:-3] + (3, 32, 32), np.nan, dtype=dtype)
            out = np.moveaxis(buf, -3, -1)
        else:
            out = np.full(shape, np.nan, dtype=dtype)
        if views:
            NumpyExecutor(chunk_size=2).apply(images, None, plan, out=out)
            np.testing.assert_array_equal(_bits(out), _bits(want))
        else:
            NumpyExecutor(chunk_size=2).normalize(images, jsd_cfg, out=out)
            np.testing.assert_array_equal(_bits(out), _bits(want_clean))


@pytest.mark.parametrize("layout, dtype", [("NCHW", np.float32), ("NHWC", np.float16)])
def test_pixmix_views_normalised_into_out(monkeypatch, layout, dtype):
    """PixMix's add blends (mix_add_u8) and its last step (normalize_views) run natively:
    the twin's views bit for bit, JSD and not, chunks of 2."""
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    images = sample_photos(5, 32, seed=14)
    for jsd in (False, True):
        cfg = make_config("pixmix", "cifar", jsd=jsd)
        plan, pics = next(_plans(cfg, 5, bank, 1, seed=19))
        used = plan.mix_op[plan.mix_op >= 0]
        assert {MIX_OP_ID["add"], MIX_OP_ID["multiply"]} <= set(used.tolist())
        want = _twin(monkeypatch, images, pics, plan).astype(dtype)
        shape = (plan.views, 5, 32, 32, 3)
        buf = np.full(shape[:2] + (3, 32, 32) if layout == "NCHW" else shape, np.nan, dtype)
        out = np.moveaxis(buf, 2, -1) if layout == "NCHW" else buf
        NumpyExecutor(chunk_size=2).apply(images, pics, plan, out=out)
        np.testing.assert_array_equal(_bits(out), _bits(want))
        np.testing.assert_array_equal(_bits(NumpyExecutor().apply(images, pics, plan)),
                                      _bits(want.astype(np.float32) if dtype == np.float32
                                            else _twin(monkeypatch, images, pics, plan)))


@pytest.mark.parametrize("chunk_size, threads", [(1, 1), (3, 1), (2, 2), (12, 1)])
def test_chunks_and_threads_do_not_change_the_pixels(monkeypatch, chunk_size, threads):
    cfg = make_config("layermix", "cifar", jsd=True)
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    images = sample_photos(7, 32, seed=8)
    plan, pics = next(_plans(cfg, 7, bank, 1, seed=13))
    want = _twin(monkeypatch, images, pics, plan)
    got = NumpyExecutor(chunk_size=chunk_size, threads=threads).apply(images, pics, plan)
    np.testing.assert_array_equal(_bits(got), _bits(want))


def test_without_a_compiler_layermix_runs_the_twin(monkeypatch, without_a_compiler):
    cfg = make_config("layermix", "cifar")
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    images = sample_photos(3, 32, seed=9)
    plan, pics = next(_plans(cfg, 3, bank, 1, seed=17))
    want = _twin(monkeypatch, images, pics, plan)
    without_a_compiler()
    assert not native_exec.available()
    np.testing.assert_array_equal(_bits(NumpyExecutor().apply(images, pics, plan)), _bits(want))


# --- the host forms against the GPU forms, on grids of several threads -------------------------

@pytest.fixture(scope="module")
def threaded():
    """The kernel files built with the native flags, not serial: any grid can be launched."""
    return {name: HostModule(name, extra_flags=native.host_flags())
            for name in ("mixing.cu", "layermix_ops.cu")}


GRIDS = [((1, 1, 1), (1, 1, 1)), ((3, 1, 1), (5, 1, 1))]


def _run_both(mod, gpu_name, args_fn):
    """args_fn() -> (args, output array) fresh each time; the GPU form on one thread and the
    host form on each grid: their outputs, by (kernel, grid)."""
    outs = {}
    for kernel, grids in ((gpu_name, GRIDS[:1]), (native.HOST_KERNELS[gpu_name], GRIDS)):
        for grid, block in grids:
            args, out = args_fn()
            mod.launch(kernel, grid=grid, block=block, args=args)
            outs[(kernel, grid)] = out
    return outs


def _all_equal(outs):
    first = next(iter(outs.values()))
    for key, got in outs.items():
        np.testing.assert_array_equal(_bits(got), _bits(first), err_msg=str(key))
    return first


@pytest.mark.parametrize("row_bytes", [4 * 27, 27])
def test_copy_whole_rows(threaded, row_bytes):
    rng = np.random.default_rng(row_bytes)
    src = rng.integers(0, 256, (6, row_bytes), dtype=np.uint8)
    src_rows = np.array([5, 0, 3, 3], dtype=np.int32)
    dst_rows = np.array([1, 4, 0, 2], dtype=np.int32)

    def args():
        dst = np.full((5, row_bytes), 7, dtype=np.uint8)
        return (src, src_rows, dst, dst_rows, np.int32(4), np.int64(row_bytes),
                np.int32(row_bytes % 4 == 0)), dst

    got = _all_equal(_run_both(threaded["mixing.cu"], "copy_rows", args))
    assert np.array_equal(got[dst_rows], src[src_rows]) and (got[3] == 7).all()


@pytest.mark.parametrize("u8", [False, True])
def test_mix_rows_full_rows(threaded, u8):
    """Every blend op, per-row a, b, mask p and seed; 17 x 19 pixels (not a multiple of the
    256-pixel mask chunk, and more than one chunk); values past [0, 1] and a NaN (the clip)."""
    rng = np.random.default_rng(int(u8))
    h, w, r = 17, 19, 8
    z0 = rng.uniform(-0.2, 1.2, (10, h, w, 3)).astype(np.float32)
    z0[2, 3, 4, 1] = np.nan
    rows = np.array([0, 2, 3, 5, 6, 7, 8, 9], dtype=np.int32)
    ops = np.array([0, 1, 2, 3, 3, 2, 1, 0], dtype=np.int32)
    a = rng.uniform(0.1, 2, r).astype(np.float32)
    b = rng.uniform(0.1, 2, r).astype(np.float32)
    p = rng.uniform(0, 1, r).astype(np.float32)
    seeds = rng.integers(0, 2**32, r, dtype=np.uint32)
    pa = rng.integers(0, 256, (4, h, w, 3), dtype=np.uint8)
    pbu = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    pf = rng.uniform(0, 1, (4, h, w, 3)).astype(np.float32)
    prow = (np.array([0, -1, 3, -3, 1, 2, -2, 0], dtype=np.int32) if u8
            else np.array([0, 1, 3, 2, 1, 2, 0, 0], dtype=np.int32))
    mod = threaded["mixing.cu"]
    pow_a, pow_b = np.zeros((r, 256), np.float32), np.zeros((r, 256), np.float32)
    mod.launch("mix_pow_tables", grid=(1, 1, 1), block=(1, 1, 1),
               args=(ops, a, b, pow_a, pow_b, np.int32(r), np.int32(0)))

    def args():
        z = z0.copy()
        return (z, rows, pa, pbu, pf, np.int32(u8), prow, ops, a, b, p, seeds, pow_b,
                np.int32(r), np.int64(h * w)), z

    got = _all_equal(_run_both(mod, "mix_rows_full", args))
    untouched = np.setdiff1d(np.arange(10), rows)
    np.testing.assert_array_equal(_bits(got[untouched]), _bits(z0[untouched]))
    assert np.isnan(got[2, 3, 4, 1]) and np.nanmin(got[rows]) >= 0 and np.nanmax(got[rows]) <= 1


@pytest.mark.parametrize("u8", [False, True])
@pytest.mark.parametrize("layout, half", [("NHWC", 0), ("NCHW", 0), ("NCHW", 1), ("NHWC", 1)])
def test_mix_normalize_rows(threaded, u8, layout, half):
    """Views of one input view (in_views 1: "none") or of their own; channels-first float32
    is the contiguous fast path, the rest the general store."""
    rng = np.random.default_rng(3)
    n, h, w = 3, 5, 7
    for views, in_views in ((2, 1), (2, 2)):
        src = rng.integers(0, 256, (n * in_views, h, w, 3), dtype=np.uint8)
        src_f = rng.uniform(-1, 2, src.shape).astype(np.float32)
        mean = np.array([0.485, 0.456, 0.406], np.float32)
        std = np.array([0.229, 0.224, 0.225], np.float32)

        def args():
            dtype = np.float16 if half else np.float32
            buf = np.full((views, n, 3, h, w) if layout == "NCHW" else (views, n, h, w, 3),
                          np.nan, dtype=dtype)
            out = buf.transpose(0, 1, 3, 4, 2) if layout == "NCHW" else buf
            strides = tuple(np.int64(s // out.itemsize) for s in out.strides)
            out_f = np.zeros(1, np.float32) if half else out
            out_h = out if half else np.zeros(1, np.uint16)
            return ((src, np.zeros(1, np.float32), np.int32(1)) if u8
                    else (np.zeros(1, np.uint8), src_f, np.int32(0))) + (
                out_f, out_h.view(np.uint16) if half else out_h, np.int32(half), np.int32(n),
                np.int32(views), np.int32(in_views), np.int32(h), np.int32(w), *strides,
                mean, std), out

        got = _all_equal(_run_both(threaded["mixing.cu"], "mix_normalize", args))
        x = (src.astype(np.float32) / np.float32(255)) if u8 else src_f
        x = x.reshape(n, in_views, h, w, 3)
        want = np.stack([(x[:, v % in_views] - mean) / std for v in range(views)])
        np.testing.assert_array_equal(_bits(got), _bits(want.astype(got.dtype)))


@pytest.mark.parametrize("layout, half", [("NHWC", 0), ("NCHW", 0), ("NCHW", 1)])
def test_mix_combine_rows(threaded, layout, half):
    """AugMix / IPMix's combination: 300 px rows (more than one 256-pixel chunk), 2 views of
    3 chains, per-view weights and m."""
    rng = np.random.default_rng(4)
    n, v, k, h, w = 2, 2, 3, 3, 300
    clean = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    chains = rng.integers(0, 256, (n, v, k, h, w, 3), dtype=np.uint8)
    weights = rng.dirichlet(np.ones(k), (n, v)).astype(np.float32)
    m = rng.beta(1, 1, (n, v)).astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)

    def args():
        dtype = np.float16 if half else np.float32
        buf = np.full((v, n, 3, h, w) if layout == "NCHW" else (v, n, h, w, 3), np.nan, dtype)
        out = buf.transpose(0, 1, 3, 4, 2) if layout == "NCHW" else buf
        strides = tuple(np.int64(st // out.itemsize) for st in out.strides)
        out_f = np.zeros(1, np.float32) if half else out
        out_h = out.view(np.uint16) if half else np.zeros(1, np.uint16)
        return (clean, chains, weights, m, out_f, out_h, np.int32(half), np.int32(n),
                np.int32(v), np.int32(k), np.int32(h), np.int32(w), *strides, mean, std), out

    got = _all_equal(_run_both(threaded["mixing.cu"], "mix_combine", args))
    pre = lambda u: (u.astype(np.float32) / np.float32(255) - mean) / std  # noqa: E731
    for vv in range(v):
        mix = np.zeros((n, h, w, 3), np.float32)
        for j in range(k):
            mix = mix + weights[:, vv, j, None, None, None] * pre(chains[:, vv, j])
        mm = m[:, vv, None, None, None]
        want = (np.float32(1) - mm) * pre(clean) + mm * mix
        np.testing.assert_array_equal(_bits(got[vv]), _bits(want.astype(got.dtype)))


@pytest.mark.parametrize("method, options", [("augmix", {}), ("ipmix", {}),
                                             ("ipmix", {"overflow": "clip"})])
@pytest.mark.parametrize("layout, dtype", [("NCHW", np.float32), ("NHWC", np.float16)])
def test_augmix_and_ipmix_combined_into_out(monkeypatch, method, options, layout, dtype):
    """Their combination runs natively into the stage's buffer: the twin's views bit for bit
    (JSD and not, chunks of 2, and the executor's own output array)."""
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    images = sample_photos(5, 32, seed=15)
    for jsd in (False, True):
        cfg = make_config(method, "cifar", jsd=jsd, **options)
        plan = sample_plan(cfg, 5, make_rng(23, 0, 0, int(jsd)), len(bank), bank.side)
        pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, 32)
                if "mix_index" in plan.arrays else None)
        twin = _twin(monkeypatch, images, pics, plan)
        shape = (plan.views, 5, 32, 32, 3)
        buf = np.full(shape[:2] + (3, 32, 32) if layout == "NCHW" else shape, np.nan, dtype)
        out = np.moveaxis(buf, 2, -1) if layout == "NCHW" else buf
        NumpyExecutor(chunk_size=2).apply(images, pics, plan, out=out)
        np.testing.assert_array_equal(_bits(out), _bits(twin.astype(dtype)))
        np.testing.assert_array_equal(_bits(NumpyExecutor().apply(images, pics, plan)),
                                      _bits(twin))


@pytest.mark.parametrize("name", ["equalize", "posterize", "solarize"])
def test_layermix_image_forms(threaded, name):
    """The per-image forms of equalize's apply, posterize and solarize, run through the GPU
    path's plan (its tables and the other launches unchanged)."""
    from ipmix_dali.executors.cupy_layermix import prepare_layermix_op
    from ipmix_dali.executors.cupy_ops import execute_plan

    rng = np.random.default_rng(len(name))
    images = rng.uniform(-0.1, 1.1, (5, 9, 13, 3)).astype(np.float32)
    images[1, 2, 3, 0] = np.nan
    op = LAYERMIX_OPS.index(name)
    params = {"equalize": np.zeros(5), "posterize": np.array([0, 1, 4, 7, 8.0]),
              "solarize": np.array([0.0, 0.3, 0.5, 1.0, 0.77])}[name]
    plan = prepare_layermix_op(op, images.shape, params)
    mod = threaded["layermix_ops.cu"]
    outs = {}
    for host_form, (grid, block) in [(False, GRIDS[0]), (True, GRIDS[0]), (True, GRIDS[1])]:
        def launch(kl, args, host_form=host_form, grid=grid, block=block):
            kernel = native.HOST_KERNELS.get(kl.name, kl.name) if host_form else kl.name
            mod.launch(kernel, grid=grid if kernel != kl.name else (1, 1, 1),
                       block=block if kernel != kl.name else (1, 1, 1), args=args)

        out = np.full_like(images, 9.0)
        outs[(host_form, grid)] = execute_plan(plan, images, out, to_device=np.ascontiguousarray,
                                               zeros=np.zeros, launch=launch)
    want = _all_equal(outs)
    from ipmix_dali.executors import layermix_ops as lm

    np.testing.assert_array_equal(_bits(want),
                                  _bits(lm.apply_layermix_op_np(op, images, params)))


# --- what the host run refuses -----------------------------------------------------------------

def test_a_host_step_is_refused_on_a_gpu_run():
    from ipmix_dali.testing import cupy_standin

    prog = Program()
    z = prog.buffer((2, 3), np.float32)
    prog.host_step(np.negative, z)
    with cupy_standin.installed(mode="emulate"):
        import cupy

        with pytest.raises(RuntimeError, match="negative is a host step"):
            prog.run(cupy)


def test_a_serial_module_runs_one_thread_only():
    mod = native.load("mixing.cu")
    assert mod.serial
    src = np.arange(8, dtype=np.uint8).reshape(2, 4)
    dst = np.zeros_like(src)
    rows = np.array([1, 0], np.int32)
    args = (src, rows, dst, rows, np.int32(2), np.int64(4), np.int32(1))
    with pytest.raises(ValueError, match=r"grid and block \(1, 1, 1\)"):
        mod.launch("copy_rows", grid=(2, 1, 1), block=(1, 1, 1), args=args)
    mod.launch("copy_rows", grid=(1, 1, 1), block=(1, 1, 1), args=args)
    assert np.array_equal(dst, src)


def test_the_native_executor_is_the_cupy_executors_program():
    """Its methods are the GPU executor's: only the float multiply blend is overridden."""
    overridden = {k for k, v in vars(native_exec.NativeExecutor).items()
                  if k in vars(CupyExecutor) and callable(v)}
    assert overridden == {"_run", "_mix_full"}
