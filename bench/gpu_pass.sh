#!/usr/bin/env bash
# The GPU pass, sized to a lent device's budget: 15 minutes of device time per session, machine
# start, transfers and idle included, at most 10 minutes per command. Prepare everything here
# first; the machine is given back after 30 s idle, so calls 2-5 go back to back.
#
# What the machine has (the device tool's KINDS.md): Python 3.12 with torch (cu130), torchvision,
# cupy-cuda13x, numpy, pillow, pytest, scikit-learn, SciPy, OpenCV, TensorBoard, torchmetrics,
# matplotlib, tqdm and six. It lacks DALI (and downloads nothing): that is all the parts carry.
#
# Here, once (not on the device):
#   bash bench/gpu_pass.sh prepare
#       packs DALI 2.4 (cuda130) with ../shared/device/pack-dali.sh into 3 parts of 58 MiB
#       (.devwhl/part-NN), copies the two test photographs to .devphotos/, and PRINTS THE FIVE
#       run() CALLS below with each part's sha256 filled in.
#
# Then, with the device tool's `run` (files come back under $OUT; copy them to
# bench/results/gpu_<device>/ and quote them in the issue):
#   call 1 (no DALI), at most 200 s; it also brings the parts' sha256 list (.devwhl.sha256):
#       run(command="bash bench/gpu_pass.sh cupy", carry=[".devphotos", ".devwhl.sha256"],
#           timeout_s=200)
#   calls 2-4, one part each, back to back; each checks its part's sha256 as soon as it lands:
#       run(command="bash bench/gpu_pass.sh part part-00 SHA256", carry=[".devwhl/part-00"],
#           timeout_s=60)
#   call 5 (checks every part against the list, unpacks DALI, then the pipeline), timeout_s 300:
#       run(command="bash bench/gpu_pass.sh dali", timeout_s=300)
#   then give_back.
# A lost or damaged part (the machine went back between calls, or a transfer was cut) is named
# with the exact call to redo, before anything is unpacked. If the machine itself was lost, all
# parts are gone: redo calls 2-5. Budget: call 1 <= 200 s + 3 x ~20 s + call 5 <= 300 s + starts
# leaves one rerun of call 1 or call 5 inside the 15 minutes.
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
prepare|manifest|part|cupy|dali) ;;
*) echo "usage: bash bench/gpu_pass.sh prepare|manifest|cupy|part NAME SHA256|dali (see the header)" >&2
   exit 2 ;;
esac

MANIFEST=.devwhl.sha256  # "sha256  part-NN" per part; written by prepare, carried by call 1
redo_part() {  # the run() call that brings part $1 (sha256 $2) again
  echo "run(command=\"bash bench/gpu_pass.sh part $1 $2\", carry=[\".devwhl/$1\"], timeout_s=60)"
}

if [ "$phase" = prepare ]; then
  set -e
  bash ../shared/device/pack-dali.sh
  photos=$(python3 -c "import sklearn, os; print(os.path.join(os.path.dirname(sklearn.__file__), 'datasets', 'images'))")
  mkdir -p .devphotos && cp "$photos"/*.jpg .devphotos/
  for ignored in /.devphotos/ "/$MANIFEST"; do
    grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
  done
  phase=manifest
fi

if [ "$phase" = manifest ]; then  # the parts' list and the calls, from the parts in .devwhl/
  set -e
  (cd .devwhl && sha256sum part-[0-9][0-9]) | sed 's/ \*/  /' > "$MANIFEST"
  echo "the device calls, in order:"
  echo "  1. run(command=\"bash bench/gpu_pass.sh cupy\", carry=[\".devphotos\", \"$MANIFEST\"], timeout_s=200)"
  n=1
  while read -r sha name; do
    n=$((n + 1))
    echo "  $n. $(redo_part "$name" "$sha")"
  done < "$MANIFEST"
  echo "  $((n + 1)). run(command=\"bash bench/gpu_pass.sh dali\", timeout_s=300)"
  exit 0
fi

if [ "$phase" = part ]; then  # runs on the device right after a part lands
  name=${2:?part name}; want=${3:?sha256}
  got=$(sha256sum ".devwhl/$name" 2>/dev/null | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "$name did not arrive intact (sha256 ${got:-missing}, want $want): redo this call" >&2
    exit 1
  fi
  echo "$name ok ($(du -m ".devwhl/$name" | cut -f1) MiB)"
  exit 0
fi

check_parts() {  # every part of the list on this machine, intact; else the calls to redo
  if [ ! -s "$MANIFEST" ]; then
    echo "$MANIFEST is not on this machine (it was started again since call 1): redo call 1" \
         "with carry=[\".devphotos\", \"$MANIFEST\"], then calls 2-4" >&2
    return 1
  fi
  local bad=0 sha name
  while read -r sha name; do
    if [ "$(sha256sum ".devwhl/$name" 2>/dev/null | cut -d' ' -f1)" != "$sha" ]; then
      echo "$name is missing or damaged on this machine: redo $(redo_part "$name" "$sha")" >&2
      bad=1
    fi
  done < "$MANIFEST"
  [ "$bad" = 0 ] || echo "then rerun: bash bench/gpu_pass.sh dali" >&2
  return "$bad"
}
if [ "$phase" = dali ] && [ ! -d .devsite/nvidia/dali ]; then
  check_parts || exit 1
fi

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
  step pytest-cupy 100 python3 -m pytest -q -rfE -m gpu -p no:cacheprovider \
      tests/test_gpu_smoke.py tests/test_cupy_ops.py tests/test_cupy_exec.py tests/test_api.py \
      tests/test_fractal_twin.py > "$OUT/pytest_gpu.log" 2>&1
  tail -15 "$OUT/pytest_gpu.log"
  # 2. the stage as DALI calls it and the executor alone, batch 256 at 224 px, all methods.
  step bench-gpu 75 python3 -m ipmix_dali bench-gpu --repeats 5 \
      --out "$OUT/executors_gpu.json" 2>&1 | tail -22
  ;;
dali)
  if [ ! -d .devsite/nvidia/dali ]; then
    cut -d' ' -f3 "$MANIFEST" | sed 's#^#.devwhl/#' | xargs cat | python3 -c "import lzma,sys,tarfile; \
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
  # 6. corruptions, with what is left of the call (the machine has the SciPy they use).
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
