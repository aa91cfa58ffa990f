"""What every benchmark result records about where it ran: the CPU, the library versions, the
git commit, and the GPU (name, driver, memory, peak bandwidth)."""
from __future__ import annotations

import os
import platform
import subprocess

__all__ = ["machine_info", "package_versions", "gpu_info"]


def package_versions(modules) -> dict:
    """``{module: __version__}`` for dotted module names; None where one does not import."""
    import importlib

    versions = {}
    for mod in modules:
        try:
            versions[mod] = getattr(importlib.import_module(mod), "__version__", None)
        except Exception:
            versions[mod] = None
    return versions


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = package_versions(("numpy", "PIL", "torch", "torchvision"))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except Exception:
        commit = None
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "git_commit": commit}


def gpu_info(cupy) -> dict:
    """Name, driver/runtime/CuPy versions, memory and peak bandwidth of the current device."""
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    peak = 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8  # bytes/s
    return {"gpu": name, "driver": cupy.cuda.runtime.driverGetVersion(),
            "runtime": cupy.cuda.runtime.runtimeGetVersion(), "cupy": cupy.__version__,
            "memory_gib": round(props["totalGlobalMem"] / 2 ** 30, 1),
            "peak_bandwidth_gbps": round(peak / 1e9, 1)}
