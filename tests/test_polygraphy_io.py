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


def test_save_polygraphy_then_polygraphy_run_onnxrt(tmp_path: Path, small_onnx: Path) -> None:
    out = tmp_path / "pg"
    assert check_parity_main([str(small_onnx), "--save-polygraphy", str(out), "-q", "--providers", "cpu"]) == 0
    assert (out / INPUTS_FILE).is_file() and (out / OUTPUTS_FILE).is_file()
    readme = (out / "README.txt").read_text().splitlines()
    assert any(line.startswith("polygraphy run ") and "--trt" in line and ".engine" in line for line in readme)

    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    feeds = load_json(str(out / INPUTS_FILE))
    assert [sorted(f) for f in feeds] == [["lead_times", "x"], ["lead_times", "x"]]  # mountain, flat
    assert list(RunResults.load(str(out / OUTPUTS_FILE)).keys()) == [REFERENCE_RUNNER]

    atol, rtol = POLYGRAPHY_TOLERANCES["fp32"]
    cmd = [*_polygraphy(), "run", str(small_onnx), "--onnxrt", "--load-inputs", str(out / INPUTS_FILE),
           "--load-outputs", str(out / OUTPUTS_FILE), "--atol", str(atol), "--rtol", str(rtol)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PASSED" in result.stdout and "Passed: 2/2 iterations" in result.stdout


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
