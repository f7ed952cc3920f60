# Two commands do all set-up on a fresh machine:
#   make demo   export the full (8192-patch) model with seeded random weights, then check parity with
#               ONNX Runtime (CPU) on mountain and flat terrain, graded against float64 PyTorch
#   make test   the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= cpu,export,test
# Real .pyi of TensorRT 10.13's Python API for mypy (tests/test_typecheck.py); --no-deps because it names
# tensorrt as a dependency. Installed into a stub path, not the venv: there it would make `import tensorrt`
# succeed where TensorRT is absent, and Polygraphy (which then takes TensorRT for present) fails.
TENSORRT_STUBS := tensorrt-stubs==10.13.0.35.1
STUB_PATH := .typing-stubs

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip uninstall -q -y tensorrt-stubs  # from a venv an older Makefile made; no-op otherwise
	rm -rf $(STUB_PATH) && $(BIN)/python -m pip install -q --no-deps --target $(STUB_PATH) $(TENSORRT_STUBS)
	touch $@

demo: $(VENV)/.installed
	$(BIN)/export-onnx --preset full --seed 0 -o build/climax_full.onnx
	$(BIN)/check-parity build/climax_full.onnx --json build/parity_full.json

test: $(VENV)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf build .pytest_cache $(STUB_PATH)
