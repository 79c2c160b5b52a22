# The two Quick start commands: `make demo` and `make test`. Both set everything up first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system demo test lint bench pi-check clean

system:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[host,dev]'
	touch $(STAMP)

setup: system $(STAMP)

demo: setup
	$(BIN)/edgesdk demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/run.py

# The device side in an emulated arm64 Debian userland (slow: ~40 min the first time, then ~4 min)
pi-check: setup
	bash scripts/pi-check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
