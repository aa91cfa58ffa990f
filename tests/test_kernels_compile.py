"""Every kernels/*.cu compiles with NVRTC for sm_80 and sm_90 (no GPU needed) with the options
the GPU build uses, and the GPU loader compiles and caches them that way (not through CuPy's own
compile, which would add -ftz=true)."""
import re

import numpy as np
import pytest

from ipmix_dali.kernels import build as _kernels
from ipmix_dali.kernels import kernel_sources
from ipmix_dali.kernels.build import (
    COMPILE_OPTIONS,
    EMULATOR_CXXFLAGS,
    nvrtc_compile,
    read_source,
)
from ipmix_dali.testing import cupy_standin

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
    monkeypatch.setattr(_kernels, "_FUNCTIONS", {})  # nothing loaded yet
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
    import ipmix_dali.kernels.build as k

    monkeypatch.setattr(k, "read_source", lambda name: "extern \"C\" __global__ void f() { x; }")
    with pytest.raises(RuntimeError, match="NVRTC failed to compile kernels/bad.cu"):
        k.nvrtc_compile("bad.cu")


@pytest.mark.parametrize("capability, supported, want", [
    (90, [75, 80, 86, 90, 100], ("sm_90", "cubin")),
    (89, [80, 86, 90], ("sm_86", "cubin")),          # a CUBIN runs on later minors
    (103, [90, 100], ("sm_100", "cubin")),
    (100, [75, 80, 90], ("compute_90", "ptx")),      # GPU newer than this NVRTC: PTX, JIT
    (120, [50, 80, 90, 100], ("compute_100", "ptx")),
    (100, [80, 90, 120], ("compute_90", "ptx")),     # no arch of the device's major below it
])
def test_choose_target_caps_the_architecture(capability, supported, want):
    assert _kernels.choose_target(capability, supported) == want


def test_choose_target_refuses_a_gpu_older_than_nvrtc():
    with pytest.raises(RuntimeError, match="supports sm_75 to sm_120, the GPU is sm_70"):
        _kernels.choose_target(70, [75, 90, 120])


def test_supported_archs_of_the_real_nvrtc():
    archs = _kernels.supported_archs(_kernels._find_libnvrtc())
    assert {80, 90} <= set(archs) and archs == sorted(archs)


def test_a_gpu_newer_than_nvrtc_gets_ptx(tmp_path, monkeypatch):
    """sm_100 with an NVRTC that lists up to sm_90 (e.g. 12.6): PTX for compute_90, which the
    driver compiles for the device, instead of NVRTC refusing --gpu-architecture=sm_100."""
    monkeypatch.setenv("IPMIX_DALI_CACHE", str(tmp_path))
    monkeypatch.setattr(_kernels, "supported_archs", lambda lib: [75, 80, 86, 89, 90])
    path = _kernels.compiled_kernel("smoke.cu", "sm_100")
    assert path.name.startswith("smoke.compute_90.") and path.suffix == ".ptx"
    assert ".target sm_90" in path.read_text()


def test_nvrtc_candidates_follow_the_driver_and_search_every_site_folder(tmp_path):
    """Two site folders, each with its own nvidia/ package (the first one's __init__.py would
    hide the second from find_spec("nvidia")): CUDA 13's NVRTC in one, CUDA 12's in the other.
    A CUDA 12 driver gets NVRTC 12 first and never 13; a CUDA 13 one gets 13, then 12."""
    site_a, site_b = tmp_path / "a", tmp_path / "b"
    (site_a / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    (site_a / "nvidia" / "__init__.py").write_text("")
    (site_b / "nvidia" / "cuda_nvrtc" / "lib").mkdir(parents=True)
    lib13 = site_a / "nvidia" / "cu13" / "lib" / "libnvrtc.so.13"
    lib12 = site_b / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"
    for f in (lib13, lib12, lib13.with_name("libnvrtc-builtins.so.13.0"),
              lib12.with_name("libnvrtc.alt.so.12")):
        f.write_bytes(b"")
    paths = [str(site_a), str(site_b)]
    want12 = _kernels.nvrtc_candidates(12, paths)
    assert want12[0] == str(lib12) and str(lib13) not in want12
    assert "libnvrtc.so.13" not in want12
    assert _kernels.nvrtc_candidates(13, paths)[:2] == [str(lib13), str(lib12)]
    assert _kernels.nvrtc_candidates(None, paths)[:2] == [str(lib13), str(lib12)]


@pytest.mark.parametrize("major", [12, 13])
def test_the_nvrtc_of_the_wanted_cuda_major_is_loaded(major):
    """This venv holds NVRTC 12 (nvidia-cuda-nvrtc-cu12) and 13 (torch's CUDA 13 wheels)."""
    if not any(_kernels._library_version(c) == major
               for c in _kernels.nvrtc_candidates(major) if "/" in c):
        pytest.skip(f"no NVRTC {major} wheel installed")
    lib = _kernels._find_libnvrtc(major)
    assert _kernels._nvrtc_version(lib).startswith(f"{major}.")


def test_kernel_cache_key_holds_the_driver_version(tmp_path, monkeypatch):
    monkeypatch.setenv("IPMIX_DALI_CACHE", str(tmp_path))
    a = _kernels.compiled_kernel("smoke.cu", "sm_90", driver_version=12040)
    b = _kernels.compiled_kernel("smoke.cu", "sm_90", driver_version=12080)
    assert a != b and a.name.startswith("smoke.sm_90.") and a.suffix == ".cubin"


def test_gpu_loader_takes_the_nvrtc_of_the_driver(tmp_path, monkeypatch):
    """get_function asks for NVRTC min(driver, CuPy runtime) = 12 here, and keys by driver."""
    monkeypatch.setenv("IPMIX_DALI_CACHE", str(tmp_path))
    asked = []
    real = _kernels.compiled_kernel
    monkeypatch.setattr(_kernels, "compiled_kernel",
                        lambda *a: asked.append(a[2:]) or real(*a))
    with cupy_standin.installed(mode="count"):
        import cupy

        monkeypatch.setattr(cupy.cuda.runtime, "driverGetVersion", lambda: 12080)
        monkeypatch.setattr(cupy.cuda.runtime, "runtimeGetVersion", lambda: 13000)
        monkeypatch.setattr(_kernels, "_FUNCTIONS", {})
        _kernels.get_function("smoke.cu", "smoke_mul")
    assert asked == [(12, 12080)]
