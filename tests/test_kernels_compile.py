"""Every kernels/*.cu compiles with NVRTC for sm_80 and sm_90 (no GPU needed) with the options
the GPU build uses, and the GPU loader compiles and caches them that way (not through CuPy's own
compile, which would add -ftz=true)."""
import re

import numpy as np
import pytest

from ipmix_dali import cupy_standin
from ipmix_dali.executors import _kernels
from ipmix_dali.executors._kernels import (
    COMPILE_OPTIONS,
    EMULATOR_CXXFLAGS,
    nvrtc_compile,
    read_source,
)
from ipmix_dali.kernels import kernel_sources

SOURCES = [p.name for p in kernel_sources()]


def test_kernels_exist_and_options_are_explicit():
    assert "smoke.cu" in SOURCES and len(SOURCES) >= 1
    # Float steps are not contracted, subnormals are not flushed, division and square root are
    # IEEE: on the GPU (NVRTC) and in the emulator (g++) alike.
    assert {"--fmad=false", "--ftz=false", "--prec-div=true",
            "--prec-sqrt=true"} <= set(COMPILE_OPTIONS)
    assert "-ffp-contract=off" in EMULATOR_CXXFLAGS
    assert not any("fast-math" in f and not f.startswith("-fno") for f in EMULATOR_CXXFLAGS)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("filename", SOURCES)
def test_compiles(filename, arch):
    ptx = nvrtc_compile(filename, arch)
    declared = set(re.findall(r'extern "C" __global__ void (\w+)', read_source(filename)))
    entries = set(re.findall(r"\.entry (\w+)\(", ptx))
    assert declared and declared == entries, (declared, entries)
    assert f".target {arch}" in ptx
    # No float instruction flushes subnormals or approximates a division or square root, and
    # none is a contracted multiply-add. (libdevice's double pow seeds its Newton steps with
    # rcp.approx.ftz.f64 and fma.rn.f64 by design; its result is still correctly computed.)
    assert not re.search(r"\.ftz\.f32", ptx)
    assert not re.search(r"\b(div|sqrt|rcp)\.(approx|full)[.\w]*f32", ptx)
    assert not re.search(r"\bfma\.rn\.f32", ptx)


def test_cubin_for_the_device(tmp_path, monkeypatch):
    monkeypatch.setenv("IPMIX_DALI_CACHE", str(tmp_path))
    path = _kernels.compiled_kernel("smoke.cu", "sm_90")
    assert path.parent == tmp_path / "kernels" and path.name.startswith("smoke.sm_90.")
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF"  # a CUBIN: no JIT at load time
    assert _kernels.compiled_kernel("smoke.cu", "sm_90") == path  # cached


def test_gpu_loader_uses_our_build_and_caches_kernels(tmp_path, monkeypatch):
    """get_function loads the NVRTC build (RawModule(path=...)): a RawModule(code=...) would let
    CuPy append -ftz=true. The kernel object is built once per (module, device, file, name)."""
    monkeypatch.setenv("IPMIX_DALI_CACHE", str(tmp_path))
    with cupy_standin.installed(mode="emulate") as device:
        import cupy

        first = _kernels.get_function("smoke.cu", "smoke_mul")
        assert _kernels.get_function("smoke.cu", "smoke_mul") is first
        assert list((tmp_path / "kernels").glob("smoke.sm_90.*.cubin"))
        a = cupy.asarray(np.float32([1e-20, 2.0]))
        out = cupy.zeros(2, dtype=cupy.float32)
        first((1,), (32,), (a, a, out, np.int32(2)))
        assert device.counts["kernel"] == 1
        assert cupy.asnumpy(out)[0] != 0  # 1e-40: subnormal, kept


def test_compile_error_is_reported(tmp_path, monkeypatch):
    import ipmix_dali.executors._kernels as k

    monkeypatch.setattr(k, "read_source", lambda name: "extern \"C\" __global__ void f() { x; }")
    with pytest.raises(RuntimeError, match="NVRTC failed to compile kernels/bad.cu"):
        k.nvrtc_compile("bad.cu")
