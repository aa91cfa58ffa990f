"""The NumPy executor on a pool of worker processes: the CPU stage on every core.

:class:`PoolExecutor` has the NumPy executor's ``apply(images, pictures, plan, out=...)`` and
``normalize``. The stage draws the plan as before; the pool cuts the batch into slices of
samples (guided: large first, single samples last, handed out as workers finish), and each worker
process runs :class:`~.numpy_exec.NumpyExecutor` on its slices of the plan. Images, mixing
pictures and outputs travel through shared memory (only the plan slices, a few KiB, are
pickled), the way DataLoader workers scale; an output on :meth:`PoolExecutor.output_array`'s
block is written in place. Samples are independent
given the plan, so the pixels are those of the plain NumPy executor, bit for bit, whatever the
number of workers.

Why processes and not threads over chunks: the executor's Python loops (IPMix's patch loop,
the per-op grouping) hold the GIL for much of a batch; measured in docs/cpu_stage.md.

Life cycle: the workers start at the first batch (``start()`` starts them earlier) and stay for
the executor's life, so a pipeline rebuilt on resume keeps them. ``close()`` (also
``DaliLoader.close()``, garbage collection and interpreter exit) stops them; they ignore SIGINT
(a Ctrl-C reaches the whole process group: the parent decides) and leave on their own when the
parent dies (their socket closes). A worker that dies is a :class:`StageWorkerError` naming it,
its exit status and the batch, never a hang; an exception inside a worker is re-raised in the
parent as itself, with the worker's traceback as its ``__cause__``.

Workers are plain ``python -m ipmix_dali.executors._pool_worker`` processes (not multiprocessing's
spawn, which re-runs the user's main script), connected by a socket pair.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import traceback
import weakref
from multiprocessing import connection, shared_memory

import numpy as np

from . import base
from .numpy_exec import DEFAULT_CHUNK_SIZE

# Guided slices: each slice is the samples left over GUIDED_FACTOR x the workers (at least one
# sample), so the first slices are large (few round trips) and the last ones single samples
# (the workers finish together: the wait for the slowest is one sample, not one slice).
GUIDED_FACTOR = 2

__all__ = ["PoolExecutor", "StageWorkerError", "stage_executor", "default_stage_workers",
           "usable_cores"]


class StageWorkerError(RuntimeError):
    """A worker process of the CPU augmentation stage died (killed, out of memory, crashed)."""


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text."""

    def __str__(self):
        return self.args[0]


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: ``taskset`` and cgroups shrink it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_stage_workers(cores=None) -> int:
    """Worker processes of the CPU stage by default: one per usable core, or 1 (the stage's
    own thread, no pool) on one core. DALI's decoding threads are busy a small part of a batch
    (bench/results/bench_cpu_jsd.json: the whole 'none' pipeline, decode + resize + normalise,
    costs ~2.3 ms of core time per sample, IPMix + JSD ~7.8 ms), so cores of their own would
    mostly idle; the workers share the cores with them."""
    cores = usable_cores() if cores is None else int(cores)
    return max(1, cores)


def stage_executor(workers: int = 0, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """The CPU stage's executor for ``workers`` processes: 0 = :func:`default_stage_workers`,
    1 = the NumPy executor in the stage's own thread, N > 1 = a :class:`PoolExecutor`."""
    from .numpy_exec import NumpyExecutor

    workers = int(workers)
    if workers < 0:
        raise ValueError(f"stage workers must be >= 0 (0: one per usable core), got {workers}")
    if workers == 0:
        workers = default_stage_workers()
    if workers == 1:
        return NumpyExecutor(chunk_size=chunk_size)
    return PoolExecutor(workers, chunk_size=chunk_size)


class _Segment:
    """A growable shared-memory block the workers map by name. The parent unlinks the name
    once every worker has mapped it: nothing is left in /dev/shm, even after a crash."""

    def __init__(self):
        self.shm = None
        self.linked = False

    def array(self, shape, dtype, order=None) -> np.ndarray:
        """A view of ``shape`` (physical axis ``order``, C order when None) on the block."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self.shm is None or self.shm.size < nbytes:
            self.release()
            self.shm = shared_memory.SharedMemory(create=True, size=max(nbytes, 1))
            self.linked = True
        return _view(self.shm.buf, shape, dtype, order)

    def spec(self, arr: np.ndarray):
        """(name, size, byte offset, shape, strides, dtype) of ``arr``, a view on the block."""
        return (self.shm.name, self.shm.size, self.offset(arr), tuple(arr.shape),
                tuple(arr.strides), arr.dtype.str)

    def offset(self, arr: np.ndarray):
        """The byte offset of ``arr``'s first element in the block, or None if ``arr`` is not
        a view on it (its lowest and highest addresses inside the block)."""
        if self.shm is None or arr.size == 0:
            return None
        start = np.frombuffer(self.shm.buf, np.uint8, count=1).__array_interface__["data"][0]
        first = arr.__array_interface__["data"][0]
        low = first + sum(st * (n - 1) for st, n in zip(arr.strides, arr.shape) if st < 0)
        high = first + sum(st * (n - 1) for st, n in zip(arr.strides, arr.shape) if st > 0)
        if low < start or high + arr.itemsize > start + self.shm.size:
            return None
        return first - start

    def unlink(self):
        if self.shm is not None and self.linked:
            self.shm.unlink()
            self.linked = False

    def release(self):
        if self.shm is not None:
            self.unlink()
            try:
                self.shm.close()
            except BufferError:  # a caller still holds a view: the mapping goes with it
                pass
            self.shm = None


def _view(buf, shape, dtype, order):
    """``shape`` (logical axes) over ``buf``, with the axes stored in physical ``order``."""
    order = tuple(range(len(shape))) if order is None else tuple(order)
    physical = np.ndarray(tuple(shape[a] for a in order), dtype=dtype, buffer=buf)
    return physical.transpose(np.argsort(order))


def _spec_view(buf, spec):
    """The array a :meth:`_Segment.spec` describes, over the mapped block ``buf``."""
    _, _, offset, shape, strides, dtype = spec
    return np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=offset, strides=strides)


def _physical_order(arr: np.ndarray):
    """The axes of ``arr`` from the largest stride to the smallest (its memory layout)."""
    return tuple(int(a) for a in sorted(range(arr.ndim), key=lambda a: -abs(arr.strides[a])))


def _shutdown(procs, conns, segments):
    """Stop the workers (a None message, then terminate stragglers) and free the memory."""
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for conn in conns:
        conn.close()
    for seg in segments:
        seg.release()
    procs.clear()
    conns.clear()


def _exit_status(proc) -> str:
    code = proc.poll()
    if code is None:
        return "closed its connection"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def guided_slices(n: int, workers: int, factor: int = GUIDED_FACTOR):
    """(start, stop) slices of ``n`` samples for ``workers``, in hand-out order: each one
    ``ceil(left / (factor * workers))`` samples, so they shrink to single samples at the end
    (guided self-scheduling). 32 samples on 2 workers: 8 6 5 4 3 2 1 1 1 1."""
    slices, start = [], 0
    while start < n:
        size = max(1, -(-(n - start) // (factor * workers)))
        slices.append((start, start + size))
        start += size
    return slices


class PoolExecutor:
    """The NumPy executor on ``workers`` processes, slices of each batch handed out as they finish.

    Args:
        workers: worker processes (>= 1).
        chunk_size: each worker's NumPy executor chunk (bounds its working set).
    """

    name = "pool"

    def __init__(self, workers: int, chunk_size: int = DEFAULT_CHUNK_SIZE):
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers, self.chunk_size = int(workers), int(chunk_size)
        self._procs, self._conns = [], []
        # images and pictures: stacked by the stage (stack_samples) or copied in by apply;
        # out: the caller's output buffer (output_array), written by the workers in place;
        # scratch: the output of a call whose ``out`` is not in shared memory, copied back.
        self._segments = {role: _Segment()
                          for role in ("images", "pictures", "out", "scratch")}
        self._stacked = []  # (array, segment) of this batch's stack_samples calls
        self._broken = None
        self._batches = 0  # batches applied (error messages)
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns,
                                           list(self._segments.values()))

    # --- life cycle -------------------------------------------------------------------------
    @property
    def pids(self):
        return [p.pid for p in self._procs]

    def start(self):
        """Start the worker processes (idempotent; the first ``apply`` calls it)."""
        if self._broken is not None:
            raise StageWorkerError(f"the CPU stage's worker pool is closed: {self._broken}; "
                                   f"build a new loader (or executor) to go on")
        if self._procs:
            return self
        env = dict(os.environ)
        # One thread per worker: the workers are the parallelism (BLAS/OpenMP pools would
        # oversubscribe the cores).
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in
                                                      env.get("PYTHONPATH", "").split(os.pathsep)
                                                      if p])
        for _ in range(self.workers):
            mine, theirs = socket.socketpair()
            proc = subprocess.Popen(
                [sys.executable, "-m", "ipmix_dali.executors._pool_worker", str(theirs.fileno()),
                 str(self.chunk_size)],
                pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
                # Their own session: a terminal's Ctrl-C reaches the parent only, which
                # stops the workers itself.
                start_new_session=True)
            theirs.close()
            self._procs.append(proc)
            self._conns.append(connection.Connection(mine.detach()))
        return self

    def close(self):
        """Stop the workers and free the shared memory (idempotent)."""
        self._stacked = []
        _shutdown(self._procs, self._conns, list(self._segments.values()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        raise TypeError("a PoolExecutor holds processes and cannot be pickled: build one per "
                        "process (ipmix_dali.executors.stage_executor)")

    # --- the executor interface -------------------------------------------------------------
    def stack_samples(self, samples, role="images") -> np.ndarray:
        """The stage's batch of per-sample arrays, stacked straight into shared memory: its
        images, or (reader mode, ``role="pictures"``) its mixing pictures."""
        first = np.asarray(samples[0])
        arr = self.input_array(role, (len(samples),) + first.shape, first.dtype)
        for i, s in enumerate(samples):
            arr[i] = s
        return arr

    def input_array(self, role, shape, dtype) -> np.ndarray:
        """An array in the ``role`` ("images" or "pictures") block of shared memory for this
        batch's input: an ``apply`` given it passes it to the workers without a copy (the
        stage stacks its images there, the Augmenter crops its bank pictures there)."""
        if role not in ("images", "pictures"):
            raise ValueError(f"input_array: role must be 'images' or 'pictures', got {role!r}")
        if role == "images":  # a new batch
            self._stacked = []
        self._stacked = [(a, seg) for a, seg in self._stacked if seg is not self._segments[role]]
        arr = self._segments[role].array(shape, dtype)
        self._stacked.append((arr, self._segments[role]))
        return arr

    def output_array(self, shape, dtype, order=None) -> np.ndarray:
        """A ``shape`` array (physical axis ``order``) in shared memory that the workers write
        in place: pass it (or views of it) as ``out`` and no copy back is made. It stays the
        same block while the shape fits, so each call overwrites the previous call's output:
        the DALI stage returns it to DALI, which copies it before the next batch."""
        return self._segments["out"].array(shape, dtype, order)

    def _shared(self, role, arr, taken):
        """The spec of ``arr`` in shared memory: its own block if the stage stacked it there,
        else a copy in a block no other input of this batch uses (``taken``)."""
        for stacked, seg in self._stacked:
            if stacked is arr:
                taken.append(seg)
                return seg.spec(arr)
        busy = taken + [seg for _, seg in self._stacked]
        free = [s for r, s in self._segments.items()
                if r in ("images", "pictures") and s not in busy]
        seg = self._segments[role] if self._segments[role] in free else free[0]
        taken.append(seg)
        view = seg.array(arr.shape, arr.dtype)
        view[...] = arr
        return seg.spec(view)

    def normalize(self, images, config, out=None, dtype="float32"):
        """JSD's clean view, on the workers too (in slices, like ``apply``)."""
        result = base.output_array(np, out, images.shape, dtype)
        specs = {"images": self._shared("images", images, [])}
        self._run("normalize", specs, result, images.shape[0], lambda start, stop: config)
        return result

    def apply(self, images: np.ndarray, mixing_pictures, plan, out=None, dtype="float32"):
        base.check_inputs(images, mixing_pictures, plan)
        result = base.output_array(np, out, (plan.views,) + images.shape, dtype)
        taken, specs = [], {}
        specs["images"] = self._shared("images", images, taken)
        if mixing_pictures is not None:
            specs["pictures"] = self._shared("pictures", mixing_pictures, taken)
        self._stacked = []
        from .numpy_exec import slice_plan

        def part(start, stop):  # a plan travels as its parts (Plan's lookup does not pickle)
            p = slice_plan(plan, start, stop)
            return p.method, p.config, p.arrays

        self._run("apply", specs, result, plan.n, part)
        self._batches += 1
        return result

    def _run(self, kind, specs, result, n, payload):
        """Run ``kind`` on slices of the ``n`` samples on the workers (:meth:`_distribute`) and
        wait for all. A ``result`` on :meth:`output_array`'s block is written in place; any
        other is written by the workers into a scratch block in its own layout (e.g. DALI's
        channels-first buffer) and copied back, one pass over contiguous memory."""
        self.start()
        if self._segments["out"].offset(result) is not None:  # output_array: in place
            shared_out = None
            specs = dict(specs, out=self._segments["out"].spec(result))
        else:  # elsewhere: the workers write a block in its layout, copied back below
            shared_out = self._segments["scratch"].array(result.shape, result.dtype,
                                                         _physical_order(result))
            specs = dict(specs, out=self._segments["scratch"].spec(shared_out))
        # the blocks that exist now: a worker unmaps the others (replaced by larger ones)
        live = [seg.shm.name for seg in self._segments.values() if seg.shm is not None]
        error = self._distribute(kind, specs, live, n, payload)
        used = {spec[0] for spec in specs.values()}
        for seg in self._segments.values():
            if seg.shm is not None and seg.shm.name in used:
                seg.unlink()  # every worker has mapped it now
        if error is not None:
            raise error
        if shared_out is not None:
            np.copyto(result, shared_out)

    def _distribute(self, kind, specs, live, n, payload):
        """Run the slices of ``n`` samples on the workers, a few slices per worker handed out
        as workers finish (IPMix's cost per sample varies with its patches: equal shares would
        wait for the slowest). Every worker gets at least one task per call, an empty one if
        need be, so it maps this call's blocks before they are unlinked. Returns the first
        worker exception; raises StageWorkerError for a dead worker."""
        slices = guided_slices(n, self.workers)
        slices += [(n, n)] * max(0, self.workers - len(slices))
        slices.reverse()  # pop() hands them out from the first sample on
        index = {conn: w for w, conn in enumerate(self._conns)}
        outstanding = dict.fromkeys(self._conns, 0)

        def hand_out(conn):
            start, stop = slices.pop()
            task = (kind, specs, live, start, stop,
                    payload(start, stop) if stop > start else None)
            outstanding[conn] += 1
            try:
                conn.send(task)
            except OSError:
                pass  # a dead worker: reported when its reply does not come

        # two tasks in flight per worker: the next one is waiting when a slice is done
        for _ in range(2):
            for conn in self._conns:
                if slices:
                    hand_out(conn)
        error = None
        try:
            while any(outstanding.values()):
                for conn in connection.wait([c for c, k in outstanding.items() if k]):
                    try:
                        reply = conn.recv()
                    except (EOFError, OSError):
                        self._dead(index[conn])
                    outstanding[conn] -= 1
                    if reply[0] == "error" and error is None:
                        error = _rebuild(reply[1], reply[2])
                    if slices and error is None:
                        hand_out(conn)
        except BaseException:
            if self._procs:  # interrupted (Ctrl-C) mid-batch: replies would be out of step
                self.close()
            raise
        return error

    def _dead(self, w):
        proc = self._procs[w]
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        self._broken = (f"worker {w} (pid {proc.pid}) {_exit_status(proc)} "
                        f"during batch {self._batches} of this executor")
        self.close()
        raise StageWorkerError(
            f"a CPU augmentation stage worker died: {self._broken} (out of "
            f"memory? lower --batch-size or --stage-workers)") from None


def _rebuild(payload, text):
    try:
        exc = pickle.loads(payload)
    except Exception:
        exc = RuntimeError(text.strip().splitlines()[-1])
    exc.__cause__ = _RemoteTraceback(f"\n(in a stage worker process)\n{text}")
    return exc


# --- the worker process ----------------------------------------------------------------------
def _worker(fd: int, chunk_size: int):
    from ..memory import keep_freed_memory
    from ..plans import Plan
    from .numpy_exec import NumpyExecutor

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what a Ctrl-C stops
    keep_freed_memory()  # the executor's temporaries reuse freed memory (no page faults)

    conn = connection.Connection(fd)
    executor = NumpyExecutor(chunk_size=chunk_size)
    mapped = {}  # block name -> mmap; the parent owns (and unlinks) the blocks

    def array(spec):
        name, size = spec[:2]
        if name not in mapped:
            import _posixshmem
            import mmap

            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
            try:
                mapped[name] = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        return _spec_view(mapped[name], spec)

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return  # the parent is gone
        if task is None:
            return
        kind, specs, live, start, stop, payload = task
        try:
            for name in set(mapped) - set(live):
                mapped.pop(name).close()  # a block the parent has replaced
            views = {role: array(spec) for role, spec in specs.items()}
            if payload is not None and kind == "apply":
                pics = views.get("pictures")
                executor.apply(views["images"][start:stop],
                               None if pics is None else pics[start:stop], Plan(*payload),
                               out=views["out"][:, start:stop])
            elif payload is not None:  # normalize: payload is the config
                executor.normalize(views["images"][start:stop], payload,
                                   out=views["out"][start:stop])
            reply = ("ok",)
        except Exception as exc:
            text = traceback.format_exc()
            try:
                payload = pickle.dumps(exc)
            except Exception:
                payload = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
            reply = ("error", payload, text)
        try:
            conn.send(reply)
        except OSError:
            return

