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
