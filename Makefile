# Two entry points (see README): `make demo` enhances example photos with the built-in
# model, `make test` runs the whole test suite. Both create their own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rave-installed

.PHONY: demo test lint bench clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/make_demo_photos.py examples/photos
	$(BIN)/rave enhance examples/photos -o examples/enhanced
	$(BIN)/python scripts/before_after.py examples/photos examples/enhanced -o examples/before_after.png
	@echo "Enhanced photos: examples/enhanced/   Before/after: examples/before_after.png"

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py

clean-demo:
	rm -rf examples/photos examples/enhanced examples/before_after.png
