#!/usr/bin/env bash
# The GPU pass, sized to a lent device's budget: 15 minutes of device time per session, machine
# start, transfers and idle included, at most 10 minutes per command. Prepare everything here
# first; the machine is given back after 30 s idle, so calls 2-5 go back to back.
#
# Here, once (not on the device):
#   bash ../shared/device/pack-dali.sh six    # DALI 2.4 (cuda130) in 3 parts of 58 MiB: .devwhl/
#       (DALI's astunparse needs six, which the machine lacks; typing_extensions and packaging
#       come with its torch and pytest. Checked with Python 3.12 on the CPU: a DALI CPU pipeline
#       from these parts decodes JPEGs.)
#   mkdir -p .devphotos && cp .venv/lib/python3*/site-packages/sklearn/datasets/images/*.jpg \
#       .devphotos/                            # the two test photographs (no scikit-learn there)
#
# Then, with the device tool's `run` (files come back under $OUT; copy them to
# bench/results/gpu_<device>/ and quote them in the issue):
#   call 1 (no DALI: CuPy, torch and pytest are on the machine), timeout_s 300:
#       run(command="bash bench/gpu_pass.sh cupy", carry=[".devphotos"], timeout_s=300)
#   calls 2-4, one part each, back to back (each only moves its part), timeout_s 60:
#       run(command="ls -la .devwhl", carry=[".devwhl/part-00"], timeout_s=60)
#       run(command="ls -la .devwhl", carry=[".devwhl/part-01"], timeout_s=60)
#       run(command="ls -la .devwhl", carry=[".devwhl/part-02"], timeout_s=60)
#   call 5 (unpacks DALI, then the pipeline), timeout_s 300:
#       run(command="bash bench/gpu_pass.sh dali", timeout_s=300)
#   then give_back.
# A failing step does not stop the next one; every step appends its result to $OUT as it ends.
#
# cupy: gpu.txt (nvidia-smi, versions), pytest_gpu.log (executor, kernels, augment(), fractals,
#       stage on CuPy), executors_gpu.json (stage host/GPU ms and samples/s per method, executor
#       GB/s, fractals).
# dali: pytest_dali_gpu.log (the DALI GPU pipelines), bench_gpu.json (dali-gpu samples/s, none
#       and IPMix + JSD), train_gpu.json (ResNet-50 steps/s, IPMix + JSD vs synthetic),
#       corruptions_gpu.json (ms per image of the 19, only if time is left).
set -uo pipefail
phase=${1:-}
case "$phase" in
cupy|dali) ;;
*) echo "usage: bash bench/gpu_pass.sh cupy|dali (see the header for the device calls)" >&2
   exit 2 ;;
esac
OUT=${OUT:-/tmp/gpu_pass}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 IPMIX_DALI_PHOTOS="$PWD/.devphotos"
start=$SECONDS
step() {  # step NAME TIMEOUT CMD...: run, log, note the time and exit status in $OUT/steps.txt
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "$name rc=$rc $((SECONDS - t0)) s (at $((SECONDS - start)) s)" | tee -a "$OUT/steps.txt"
}

python3 -m pip install -q --no-deps --no-index --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
    || { echo "install failed"; tail -20 "$OUT/install.log"; }

case "$phase" in
cupy)
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv
    python3 -c "import cupy, torch, numpy; print('cupy', cupy.__version__, 'torch', \
torch.__version__, 'numpy', numpy.__version__, 'cc', cupy.cuda.Device().compute_capability)"
  } 2>&1 | tee "$OUT/gpu.txt"
  # 1. the GPU tests that need no DALI: kernels, executor, augment(), fractals, stage on CuPy.
  step pytest-cupy 150 python3 -m pytest -q -rfE -m gpu -p no:cacheprovider \
      tests/test_gpu_smoke.py tests/test_cupy_ops.py tests/test_cupy_exec.py tests/test_api.py \
      tests/test_fractal_twin.py > "$OUT/pytest_gpu.log" 2>&1
  tail -15 "$OUT/pytest_gpu.log"
  # 2. the stage as DALI calls it and the executor alone, batch 256 at 224 px, all methods.
  step bench-gpu 120 python3 -m ipmix_dali bench-gpu --repeats 10 \
      --out "$OUT/executors_gpu.json" 2>&1 | tail -22
  ;;
dali)
  if [ ! -d .devsite/nvidia/dali ]; then
    cat .devwhl/part-* | python3 -c "import lzma,sys,tarfile; \
tarfile.open(fileobj=lzma.open(sys.stdin.buffer),mode='r|').extractall('.devsite')" \
      || { echo "unpack failed"; exit 1; }
  fi
  export PYTHONPATH="$PWD/.devsite:${PYTHONPATH:-}"
  LD_LIBRARY_PATH="$(find "$PWD/.devsite/nvidia" -maxdepth 3 -type d -name lib | paste -sd:):${LD_LIBRARY_PATH:-}"
  export LD_LIBRARY_PATH
  python3 -c "import nvidia.dali as d; print('dali', d.__version__)" 2>&1 | tail -3 \
      | tee -a "$OUT/gpu.txt"
  # 3. the real DALI GPU pipelines: mixed decode + the CuPy stage, resume, float16/NHWC, val.
  step pytest-dali 100 python3 -m pytest -q -rfE -m gpu -p no:cacheprovider \
      tests/test_pipeline_gpu.py tests/test_pipeline.py > "$OUT/pytest_dali_gpu.log" 2>&1
  tail -12 "$OUT/pytest_dali_gpu.log"
  # 4. the whole input pipeline on the GPU: none and IPMix + JSD, batch 256.
  step bench-dali 60 python3 -m ipmix_dali bench --backends dali-gpu --methods none,ipmix \
      --jsd --batch-size 256 --batches 6 --images 1536 --out "$OUT/bench_gpu.json" 2>&1 | tail -6
  # 5. training: ResNet-50, AMP bf16, channels_last, batch 256, IPMix + JSD vs synthetic.
  step bench-train 110 python3 -m ipmix_dali bench-train --device gpu --images 3840 \
      --out "$OUT/train_gpu.json" 2>&1 | tail -6
  # 6. corruptions, with what is left of the call (they need SciPy: pack it with
  #    `bash ../shared/device/pack-dali.sh scipy`, one more part).
  if [ $((SECONDS - start)) -lt 230 ] && python3 -c "import scipy" 2>/dev/null; then
    step corruptions 60 python3 - "$OUT/corruptions_gpu.json" <<'EOF' 2>&1 | tail -22
import json, sys
from ipmix_dali.corruptions.batched import gpu_speed
from ipmix_dali.tools.samples import sample_photos
speed = gpu_speed(sample_photos(64, 224, seed=1, min_scale=0.3))
json.dump(speed, open(sys.argv[1], "w"), indent=1)
for k, v in speed.items():
    print(f"{k:20s} {v:8.3f} ms/img")
EOF
  fi
  ;;
esac
ls -la "$OUT"
