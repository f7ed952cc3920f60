"""climax-gpu-check: the verdict, the no-CUDA exit, the JSON, and the row logic on CPU tensors.

The rows' logic runs here on CPU tensors (the kernel under Triton's interpreter, as conftest sets it
up without CUDA); only the device choice differs on a GPU. Nothing here ran on a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from climax_deploy.cli import run_cli
from climax_deploy.bench import gpu_check
from climax_deploy.bench.checkout_bootstrap import package_dirs
from climax_deploy.bench.gpu_check import Row, kernel_cases, kernel_row, main, verdict

REPO = Path(__file__).resolve().parents[1]
TINY_SWEEP = ["--seq-lens", "7", "--head-dims", "64", "--dtypes", "float32", "--betas", "3"]


def cpu_main(argv: list[str]) -> int:
    """main() with the device check replaced: the rows run on CPU tensors."""
    return main(argv, device_check=lambda: {"device": "cpu (test)"}, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_no_cuda_is_one_line_and_never_pass(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = run_cli("climax-gpu-check", main, ["--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "no CUDA device" in err
    assert "PASS" not in out + err and out == ""
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.parametrize(
    ("statuses", "passed"),
    [
        ([], False),  # the old script: all() over nothing printed PASS
        (["skip", "skip"], False),  # nothing ran
        (["pass", "skip"], True),
        (["pass", "fail"], False),
        (["pass", "error"], False),
        (["pass", "pass"], True),
    ],
)
def test_verdict(statuses: list[str], passed: bool) -> None:
    ok, summary = verdict([Row("kernel", str(i), s) for i, s in enumerate(statuses)])
    assert ok is passed
    assert summary.startswith("PASS" if passed else "FAIL")


def test_nothing_ran_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cpu_main(["--out", str(tmp_path), "--skip", "kernel", "aot", "reference", "bench", "tensorrt"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: no check ran" in out and "PASS" not in out
    assert json.loads((tmp_path / "gpu_check.json").read_text())["passed"] is False


def test_kernel_rows_pass_and_json_is_written(tmp_path: Path) -> None:
    assert cpu_main(["--out", str(tmp_path), *TINY_SWEEP, "--skip", "aot", "reference", "bench", "tensorrt"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["passed"] is True and report["environment"] == {"device": "cpu (test)"}
    (row,) = [r for r in report["rows"] if r["group"] == "kernel"]
    assert row["status"] == "pass" and row["metrics"]["worst_err_over_tol"] <= 1.0
    skipped = {r["group"] for r in report["rows"] if r["status"] == "skip"}
    assert skipped == set()  # skipped groups leave no rows; absent dependencies leave a skip row


def test_a_failing_kernel_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that forgets the elevation bias (plain attention) must fail at beta = 50."""
    import climax_deploy.kernels

    def no_bias(q, k, v, e, beta):  # type: ignore[no-untyped-def]
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    monkeypatch.setattr(climax_deploy.kernels, "elevation_attention", no_bias)
    argv = ["--out", str(tmp_path), "--seq-lens", "65", "--head-dims", "64", "--dtypes", "float32", "--betas", "50"]
    assert cpu_main([*argv, "--skip", "aot", "reference", "bench", "tensorrt"]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["passed"] is False and report["rows"][0]["status"] == "fail"


def test_an_exception_is_an_error_row_and_the_rest_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken(case, device):  # type: ignore[no-untyped-def]
        calls.append(case)
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(gpu_check, "kernel_row", broken)
    argv = ["--out", str(tmp_path), "--seq-lens", "1", "7", "--head-dims", "64", "--dtypes", "float32", "--betas", "3"]
    assert cpu_main([*argv, "--skip", "aot", "reference", "bench", "tensorrt"]) == 1
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["error", "error"] and len(calls) == 2
    assert "illegal memory access" in rows[0]["detail"]


def test_sweep_covers_every_length_head_dim_and_dtype() -> None:
    cases = kernel_cases()
    assert {c.seq_len for c in cases} == {1, 7, 65, 129, 8193}
    assert {c.head_dim for c in cases} == {64, 96, 128}
    assert {c.dtype for c in cases} == {"float32", "float16", "bfloat16"}
    assert {c.beta for c in cases} == {0.0, 3.0, 50.0}
    assert len(cases) == 5 * 3 * 3 * 3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_kernel_row_16bit_on_cpu(dtype: str) -> None:
    row = kernel_row(gpu_check.KernelCase(129, 96, dtype, 50.0), "cpu")
    assert row.status == "pass", row.detail


def test_reference_row_fp32_on_cpu() -> None:
    row = gpu_check.reference_row("fp32", "cpu", terrains=("mountain",))
    assert row.status == "pass", row.detail
    assert row.metrics["fused_rel_l2"] <= row.metrics["bound"]


def test_checkout_bootstrap_reads_every_package() -> None:
    """The plain-checkout bootstrap maps exactly the packages pyproject.toml declares."""
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert package_dirs(REPO) == setuptools["package-dir"]
    assert set(package_dirs(REPO)) == set(setuptools["packages"])


def test_old_script_is_gone() -> None:
    """climax-gpu-check replaces it; one way to run the GPU checks."""
    assert not (REPO / "scripts" / "gpu_check.py").exists()


def test_runs_without_onnx_onnxruntime_or_tensorrt() -> None:
    """The GPU machine it targets has none of them: importing and starting must not need them."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules.update(onnx=None, onnxruntime=None, onnxscript=None, tensorrt=None)\n"
        "from climax_deploy.cli import run_cli\n"
        "from climax_deploy.bench.gpu_check import main\n"
        "sys.exit(run_cli('climax-gpu-check', main, ['--out', sys.argv[1]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, "build/unused"], capture_output=True, text=True, check=False)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    assert done.returncode == 2, done.stderr
    assert "no CUDA device" in done.stderr and "Error" not in done.stderr  # not an ImportError traceback
