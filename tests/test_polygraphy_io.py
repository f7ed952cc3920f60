"""check-parity --save-polygraphy: NVIDIA's `polygraphy run` checks a model with our files and no code of ours."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from climax_deploy.validate.cli import main as check_parity_main
from climax_deploy.validate.polygraphy_io import INPUTS_FILE, OUTPUTS_FILE, POLYGRAPHY_TOLERANCES, REFERENCE_RUNNER

pytest.importorskip("polygraphy")


def _polygraphy() -> list[str]:
    exe = shutil.which("polygraphy") or str(Path(sys.executable).with_name("polygraphy"))
    return [exe]


def test_save_polygraphy_then_polygraphy_run_onnxrt(tmp_path: Path, small_onnx: Path, monkeypatch) -> None:
    """check-parity run with relative paths writes commands that run from another directory."""
    import os
    import shlex

    monkeypatch.chdir(tmp_path)
    model = os.path.relpath(small_onnx)
    assert check_parity_main([model, "--save-polygraphy", "pg", "-q", "--providers", "cpu"]) == 0
    out = tmp_path / "pg"
    assert (out / INPUTS_FILE).is_file() and (out / OUTPUTS_FILE).is_file()
    readme = [line for line in (out / "README.txt").read_text().splitlines() if line.startswith("polygraphy run ")]
    commands = {("--trt" if "--trt" in line else "--onnxrt"): shlex.split(line) for line in readme}
    assert set(commands) == {"--trt", "--onnxrt"} and len(readme) == 2
    for cmd in commands.values():  # the ONNX itself for both (Polygraphy builds its own engine): no guessed names
        assert cmd[2] == str(small_onnx.resolve()) and ".engine" not in " ".join(cmd)
        paths = [cmd[i + 1] for i, arg in enumerate(cmd) if arg in ("--load-inputs", "--load-outputs")]
        assert paths == [str(out / INPUTS_FILE), str(out / OUTPUTS_FILE)]

    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    feeds = load_json(str(out / INPUTS_FILE))
    assert [sorted(f) for f in feeds] == [["lead_times", "x"], ["lead_times", "x"]]  # mountain, flat
    assert list(RunResults.load(str(out / OUTPUTS_FILE)).keys()) == [REFERENCE_RUNNER]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = [*_polygraphy(), *commands["--onnxrt"][1:]]  # the README's line as written, from another directory
    atol, rtol = POLYGRAPHY_TOLERANCES["fp32"]
    assert cmd[-4:] == ["--atol", str(atol), "--rtol", str(rtol)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=elsewhere)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PASSED" in result.stdout and "Passed: 2/2 iterations" in result.stdout


def test_engine_commands_name_the_engine_itself(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    from climax_deploy.validate.polygraphy_io import PolygraphyFiles, polygraphy_targets

    targets = polygraphy_targets("build/full16.engine")
    assert targets == [(tmp_path / "build" / "full16.engine", "trt")]
    cmd = PolygraphyFiles(Path("pg/i.json"), Path("pg/o.json")).command(targets[0][0], "trt", "fp16")
    assert cmd[2:5] == [str(tmp_path / "build" / "full16.engine"), "--trt", "--model-type"]
    assert str(tmp_path / "pg" / "i.json") in cmd and "--strongly-typed" not in cmd


def test_polygraphy_run_fails_on_a_wrong_reference(tmp_path: Path, small_onnx: Path) -> None:
    """The check can fail: reference outputs scaled by 1.1 must not pass Polygraphy's comparison."""
    import numpy as np
    from polygraphy.comparator import RunResults

    out = tmp_path / "pg"
    assert check_parity_main([str(small_onnx), "--save-polygraphy", str(out), "-q", "--providers", "cpu"]) == 0
    results = RunResults.load(str(out / OUTPUTS_FILE))
    for iteration in results[REFERENCE_RUNNER]:
        iteration["y"] = np.asarray(iteration["y"]) * 1.1
    results.save(str(out / OUTPUTS_FILE))
    atol, rtol = POLYGRAPHY_TOLERANCES["fp32"]
    cmd = [*_polygraphy(), "run", str(small_onnx), "--onnxrt", "--load-inputs", str(out / INPUTS_FILE),
           "--load-outputs", str(out / OUTPUTS_FILE), "--atol", str(atol), "--rtol", str(rtol)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "FAILED" in result.stdout


def test_polygraphy_inspect_model_works_in_the_projects_venv(small_onnx: Path) -> None:
    """tensorrt-stubs stay out of the venv (Makefile: a stub path for mypy): with them importable,
    Polygraphy takes TensorRT for present and `inspect model` fails (tensorrt has no float32)."""
    from climax_deploy.tensorrt_version import tensorrt_available

    if not tensorrt_available():
        with pytest.raises(ImportError):
            __import__("tensorrt")
    result = subprocess.run([*_polygraphy(), "inspect", "model", str(small_onnx)], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    shown = result.stdout + result.stderr
    assert result.returncode == 0, shown[-3000:]
    assert "x [dtype=float32" in shown and "y [dtype=float32" in shown and "Traceback" not in shown, shown[-3000:]
