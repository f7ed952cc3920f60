"""Engine building without TensorRT: profiles, sizes, build plans, trtexec lines, manifests, compatibility.

Tests that need TensorRT and a GPU are marked and skip here with a reason; nothing fakes TensorRT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from climax_deploy.artifacts import sha256_file, write_bytes_atomic
from climax_deploy.errors import BadInputError, EngineBuildError, MissingBackendError, ModelFileError
from climax_deploy.export.tensorrt_build import build_engine, engine_manifest
from climax_deploy.export.tensorrt_profile import (
    DEFAULT_DYNAMIC_PROFILE,
    engine_profile,
    input_shapes,
    parse_size,
    plan_build,
    trtexec_command,
)
from climax_deploy.manifest import (
    BatchSpec,
    BuildOptions,
    EngineManifest,
    GpuRecord,
    read_engine_manifest,
    read_onnx_manifest,
    write_manifest,
)
from climax_deploy.optional import TENSORRT_HINT
from climax_deploy.runner import ModelSpec
from climax_deploy.runtime.tensorrt_compat import check_engine_compatibility
from climax_deploy.tensorrt_version import TensorRTVersion, import_tensorrt, tensorrt_available

V10_13, V10_14, V11 = TensorRTVersion(10, 13, 0), TensorRTVersion(10, 14, 1), TensorRTVersion(11, 0, 0)
HAS_TRT = tensorrt_available()


# -- profiles and sizes -----------------------------------------------------------------------------


def test_input_shapes_follow_the_profile() -> None:
    shapes = input_shapes(BatchSpec.parse("1,2,4"), 15, (32, 64))
    assert shapes["x"] == ((1, 15, 32, 64), (2, 15, 32, 64), (4, 15, 32, 64))
    assert shapes["lead_times"] == ((1,), (2,), (4,))
    with pytest.raises(BadInputError, match="maximum"):
        input_shapes(BatchSpec.dynamic(), 15, (32, 64))


def test_engine_profile_lies_within_the_export() -> None:
    dynamic, fixed = BatchSpec.dynamic(), BatchSpec.fixed(2)
    assert engine_profile(None, dynamic) == DEFAULT_DYNAMIC_PROFILE
    assert engine_profile(None, fixed) == fixed
    assert engine_profile(BatchSpec(1, 2, 8), dynamic) == BatchSpec(1, 2, 8)
    with pytest.raises(BadInputError, match="exported for batch 2; use --batch 2"):
        engine_profile(BatchSpec(1, 2, 4), fixed)
    with pytest.raises(BadInputError, match="needs a maximum"):
        engine_profile(BatchSpec.dynamic(), dynamic)
    with pytest.raises(BadInputError, match="outside what the model takes"):
        engine_profile(BatchSpec(1, 2, 8), BatchSpec(1, 1, 4))


def test_parse_size() -> None:
    assert parse_size("4GiB") == 4 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size("1.5g") == 3 << 29
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1048576") == 1 << 20
    for bad in ("lots", "4 TB", "-1", "0"):
        with pytest.raises(BadInputError):
            parse_size(bad)


def test_engine_options_validation() -> None:
    with pytest.raises(BadInputError, match="opt-level"):
        BuildOptions(opt_level=6)
    with pytest.raises(BadInputError, match="hardware-compat"):
        BuildOptions(hardware_compatibility="hopper+")
    with pytest.raises(BadInputError, match="version-compatible"):
        BuildOptions(exclude_lean_runtime=True)
    with pytest.raises(BadInputError, match="inline, native, plugin"):
        BuildOptions(attention="flash")


# -- versions and build plans ------------------------------------------------------------------------


def test_version_parsing_and_feature_gates() -> None:
    assert TensorRTVersion.parse("10.13.0.35") == V10_13
    assert TensorRTVersion.parse("11.0") == V11
    assert V10_13.has_fp16_flag and not V10_13.strongly_typed_only and not V10_13.has_native_attention
    assert V10_14.has_native_attention
    assert V11.strongly_typed_only and not V11.has_fp16_flag and V11.has_native_attention
    with pytest.raises(BadInputError):
        TensorRTVersion.parse("ten")


@pytest.mark.parametrize("version", [V10_13, V11])
def test_fp16_graph_is_built_strongly_typed_on_10_and_11(version: TensorRTVersion) -> None:
    plan = plan_build("fp16", BuildOptions(), version)
    assert plan.precision == "fp16" and plan.strongly_typed and not plan.fp16_flag
    assert "strongly typed" in plan.path and str(version) in plan.path


def test_fp32_graph_asked_for_fp16_uses_the_flag_on_10_and_is_refused_on_11() -> None:
    plan = plan_build("fp32", BuildOptions(precision="fp16"), V10_13)
    assert plan.fp16_flag and not plan.strongly_typed and "deprecated" in plan.path
    with pytest.raises(EngineBuildError, match="export-onnx --precision fp16"):
        plan_build("fp32", BuildOptions(precision="fp16"), V11)
    with pytest.raises(EngineBuildError, match="fp32 export"):
        plan_build("fp16", BuildOptions(precision="fp32"), V10_13)
    assert plan_build("fp32", BuildOptions(), V11) == plan_build("fp32", BuildOptions(precision="fp32"), V11)


def test_attention_modes_are_gated_by_version() -> None:
    with pytest.raises(EngineBuildError, match="10.14"):
        plan_build("fp16", BuildOptions(attention="native"), V10_13)
    assert plan_build("fp16", BuildOptions(attention="native"), V10_14).strongly_typed
    with pytest.raises(EngineBuildError, match="10.9"):
        plan_build("fp16", BuildOptions(attention="plugin"), TensorRTVersion(10, 8))


def test_trtexec_command_matches_the_options(tmp_path: Path) -> None:
    options = BuildOptions(workspace_bytes=4 << 30, timing_cache=str(tmp_path / "t.cache"), opt_level=5,
                            version_compatible=True, exclude_lean_runtime=True, hardware_compatibility="ampere+")  # fmt: skip
    plan = plan_build("fp16", options, V11)
    shapes = input_shapes(BatchSpec(1, 2, 4), 15, (32, 64))
    cmd = trtexec_command(Path("m.onnx"), Path("m.engine"), options, plan, shapes)
    assert cmd[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    assert "--minShapes=x:1x15x32x64,lead_times:1" in cmd
    assert "--optShapes=x:2x15x32x64,lead_times:2" in cmd
    assert "--maxShapes=x:4x15x32x64,lead_times:4" in cmd
    assert {"--stronglyTyped", "--memPoolSize=workspace:4096M", "--builderOptimizationLevel=5", "--versionCompatible",
            "--excludeLeanRuntime", "--hardwareCompatibilityLevel=ampere+"} <= set(cmd)  # fmt: skip
    assert "--fp16" not in cmd
    flag_plan = plan_build("fp32", BuildOptions(precision="fp16"), V10_13)
    flagged = trtexec_command(Path("m.onnx"), Path("m.engine"), BuildOptions(), flag_plan, shapes)
    assert "--fp16" in flagged and "--stronglyTyped" not in flagged


def test_trtexec_line_sets_tf32_and_decomposable_attention_as_build_engine_does() -> None:
    # trtexec enables TF32 unless --noTF32 (samples/common/sampleEngines.cpp v11.1:618-621); build-engine's
    # Polygraphy clears it unless --tf32. Native mode marks the IAttention decomposable through the API;
    # trtexec's --decomposableAttentions=<names, one '*' wildcard> does the same walk (sampleEngines.cpp v11.1:283).
    shapes = input_shapes(BatchSpec(1, 1, 2), 15, (32, 64))
    plan = plan_build("fp16", BuildOptions(), V10_14)
    default = trtexec_command(Path("m.onnx"), Path("m.engine"), BuildOptions(), plan, shapes)
    assert "--noTF32" in default and not any(c.startswith("--decomposableAttentions") for c in default)
    tf32 = trtexec_command(Path("m.onnx"), Path("m.engine"), BuildOptions(tf32=True), plan, shapes)
    assert "--noTF32" not in tf32
    native = trtexec_command(Path("m.onnx"), Path("m.engine"), BuildOptions(attention="native"), plan, shapes)
    assert "--decomposableAttentions=*" in native


# -- engine manifest and compatibility ---------------------------------------------------------------

GPU = GpuRecord("NVIDIA H100 80GB HBM3", "9.0", 80 << 30)


def _engine_with_manifest(
    tmp_path: Path, small_onnx: Path, options: BuildOptions, version: TensorRTVersion, profile: BatchSpec | None = None
) -> Path:
    """An engine file's manifest round trip; the engine bytes are a placeholder (no TensorRT here)."""
    engine = tmp_path / "small.engine"
    write_bytes_atomic(engine, b"placeholder: only the manifest is under test")
    source = read_onnx_manifest(small_onnx)
    plan = plan_build("fp16", options, version)
    profile = engine_profile(profile, source.batch)
    write_manifest(engine, engine_manifest(source, profile, options, plan, version, GPU, 12.34))
    return engine


def test_engine_manifest_round_trip(tmp_path: Path, small_onnx: Path) -> None:
    options = BuildOptions(attention="native", hardware_compatibility="ampere+")
    engine = _engine_with_manifest(tmp_path, small_onnx, options, V10_14, BatchSpec(1, 2, 4))
    manifest = read_engine_manifest(engine)
    source = read_onnx_manifest(small_onnx)
    assert isinstance(manifest, EngineManifest) and manifest.file == "small.engine"
    assert manifest.sha256 == sha256_file(engine) and manifest.tensorrt_version == "10.14.1"
    assert manifest.gpu == GPU and manifest.batch == BatchSpec(1, 2, 4)
    assert manifest.precision == "fp16" and manifest.build.attention == "native" and manifest.build_seconds == 12.3
    assert manifest.build.hardware_compatibility == "ampere+" and manifest.build.opt_level == 3
    assert (manifest.source_onnx.path, manifest.source_onnx.sha256) == ("small.onnx", source.sha256)
    assert manifest.source_precision == source.precision
    assert manifest.model == source.model  # the export's record (config, standardisation, provenance) as is
    spec = ModelSpec.from_manifest(manifest)
    assert spec.batch.size is None and spec.batch.max == 4 and spec.grid == (32, 64)
    check_engine_compatibility(manifest, V10_14, GPU)


def test_engine_from_another_tensorrt_or_gpu_is_refused(tmp_path: Path, small_onnx: Path) -> None:
    manifest = read_engine_manifest(_engine_with_manifest(tmp_path, small_onnx, BuildOptions(), V10_13))
    with pytest.raises(ModelFileError, match=r"built with TensorRT 10\.13\.0 but tensorrt 10\.14\.1 is installed \(build with --version-compatible.*\); rebuild"):
        check_engine_compatibility(manifest, V10_14, GPU)
    with pytest.raises(ModelFileError, match=r"compute capability 9\.0.*8\.9"):
        check_engine_compatibility(manifest, V10_13, GpuRecord("NVIDIA L4", "8.9", 24 << 30))
    check_engine_compatibility(manifest, V10_13, None)  # no GPU query: the version check alone


def test_version_compatible_plugin_engines_are_refused_in_one_line() -> None:
    # NvInfer.h v11.1 ~11133 (v10.13.0 ~10217): version-compatible plans carry plugins as plugin libraries
    # (setPluginsToSerialize); nothing documents an ahead-of-time Python plugin under the lean runtime.
    for version in (V10_14, V11):
        with pytest.raises(EngineBuildError, match="--version-compatible cannot carry the --attention plugin") as info:
            plan_build("fp16", BuildOptions(attention="plugin", version_compatible=True), version)
        assert "\n" not in str(info.value)
    plan_build("fp16", BuildOptions(attention="native", version_compatible=True), V10_14)
    plan_build("fp16", BuildOptions(attention="plugin"), V10_14)


def test_version_compatible_engines_are_forward_compatible_only(tmp_path: Path, small_onnx: Path) -> None:
    options = BuildOptions(version_compatible=True, hardware_compatibility="ampere+")
    manifest = read_engine_manifest(_engine_with_manifest(tmp_path, small_onnx, options, V10_14))
    check_engine_compatibility(manifest, V11, GpuRecord("NVIDIA L4", "8.9", 24 << 30))
    with pytest.raises(ModelFileError, match="forward only"):
        check_engine_compatibility(manifest, V10_13, GPU)
    with pytest.raises(ModelFileError, match="Ampere"):
        check_engine_compatibility(manifest, V10_14, GpuRecord("Tesla T4", "7.5", 16 << 30))


# -- without TensorRT --------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed on this machine")
def test_missing_tensorrt_is_one_line_saying_what_to_install() -> None:
    # tensorrt-stubs leaves an importable `tensorrt` namespace package: it must not count as TensorRT.
    with pytest.raises(MissingBackendError) as info:
        import_tensorrt()
    message = str(info.value)
    assert message.endswith(TENSORRT_HINT) and "\n" not in message
    assert "pypi.nvidia.com" in message and "nvcr.io/nvidia/tensorrt" in message


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed on this machine")
def test_build_engine_checks_file_names_then_tensorrt_first(tmp_path: Path, small_onnx: Path) -> None:
    with pytest.raises(BadInputError, match="must end in .engine"):
        build_engine(small_onnx, tmp_path / "m.plan")
    with pytest.raises(BadInputError, match="does not exist"):
        build_engine(tmp_path / "absent.onnx")
    with pytest.raises(MissingBackendError, match="pip install tensorrt"):
        build_engine(small_onnx, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_runtime_imports_without_tensorrt_and_load_needs_it_only_for_engines(tmp_path: Path, small_onnx: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; import climax_deploy.runtime as r; "
        "assert 'tensorrt' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    if not HAS_TRT:
        from climax_deploy.runtime import load

        engine = _engine_with_manifest(tmp_path, small_onnx, BuildOptions(), V10_13)
        with pytest.raises(MissingBackendError, match="pip install tensorrt"):
            load(engine)


# -- on a machine with TensorRT and a GPU (climax-gpu-check runs the full matrix) ------------------


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT (only its stubs are installed here)")
@pytest.mark.parametrize("attention", ["inline", "native"])
def test_small_fp16_engine_builds_and_passes_parity(attention: str, tmp_path: Path) -> None:
    from climax_deploy.export.cli import main as export_main
    from climax_deploy.runtime import load
    from climax_deploy.validate.parity import run_parity

    onnx_path = tmp_path / "small16.onnx"
    assert export_main(["--preset", "small", "--precision", "fp16", "-o", str(onnx_path), "-q"]) == 0
    engine = tmp_path / f"small16.{attention}.engine"
    build_engine(onnx_path, engine, BuildOptions(batch=BatchSpec(1, 2, 2), attention=attention))
    with load(engine) as forecaster:
        x = np.zeros((2, 15, 32, 64), np.float32)
        assert forecaster.predict(x, np.array([24.0, 48.0], np.float32)).shape == (2, 6, 32, 64)
    assert run_parity(engine, ("mountain", "flat")).passed
