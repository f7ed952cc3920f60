"""TensorRT's rules for running and building engines, encoded without TensorRT (sources in docs/tensorrt.md).

- Which runtime runs a plan: version-compatible plans carrying their lean runtime run on
  tensorrt_dispatch or the full tensorrt (host code allowed); tensorrt_lean runs plans of its own
  version only; across majors only 8 -> 9/10, 9 -> 10, 10 -> 11.
- Per-thread execution contexts are freed once their thread has ended.
- The ONNX parser's default flags survive the plugin's flag (Polygraphy replaces parser.flags).
- native attention in fp16 graphs runs TensorRT's IAttention on float32 operands.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from climax_deploy.errors import BadInputError, MissingBackendError, ModelFileError
from climax_deploy.export.attention_modes import ATTENTION_OPSET, attention23_function
from climax_deploy.export.tensorrt_build import (
    PARSER_DEFAULT_FLAGS,
    engine_manifest,
    engine_versions,
    parser_flag_names,
)
from climax_deploy.export.tensorrt_profile import plan_build
from climax_deploy.manifest import BatchSpec, BuildOptions, EngineManifest, GpuRecord, read_onnx_manifest
from climax_deploy.runner import ModelSpec, Runner
from climax_deploy.runtime.tensorrt_compat import check_engine_compatibility, runtime_candidates, select_runtime
from climax_deploy.runtime.tensorrt_contexts import Bounded, InFlight, PerThread
from climax_deploy.runtime.tensorrt_runner import TensorRTOptions, TensorRTRunner
from climax_deploy.tensorrt_version import TensorRTVersion

GPU = GpuRecord("NVIDIA H100 80GB HBM3", "9.0", 80 << 30)
V = TensorRTVersion.parse


@pytest.fixture(scope="module")
def base_manifest(small_onnx: Path) -> EngineManifest:
    source = read_onnx_manifest(small_onnx)
    options = BuildOptions()
    return engine_manifest(source, source.batch, options, plan_build("fp32", options, V("10.14.1")), V("10.14.1"), GPU, 1.0)


def _engine(base: EngineManifest, built: str, version_compatible: bool = False, exclude_lean: bool = False) -> EngineManifest:
    build = replace(base.build, version_compatible=version_compatible, exclude_lean_runtime=exclude_lean)
    return replace(base, tensorrt_version=built, build=build)


# -- which runtime runs a plan ---------------------------------------------------------------------


def test_version_compatible_plan_prefers_dispatch_then_full_runtime_with_host_code(base_manifest: EngineManifest) -> None:
    plan = _engine(base_manifest, "10.14.1", version_compatible=True)
    assert runtime_candidates(plan) == ("tensorrt_dispatch", "tensorrt", "tensorrt_lean")
    choice = select_runtime(plan, {"tensorrt_dispatch": V("11.0.0"), "tensorrt": V("11.0.0")})
    assert (choice.module, choice.host_code) == ("tensorrt_dispatch", False)
    choice = select_runtime(plan, {"tensorrt": V("10.16.0")})
    assert (choice.module, choice.host_code) == ("tensorrt", True)  # runs the plan's lean runtime: host code


def test_lean_runtime_runs_only_plans_of_its_own_version(base_manifest: EngineManifest) -> None:
    plan = _engine(base_manifest, "10.14.1", version_compatible=True)
    assert select_runtime(plan, {"tensorrt_lean": V("10.14.1")}).module == "tensorrt_lean"
    with pytest.raises(ModelFileError, match="lean runtime runs only plans built by its own version"):
        select_runtime(plan, {"tensorrt_lean": V("10.16.0")})
    # the old choice (lean first whenever installed) would pick it even with dispatch there
    assert select_runtime(plan, {"tensorrt_lean": V("10.16.0"), "tensorrt_dispatch": V("10.16.0")}).module == "tensorrt_dispatch"


def test_plans_without_version_compatibility_need_the_full_runtime_of_their_version(base_manifest: EngineManifest) -> None:
    plan = _engine(base_manifest, "10.14.1")
    assert runtime_candidates(plan) == ("tensorrt",)
    assert select_runtime(plan, {"tensorrt": V("10.14.1")}).host_code is False
    with pytest.raises(ModelFileError, match="--version-compatible"):
        select_runtime(plan, {"tensorrt": V("10.16.0")})
    with pytest.raises(MissingBackendError, match="runs on one of tensorrt, none of which is installed"):
        select_runtime(plan, {"tensorrt_dispatch": V("10.14.1"), "tensorrt_lean": V("10.14.1")})


def test_plans_without_their_lean_runtime_run_on_their_own_version_only(base_manifest: EngineManifest) -> None:
    plan = _engine(base_manifest, "10.14.1", version_compatible=True, exclude_lean=True)
    assert runtime_candidates(plan) == ("tensorrt", "tensorrt_lean")
    assert select_runtime(plan, {"tensorrt": V("10.14.1")}).host_code is False
    with pytest.raises(ModelFileError, match="carry no runtime of their own"):
        select_runtime(plan, {"tensorrt": V("11.0.0")})


@pytest.mark.parametrize(
    ("built", "installed", "runs"),
    [
        ("8.6.1", "9.3.0", True),
        ("8.6.1", "10.13.0", True),  # TensorRT 10.16 docs: TensorRT 8 engines work with 9 and 10
        ("8.6.1", "11.0.0", False),  # not documented: the old rule (any major + 1) allowed 9 only, this blocks 11
        ("9.3.0", "10.14.1", True),
        ("10.13.0", "11.1.0", True),  # TensorRT 11.1 docs: engines built with 10 work with 11
        ("10.13.0", "12.0.0", False),
        ("11.0.0", "12.0.0", False),  # a major nobody has documented yet
        ("10.14.1", "10.13.0", False),  # forward only
        ("8.5.3", "8.6.1", False),  # version compatibility starts at 8.6
    ],
)
def test_cross_version_rule_is_tensorrts(base_manifest: EngineManifest, built: str, installed: str, runs: bool) -> None:
    plan = _engine(base_manifest, built, version_compatible=True)
    if runs:
        check_engine_compatibility(plan, V(installed), None, "tensorrt_dispatch")
    else:
        with pytest.raises(ModelFileError):
            check_engine_compatibility(plan, V(installed), None, "tensorrt_dispatch")


def test_device_index_is_checked() -> None:
    assert TensorRTOptions(device=1).device == 1
    with pytest.raises(BadInputError, match="device must be a CUDA device index >= 0, got -1"):
        TensorRTOptions(device=-1)


# -- per-thread resources --------------------------------------------------------------------------


def test_per_thread_resources_are_freed_when_their_thread_ends() -> None:
    made: list[int] = []
    freed: list[int] = []
    states: PerThread[int] = PerThread(lambda: made.append(len(made)) or made[-1], freed.append)

    all_made = threading.Barrier(5)

    def work() -> None:
        assert states.get() == states.get()  # one resource per thread, reused
        all_made.wait()  # all five alive at once: none is reaped by another's call

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 5 and len(states) == 5 and freed == []  # nothing reaped until the next call
    mine = states.get()
    assert sorted(freed) == [0, 1, 2, 3, 4] and len(states) == 1  # dead threads' resources freed
    assert states.get() == mine
    states.close()
    assert sorted(freed) == [0, 1, 2, 3, 4, mine] and len(states) == 0


class _FakeDtype:
    name = "FLOAT"


class _FakeContext:
    """An execution context whose execute_async_v3 blocks until the test releases it."""

    def __init__(self, log: list[str], entered: threading.Event, release: threading.Event) -> None:
        self.log, self.entered, self.release = log, entered, release
        self.shapes: dict[str, tuple[int, ...]] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, address: int) -> None:
        pass

    def set_device_memory(self, memory: int, size: int) -> None:
        self.log.append(f"memory {size}")

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        b, _, h, w = self.shapes["x"]
        return (b, 7, h, w)

    def execute_async_v3(self, stream: int) -> bool:
        self.entered.set()
        assert self.release.wait(10)
        self.log.append("executed")
        return True


class _FakeEngine:
    device_memory_size_v2 = 64

    def __init__(self, context: _FakeContext) -> None:
        self.context = context

    def create_execution_context(self, strategy: object) -> _FakeContext:
        assert strategy == "USER_MANAGED"
        return self.context

    def get_tensor_dtype(self, name: str) -> _FakeDtype:
        return _FakeDtype()


class _FakeCuda:
    """Stands in for Polygraphy's CUDA wrapper: device arrays are host arrays, streams do nothing."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        outer = self

        class Stream:
            ptr = 0

            def synchronize(self) -> None:
                pass

            def free(self) -> None:
                outer.log.append("freed")

        class DeviceArray:
            ptr = 0

            def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
                self.shape, self.data = shape, np.zeros(shape, dtype)

            def resize(self, shape: tuple[int, ...]) -> None:
                self.shape, self.data = shape, np.zeros(shape, self.data.dtype)

            def copy_from(self, host: np.ndarray, stream: object) -> None:
                pass

            def copy_to(self, host: np.ndarray, stream: object) -> None:
                host[...] = 1.0

            def free(self) -> None:
                pass

        self.Stream, self.DeviceArray = Stream, DeviceArray

    def wrapper(self) -> object:
        class Handle:
            @staticmethod
            def cudaSetDevice(index: object) -> int:
                return 0

        class Wrapper:
            handle = Handle()

        return Wrapper()


def test_close_waits_for_a_predict_in_flight_then_refuses_new_ones() -> None:
    """Runner promises thread safety: close() on one thread must not free the context a predict is using."""
    log: list[str] = []
    entered, release = threading.Event(), threading.Event()
    runner = TensorRTRunner.__new__(TensorRTRunner)  # the threading logic only: no TensorRT, no GPU
    Runner.__init__(runner, ModelSpec(tuple("abc"), tuple("0123456"), (2, 4), BatchSpec(1, 1, 2)))
    runner.path, runner.options = Path("fake.engine"), TensorRTOptions()
    runner._open(_FakeEngine(_FakeContext(log, entered, release)), _FakeCuda(log), "USER_MANAGED")

    results: list[np.ndarray] = []
    predict = threading.Thread(target=lambda: results.append(runner.predict(np.zeros((1, 3, 2, 4), np.float32), [6.0])))
    predict.start()
    assert entered.wait(10)  # the predict is inside execute_async_v3
    closer = threading.Thread(target=runner.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and log == ["memory 64"]  # close() waits: nothing freed under the running predict
    release.set()
    predict.join(10)
    closer.join(10)
    assert not closer.is_alive() and log == ["memory 64", "executed", "freed"]
    assert results[0].shape == (1, 7, 2, 4) and float(results[0].min()) == 1.0
    with pytest.raises(BadInputError, match="closed"):
        runner.predict(np.zeros((1, 3, 2, 4), np.float32), [6.0])


def test_threads_share_a_bounded_number_of_activation_blocks() -> None:
    """N threads, `size` blocks: never more made, never one lent twice at once; the rest wait and reuse."""
    made: list[int] = []
    freed: list[int] = []
    pool: Bounded[int] = Bounded(lambda: made.append(len(made)) or made[-1], freed.append, size=2)
    lent: set[int] = set()
    clash: list[int] = []
    most = [0]
    lock = threading.Lock()

    def run() -> None:
        for _ in range(20):
            with pool.borrow() as block:
                with lock:
                    if block in lent:
                        clash.append(block)
                    lent.add(block)
                    most[0] = max(most[0], len(lent))
                time.sleep(0.001)
                with lock:
                    lent.discard(block)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert pool.made == len(made) == 2 and most[0] == 2 and clash == []
    pool.close()
    assert sorted(freed) == [0, 1]
    with pytest.raises(BadInputError, match="closed"):
        with pool.borrow():
            pass
    with pytest.raises(BadInputError, match="at least 1"):
        Bounded(lambda: 0, freed.append, size=0)
    with pytest.raises(BadInputError, match="activation_blocks must be >= 1"):
        TensorRTOptions(activation_blocks=0)


def test_in_flight_refuses_calls_once_closing_has_begun() -> None:
    gate = InFlight("test runner")
    with gate.enter():
        assert gate.running == 1
    gate.close()
    with pytest.raises(BadInputError, match="test runner was closed"):
        with gate.enter():
            pass


# -- building -------------------------------------------------------------------------------------


def test_parser_flags_keep_the_parsers_defaults() -> None:
    """NATIVE_INSTANCENORM is on by default and needed for version/hardware-compatible engines;
    Polygraphy assigns parser.flags, so the plugin's flag must come on top of it, not instead."""
    assert PARSER_DEFAULT_FLAGS == ("NATIVE_INSTANCENORM",)
    for mode in ("inline", "native"):
        assert parser_flag_names(mode) == PARSER_DEFAULT_FLAGS
    assert parser_flag_names("plugin") == ("NATIVE_INSTANCENORM", "ENABLE_PLUGIN_OVERRIDE")


def test_plugin_engine_manifest_records_the_ptx_promise() -> None:
    versions = engine_versions("plugin", V("10.16.0"))
    assert versions["elevation_attention_ptx"].startswith("PTX ISA 7.8, sm_80")
    assert "elevation_attention_ptx" not in engine_versions("native", V("10.16.0"))


# -- native attention in fp16 graphs ---------------------------------------------------------------


def test_fp16_native_attention_runs_on_float32_operands() -> None:
    """TensorRT's IAttention takes no softmax precision and a mask in BMM1's type: float32 operands
    are what makes its softmax float32 (the body RewriteToAttention23 uses for fp16 graphs)."""
    body = list(attention23_function(ATTENTION_OPSET, softmax_in_float32=True).node)
    (attention,) = [n for n in body if n.op_type == "Attention"]
    producers = {out: n for n in body for out in n.output}
    for name in attention.input[:3]:
        cast = producers[name]
        assert cast.op_type == "Cast" and onnx.helper.get_attribute_value(cast.attribute[0]) == onnx.TensorProto.FLOAT
    mask = producers[attention.input[3]]
    assert mask.op_type == "CastLike" and mask.input[1] == attention.input[0]  # the mask in float32 too
    (out,) = [n for n in body if attention.output[0] in n.input]
    assert out.op_type == "CastLike" and list(out.input) == [attention.output[0], "q"] and list(out.output) == ["out"]
    plain = list(attention23_function(ATTENTION_OPSET, softmax_in_float32=False).node)
    assert not any(n.op_type == "Cast" and n.output[0].endswith("_f32") for n in plain)  # fp32 graphs: as before
    # what float32 avoids: fp16's grid near ln 1e-6 (the floor's bias) is 2^-7
    assert float(np.spacing(np.float16(np.log(1e-6)))) == 2.0**-7


def test_fp16_native_attention_matches_float64_on_onnxruntime() -> None:
    """The float32-operand body, fed fp16 q/k/v as an fp16 graph would, against the float64 bias form."""
    import onnxruntime as ort

    function = attention23_function(ATTENTION_OPSET, softmax_in_float32=True)
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node(function.name, ["q", "k", "v", "elevation", "beta"], ["out"], domain=function.domain)],
        "native16",
        [onnx.helper.make_tensor_value_info(n, f16, ["B", "H", "N", "D"]) for n in ("q", "k", "v")]
        + [onnx.helper.make_tensor_value_info("elevation", f32, ["B", "N"]), onnx.helper.make_tensor_value_info("beta", f32, [])],
        [onnx.helper.make_tensor_value_info("out", f16, ["B", "H", "N", "D"])],
    )
    model = onnx.helper.make_model(
        graph, functions=[function],
        opset_imports=[onnx.helper.make_opsetid("", ATTENTION_OPSET), onnx.helper.make_opsetid(function.domain, 1)],
    )  # fmt: skip
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 40, 32)).astype(np.float16) for _ in range(3))
    e = rng.random((1, 40)).astype(np.float32)
    beta = np.array(50.0, dtype=np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"q": q, "k": k, "v": v, "elevation": e, "beta": beta})
    qd, kd, vd = (t.astype(np.float64) for t in (q, k, v))
    x = float(beta) * (e[:, None, None, :] - e[:, None, :, None]).astype(np.float64)
    bias = np.maximum(-np.logaddexp(0.0, x), np.log(1e-6))
    scores = qd @ kd.transpose(0, 1, 3, 2) / np.sqrt(32) + bias
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    exact = (weights / weights.sum(-1, keepdims=True)) @ vd
    assert out.dtype == np.float16
    assert np.abs(out.astype(np.float64) - exact).max() <= 2 * np.abs(exact.astype(np.float16).astype(np.float64) - exact).max() + 1e-3
