"""The CPU stage on worker processes (ipmix_dali.executors.pool): the same pixels with 1, 2 and
4 workers as the NumPy executor, directly and through real DALI CPU pipelines; worker errors as
themselves; a dead worker as a clear error; clean shutdown on close, SIGTERM and Ctrl-C."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from ipmix_dali import make_config, make_rng, sample_plan
from ipmix_dali.executors import get_executor, stage_executor
from ipmix_dali.executors.numpy_exec import NumpyExecutor, slice_plan
from ipmix_dali.executors.pool import PoolExecutor, StageWorkerError, guided_slices
from ipmix_dali.mixing.builtin import builtin_mixing_bank
from ipmix_dali.tools.samples import sample_photos

SIZE, N = 32, 10
METHODS = ["none", "augmix", "pixmix", "ipmix", "layermix"]


@pytest.fixture(scope="module")
def pools():
    made = {w: PoolExecutor(w) for w in (1, 2, 4)}
    yield made
    for pool in made.values():
        pool.close()


@pytest.fixture(scope="module")
def batch():
    return sample_photos(N, SIZE, seed=3, min_scale=0.3), builtin_mixing_bank(count=4, side=36,
                                                                              seed=1)


def _plan(method, bank, iteration=0):
    cfg = make_config(method, "cifar", jsd=method != "none")
    plan = sample_plan(cfg, N, make_rng(2, 0, 0, iteration), len(bank), bank.side)
    pics = (bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, SIZE)
            if "mix_index" in plan.arrays else None)
    return cfg, plan, pics


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("method", METHODS)
def test_1_2_4_workers_give_the_numpy_executors_pixels(method, pools, batch):
    """Every method, 1, 2 and 4 worker processes (4 > the 2 cores here; N=10 cuts unevenly):
    bit for bit the plain NumPy executor, in float32 and in a float16 channels-first ``out``
    (the stage's DALI layout), twice in a row (the pool and its memory are reused)."""
    images, bank = batch
    cfg, plan, pics = _plan(method, bank)
    want = NumpyExecutor().apply(images, pics, plan)
    for workers, pool in pools.items():
        assert np.array_equal(pool.apply(images, pics, plan), want), workers
        out = np.empty((plan.views, N, 3, SIZE, SIZE), np.float16).transpose(0, 1, 3, 4, 2)
        pool.apply(images, pics, plan, out=out)
        assert np.array_equal(out, want.astype(np.float16)), workers
        clean = np.empty((N, 3, SIZE, SIZE), np.float32).transpose(0, 2, 3, 1)
        pool.normalize(images, cfg, out=clean)  # JSD's clean view, on the workers too
        assert np.array_equal(clean, NumpyExecutor().normalize(images, cfg)), workers
    # the next batch's plan: new pixels, still equal
    cfg, plan, pics = _plan(method, bank, iteration=1)
    assert np.array_equal(pools[4].apply(images, pics, plan),
                          NumpyExecutor().apply(images, pics, plan))


@pytest.mark.parametrize("method", ["ipmix", "layermix"])
def test_output_array_is_written_in_place(method, batch):
    """The stage's way: views of ``output_array`` (shared memory, DALI's channels-first layout)
    as ``out``: the workers write them in place (no scratch block, no copy back), with the
    pixels of one NumPy executor over the whole batch in one chunk, in chunks of 1, or in the
    default small chunks; also for a batch smaller than the worker count (empty tasks)."""
    images, bank = batch
    cfg, plan, pics = _plan(method, bank)
    want = NumpyExecutor(chunk_size=N).apply(images, pics, plan)
    assert np.array_equal(NumpyExecutor(chunk_size=1).apply(images, pics, plan), want)
    assert np.array_equal(NumpyExecutor().apply(images, pics, plan), want)
    with PoolExecutor(4) as pool:
        for n in (N, 2):
            sub = slice_plan(plan, 0, n)
            out = pool.output_array((1 + plan.views, n, 3, SIZE, SIZE), np.float32)
            out = out.transpose(0, 1, 3, 4, 2)
            pool.normalize(images[:n], cfg, out=out[0])
            got = pool.apply(images[:n], None if pics is None else pics[:n], sub, out=out[1:])
            assert np.shares_memory(got, out)
            assert np.array_equal(out[1:], want[:, :n]), n
            assert np.array_equal(out[0], NumpyExecutor().normalize(images[:n], cfg)), n
        assert pool._segments["scratch"].shm is None  # nothing was copied back


def test_guided_slices_cover_the_batch_and_shrink_to_single_samples():
    """The hand-out order: contiguous, every sample once, sizes never growing, the last ones
    single samples (the workers finish within one sample of each other)."""
    assert [b - a for a, b in guided_slices(32, 2)] == [8, 6, 5, 4, 3, 2, 1, 1, 1, 1]
    assert guided_slices(0, 2) == [] and guided_slices(3, 4) == [(0, 1), (1, 2), (2, 3)]
    for n in (1, 7, 32, 100, 256):
        for workers in (1, 2, 3, 16):
            slices = guided_slices(n, workers)
            assert [a for a, _ in slices] == [0] + [b for _, b in slices[:-1]]
            assert slices[-1][1] == n
            sizes = [b - a for a, b in slices]
            assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
            assert sizes[0] == -(-n // (2 * workers))


@pytest.mark.parametrize("method", ["pixmix", "layermix"])
def test_bank_pictures_are_cropped_into_shared_memory(method, batch):
    """With a pool, the Augmenter crops the bank's pictures straight into the pool's
    "pictures" block (no second copy for the workers), and the views are the NumPy executor's."""
    from ipmix_dali.augmenter import Augmenter

    images, bank = batch
    cfg = make_config(method, "cifar", jsd=True)
    plan = sample_plan(cfg, N, make_rng(2, 0, 0, 5), len(bank), bank.side)
    want = Augmenter(cfg, bank, NumpyExecutor()).views(images, plan)
    with PoolExecutor(2) as pool:
        aug = Augmenter(cfg, bank, pool)
        pics = aug.pictures(plan)
        assert pool._segments["pictures"].offset(pics) is not None
        assert np.array_equal(pics, bank.crops(plan.mix_index, plan.mix_top, plan.mix_left,
                                               SIZE))
        for _ in range(2):  # and again: the blocks are reused
            got = aug.views(images, plan)
            assert all(np.array_equal(g, w) for g, w in zip(got, want))
    with pytest.raises(ValueError, match="out must be uint8"):
        bank.crops(plan.mix_index, plan.mix_top, plan.mix_left, SIZE,
                   out=np.empty((N, SIZE, SIZE, 3), np.float32))


def test_stage_executor_choices():
    assert isinstance(stage_executor(1), NumpyExecutor)
    two = stage_executor(2)
    assert isinstance(two, PoolExecutor) and two.workers == 2 and two.pids == []  # lazy start
    assert isinstance(get_executor("pool", workers=3), PoolExecutor)
    with pytest.raises(ValueError, match="stage workers must be >= 0"):
        stage_executor(-1)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        PoolExecutor(0)


def test_a_worker_exception_is_raised_as_itself(pools, batch):
    """A failure inside a worker is the parent's exception of the same type and message as the
    NumPy executor's own, with the worker's traceback as the cause; the pool goes on."""
    images, bank = batch
    cfg, plan, pics = _plan("ipmix", bank)
    bad = type(plan)(plan.method, plan.config, dict(plan.arrays))
    bad.arrays["op"] = np.where(plan.op >= 0, 97, plan.op)  # no such op id
    with pytest.raises(Exception) as here:
        NumpyExecutor().apply(images, pics, bad)
    with pytest.raises(type(here.value)) as there:
        pools[2].apply(images, pics, bad)
    assert str(there.value) == str(here.value)
    assert "in a stage worker process" in str(there.value.__cause__)
    assert "numpy_exec.py" in str(there.value.__cause__)
    assert np.array_equal(pools[2].apply(images, pics, plan),
                          NumpyExecutor().apply(images, pics, plan))


def test_a_dead_worker_is_a_clear_error_not_a_hang(batch):
    images, bank = batch
    cfg, plan, pics = _plan("augmix", bank)
    pool = PoolExecutor(2)
    try:
        pool.apply(images, pics, plan)
        victim = pool.pids[1]
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(StageWorkerError) as info:
            pool.apply(images, pics, plan)
        assert time.monotonic() - t0 < 30
        assert f"worker 1 (pid {victim}) was killed by SIGKILL during batch 1" in str(info.value)
        assert _wait_gone([victim]) == []
        with pytest.raises(StageWorkerError, match="worker pool is closed"):
            pool.apply(images, pics, plan)
    finally:
        pool.close()


def test_close_stops_workers_and_leaves_no_shared_memory(batch):
    images, bank = batch
    cfg, plan, pics = _plan("pixmix", bank)
    with PoolExecutor(2) as pool:
        pool.apply(images, pics, plan)
        pids = pool.pids
        names = [seg.shm.name for seg in pool._segments.values() if seg.shm is not None]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        # unlinked once every worker mapped them: nothing to leak even after a crash
        assert names and not any(os.path.exists(f"/dev/shm/{n}") for n in names)
    assert _wait_gone(pids, 1.0) == [] and pool.pids == []


# --- through real DALI CPU pipelines ---------------------------------------------------------
dali = pytest.importorskip("nvidia.dali")
torch = pytest.importorskip("torch")

from ipmix_dali.datasets import scan_image_folder  # noqa: E402
from ipmix_dali.loader import AugmentStageError, train_loader  # noqa: E402
from ipmix_dali.tools.samples import write_jpeg_tree  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_jpeg_tree(root, classes=2, per_class=5, size=(96, 80), seed=4)
    return scan_image_folder(root)


def _batches(loader, count):
    out = []
    for images, labels in loader:
        out.append(([t.numpy() for t in images], labels.numpy()))
        if len(out) == count:
            break
    return out


def _two_epochs(loader):
    out = []
    for _ in range(2):
        out += [([t.numpy() for t in images], labels.numpy()) for images, labels in loader]
    return out[:5]


@pytest.mark.parametrize("method", ["ipmix", "augmix"])
def test_dali_loader_batches_equal_with_1_2_4_workers(tree, method):
    """The training loader (readers.file -> decode/crop -> AugmentStage) with the stage on 1, 2
    and 4 worker processes: every output of every batch equal to the NumPy stage's, over two
    epochs of 10 files in batches of 4 (4, 4, 2, 4, 4: the stage's kept output buffer changes
    shape and back)."""
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    cfg = make_config(method, "cifar", jsd=True)
    kw = dict(batch_size=4, bank=bank, seed=7, num_threads=1, last_batch_policy="partial")
    want = _two_epochs(train_loader(tree, cfg, **kw))
    assert [len(labels) for _, labels in want] == [4, 4, 2, 4, 4]
    for workers in (1, 2, 4):
        with train_loader(tree, cfg, executor=stage_executor(workers), **kw) as loader:
            got = _two_epochs(loader)
        for (gv, gl), (wv, wl) in zip(got, want, strict=True):
            assert np.array_equal(gl, wl)
            assert all(np.array_equal(g, w) for g, w in zip(gv, wv)), workers


def test_mixing_reader_mode_equal_with_workers(tree, tmp_path):
    """Reader mode: the stage stacks the images and then the pictures, both into the pool's
    shared memory; the batches are the NumPy stage's."""
    write_jpeg_tree(tmp_path / "mix", classes=1, per_class=4, size=(60, 50), seed=9)
    mixing = scan_image_folder(tmp_path / "mix")
    cfg = make_config("pixmix", "cifar", jsd=True)
    kw = dict(batch_size=4, mixing_files=mixing, mixing_side=36, seed=3, num_threads=1)
    want = _batches(train_loader(tree, cfg, **kw), 3)
    with train_loader(tree, cfg, executor=PoolExecutor(2), **kw) as loader:
        got = _batches(loader, 3)
    for (gv, _), (wv, _) in zip(got, want, strict=True):
        assert all(np.array_equal(g, w) for g, w in zip(gv, wv))


def test_dali_augment_workers_equal_one(tree):
    """``ipmix_dali.dali.augment(..., workers=N)`` in a user's own pipeline: the same outputs
    with 1 and 2 workers."""
    from nvidia.dali import fn, pipeline_def, types

    import ipmix_dali.dali

    root = os.path.dirname(tree.files[0]).rsplit(os.sep, 1)[0]
    bank = builtin_mixing_bank(count=4, side=36, seed=1)

    def outputs(workers):
        @pipeline_def(batch_size=4, num_threads=1, device_id=None, seed=3)
        def pipe():
            jpegs, _ = fn.readers.file(file_root=root, name="Reader")
            images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB)
            images = fn.resize(images, resize_x=SIZE, resize_y=SIZE)
            return tuple(ipmix_dali.dali.augment(images, "ipmix", preset="cifar",
                                                 mixing_set=bank, jsd=True, seed=0,
                                                 workers=workers))

        p = pipe()
        p.build()
        return [[np.stack([np.asarray(t) for t in out]) for out in p.run()] for _ in range(2)]

    one, two = outputs(1), outputs(2)
    for a, b in zip(one, two):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_dead_worker_in_a_loader_is_an_augment_stage_error(tree):
    bank = builtin_mixing_bank(count=4, side=36, seed=1)
    cfg = make_config("ipmix", "cifar", jsd=True)
    pool = PoolExecutor(2)
    loader = train_loader(tree, cfg, batch_size=4, bank=bank, seed=7, num_threads=1,
                          executor=pool, prefetch_queue_depth=1)
    try:
        next(loader)
        os.kill(pool.pids[0], signal.SIGKILL)
        with pytest.raises(AugmentStageError) as info:
            for _ in range(6):
                next(loader)
        assert isinstance(info.value.__cause__, StageWorkerError)
        assert "was killed by SIGKILL" in str(info.value)
    finally:
        loader.close()
    assert pool.pids == []


_SCRIPT = textwrap.dedent("""
    import sys
    from ipmix_dali import make_config
    from ipmix_dali.datasets import scan_image_folder
    from ipmix_dali.executors.pool import PoolExecutor
    from ipmix_dali.loader import train_loader
    from ipmix_dali.mixing.builtin import builtin_mixing_bank

    pool = PoolExecutor(2)
    loader = train_loader(scan_image_folder(sys.argv[1]), make_config("ipmix", "cifar", jsd=True),
                          batch_size=4, bank=builtin_mixing_bank(count=4, side=36, seed=1),
                          num_threads=1, executor=pool)
    next(loader)
    print(*pool.pids, flush=True)
    while True:
        for batch in loader:
            pass
""")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to the process group"])
def test_signals_stop_the_workers(tree, tmp_path, how):
    """SIGTERM to the training process, or a terminal's Ctrl-C (SIGINT to its process group):
    the process ends with the signal's own outcome (not a dead-worker error) and no worker
    process is left behind."""
    script = tmp_path / "loop.py"
    script.write_text(_SCRIPT)
    root = os.path.dirname(tree.files[0]).rsplit(os.sep, 1)[0]
    proc = subprocess.Popen([sys.executable, str(script), root], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        time.sleep(0.5)
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _wait_gone(pids) == []
    assert "StageWorkerError" not in err
    if how == "SIGTERM":
        assert code == -signal.SIGTERM
    else:
        assert "KeyboardInterrupt" in err and code != 0


def _pool_workers_of(parent):
    """Pids of the stage worker processes whose parent is ``parent``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == parent and b"ipmix_dali.executors._pool_worker" in cmd:
            found.append(int(pid))
    return found


def test_train_stage_workers_flag_and_sigterm(tmp_path):
    """``ipmix-dali train --stage-workers 2`` on the CPU runs the stage on two processes; SIGTERM
    saves, exits 143 and leaves no worker behind."""
    from ipmix_dali.mixing.builtin import write_fractal_set

    write_jpeg_tree(tmp_path / "data" / "train", classes=2, per_class=6, size=(80, 64), seed=1)
    write_jpeg_tree(tmp_path / "data" / "val", classes=2, per_class=2, size=(80, 64), seed=2)
    write_fractal_set(str(tmp_path / "mix"), 4, 48, 1, "png")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ipmix_dali.train", "--data", str(tmp_path / "data"),
           "--arch", "resnet18", "--method", "ipmix", "--jsd", "--mixing-set",
           str(tmp_path / "mix"), "--image-size", "32", "--val-resize", "36", "--epochs", "50",
           "--batch-size", "4", "--threads", "1", "--stage-workers", "2", "--device", "cpu",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, workers = time.monotonic() + 240, []
        while time.monotonic() < deadline and not (
                len(workers) == 2 and (out / "metrics.jsonl").exists()):
            workers = _pool_workers_of(proc.pid) or workers
            time.sleep(0.1)
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM" in stdout
    assert _wait_gone(workers) == []


def test_bench_side_by_side_pinned_to_1_and_2_cores(tmp_path, capsys):
    """`ipmix-dali bench --cores 1,2 --jsd both --rounds 2`: every row set pinned to 1 and to 2
    cores in one run, twice, with the stage's workers per core count, cores used, load
    averages, every round's rate and the ratios."""
    import json

    from ipmix_dali.cli import main

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable cores")
    data = write_jpeg_tree(tmp_path / "data", classes=2, per_class=8, size=(120, 90), seed=3)
    out = tmp_path / "bench.json"
    assert main(["bench", "--methods", "ipmix", "--backends", "reference,dali-cpu",
                 "--batch-size", "4", "--batches", "4", "--data", data, "--jsd", "both",
                 "--cores", "1,2", "--rounds", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rounds"] == 2
    for r in result["rows"]:  # two rounds each, the row is the slower (median of 2) one
        assert len(r["samples_per_s_rounds"]) == 2
        assert r["samples_per_s"] == min(r["samples_per_s_rounds"])
    rows = {(r["pinned_cores"], r["backend"], r["jsd"]): r for r in result["rows"]}
    assert set(rows) == {(k, b, j) for k in (1, 2) for b in ("reference", "dali-cpu")
                         for j in (False, True)}
    assert [p["usable_cores"] for p in result["pinned"]] == [1, 2]
    assert result["malloc"] == "freed memory kept (ipmix_dali.memory), both backends"
    for k in (1, 2):
        assert rows[(k, "reference", True)]["workers"] == k
        assert rows[(k, "dali-cpu", True)]["stage_workers"] == k  # 1: the stage's own thread
        assert rows[(k, "dali-cpu", True)]["dali_threads"] == k
    for r in result["rows"]:
        assert r["samples"] > 0 and 0 < r["cpu_cores_used"] <= r["pinned_cores"] + 0.3
        assert len(r["loadavg_1min"]) == 2
    assert "dali-cpu/reference ipmix + JSD at 2 cores (whole machine)" in result["ratios"]
    assert "dali-cpu ipmix + JSD scaling efficiency 1->2 cores" in result["ratios"]
    paired = result["paired_ratios"]
    rates = {k: r["samples_per_s_rounds"] for k, r in rows.items()}
    want = np.median(np.divide(rates[(2, "dali-cpu", True)], rates[(2, "reference", True)]))
    assert paired["dali-cpu/reference ipmix + JSD at 2 cores (whole machine)"] == round(want, 2)
    want = np.median(np.divide(rates[(2, "dali-cpu", False)], rates[(1, "dali-cpu", False)]) / 2)
    assert paired["dali-cpu ipmix scaling efficiency 1->2 cores"] == round(want, 2)
    assert set(result["loadavg"]) == {"start", "end"}
    assert "pinned" in capsys.readouterr().out
    assert main(["bench", "--cores", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "--cores '0': give core counts >= 1" in capsys.readouterr().err
    assert main(["bench", "--rounds", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "--rounds 0: give a number of rounds >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_paired_ratios_take_each_rounds_own_ratio():
    """Round r of one row against round r of the other, then the median: a drift that slows
    both backends in one round leaves the paired ratio alone, where the medians' ratio moves."""
    from ipmix_dali.bench.input_pipeline import _paired_ratios, _ratios

    def row(k, backend, rates):
        return {"backend": backend, "method": "ipmix", "jsd": True, "pinned_cores": k,
                "samples_per_s_rounds": rates, "samples_per_s": float(np.median(rates)),
                "cpu_cores_used": float(k)}

    rows = [row(1, "reference", [100, 50, 100]), row(1, "dali-cpu", [150, 75, 150]),
            row(2, "reference", [200, 180, 100]), row(2, "dali-cpu", [360, 150, 170]),
            row(3, "dali-cpu", [1.0])]  # one round only: no paired ratio
    paired = _paired_ratios(rows)
    assert paired == {
        "dali-cpu/reference ipmix at 1 core (whole machine)": 1.5,
        "dali-cpu/reference ipmix at 2 cores (whole machine)": 1.7,      # 1.8, 0.83, 1.7
        "reference ipmix scaling efficiency 1->2 cores": 1.0,              # 1.0, 1.8, 0.5
        "dali-cpu ipmix scaling efficiency 1->2 cores": 1.0,               # 1.2, 1.0, 0.57
    }
    assert _ratios(rows)["dali-cpu/reference ipmix at 2 cores (whole machine)"] == 0.94
