"""One contract, every runner: ONNX Runtime, OpenVINO, the PyTorch reference and TensorRT behave the same at the boundary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from climax_deploy.errors import BadInputError
from climax_deploy.manifest import BatchSpec, read_onnx_manifest
from climax_deploy.model import ClimaX
from climax_deploy.runner import ModelSpec, Runner

RUNNERS = [
    "onnxruntime",
    "openvino",
    "torch",
    pytest.param("tensorrt", marks=[pytest.mark.gpu, pytest.mark.tensorrt]),
]


@pytest.fixture(scope="module")
def small_engine(small_model: ClimaX, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp16 TensorRT engine of the small preset (only where TensorRT and a GPU exist)."""
    from climax_deploy.export import ExportOptions, Provenance, export_onnx
    from climax_deploy.export.tensorrt_build import build_engine
    from climax_deploy.manifest import BuildOptions

    folder = tmp_path_factory.mktemp("engine")
    export_onnx(small_model, folder / "small16.onnx", ExportOptions(precision="fp16"), Provenance(preset="small", seed=0))
    build_engine(folder / "small16.onnx", folder / "small16.engine", BuildOptions(batch=BatchSpec(1, 2, 4)))
    return folder / "small16.engine"


@pytest.fixture(params=RUNNERS)
def runner(request: pytest.FixtureRequest, small_onnx: Path, small_model: ClimaX) -> Iterator[Runner]:
    from climax_deploy.runtime import load

    if request.param == "onnxruntime":
        made: Runner = load(small_onnx, providers="cpu")
    elif request.param == "openvino":
        made = load(small_onnx, backend="openvino")  # IR cached under conftest's CLIMAX_DEPLOY_CACHE
    elif request.param == "torch":
        from climax_deploy.model.runner import TorchRunner

        made = TorchRunner(small_model, attention="fused", manifest=read_onnx_manifest(small_onnx))
    else:
        made = load(request.getfixturevalue("small_engine"))
    with made:
        yield made


def test_predict_shape_and_type(runner: Runner, small_inputs: tuple[np.ndarray, np.ndarray]) -> None:
    x, lt = small_inputs
    y = runner.predict(x, lt)
    assert y.shape == (2, len(runner.spec.output_variables), *runner.spec.grid)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    assert runner.describe()["backend"] == runner.backend
    assert runner.describe()["precision"] == runner.spec.precision


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda x, lt: (x[:, :14], lt), r"14 variables on axis 1, expected 15"),
        (lambda x, lt: (x[..., :32], lt), r"32 x 32 grid, the model expects 32 x 64"),
        (lambda x, lt: (x, lt[:1]), r"shape \(2,\) to match the batch"),
        (lambda x, lt: (x.astype(np.float64), lt), r"float32, got float64"),
    ],
)
def test_bad_input_is_refused_the_same_way(
    runner: Runner, small_inputs: tuple[np.ndarray, np.ndarray], mutate: Callable, message: str
) -> None:
    x, lt = small_inputs
    with pytest.raises(BadInputError, match=message):
        runner.predict(*mutate(x, lt))
    with pytest.raises(BadInputError, match=message):
        runner.predict_batched(*mutate(x, lt))


def test_predict_batched_equals_one_by_one(runner: Runner, small_inputs: tuple[np.ndarray, np.ndarray]) -> None:
    x, lt = small_inputs
    x5, lt5 = np.concatenate([x, x, x[:1]]), np.array([6, 12, 24, 48, 96], dtype=np.float32)
    done: list[int] = []
    y = runner.predict_batched(x5, lt5, max_batch=2, on_batch=lambda n, total: done.append(n))
    assert done == [2, 4, 5]
    one_by_one = np.concatenate([runner.predict(x5[i : i + 1], lt5[i : i + 1]) for i in range(5)])
    tol = 1e-5 if runner.spec.precision == "fp32" else 2e-3  # batch size changes only GEMM blocking
    np.testing.assert_allclose(y, one_by_one, atol=tol, rtol=0)


def test_close_releases_and_refuses(runner: Runner, small_inputs: tuple[np.ndarray, np.ndarray]) -> None:
    x, lt = small_inputs
    runner.close()
    assert runner.closed
    runner.close()
    with pytest.raises(BadInputError, match="closed"):
        runner.predict(x, lt)


def test_fixed_batch_artifact_is_padded_and_split(
    small_model: ClimaX, small_onnx: Path, small_inputs: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """A batch-2 export takes exactly 2 samples; predict_batched pads 3 samples to 2 + 2 and drops the pad."""
    from climax_deploy.export import ExportOptions, Provenance, export_onnx
    from climax_deploy.runtime import load

    fixed = tmp_path / "fixed2.onnx"
    export_onnx(small_model, fixed, ExportOptions(batch=BatchSpec.fixed(2)), Provenance(preset="small", seed=0))
    x, lt = small_inputs
    x3, lt3 = np.concatenate([x, x[:1]]), np.array([24, 48, 72], dtype=np.float32)
    with load(fixed, providers="cpu") as runner, load(small_onnx, providers="cpu") as dynamic:
        assert runner.spec.batch == BatchSpec.fixed(2)
        with pytest.raises(BadInputError, match="exported for batch 2, got batch 3"):
            runner.predict(x3, lt3)
        np.testing.assert_allclose(runner.predict_batched(x3, lt3), dynamic.predict(x3, lt3), atol=1e-5, rtol=0)


class _Echo(Runner):
    """A numpy runner that records the batches it is given (tests the base class's batching alone)."""

    backend = "echo"

    def __init__(self, batch: BatchSpec) -> None:
        super().__init__(ModelSpec(("a", "b"), ("a",), (2, 2), batch))
        self.calls: list[int] = []

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        self.calls.append(x.shape[0])
        return x[:, :1] + lead_times[:, None, None, None]


@pytest.mark.parametrize(
    ("batch", "n", "max_batch", "calls"),
    [
        (BatchSpec.dynamic(), 5, None, [5]),
        (BatchSpec.dynamic(), 5, 2, [2, 2, 1]),
        (BatchSpec(1, 2, 4), 9, None, [4, 4, 1]),
        (BatchSpec(1, 2, 4), 9, 8, [4, 4, 1]),
        (BatchSpec(2, 2, 4), 5, None, [4, 2]),  # the last single sample is padded to the minimum 2
        (BatchSpec.fixed(3), 4, 1, [3, 3]),
    ],
)
def test_batching_rules(batch: BatchSpec, n: int, max_batch: int | None, calls: list[int]) -> None:
    runner = _Echo(batch)
    x = np.arange(n * 8, dtype=np.float32).reshape(n, 2, 2, 2)
    lead = np.arange(n, dtype=np.float32)
    y = runner.predict_batched(x, lead, max_batch=max_batch)
    assert runner.calls == calls
    np.testing.assert_array_equal(y, x[:, :1] + lead[:, None, None, None])


def test_dynamic_batch_is_split_within_the_memory_budget(
    small_onnx: Path, small_inputs: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dynamic-batch model no longer runs any batch in one go: chunks fit the budget (issue 18)."""
    from climax_deploy import runner as runner_module
    from climax_deploy.runtime import load

    x, lt = small_inputs
    x7, lt7 = np.concatenate([x, x, x, x[:1]]), np.arange(7, dtype=np.float32) * 12
    with load(small_onnx, providers="cpu", threads=1) as dynamic:
        per_sample = runner_module.activation_bytes_per_sample(dynamic.manifest)
        assert 8_000_000 < per_sample < 20_000_000  # >= the 8.1 MB measured per small-preset sample
        done: list[int] = []
        y = dynamic.predict_batched(x7, lt7, memory_budget=3 * per_sample, on_batch=lambda d, t: done.append(d))
        assert done == [3, 6, 7]
        np.testing.assert_allclose(y, dynamic.predict(x7, lt7), atol=1e-5, rtol=0)
        monkeypatch.setattr(runner_module, "DEFAULT_MEMORY_BUDGET_BYTES", 2 * per_sample)
        done.clear()
        dynamic.predict_batched(x7, lt7, on_batch=lambda d, t: done.append(d))
        assert done == [2, 4, 6, 7]
        assert dynamic.budget_batch() == 2 and dynamic.budget_batch(10**12) > 1000
        with pytest.raises(BadInputError, match="memory budget must be a positive"):
            dynamic.predict_batched(x7, lt7, memory_budget=0)
