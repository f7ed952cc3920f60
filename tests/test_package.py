"""Public API and console scripts: names other work relies on must not drift silently."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

import climax_deploy
import climax_deploy.export as export
import climax_deploy.model as model
import climax_deploy.runtime as runtime
import climax_deploy.validate as validate

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def test_documented_model_api_computes() -> None:
    """The names the README documents, used as it documents them."""
    m = model.build_model("small", seed=0)
    attn = m.blocks[0].attn
    elevation = torch.rand(1, *m.config.img_size) * 3000.0
    e = model.normalise_elevations(model.patch_elevations(elevation, m.patch_size))
    assert e.shape == (1, m.config.num_patches) and float(e.min()) == 0.0 and float(e.max()) == 1.0
    tokens = torch.randn(1, m.config.num_patches, m.config.embed_dim)
    assert attn(tokens, e).shape == tokens.shape
    assert float(attn.elevation_barrier_strength.detach()) == m.config.beta_init
    assert attn.num_heads == m.config.num_heads and attn.qkv.out_features == 3 * m.config.embed_dim


def test_every_console_script_resolves() -> None:
    """Each [project.scripts] entry names an importable callable, and is installed in this environment."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), target
        assert (BIN / name).exists(), f"{name} is not installed: pip install -e ."


def test_area_init_modules_export_what_they_say() -> None:
    for area in (export, model, runtime, validate):
        missing = [name for name in area.__all__ if not hasattr(area, name)]
        assert not missing, f"{area.__name__}.__all__ names {missing}, which it lacks"
    assert issubclass(climax_deploy.BadInputError, climax_deploy.ClimaxDeployError)


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
    from cli_run import run_main  # tests/ is on sys.path under pytest

    from climax_deploy.export.cli import main as export_onnx
    from climax_deploy.validate.cli import main as check_parity

    main = {"export-onnx": export_onnx, "check-parity": check_parity}[argv[0]]
    out = run_main(argv[0], main, argv[1:], tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
