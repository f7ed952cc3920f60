"""Every console script, in an install without its extra, exits 2 with one line naming the extra.

A `[cpu]`-only install is simulated in a subprocess: every optional module except onnxruntime raises
ModuleNotFoundError on import (tests/blocked_imports.py), and the script is loaded from its entry point
as pip's wrapper loads it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from climax_deploy.cli import run_cli
from climax_deploy.optional import EXTRA_OF_MODULE

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# A `[cpu]` install has numpy and onnxruntime; everything else optional is missing.
NOT_IN_CPU = sorted({*EXTRA_OF_MODULE, "tensorrt"} - {"onnxruntime"})

# script -> (arguments that reach the work its extra does, the extra its one-line error must name)
SCRIPTS: dict[str, tuple[list[str], str]] = {
    "export-onnx": (["--preset", "small", "-o", "x.onnx"], "export"),
    "check-parity": (["m.onnx"], "export"),
    "climax-bench": (["--preset", "small"], "export"),
    "climax-bench-attention": (["--seq-len", "64"], "export"),
    "build-engine": (["m.onnx"], "tensorrt"),
    "climax-gpu-check": ([], "gpu,export,kernels"),
    "climax-forecast": (["--model", "m.onnx", "--analysis", "a.nc", "-o", "f.nc"], "io"),
    "climax-serve": (["m.onnx"], "serve"),
    "climax-load-test": (["--url", "localhost:8001"], "serve"),
}
NEEDS_NO_EXTRA = {"export-triton-repo"}  # writes config.pbtxt files: runs in a `[cpu]` install


def run_without(blocked: list[str], script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(HERE / "blocked_imports.py"), ",".join(blocked), script, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_every_console_script_is_covered() -> None:
    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    assert scripts == set(SCRIPTS) | NEEDS_NO_EXTRA


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_without_its_extra_names_it_in_one_line(script: str, tmp_path: Path) -> None:
    args, extra = SCRIPTS[script]
    (tmp_path / "m.onnx").write_bytes(b"not read: the missing extra is named first")
    out = run_without(NOT_IN_CPU, script, args, tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"{script}: error: ") and f"climax-deploy[{extra}" in out.stderr, out.stderr


def test_export_triton_repo_runs_in_a_cpu_only_install(small_onnx: Path, tmp_path: Path) -> None:
    out = run_without(NOT_IN_CPU, "export-triton-repo", ["--onnx", str(small_onnx), "-o", "repo"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "repo" / "climax_onnx" / "config.pbtxt").is_file()


def test_an_unforeseen_optional_import_is_one_line_naming_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    def main(argv: object) -> int:
        raise ModuleNotFoundError("No module named 'cf_xarray.units'", name="cf_xarray.units")

    assert run_cli("climax-forecast", main, []) == 2
    assert capsys.readouterr().err == "climax-forecast: error: cf_xarray is not installed: pip install 'climax-deploy[io]'\n"


def test_a_missing_module_that_is_no_extra_keeps_its_traceback() -> None:
    def main(argv: object) -> int:
        raise ModuleNotFoundError("No module named 'climax_deploy.gone'", name="climax_deploy.gone")

    with pytest.raises(ModuleNotFoundError):
        run_cli("export-onnx", main, [])
