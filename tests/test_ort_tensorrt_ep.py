"""load(path, providers="tensorrt"): ONNX Runtime's TensorRT execution provider, its options and its errors.

No TensorRT here, so the session itself is never built with that provider; what is tested is what
this toolkit decides: the provider list, the provider options (names and value formats as ONNX
Runtime parses them, onnxruntime/core/providers/tensorrt/tensorrt_execution_provider_info.cc and
core/common/parse_string.h), the cache folder, and the one-line error where the provider is absent.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from climax_deploy.errors import BadInputError, MissingBackendError
from climax_deploy.runtime import load
from climax_deploy.runtime.onnxruntime_backend import (
    OnnxRuntimeOptions,
    choose_providers,
    session_providers,
    tensorrt_provider_options,
)

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
# Every name ONNX Runtime's TensorRT provider parses that this toolkit sets (provider_option_names).
ORT_TRT_OPTION_NAMES = {
    "trt_fp16_enable", "trt_max_workspace_size", "trt_engine_cache_enable", "trt_engine_cache_path",
    "trt_timing_cache_enable", "trt_timing_cache_path", "trt_op_types_to_exclude", "trt_layer_norm_fp32_fallback",
}  # fmt: skip


def test_tensorrt_provider_order() -> None:
    """TensorRT first, CUDA next for what TensorRT does not take, CPU last (ONNX Runtime's advice)."""
    gpu_build = [TRT, CUDA, CPU]
    assert choose_providers("tensorrt", gpu_build) == [TRT, CUDA, CPU]
    assert choose_providers(("tensorrt", "cpu"), gpu_build) == [TRT, CUDA, CPU]
    assert choose_providers(TRT, [TRT, CPU]) == [TRT, CPU]


def test_missing_tensorrt_provider_is_one_clear_line() -> None:
    with pytest.raises(MissingBackendError) as err:
        choose_providers("tensorrt", [CPU])
    message = str(err.value)
    assert "\n" not in message
    assert TRT in message and "onnxruntime-gpu" in message and "libnvinfer" in message


@pytest.mark.skipif(TRT in ort.get_available_providers(), reason="this ONNX Runtime build has the TensorRT provider")
def test_load_with_tensorrt_fails_clearly_here(small_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingBackendError, match=rf"\['{TRT}'\] not available; this build offers .*onnxruntime-gpu"):
        load(small_onnx, providers="tensorrt", trt_cache_dir=tmp_path / "cache")


def test_provider_options_as_onnx_runtime_parses_them(tmp_path: Path) -> None:
    cache = tmp_path / "engines" / "small"
    opts = tensorrt_provider_options(OnnxRuntimeOptions(providers="tensorrt", trt_cache_dir=cache,
                                                        trt_workspace_bytes=2**30))  # fmt: skip
    assert opts == {
        "trt_fp16_enable": "0",
        "trt_max_workspace_size": str(2**30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(cache),
    }
    assert set(opts) <= ORT_TRT_OPTION_NAMES
    assert all(isinstance(v, str) for v in opts.values())  # ProviderOptions is a string -> string map
    assert cache.is_dir()  # created, parents too
    no_cache = tensorrt_provider_options(OnnxRuntimeOptions(trt_fp16=True, trt_layernorm_fp32=False))
    assert no_cache == {"trt_fp16_enable": "1"}


def test_trt_fp16_is_off_by_default_and_refused_for_fp16_exports() -> None:
    from climax_deploy.runtime.onnxruntime_backend import check_trt_fp16

    assert OnnxRuntimeOptions().trt_fp16 is False
    check_trt_fp16("fp16", OnnxRuntimeOptions(providers="tensorrt"))
    check_trt_fp16("fp32", OnnxRuntimeOptions(providers="tensorrt", trt_fp16=True))
    with pytest.raises(BadInputError, match="trt_fp16 applies to fp32 exports only") as info:
        check_trt_fp16("fp16", OnnxRuntimeOptions(providers="tensorrt", trt_fp16=True))
    assert "\n" not in str(info.value)


def test_relative_cache_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    opts = tensorrt_provider_options(OnnxRuntimeOptions(trt_cache_dir="cache"))
    assert opts["trt_engine_cache_path"] == str(tmp_path / "cache")


def test_cache_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "engines"
    blocker.write_text("not a folder")
    with pytest.raises(BadInputError, match=r"trt_cache_dir .*engines is a file; expected a folder"):
        tensorrt_provider_options(OnnxRuntimeOptions(trt_cache_dir=blocker))
    with pytest.raises(BadInputError, match=r"cannot be created"):
        tensorrt_provider_options(OnnxRuntimeOptions(trt_cache_dir=blocker / "below"))


def test_session_providers_attach_options_to_tensorrt_only(tmp_path: Path) -> None:
    options = OnnxRuntimeOptions(providers="tensorrt", trt_cache_dir=tmp_path)
    providers = session_providers([TRT, CUDA, CPU], options)
    assert providers[1:] == [CUDA, CPU]
    name, trt = providers[0]
    assert name == TRT and trt["trt_engine_cache_path"] == str(tmp_path)
    assert session_providers([CPU], OnnxRuntimeOptions()) == [CPU]
    with pytest.raises(BadInputError, match=r"trt_\* options apply to the TensorRT provider only"):
        session_providers([CPU], OnnxRuntimeOptions(trt_cache_dir=tmp_path))
    with pytest.raises(BadInputError, match=r"trt_workspace_bytes must be > 0"):
        session_providers([TRT, CPU], OnnxRuntimeOptions(trt_workspace_bytes=0))


def test_trt_options_on_cpu_load_are_refused(small_onnx: Path, tmp_path: Path) -> None:
    """A cache folder given without the TensorRT provider would silently do nothing: refuse it."""
    with pytest.raises(BadInputError, match=r"providers='tensorrt'"):
        load(small_onnx, providers="cpu", trt_cache_dir=tmp_path)


# --- fp32 LayerNorm fallback and the check-parity gate ----------------------------------------------
# Names ONNX Runtime's TensorRT provider parses (tensorrt_execution_provider_info.cc, provider_option_names).
ORT_TRT_LAYERNORM_NAMES = {"trt_op_types_to_exclude", "trt_layer_norm_fp32_fallback"}


def test_trt_fp16_keeps_layernorm_out_of_tensorrt() -> None:
    opts = tensorrt_provider_options(OnnxRuntimeOptions(providers="tensorrt", trt_fp16=True))
    assert set(opts) - {"trt_fp16_enable"} == ORT_TRT_LAYERNORM_NAMES
    excluded = opts["trt_op_types_to_exclude"].split(",")
    assert "LayerNormalization" in excluded
    assert {"NonMaxSuppression", "NonZero", "RoiAlign"} <= set(excluded)  # the provider's default list, kept
    assert opts["trt_layer_norm_fp32_fallback"] == "1" and opts["trt_fp16_enable"] == "1"
    # without trt_fp16 the export's types hold: nothing excluded (no needless TensorRT partitions)
    assert "trt_op_types_to_exclude" not in tensorrt_provider_options(OnnxRuntimeOptions(providers="tensorrt"))
    off = tensorrt_provider_options(OnnxRuntimeOptions(trt_fp16=True, trt_layernorm_fp32=False))
    assert off == {"trt_fp16_enable": "1"}
    with pytest.raises(BadInputError, match="only matters with trt_fp16"):
        session_providers([TRT, CPU], OnnxRuntimeOptions(providers="tensorrt", trt_layernorm_fp32=False))


def _parity_args(*extra: str) -> object:
    from climax_deploy.validate.cli import build_parser

    return build_parser().parse_args(["m.onnx", *extra])


def test_check_parity_takes_the_tensorrt_route_options(tmp_path: Path) -> None:
    from climax_deploy.validate.cli import ort_options

    options = ort_options(_parity_args("--providers", "tensorrt", "--trt-cache-dir", str(tmp_path), "--trt-fp16"))
    assert (options.providers, options.trt_cache_dir, options.trt_fp16, options.trt_layernorm_fp32) == (
        "tensorrt", tmp_path, True, True)
    assert ort_options(_parity_args("--providers", "tensorrt", "--trt-fp16", "--no-trt-layernorm-fp32")).trt_layernorm_fp32 is False
    for bad in (["--trt-fp16"], ["--providers", "cuda", "--trt-cache-dir", str(tmp_path)]):
        with pytest.raises(BadInputError, match="need --providers tensorrt") as info:
            ort_options(_parity_args(*bad))
        assert "\n" not in str(info.value)


def test_check_parity_gate_fails_a_route_that_did_not_run_as_asked(tmp_path: Path) -> None:
    from climax_deploy.validate.parity import tensorrt_route_problem

    options = OnnxRuntimeOptions(providers="tensorrt", trt_fp16=True, trt_cache_dir=tmp_path)
    wanted = tensorrt_provider_options(options)
    ran = {"providers_used": [TRT, CUDA, CPU], "provider_options": {TRT: dict(wanted)}}
    assert tensorrt_route_problem(ran, options) is None
    assert "session used" in str(tensorrt_route_problem({**ran, "providers_used": [CUDA, CPU]}, options))
    no_exclusion = {k: v for k, v in wanted.items() if k != "trt_op_types_to_exclude"}
    assert "expected" in str(tensorrt_route_problem({**ran, "provider_options": {TRT: no_exclusion}}, options))
    assert tensorrt_route_problem({"providers_used": [CPU]}, OnnxRuntimeOptions(providers="cpu")) is None
    assert tensorrt_route_problem({}, None) is None


def test_runner_records_the_provider_options_it_ran_with(small_onnx: Path) -> None:
    runner = load(small_onnx, providers="cpu")
    try:
        assert runner.describe()["provider_options"] == {}
    finally:
        runner.close()
