# Two entry points (see README): `make demo` (main job end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

# torch is pinned to the CPU build first: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[train,export,classify,distributed,serve,dev]'
	touch $@

setup: $(VENV)/.installed

# VIDEOS=DIR adds your own folder of videos (default: ../shared/videos when present)
VIDEOS ?=
demo: setup
	$(BIN)/python scripts/quickstart.py $(if $(VIDEOS),--videos "$(VIDEOS)")

# what CI runs (.ci/run): the static checks first (seconds), then the suite (pytest -m "not slow" for the fast subset)
test: lint
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check vcl_infer training export tests benchmarks scripts
	$(BIN)/mypy vcl_infer training export

clean:
	rm -rf $(VENV) out
