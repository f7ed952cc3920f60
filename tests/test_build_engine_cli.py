"""`build-engine` argument handling, its clean failure without TensorRT, and --print-trtexec."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_run import Completed, run_main  # tests/ is on sys.path under pytest

from climax_deploy.export.build_engine_cli import main
from climax_deploy.export.passes import elevation_functions
from climax_deploy.manifest import read_onnx_manifest
from climax_deploy.optional import TENSORRT_HINT
from climax_deploy.tensorrt_version import tensorrt_available

HAS_TRT = tensorrt_available()


def run(*args: str | Path, cwd: Path | None = None) -> Completed:
    """build-engine ARGS, in-process (main(argv))."""
    return run_main("build-engine", main, args, cwd)


@pytest.fixture
def model(tmp_path: Path, small_onnx: Path) -> Path:
    """A private copy of the small export (the CLI writes files beside it)."""
    path = tmp_path / "small.onnx"
    shutil.copy(small_onnx, path)
    shutil.copy(str(small_onnx) + ".manifest.json", str(path) + ".manifest.json")
    return path


def test_console_script_is_registered() -> None:
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("build-engine") == "climax_deploy.export.build_engine_cli:entry"


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed on this machine")
def test_without_tensorrt_exit_2_and_one_line_saying_what_to_install(model: Path) -> None:
    result = run(model, "-o", model.with_suffix(".engine"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("build-engine: error: ") and lines[0].endswith(TENSORRT_HINT)
    assert "https://pypi.nvidia.com" in lines[0] and "nvcr.io/nvidia/tensorrt" in lines[0]
    assert not model.with_suffix(".engine").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "4,2,1"], "1 <= MIN <= OPT <= MAX"),
        (["--batch", "x"], "MIN,OPT,MAX"),
        (["--workspace", "lots"], "size like 4GiB"),
        (["--opt-level", "9"], "opt-level must be 0..5"),
        (["--exclude-lean-runtime"], "only applies with --version-compatible"),
        (["--attention", "flash"], "invalid choice"),
        (["-o", "out.plan"], "must end in .engine"),
        (["--batch", "dynamic", "--print-trtexec"], "needs a maximum"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(model: Path, args: list[str], message: str) -> None:
    result = run(model, *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_missing_or_wrong_model_file(tmp_path: Path) -> None:
    result = run(tmp_path / "absent.onnx")
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "m.pt").write_bytes(b"")
    result = run(tmp_path / "m.pt")
    assert result.returncode == 2 and "expected a .onnx model" in result.stderr


def test_fixed_batch_export_rejects_another_profile(tmp_path: Path, small_model: object) -> None:
    from climax_deploy.export import ExportOptions, export_onnx
    from climax_deploy.manifest import BatchSpec

    path = tmp_path / "fixed.onnx"
    export_onnx(small_model, path, ExportOptions(batch=BatchSpec.fixed(2)))  # type: ignore[arg-type]
    result = run(path, "--batch", "1,2,4", "--print-trtexec")
    assert result.returncode == 2 and "exported for batch 2" in result.stderr
    result = run(path, "--print-trtexec")  # default profile: the export's batch
    assert result.returncode == 0 and "--maxShapes=x:2x15x32x64,lead_times:2" in result.stdout


def test_print_trtexec_native_writes_the_rewritten_model(model: Path) -> None:
    result = run(model, "--attention", "native", "--print-trtexec", "--batch", "1,2,4", "--workspace", "2GiB",
                 "--timing-cache", "t.cache", "--target-tensorrt", "10.14")  # fmt: skip
    assert result.returncode == 0, result.stderr
    comment, command = result.stdout.strip().splitlines()
    assert comment.startswith("# TensorRT 10.14.0: strongly typed fp32")
    rewritten = model.with_name("small.native.onnx")
    assert command.startswith(f"trtexec --onnx={rewritten} --saveEngine={model.with_suffix('.engine')}")
    assert "--memPoolSize=workspace:2048M" in command and "--timingCacheFile=t.cache" in command
    body = elevation_functions(onnx.load(str(rewritten)))[0].node
    assert [n.op_type for n in body].count("Attention") == 1
    import onnxruntime as ort

    session = ort.InferenceSession(str(rewritten), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.zeros((1, 15, 32, 64), np.float32), "lead_times": np.array([24.0], np.float32)})
    assert y.shape == (1, 6, 32, 64) and np.isfinite(y).all()


def test_print_trtexec_refuses_what_the_target_tensorrt_cannot_do(model: Path) -> None:
    result = run(model, "--attention", "native", "--print-trtexec", "--target-tensorrt", "10.13")
    assert result.returncode == 2 and "needs TensorRT >= 10.14" in result.stderr
    result = run(model, "--precision", "fp16", "--print-trtexec", "--target-tensorrt", "11.0")
    assert result.returncode == 2 and "strongly typed networks only" in result.stderr
    result = run(model, "--precision", "fp16", "--print-trtexec", "--target-tensorrt", "10.13")
    assert result.returncode == 0 and "--fp16" in result.stdout and "deprecated" in result.stdout


def test_tf32_is_an_explicit_option_carried_to_the_trtexec_line(model: Path) -> None:
    off = run(model, "--print-trtexec", "--target-tensorrt", "10.14")
    on = run(model, "--tf32", "--print-trtexec", "--target-tensorrt", "10.14")
    assert off.returncode == on.returncode == 0, off.stderr + on.stderr
    assert "--noTF32" in off.stdout and "--noTF32" not in on.stdout


def test_version_compatible_plugin_exits_2_in_one_line(model: Path) -> None:
    result = run(model, "--attention", "plugin", "--version-compatible", "--print-trtexec")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--version-compatible cannot carry the --attention plugin" in lines[0], result.stderr


def test_print_trtexec_plugin_notes_the_limitation(model: Path) -> None:
    result = run(model, "--attention", "plugin", "--print-trtexec")
    assert result.returncode == 0
    assert "cannot register the Python ElevationAttention plugin" in result.stderr
    assert read_onnx_manifest(model).file == "small.onnx"  # the source is untouched (its checksum verifies)
    tagged = onnx.load(str(model.with_name("small.plugin.onnx")))
    node = next(n for n in tagged.graph.node if n.op_type == "ElevationAttention")
    assert {a.name for a in node.attribute} == {"plugin_namespace", "plugin_version"}


def test_the_model_is_hashed_once(
    model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI leaves the checks to the library, which verifies the export's checksum once (large models)."""
    import climax_deploy.manifest as manifest_module
    from climax_deploy.export.build_engine_cli import main

    hashed: list[str] = []
    real = manifest_module.sha256_file

    def counting(path: str | Path, *args: int) -> str:
        hashed.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr(manifest_module, "sha256_file", counting)
    assert main([str(model), "--print-trtexec", "--target-tensorrt", "10.14"]) == 0
    assert hashed == ["small.onnx"]
    assert capsys.readouterr().out.startswith("# TensorRT 10.14.0: strongly typed fp32")


@pytest.mark.parametrize("flag", ["--save-onnx", "-o"])
def test_outputs_that_overwrite_the_model_are_refused(model: Path, flag: str) -> None:
    before = model.read_bytes()
    out = model if flag == "--save-onnx" else Path(str(model) + ".manifest.json")
    result = run(model, "--print-trtexec", flag, out)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "would overwrite the input" in result.stderr or "must end in .engine" in result.stderr, result.stderr
    assert model.read_bytes() == before


def test_save_onnx_equal_to_the_model_is_refused_by_name(model: Path) -> None:
    before = model.read_bytes()
    result = run(model, "--print-trtexec", "--attention", "native", "--save-onnx", model)
    assert result.returncode == 2 and "--save-onnx" in result.stderr and "would overwrite" in result.stderr, result.stderr
    assert model.read_bytes() == before
