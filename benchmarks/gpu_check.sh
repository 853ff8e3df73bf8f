#!/usr/bin/env bash
# The checks that need a GPU, as one script for a machine that has one (uld's own have none).
# It writes everything under ${OUT:-gpu_check}/ and records the card's name; nothing here has
# been run on a GPU yet, so no GPU figure in the repository comes from it.
#
#   bash benchmarks/gpu_check.sh            # ~10 minutes on one H100 with the embedded model
#
# 1. the tests that touch CUDA paths (precision, device maps, memory, processes);
# 2. ULD / target decoding on the embedded SmolLM2 (benchmarks/uld_inference.py: batch 1 and 8);
# 3. the train-step ratio ULD / NPO+KL (benchmarks/train_cost.py) on the embedded model;
# 4. the demo's ULD step in bf16 (uld unlearn --bf16, a few steps) with its printed memory and the
#    peak GPU memory torch saw;
# 5. two processes on two GPUs, if there are two: accelerate launch --multi_gpu of the same run.
set -euo pipefail
export OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
ULD="$PY -m uld"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())" | tee "$OUT/torch.txt"

# 1. tests (the CPU suite's multi-process test runs on gloo whatever the card)
$PY -m pytest -q tests/test_scale.py tests/test_uld.py 2>&1 | tail -5 | tee "$OUT/tests.txt"

# 2. decoding: ULD against its target, random adapter of the default shape
$PY benchmarks/uld_inference.py --target default --uld none --out "$OUT/uld_inference.json" \
    | tee "$OUT/uld_inference.txt"

# 3. the train-step ratio on the embedded model as the target (no fine-tuned target needed)
$PY benchmarks/train_cost.py --target default --steps 5 --rounds 2 --out "$OUT/train_cost.json" \
    | tee "$OUT/train_cost.txt"

# 4. ULD's training step in bf16, with peak GPU memory
$PY - <<'PYEOF' 2>&1 | tee "$OUT/uld_bf16.txt"
import os, time, torch
from uld.cli import main
torch.cuda.reset_peak_memory_stats()
start = time.time()
status = main(["unlearn", "--method", "uld", "--model", "default", "--bf16", "--max-steps", "20",
               "--general", "", "--alpha", "0.75", "--no-check", "--overwrite",
               "--out", os.environ.get("OUT", "gpu_check") + "/uld-bf16"])
print(f"status {status}, {time.time() - start:.1f} s for 20 steps, peak GPU memory "
      f"{torch.cuda.max_memory_allocated() / 1e9:.2f} GB on {torch.cuda.get_device_name()}")
PYEOF

# 5. two GPUs: the same run on two processes (global batch 8 = 2 x 4)
if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  $PY -m accelerate.commands.launch --multi_gpu --num_processes 2 -m uld unlearn --method uld \
      --model default --max-steps 20 --general "" --alpha 0.75 --no-check --overwrite \
      --out "$OUT/uld-2gpu" 2>&1 | tail -20 | tee "$OUT/uld_2gpu.txt"
fi
echo "results in $OUT/"
