"""Public API and console scripts: names other work relies on must not drift silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import climax_deploy
import climax_deploy.export as export
import climax_deploy.model as model
import climax_deploy.runtime as runtime
import climax_deploy.validate as validate

BIN = Path(sys.executable).parent


def test_public_api() -> None:
    assert callable(model.build_model) and callable(model.patch_elevations)
    m = model.build_model("small", seed=0)
    attn = m.blocks[0].attn
    assert m.patch_size == 2
    for name in ("qkv", "proj", "num_heads", "elevation_barrier_strength"):
        assert hasattr(attn, name), name
    assert callable(runtime.load) and callable(export.export_onnx) and callable(validate.run_parity)
    assert issubclass(climax_deploy.BadInputError, climax_deploy.ClimaxDeployError)


def test_subpackages_live_under_one_package() -> None:
    for mod in (model, export, runtime, validate):
        assert mod.__name__.startswith("climax_deploy.")
    top = Path(model.__file__).resolve().parent.parent
    assert (top / "model").is_dir() and (top / "runtime").is_dir()  # mapped from the repository's folders


@pytest.mark.parametrize("script", ["export-onnx", "check-parity"])
def test_help(script: str) -> None:
    out = subprocess.run([str(BIN / script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage:" in out.stdout and len(out.stdout) > 300


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export-onnx", "--preset", "huge", "-o", "x.onnx"], "unknown preset 'huge'"),
        (["export-onnx", "--batch", "0"], "expected 'dynamic' or a positive integer"),
        (["export-onnx", "--opset", "ten"], "invalid int value"),
        (["check-parity", "missing.onnx"], "does not exist"),
        (["check-parity"], "the following arguments are required: model"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    out = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
