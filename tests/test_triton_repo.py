"""`export-triton-repo`: config.pbtxt files parsed with tritonclient's model-config protobuf."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

text_format = pytest.importorskip("google.protobuf.text_format")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")

from cli_run import Completed, run_main  # tests/ is on sys.path under pytest

from climax_deploy.artifacts import sha256_file
from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.export.tensorrt_build import engine_manifest
from climax_deploy.export.tensorrt_profile import plan_build
from climax_deploy.export.triton_repo import TritonRepoOptions, write_triton_repo
from climax_deploy.manifest import BatchSpec, BuildOptions, GpuRecord, read_onnx_manifest, write_manifest
from climax_deploy.serving.load import check_loopback
from climax_deploy.tensorrt_version import TensorRTVersion

DT = model_config_pb2.DataType


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture
def fake_engine(tmp_path: Path, small_onnx: Path) -> Path:
    """A stand-in plan file with an engine manifest (TensorRT cannot run here; only the repo layout is tested)."""
    engine = tmp_path / "small.engine"
    engine.write_bytes(b"not a real plan")
    version, options = TensorRTVersion(10, 14), BuildOptions(attention="plugin")
    plan = plan_build("fp32", options, version)
    gpu = GpuRecord("NVIDIA L4", "8.9", 24 << 30)
    source = read_onnx_manifest(small_onnx)
    write_manifest(engine, engine_manifest(source, BatchSpec(1, 1, 2), options, plan, version, gpu, 1.0))
    return engine


def test_onnx_repository_config(small_onnx: Path, tmp_path: Path) -> None:
    options = TritonRepoOptions(max_batch=8, max_queue_delay_us=500, instances=2, onnx_threads=2)
    configs = write_triton_repo(tmp_path / "repo", onnx=small_onnx, options=options)
    assert list(configs) == ["climax_onnx"]
    cfg = parse(configs["climax_onnx"])
    assert cfg.name == "climax_onnx" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 8
    x, lead = cfg.input
    assert (x.name, x.data_type, list(x.dims)) == ("x", DT.TYPE_FP32, [15, 32, 64])
    assert (lead.name, list(lead.dims)) == ("lead_times", [1]) and lead.HasField("reshape") and not lead.reshape.shape
    (y,) = cfg.output
    assert (y.name, y.data_type, list(y.dims)) == ("y", DT.TYPE_FP32, [6, 32, 64])
    assert list(cfg.dynamic_batching.preferred_batch_size) == [1, 2, 4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert (
        cfg.instance_group[0].count == 2 and cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    )
    assert cfg.parameters["intra_op_thread_count"].string_value == "2"
    version = tmp_path / "repo" / "climax_onnx" / "1"
    assert sha256_file(version / "model.onnx") == sha256_file(small_onnx)
    assert read_onnx_manifest(version / "model.onnx").model.standardisation.stats["pm25"] == (25.0, 15.0)


def test_engine_gets_the_tensorrt_backend_capped_at_its_profile(
    small_onnx: Path, fake_engine: Path, tmp_path: Path
) -> None:
    configs = write_triton_repo(tmp_path / "repo", onnx=small_onnx, engine=fake_engine)
    assert sorted(configs) == ["climax_onnx", "climax_trt"]
    cfg = parse(configs["climax_trt"])
    assert cfg.backend == "tensorrt" and cfg.default_model_filename == "model.plan"
    assert cfg.max_batch_size == 2 and list(cfg.dynamic_batching.preferred_batch_size) == [1, 2]
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / "climax_trt" / "1" / "model.plan").read_bytes() == b"not a real plan"
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert "plugin" in readme and "LD_PRELOAD" in readme


def test_fixed_batch_artifact_is_not_batched(tmp_path: Path, small_onnx: Path) -> None:
    onnx = tmp_path / "fixed.onnx"
    onnx.write_bytes(small_onnx.read_bytes())
    write_manifest(onnx, replace(read_onnx_manifest(small_onnx), batch=BatchSpec.fixed(2)))
    cfg = parse(write_triton_repo(tmp_path / "repo", onnx=onnx)["climax_onnx"])
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [2, 15, 32, 64] and list(cfg.input[1].dims) == [2]
    assert not cfg.HasField("dynamic_batching")


def test_rewrite_replaces_only_its_models(small_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "other_model").mkdir(parents=True)
    write_triton_repo(repo, onnx=small_onnx)
    write_triton_repo(repo, onnx=small_onnx, options=TritonRepoOptions(max_batch=2))
    assert (repo / "other_model").is_dir() and parse(repo / "climax_onnx" / "config.pbtxt").max_batch_size == 2
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    with pytest.raises(BadInputError, match="outside 1..2"):
        write_triton_repo(repo, onnx=small_onnx, options=TritonRepoOptions(max_batch=2, preferred_batch_sizes=(4,)))


def test_artifacts_of_the_wrong_kind_or_options_out_of_range_are_refused(
    small_onnx: Path, fake_engine: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelFileError, match="kind 'tensorrt-engine', expected 'onnx'"):
        write_triton_repo(tmp_path / "repo", onnx=fake_engine)
    with pytest.raises(ModelFileError, match="kind 'onnx', expected 'tensorrt-engine'"):
        write_triton_repo(tmp_path / "repo", engine=small_onnx)
    assert not (tmp_path / "repo").exists()
    for bad in ({"max_batch": 0}, {"instances": 0}, {"onnx_instance_kind": "tpu"}, {"max_queue_delay_us": -1}):
        with pytest.raises(BadInputError):
            TritonRepoOptions(**bad)  # type: ignore[arg-type]


def triton_repo_cli(*args: object, cwd: Path) -> Completed:
    """export-triton-repo ARGS, in-process (main(argv))."""
    from climax_deploy.export.triton_cli import main

    return run_main("export-triton-repo", main, args, cwd)


def test_cli(small_onnx: Path, tmp_path: Path) -> None:
    out = triton_repo_cli("--onnx", small_onnx, "-o", "repo", "--max-batch", "4", "--preferred-batch-sizes", "2,4", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert list(parse(tmp_path / "repo" / "climax_onnx" / "config.pbtxt").dynamic_batching.preferred_batch_size) == [
        2,
        4,
    ]
    for argv, message in ((["-o", "r"], "give --onnx"), (["--onnx", "missing.onnx", "-o", "r"], "no manifest")):
        bad = triton_repo_cli(*argv, cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr


def test_load_test_is_loopback_only() -> None:
    assert check_loopback("127.0.0.1:8001") == ("127.0.0.1", 8001)
    assert check_loopback("localhost:8001")[1] == 8001
    for url in ("10.1.2.3:8001", "8.8.8.8:8001", "127.0.0.1"):
        with pytest.raises(BadInputError):
            check_loopback(url)


def test_cli_refuses_inputs_inside_the_folders_it_replaces_and_unwritable_output(small_onnx: Path, tmp_path: Path) -> None:
    ok = triton_repo_cli("--onnx", small_onnx, "-o", "repo", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    inside = tmp_path / "repo" / "climax_onnx" / "1" / "model.onnx"
    before = inside.read_bytes()
    bad = triton_repo_cli("--onnx", inside, "-o", "repo", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "would replace the input" in bad.stderr, bad.stderr
    assert inside.read_bytes() == before
    (tmp_path / "blocker").write_text("a file, not a folder")  # root ignores permissions; this fails for root too
    bad = triton_repo_cli("--onnx", small_onnx, "-o", "blocker/repo", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot write" in bad.stderr, bad.stderr
