# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kintsugi-installed
MODEL  := $(or $(KINTSUGI_DATA_DIR),data)/models/tiny-wan-random/kintsugi_manifest.json

export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: run test lint model bench clean

run: $(MODEL)  ## start the app on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT to change)
	$(PY) app.py

test: lint $(MODEL)  ## linters, then the whole test suite
	$(PY) -m pytest

lint: $(STAMP)  ## ruff (lint and format check) and mypy on recovery/ and components/
	$(PY) -m ruff check recovery components app.py bench tests
	$(PY) -m ruff format --check recovery components app.py bench tests
	$(PY) -m mypy

model: $(MODEL)  ## build the embedded tiny model if it is missing

bench: $(MODEL)  ## benchmarks; they print figures (see docs/benchmarks.md)
	$(PY) bench/bench_worker_overhead.py
	$(PY) bench/bench_cancel.py

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build. Then the package with its dev extras.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

$(MODEL): $(STAMP) components/generation/embedded_model.py
	$(PY) -m components.generation.embedded_model

clean:  ## remove the venv and the data folder (built model, videos, metrics)
	rm -rf $(VENV) data
