"""bench/gpu_pass.sh, prepared for a lent GPU machine that has torch, torchvision, CuPy, NumPy,
Pillow and pytest but not scikit-learn, SciPy, OpenCV, torchmetrics or TensorBoard: what the
pass runs must import without them, and the test photographs come from IPMIX_DALI_PHOTOS."""
import os
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
import ipmix_dali.cli, ipmix_dali.bench.gpu, ipmix_dali.bench.pipeline, ipmix_dali.bench.train
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
    # The header documents every device call; the timeouts fit 5 minutes per heavy call.
    assert 'run(command="bash bench/gpu_pass.sh cupy", carry=[".devphotos"], timeout_s=300)' \
        in script
    assert 'run(command="bash bench/gpu_pass.sh dali", timeout_s=300)' in script
    for part in ("00", "01", "02"):
        assert f'carry=[".devwhl/part-{part}"]' in script
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_pass.sh"), "nosuch"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, OUT="/tmp/gpu_pass_probe"))
    assert proc.returncode == 2 and "usage: bash bench/gpu_pass.sh cupy|dali" in proc.stderr
