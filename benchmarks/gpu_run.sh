#!/usr/bin/env bash
# One device call: steered batch-64 throughput of the Llama-8B and embedded shapes (random
# weights, bf16) against Hugging Face eager generate, for each decode mode; results to $OUT.
# Prepare with benchmarks/gpu_kit.sh, then run with `.devkit` carried.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .devkit/wheels/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" STEER_CACHE="$PWD/.devkit/cache" PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
for shape in ${SHAPES:-llama8b embedded}; do
  timeout "${PER_SHAPE_S:-270}" python3 benchmarks/gpu_bench.py --shape "$shape" \
    --decode dynamic,static,compiled 2>&1 | grep -v Warning | tee "$OUT/gpu_$shape.log"
  cp "benchmarks/results/gpu_$shape.json" "$OUT/" 2>/dev/null || true
done
