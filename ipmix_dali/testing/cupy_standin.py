"""A stand-in for CuPy on machines without a GPU: NumPy under CuPy's name, every device
operation counted.

The GPU code paths (the CuPy executor, the GPU pipeline stage, ``augment()`` on device arrays,
the GPU fractal renderer and corruptions, ``bench-gpu``) import ``cupy`` when they run. Inside
:func:`installed` that import gives this module instead, so CI runs their Python, argument
building and launch sequences without a GPU::

    with cupy_standin.installed(mode="emulate") as device:
        views = get_executor("cupy").apply(cupy.asarray(images), pics, plan)
    device.counts            # Counter({'kernel': 31, 'h2d': 2, 'memset': 1, ...})
    device.device_seconds    # time spent doing the device's work on the CPU

Modes:

* ``"emulate"``: ``RawModule`` kernels run on the CPU through :mod:`ipmix_dali.testing.emulator`
  (thread by thread: real pixels, small batches only).
* ``"count"``: kernel launches are counted and skipped (their outputs are left as allocated),
  for operation counts and host time at full batch size.

Arrays are :class:`ndarray`, a NumPy subclass that plays ``cupy.ndarray``: views are free, and
every operation CuPy would run on the device is counted under one of :data:`DEVICE_KINDS` and
done with NumPy, its time added to ``device_seconds`` (so ``wall - device_seconds`` is the
host's share). What the counts mean on a GPU:

* ``kernel``: a launch of one of our raw kernels; ``elementwise``: a CuPy ufunc, reduction or
  array function (one kernel each, as a first approximation);
* ``copy``: a copy kernel (``copy``, ``astype``, ``stack``, a contiguous copy, slice assignment);
* ``gather`` / ``scatter``: fancy-index reads / writes (the index goes to the device first);
* ``h2d`` / ``d2h``: transfers; ``memset``: ``zeros``;
* not device operations: ``sync`` (a wait for the device), ``dlpack`` (a DLPack handover),
  ``alloc`` (``empty``: the memory pool, no launch).

Devices: ``installed(devices=2)`` exposes two GPUs. Every array remembers the device that was
current when it was made (as CuPy's do); ``with cupy.cuda.Device(i):`` switches the current
device of the calling thread; a kernel launch or an elementwise operation on an array of
another device raises, where a real GPU would read another GPU's memory (an illegal address,
or silently a peer copy). Host-to-device copies made by ``cupy.asarray`` of a host array are
staged through a pinned block that the pinned pool keeps (CuPy's ``_array_default``);
``ndarray.set`` copies from pageable memory without it. ``DEVICE.pinned_bytes`` is what the
pinned pool holds.

It is a tool for the Python side only: emulated kernels give the GPU's pixels where the kernels
follow CUDA's semantics, but timing, streams and concurrency are not modelled.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
import types
from collections import Counter

import numpy as np

__all__ = ["installed", "StandinDevice", "DEVICE_KINDS", "ndarray"]

DEVICE_KINDS = ("kernel", "elementwise", "copy", "gather", "scatter", "h2d", "d2h", "memset")
PROPERTIES = {"name": b"CuPy stand-in (CPU)", "memoryClockRate": 2_619_000,
              "memoryBusWidth": 5120, "totalGlobalMem": 80 << 30, "major": 9, "minor": 0,
              "multiProcessorCount": 132}


class StandinDevice:
    """Counts and time of the device work done while the stand-in is installed."""

    def __init__(self):
        self.mode = "emulate"
        self.reset()
        self._depth = 0

    def reset(self):
        self.counts = Counter()
        self.device_seconds = 0.0
        self.log = []  # (kind, detail) in order, when ``record`` is on
        self.record = False
        self.device_count = 1
        self.pinned_bytes = 0  # held by the pinned memory pool
        self.h2d_bytes = 0
        self._current = threading.local()

    @property
    def current(self) -> int:
        """The calling thread's current device (0 until a ``with Device(i):`` says otherwise)."""
        return getattr(self._current, "id", 0)

    @current.setter
    def current(self, device_id: int):
        self._current.id = int(device_id)

    def check_same_device(self, what, args):
        """Raise as the GPU would when ``what`` runs on the current device with an array of
        another one (CuPy raises for its own operations; a raw kernel reads foreign memory)."""
        here = self.current
        for a in args:
            if isinstance(a, ndarray) and a.device_id != here:
                raise RuntimeError(f"{what} ran on device {here} with an array of device "
                                   f"{a.device_id} (CuPy stand-in; on a GPU: an illegal memory "
                                   f"access or a silent peer read)")

    @property
    def device_ops(self) -> int:
        return sum(self.counts[k] for k in DEVICE_KINDS)

    def note(self, kind, detail=""):
        if self._depth == 0:
            self.counts[kind] += 1
            if self.record:
                self.log.append((kind, detail))

    @contextlib.contextmanager
    def work(self, kind, detail=""):
        """Count one operation of ``kind`` and time the NumPy work done for it."""
        self.note(kind, detail)
        outer = self._depth == 0
        self._depth += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if outer:
                self.device_seconds += time.perf_counter() - start


DEVICE = StandinDevice()


def _host(a):
    """The NumPy view of a stand-in array (or ``a`` itself)."""
    return a.view(np.ndarray) if isinstance(a, ndarray) else a


def _host_tree(obj):
    if isinstance(obj, ndarray):
        return obj.view(np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_host_tree(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _host_tree(v) for k, v in obj.items()}
    return obj


def _wrap(result):
    if isinstance(result, np.ndarray) and not isinstance(result, ndarray):
        return result.view(ndarray)
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, list):
        return [_wrap(r) for r in result]
    return result


def _advanced(key) -> bool:
    if type(key) is int or type(key) is slice:
        return False
    keys = key if isinstance(key, tuple) else (key,)
    for k in keys:
        if isinstance(k, (np.ndarray, list)):
            return True
    return False


class ndarray(np.ndarray):
    """A "device" array: NumPy memory, CuPy's operations counted, the device it lives on."""

    __module__ = "cupy"

    device_id = 0  # the class default: an array of device 0 carries no attribute of its own

    def __array_finalize__(self, obj):
        # Views keep their base's device; new arrays belong to the current device. Only arrays
        # of another device get an instance attribute: a per-array __dict__ on every view makes
        # the garbage collector's work (and the measured host time) grow with the view count.
        device_id = getattr(obj, "device_id", None)
        if device_id is None:
            device_id = DEVICE.current
        if device_id:
            self.device_id = device_id

    @property
    def device(self):
        return Device(self.device_id)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        DEVICE.check_same_device(f"cupy.{ufunc.__name__}", inputs)
        with DEVICE.work("elementwise", ufunc.__name__):
            if out is not None:
                kwargs["out"] = _host_tree(out)
            result = getattr(ufunc, method)(*_host_tree(inputs), **kwargs)
        return _wrap(result) if out is None else out[0] if len(out) == 1 else out

    def __array_function__(self, func, types_, args, kwargs):
        with DEVICE.work("elementwise", func.__name__):
            result = func(*_host_tree(args), **_host_tree(kwargs))
        return _wrap(result)

    def __getitem__(self, key):
        if _advanced(key):
            with DEVICE.work("gather"):
                return _wrap(np.ndarray.__getitem__(_host(self), _host_tree(key)))
        return np.ndarray.__getitem__(self, key)

    def __setitem__(self, key, value):
        with DEVICE.work("scatter" if _advanced(key) else "copy"):
            np.ndarray.__setitem__(_host(self), _host_tree(key), _host(value))

    def copy(self, order="C"):
        with DEVICE.work("copy"):
            return _wrap(np.ndarray.copy(_host(self), order))

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        with DEVICE.work("copy", "astype"):
            return _wrap(np.ndarray.astype(_host(self), dtype, order, casting))

    def reshape(self, *shape, order="C"):
        result = np.ndarray.reshape(self, *shape, order=order)
        if not np.may_share_memory(_host(result), _host(self)):
            DEVICE.note("copy", "reshape")
        return result

    def fill(self, value):
        with DEVICE.work("memset"):
            np.ndarray.fill(_host(self), value)

    def get(self, stream=None):
        with DEVICE.work("d2h"):
            return np.array(_host(self))

    def set(self, arr, stream=None):
        """A copy from host memory as it is (pageable: no pinned staging block)."""
        arr = np.asarray(arr)
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"set: shape/dtype mismatch {arr.shape} {arr.dtype} vs "
                             f"{self.shape} {self.dtype}")
        with DEVICE.work("h2d", "set"):
            np.copyto(_host(self), arr)
        DEVICE.h2d_bytes += arr.nbytes

    def __dlpack__(self, stream=None, **kwargs):
        DEVICE.note("dlpack")
        return np.ndarray.__dlpack__(_host(self))

    @property
    def data(self):
        """``a.data.ptr`` as CuPy has it: the address of the first element."""
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


# --- module functions ----------------------------------------------------------------------
def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    with DEVICE.work("h2d"):
        result = np.array(a, dtype=dtype, order=order or "K", copy=True).view(ndarray)
    # CuPy stages a pageable host array through a pinned block of the same size, which the
    # pinned pool keeps (and reuses) after the copy.
    DEVICE.pinned_bytes = max(DEVICE.pinned_bytes, result.nbytes)
    DEVICE.h2d_bytes += result.nbytes
    return result


def array(a, dtype=None, copy=True, order="K"):
    if isinstance(a, ndarray):
        return a.astype(dtype or a.dtype) if copy else asarray(a, dtype)
    return asarray(a, dtype, order)


def asnumpy(a, stream=None):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def empty(shape, dtype=float, order="C"):
    DEVICE.note("alloc")
    return np.empty(shape, dtype, order).view(ndarray)


def empty_like(a, dtype=None, order="K", shape=None):
    DEVICE.note("alloc")
    return np.empty_like(_host(a), dtype=dtype, order=order, shape=shape).view(ndarray)


def zeros(shape, dtype=float, order="C"):
    with DEVICE.work("memset"):
        return np.zeros(shape, dtype, order).view(ndarray)


def zeros_like(a, dtype=None, order="K", shape=None):
    with DEVICE.work("memset"):
        return np.zeros_like(_host(a), dtype=dtype, order=order, shape=shape).view(ndarray)


def ascontiguousarray(a, dtype=None):
    a = asarray(a)
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    with DEVICE.work("copy", "ascontiguousarray"):
        return _wrap(np.ascontiguousarray(_host(a), dtype=dtype))


def stack(arrays, axis=0):
    with DEVICE.work("copy", "stack"):
        return _wrap(np.stack([_host(asarray(a)) for a in arrays], axis))


def concatenate(arrays, axis=0):
    with DEVICE.work("copy", "concatenate"):
        return _wrap(np.concatenate([_host(asarray(a)) for a in arrays], axis))


def broadcast_to(a, shape):
    return np.broadcast_to(_host(asarray(a)), shape).view(ndarray)


def moveaxis(a, source, destination):
    return np.moveaxis(_host(asarray(a)), source, destination).view(ndarray)


def from_dlpack(x):
    DEVICE.note("dlpack")
    return np.from_dlpack(x).view(ndarray)


def get_array_module(*args):
    return _MODULE if any(isinstance(a, ndarray) for a in args) else np


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


class _PinnedMemoryPool:
    def total_bytes(self):
        return DEVICE.pinned_bytes

    def free_all_blocks(self):
        DEVICE.pinned_bytes = 0


_POOL = _MemoryPool()
_PINNED_POOL = _PinnedMemoryPool()


def get_default_memory_pool():
    return _POOL


def get_default_pinned_memory_pool():
    return _PINNED_POOL


# --- kernels -------------------------------------------------------------------------------
class _Kernel:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        DEVICE.check_same_device(f"kernel {self.name}", args)
        if DEVICE.mode != "emulate":
            DEVICE.note("kernel", self.name)
            return
        with DEVICE.work("kernel", self.name):
            self.module.emulated().launch(self.name, grid, block, tuple(_host_tree(list(args))))


class RawModule:
    """Kernels of a ``kernels/*.cu`` file: from its compiled file (named ``<stem>.<arch>...``
    by ``build.compiled_kernel``) or from ``code`` naming the file in its first line."""

    def __init__(self, code=None, path=None, options=(), **kwargs):
        from pathlib import Path

        if path is None:
            raise ValueError("the CuPy stand-in loads compiled kernels/*.cu files (path=...)")
        self.filename = Path(path).name.split(".")[0] + ".cu"
        self.options = tuple(options)
        self._emulated = None

    def emulated(self):
        if self._emulated is None:
            from .emulator import EmulatedModule

            self._emulated = EmulatedModule(self.filename)
        return self._emulated

    def get_function(self, name):
        return _Kernel(self, name)


# --- cupy.cuda -----------------------------------------------------------------------------
class _Current:
    """``with stream:`` (streams are not modelled: nothing to switch)."""

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Stream(_Current):
    def __init__(self, null=False, non_blocking=False, ptr=0):
        self.ptr = ptr

    def synchronize(self):
        DEVICE.note("sync", "stream")


Stream.null = Stream(null=True)


class ExternalStream(Stream):
    def __init__(self, ptr, device_id=-1):
        super().__init__(ptr=ptr)
        self.device_id = device_id


def _stream_from_external(obj):
    """``Stream.from_external``: a stream of an object with ``__cuda_stream__`` (CuPy 14)."""
    version, ptr = obj.__cuda_stream__()
    return Stream(ptr=ptr)


Stream.from_external = staticmethod(_stream_from_external)


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()

    def synchronize(self):
        DEVICE.note("sync", "event")


def get_elapsed_time(start, end):
    return (end.time - start.time) * 1e3


class Device:
    """``cupy.cuda.Device``: ``Device()`` is the current one; ``with Device(i):`` makes device i
    current in this thread until the block ends."""

    def __init__(self, device=None):
        self.id = DEVICE.current if device is None else int(device)
        if not 0 <= self.id < DEVICE.device_count:
            raise RuntimeError(f"cudaErrorInvalidDevice: device {self.id} of "
                               f"{DEVICE.device_count} (CuPy stand-in)")
        self.compute_capability = f"{PROPERTIES['major']}{PROPERTIES['minor']}"
        self._previous = []

    def use(self):
        DEVICE.current = self.id

    def __enter__(self):
        self._previous.append(DEVICE.current)
        DEVICE.current = self.id
        return self

    def __exit__(self, *exc):
        DEVICE.current = self._previous.pop()
        return False

    def synchronize(self):
        DEVICE.note("sync", "device")


def get_current_stream(device_id=-1):
    return Stream.null


_runtime = types.SimpleNamespace(
    getDeviceCount=lambda: DEVICE.device_count, getDeviceProperties=lambda i: dict(PROPERTIES),
    driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13000,
    memGetInfo=lambda: (PROPERTIES["totalGlobalMem"], PROPERTIES["totalGlobalMem"]))


def _numpy_function(name, func, kind="elementwise"):
    def call(*args, **kwargs):
        with DEVICE.work(kind, name):
            return _wrap(func(*_host_tree(args), **_host_tree(kwargs)))

    call.__name__ = name
    return call


def _module_getattr(name):
    """Everything else: NumPy's constants and types as they are, its functions counted."""
    if name.startswith("__"):
        raise AttributeError(name)
    value = getattr(np, name)
    if callable(value) and not isinstance(value, type):
        return _numpy_function(name, value)
    return value


def _build_modules():
    cupy = types.ModuleType("cupy", __doc__)
    for name in ("ndarray", "asarray", "array", "asnumpy", "empty", "empty_like", "zeros",
                 "zeros_like", "ascontiguousarray", "stack", "concatenate", "broadcast_to",
                 "moveaxis", "from_dlpack", "get_array_module", "get_default_memory_pool",
                 "get_default_pinned_memory_pool", "RawModule"):
        setattr(cupy, name, globals()[name])
    cupy.__version__ = "stand-in"
    cupy.IS_STANDIN = True
    cupy.__getattr__ = _module_getattr
    cuda = types.ModuleType("cupy.cuda")
    for name in ("Stream", "ExternalStream", "Event", "get_elapsed_time", "Device",
                 "get_current_stream"):
        setattr(cuda, name, globals()[name])
    cuda.runtime = _runtime
    cupy.cuda = cuda

    import scipy.ndimage

    def ndimage_getattr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _numpy_function(name, getattr(scipy.ndimage, name))

    ndimage = types.ModuleType("cupyx.scipy.ndimage")
    ndimage.__getattr__ = ndimage_getattr
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.ndimage = ndimage
    modules = {"cupy": cupy, "cupy.cuda": cuda, "cupyx": cupyx, "cupyx.scipy": cupyx.scipy,
               "cupyx.scipy.ndimage": ndimage}
    for module in modules.values():  # tools that walk sys.modules (inspect) look for files
        module.__file__ = __file__
    return modules


_MODULES = _build_modules()
_MODULE = _MODULES["cupy"]


@contextlib.contextmanager
def installed(mode: str = "emulate", record: bool = False, devices: int = 1):
    """Make ``import cupy`` (and ``cupyx.scipy.ndimage``) give the stand-in inside the block,
    with ``devices`` GPUs; yields the :class:`StandinDevice` with fresh counts."""
    if mode not in ("emulate", "count"):
        raise ValueError(f"mode must be 'emulate' or 'count', got {mode!r}")
    saved = {name: sys.modules.get(name) for name in _MODULES}
    previous_mode = DEVICE.mode
    sys.modules.update(_MODULES)
    DEVICE.reset()
    DEVICE.mode, DEVICE.record, DEVICE.device_count = mode, record, int(devices)
    try:
        yield DEVICE
    finally:
        DEVICE.mode = previous_mode
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
