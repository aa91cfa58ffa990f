"""Every kernels/*.cu compiles with NVRTC for sm_80 and sm_90 (no GPU needed), with the same
options CuPy uses at run time (executors/_kernels.py)."""
import re

import pytest

from ipmix_dali.executors._kernels import COMPILE_OPTIONS, nvrtc_compile, read_source
from ipmix_dali.kernels import kernel_sources

SOURCES = [p.name for p in kernel_sources()]


def test_kernels_exist():
    assert "smoke.cu" in SOURCES and len(SOURCES) >= 1
    assert "--fmad=false" in COMPILE_OPTIONS  # float steps must not be contracted


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("filename", SOURCES)
def test_compiles(filename, arch):
    ptx = nvrtc_compile(filename, arch)
    declared = set(re.findall(r'extern "C" __global__ void (\w+)', read_source(filename)))
    entries = set(re.findall(r"\.entry (\w+)\(", ptx))
    assert declared and declared == entries, (declared, entries)
    assert f".target {arch}" in ptx


def test_compile_error_is_reported(tmp_path, monkeypatch):
    import ipmix_dali.executors._kernels as k

    monkeypatch.setattr(k, "read_source", lambda name: "extern \"C\" __global__ void f() { x; }")
    with pytest.raises(RuntimeError, match="NVRTC failed to compile kernels/bad.cu"):
        k.nvrtc_compile("bad.cu")
