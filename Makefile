# Two entry points (see README): `make demo` enhances example photos with the built-in
# model, `make test` runs the whole test suite. Both create their own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rave-installed

.PHONY: demo test test-fast lint bench clean-demo

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

# The whole suite, then the network's tests once more through an AVX2 build of the Winograd
# kernel (on an AVX-512 machine the first run used the AVX-512 build): both paths are
# checked whichever CPU kind CI lands on.
AVX2_FLAGS := -mavx2 -mfma -mno-avx512f
# One pytest worker per core of the 2-core machines the suite is sized for (tests/conftest.py
# gives each worker one thread); `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/pyright --pythonpath $(BIN)/python src
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)
	@if [ "$$(uname -m)" = x86_64 ]; then \
		echo "network tests through an AVX2 build of the Winograd kernel:"; \
		RAVE_KERNEL_FLAGS="$(AVX2_FLAGS)" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" \
			tests/test_network.py tests/test_inference.py tests/test_default_model.py; \
	fi

# The development lane: everything but the slow end-to-end tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py

clean-demo:
	rm -rf examples/photos examples/enhanced examples/before_after.png
