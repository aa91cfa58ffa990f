#!/usr/bin/env bash
# One prepared GPU pass for a session that is lent the device machine (15 minutes of device
# time in all, so everything runs in one command, results under $OUT).
#
# Here, first:  bash ../shared/device/pack-dali.sh scikit-learn joblib threadpoolctl scipy \
#                    torchmetrics lightning-utilities opencv-python-headless tensorboard
# then send the parts with back-to-back `run` calls (one part in `carry` each), unpack with the
# printed command, and run:   bash bench/gpu_pass.sh        (run's timeout_s: 540)
#
# Writes: gpu.txt, pytest_gpu.log, executors_gpu.json, bench_gpu.json, train_gpu.json,
# corruptions_gpu.json (at most 8 files come back). Copy them to bench/results/ here and quote
# them in the issue notes. Not yet run on a GPU: fix what it finds first.
set -uo pipefail
export PYTHONPATH="$PWD/.devsite:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_pass}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-index --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
    || { echo "install failed"; tail -20 "$OUT/install.log"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import cupy, nvidia.dali, torch; print('cupy', cupy.__version__, 'dali', \
nvidia.dali.__version__, 'torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

# 1. every GPU test (~1-2 min): the CuPy executor and kernels against the NumPy twins, the GPU
#    pipeline stage, augment() on CUDA tensors, fractals, corruptions.
#    Two runs, so a slow first compile of cupyx's filters cannot take the executor results with it.
timeout 180 python3 -m pytest -q -rfE -m gpu -p no:cacheprovider --ignore tests/test_corruptions.py \
    2>&1 | tee "$OUT/pytest_gpu.log" | tail -25
timeout 120 python3 -m pytest -q -rfE -m gpu -p no:cacheprovider tests/test_corruptions.py \
    2>&1 | tee -a "$OUT/pytest_gpu.log" | tail -25

# 2. the CuPy executor alone: samples/s and bandwidth per method, batch 256 at 224 px.
timeout 90 python3 -m ipmix_dali bench-gpu --out "$OUT/executors_gpu.json" 2>&1 | tail -12

# 3. the whole input pipeline: DALI on the GPU against the reference on all 16 cores.
timeout 150 python3 -m ipmix_dali bench --backends reference,dali-gpu --methods none,ipmix \
    --jsd --batch-size 256 --batches 8 --images 2048 --out "$OUT/bench_gpu.json" 2>&1 | tail -8

# 4. training throughput: ResNet-50, AMP bf16, channels_last, batch 256, IPMix + JSD vs synthetic.
timeout 150 python3 -m ipmix_dali bench-train --device gpu --images 5120 \
    --out "$OUT/train_gpu.json" 2>&1 | tail -8

# 5. corruptions: ms per image of all 19 on the GPU batch path (host parts included), batch 64.
timeout 90 python3 - "$OUT/corruptions_gpu.json" <<'EOF' 2>&1 | tail -25
import json, sys
from ipmix_dali.corruptions.batched import gpu_speed
from ipmix_dali.samples import sample_photos
speed = gpu_speed(sample_photos(64, 224, seed=1, min_scale=0.3))
json.dump(speed, open(sys.argv[1], "w"), indent=1)
for k, v in speed.items():
    print(f"{k:20s} {v:8.3f} ms/img")
EOF
ls -la "$OUT"
