# Two commands do all set-up on a fresh machine:
#   make demo   export the full (8192-patch) model with seeded random weights, then check parity with
#               ONNX Runtime (CPU) on mountain and flat terrain, graded against float64 PyTorch
#   make test   the whole test suite (what CI runs), ~10 min on 2 cores
# and, for the inner loop while editing:
#   make check  pure logic and the console scripts' paths called in-process (main(argv)), ~1 min
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= cpu,export,test
# Real .pyi of TensorRT 10.13's Python API for mypy (tests/test_typecheck.py); --no-deps because it names
# tensorrt as a dependency. Installed into a stub path, not the venv: there it would make `import tensorrt`
# succeed where TensorRT is absent, and Polygraphy (which then takes TensorRT for present) fails.
TENSORRT_STUBS := tensorrt-stubs==10.13.0.35.1
STUB_PATH := .typing-stubs

# The check tier: manifests, artifacts, layers, the public API, TensorRT rules and build options, CLI
# error paths, runtime, parity logic on the small preset, checkpoints, the model, forecast I/O,
# kernels (Triton's interpreter) and the GPU check's rows. Not here: exports of many variants, fp16
# graphs, ONNX memory, benchmarks in subprocesses, Triton server, parity suites, full size.
CHECK_TESTS := tests/test_manifest.py tests/test_artifacts.py tests/test_layers.py tests/test_package.py \
	tests/test_trt_runtime.py tests/test_tensorrt_build.py tests/test_build_engine_cli.py tests/test_triton_repo.py \
	tests/test_runtime.py tests/test_runner_contract.py tests/test_ort_tensorrt_ep.py tests/test_parity.py \
	tests/test_checkpoint.py tests/test_model.py tests/test_forecast_cli.py tests/test_forecast_io.py \
	tests/test_kernels.py tests/test_elevation_op.py tests/test_gpu_check.py

.PHONY: demo check test bench clean

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

check: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow" $(CHECK_TESTS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf build .pytest_cache $(STUB_PATH)
