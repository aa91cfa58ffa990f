"""bench/gpu_pass.sh, prepared for a lent GPU machine that has torch, torchvision, CuPy, NumPy,
Pillow and pytest but not scikit-learn, SciPy, OpenCV, torchmetrics or TensorBoard: what the
pass runs must import without them, and the test photographs come from IPMIX_DALI_PHOTOS."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MISSING = ("sklearn", "scipy", "cv2", "torchmetrics", "tensorboard")

PROBE = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {MISSING!r}:
            raise ImportError(f"{{name}} is not on the GPU machine")
sys.meta_path.insert(0, Block())
import ipmix_dali.cli, ipmix_dali.bench.gpu, ipmix_dali.bench.input_pipeline, ipmix_dali.bench.train
import ipmix_dali.pipeline, ipmix_dali.loader, ipmix_dali.train.loop
import ipmix_dali.executors.cupy_exec, ipmix_dali.mixing.fractals_gpu
from ipmix_dali.tools.samples import sample_photos, write_jpeg_tree
from ipmix_dali.mixing import builtin_mixing_bank
print(sample_photos(2, 32, seed=1).sum(), builtin_mixing_bank(count=2, side=40).side)
"""


def test_pass_modules_import_without_the_missing_packages(tmp_path):
    import sklearn.datasets

    photos = Path(sklearn.datasets.__file__).parent / "images"
    env = dict(os.environ, IPMIX_DALI_PHOTOS=str(photos))
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ipmix_dali.tools.samples import sample_photos

    assert proc.stdout.split()[0] == str(sample_photos(2, 32, seed=1).sum())


def test_photos_folder_gives_the_same_pictures(monkeypatch):
    import sklearn.datasets

    from ipmix_dali.tools import samples

    want = samples.shipped_photographs()
    monkeypatch.setenv("IPMIX_DALI_PHOTOS",
                       str(Path(sklearn.datasets.__file__).parent / "images"))
    samples.shipped_photographs.cache_clear()
    try:
        got = samples.shipped_photographs()
    finally:
        samples.shipped_photographs.cache_clear()
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_pass_script_phases():
    script = (ROOT / "bench" / "gpu_pass.sh").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_pass.sh")]).returncode == 0
    # The header documents every device call; call 1 fits 200 s, so that one rerun of call 1
    # or call 5 still fits the 15 minutes.
    assert ('run(command="bash bench/gpu_pass.sh cupy", carry=[".devphotos", ".devwhl.sha256"],'
            '\n#           timeout_s=200)') in script
    assert 'run(command="bash bench/gpu_pass.sh dali", timeout_s=300)' in script
    cupy_phase = script[script.index("\ncupy)"):script.index("\ndali)")]
    limits = [int(m) for m in re.findall(r"^\s*step [\w-]+ (\d+) ", cupy_phase, re.M)]
    assert len(limits) == 2 and sum(limits) <= 180  # + install and nvidia-smi <= 200 s
    assert "lacks DALI" in script and "SciPy, OpenCV, TensorBoard" in script
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_pass.sh"), "nosuch"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, OUT="/tmp/gpu_pass_probe"))
    assert proc.returncode == 2 and "usage: bash bench/gpu_pass.sh prepare" in proc.stderr


def _pass(tmp_path, *args):
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_pass.sh"), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=dict(os.environ, OUT=str(tmp_path / "out")))


def test_lost_or_damaged_parts_name_the_call_to_redo(tmp_path):
    """Three parts as pack-dali.sh splits them; the manifest phase lists their sha256 and the
    calls; a part call checks its part on arrival; the dali phase refuses to unpack while a
    part is missing or damaged and prints exactly the call that brings it again."""
    (tmp_path / ".devwhl").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        (tmp_path / ".devwhl" / f"part-0{i}").write_bytes(rng.bytes(1000 + i))
    listed = _pass(tmp_path, "manifest")
    assert listed.returncode == 0, listed.stderr
    manifest = (tmp_path / ".devwhl.sha256").read_text().split()
    shas = dict(zip(manifest[1::2], manifest[0::2]))
    assert sorted(shas) == ["part-00", "part-01", "part-02"]
    import hashlib

    assert shas["part-01"] == hashlib.sha256(
        (tmp_path / ".devwhl" / "part-01").read_bytes()).hexdigest()
    redo = ('run(command="bash bench/gpu_pass.sh part part-01 {}", carry=[".devwhl/part-01"], '
            'timeout_s=60)').format(shas["part-01"])
    assert f"3. {redo}" in listed.stdout
    assert '5. run(command="bash bench/gpu_pass.sh dali", timeout_s=300)' in listed.stdout

    ok = _pass(tmp_path, "part", "part-01", shas["part-01"])
    assert ok.returncode == 0 and "part-01 ok" in ok.stdout
    bad = _pass(tmp_path, "part", "part-01", "0" * 64)
    assert bad.returncode == 1 and "part-01 did not arrive intact" in bad.stderr

    (tmp_path / ".devwhl" / "part-01").unlink()           # lost with an idle machine
    with open(tmp_path / ".devwhl" / "part-02", "ab") as f:  # cut or grown in transfer
        f.write(b"x")
    dali = _pass(tmp_path, "dali")
    assert dali.returncode == 1
    assert f"part-01 is missing or damaged on this machine: redo {redo}" in dali.stderr
    assert "part-02 is missing or damaged" in dali.stderr and "part-00" not in dali.stderr
    assert not (tmp_path / ".devsite").exists()

    (tmp_path / ".devwhl.sha256").unlink()  # a machine started again since call 1
    fresh = _pass(tmp_path, "dali")
    assert fresh.returncode == 1 and "redo call 1" in fresh.stderr
