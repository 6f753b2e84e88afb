# Two entry points: `make run` (the main job) and `make test` (everything CI checks).
# Both create and reuse a virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: run test lint docs browser install-check demo-experiment demo-assets pretrained screenshots clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# The web app on http://localhost:$(PORT), with the embedded demo workspace loaded.
run: $(STAMP)
	$(PY) -m streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

# The synthetic demo experiment end to end on the command line (report in runs/demo).
demo-experiment: $(STAMP)
	$(PY) -m refiner demo-data --out runs/demo
	$(PY) -m refiner experiment runs/demo/demo.toml --out runs/demo/report.json

# Rebuild the app's demo (tile + pretrained coarse CNN and RNN in assets/demo): 6-35 min on 2 cores.
demo-assets: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) scripts/make_demo_assets.py

# Rebuild the shipped real-data models (assets/pretrained/coarse_1m, rnn_1m) from ../shared/data,
# seeded, with the split in experiments/pretrained/split.toml: about 4.4 h + 5-20 min on one core.
# The coarse run is resumable: stop it at any time and run `make pretrained` again to continue.
pretrained: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m refiner pretrain experiments/pretrained/coarse.toml
	OMP_NUM_THREADS=1 $(PY) -m refiner pretrain experiments/pretrained/rnn.toml

# README screenshots, taken from the real app in Chromium.
screenshots: $(STAMP) browser
	$(PY) scripts/screenshots.py

# Debian's Chromium for the browser tests (`playwright install` downloads a browser: not used).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The API reference: the public API (refiner.__all__, Google-style docstrings) as HTML in site/
# (git-ignored), with pdoc; part of `make test`, so a docstring that breaks the build fails CI.
docs: $(STAMP)
	rm -rf site
	$(PY) -m pdoc --docformat google --output-directory site refiner
	test -s site/refiner.html

# `pip install .` as a user gets it: the wheel (package, C kernel, assets) installed with its
# dependencies into a fresh venv in a temporary folder, then `refiner` and the library used from
# outside the tree (scripts/install_check.sh; about 2 min on 2 cores, most of it installing torch).
install-check: $(STAMP)
	PYTHON=$(PYTHON) bash scripts/install_check.sh $(PY)

test: $(STAMP) lint docs browser install-check
	$(PY) -m pytest -q

clean:
	rm -rf runs site .pytest_cache .ruff_cache .mypy_cache

# Benchmarks (slow; numbers go in docs/benchmarks.md). Not part of `test`.
.PHONY: bench
bench: $(STAMP)
	PYTHONPATH=. $(PY) benchmarks/rnn_vs_crf.py --classes 2 --json benchmarks/results/rnn_vs_crf_k2.json
	PYTHONPATH=. $(PY) benchmarks/rnn_vs_crf.py --classes 3 --json benchmarks/results/rnn_vs_crf_k3.json
	PYTHONPATH=. $(PY) benchmarks/rnn_profile.py --json benchmarks/results/rnn_profile.json
	PYTHONPATH=. $(PY) benchmarks/rnn_contention.py --classes 3 --hogs 0 1 2 --json benchmarks/results/rnn_contention_k3.json
	PYTHONPATH=. $(PY) benchmarks/finetune_time_to_quality.py --long-seconds 400 --defaults-seconds 90 --json benchmarks/results/finetune_cpu_quiet.json
	PYTHONPATH=. $(PY) benchmarks/large_scene.py --sizes 1000 5000 10000 20000 --json benchmarks/results/large_scene_quiet.json
	PYTHONPATH=. $(PY) benchmarks/large_scene.py --sizes 2000 10000 --pixel 0.5 --json benchmarks/results/large_scene_resampled.json
	PYTHONPATH=. $(PY) benchmarks/gpu_run.py  # measures only where CUDA is present
	PYTHONPATH=. $(PY) benchmarks/label_hints.py --json benchmarks/results/label_hints.json
