#!/usr/bin/env bash
# Prepare what benchmarks/gpu_run.sh needs on a bare GPU machine that has PyTorch and
# transformers but not TransformerLens: wheels of the missing packages, and the embedded
# tokenizer (the 98 MB GGUF is too large to carry; gpu_bench uses random weights anyway).
# Writes .devkit/ (git-ignored). Run here, then carry .devkit to the device machine.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.devkit/' .git/info/exclude 2>/dev/null || echo '/.devkit/' >> .git/info/exclude
mkdir -p .devkit/wheels
PY=.venv/bin/python
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .devkit/wheels transformer-lens==4.3.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
# the tokenizer, read once from the embedded GGUF here
STEER_CACHE="$PWD/.devkit/cache" $PY -c "from steer.lm.load import embedded_tokenizer as t; t()"
du -sh .devkit
