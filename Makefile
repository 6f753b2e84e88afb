# Two entry points: `make run` (the main job) and `make test` (everything CI checks).
# Both create and reuse a virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint demo-experiment clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

run: $(STAMP) demo-experiment

demo-experiment: $(STAMP)
	$(PY) -m refiner demo-data --out runs/demo
	$(PY) -m refiner experiment runs/demo/demo.toml --out runs/demo/report.json

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) lint
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache .ruff_cache

# Benchmarks (slow; numbers go in docs/benchmarks.md). Not part of `test`.
.PHONY: bench
bench: $(STAMP)
	PYTHONPATH=. $(PY) benchmarks/rnn_vs_crf.py --json benchmarks/results/rnn_vs_crf.json
	PYTHONPATH=. $(PY) benchmarks/finetune_time_to_quality.py --json benchmarks/results/finetune_cpu.json
	PYTHONPATH=. $(PY) benchmarks/large_scene.py --sizes 1000 5000 10000 20000 --json benchmarks/results/large_scene.json
	PYTHONPATH=. $(PY) benchmarks/gpu_throughput.py --json benchmarks/results/gpu.json
