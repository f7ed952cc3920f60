"""climax-bench and climax-bench-attention run end to end on CPU (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from climax_deploy.validate.bench import main as bench_main


def test_climax_bench_command(small_onnx: Path, tmp_path: Path) -> None:
    """Every CPU backend runs in its own process and reports parity against PyTorch `literal`."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "climax_deploy.validate.bench", "--model", str(small_onnx), "--runs", "1",
           "--warmup", "0", "--json", str(out), "--profile"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    results = {r["backend"]: r for r in report["results"]}
    assert set(results) == {"torch-literal", "torch-fused", "onnxruntime"}
    assert results["torch-fused"]["ratio_vs_fused"] == 1.0
    for r in results.values():
        assert r["peak_rss_gb"] > 0 and r["parity_vs_literal"]["rel_l2"] < 1e-5
    assert results["onnxruntime"]["describe"]["providers_used"] == ["CPUExecutionProvider"]
    assert report["onnxruntime_profile"] and "onnxruntime" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "onnxruntime,tpu"], "expected some of torch-literal"),
        (["--backends", "tensorrt"], "the tensorrt backend needs an engine"),
        (["--runs", "0"], "expected runs >= 1"),
    ],
)
def test_climax_bench_refuses_bad_plans(argv: list[str], message: str, small_onnx: Path, capsys) -> None:
    from climax_deploy.cli import run_cli

    try:
        code = run_cli("climax-bench", bench_main, ["--model", str(small_onnx), *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_climax_bench_attention_cpu(tmp_path: Path) -> None:
    """Each CPU variant runs in its own process on a small problem; the table names every variant."""
    out = tmp_path / "attention.json"
    cmd = [sys.executable, "-m", "climax_deploy.validate.bench_attention", "--device", "cpu", "--seq-len", "64",
           "--heads", "2", "--head-dim", "16", "--repeats", "1", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    results = {r["variant"]: r for r in run["results"]}
    assert set(results) == {"literal", "sdpa_bias", "op"} and not [r for r in results.values() if "error" in r]
    checksums = [r["checksum"] for r in results.values()]
    assert max(checksums) - min(checksums) < 1e-5 * max(checksums)  # the same attention, three ways
    assert "torch.ops.climax (blocked)" in proc.stdout and "1.00x" in proc.stdout


def test_climax_bench_failed_worker_exits_non_zero(small_onnx: Path, tmp_path: Path) -> None:
    """A worker that dies (here: the onnxruntime one, on a model whose bytes were changed) fails the run."""
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(small_onnx, model)
    shutil.copy(str(small_onnx) + ".manifest.json", str(model) + ".manifest.json")
    with open(model, "ab") as f:
        f.write(b"\0")
    cmd = [sys.executable, "-m", "climax_deploy.validate.bench", "--model", str(model), "--backends", "onnxruntime",
           "--runs", "1", "--warmup", "0"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "onnxruntime" in proc.stdout and "worker exited" in proc.stdout, proc


def test_climax_bench_tensorrt_label_needs_an_engine_file(small_onnx: Path, capsys) -> None:
    """An .onnx given as --engine would be timed by ONNX Runtime under the tensorrt label."""
    from climax_deploy.cli import run_cli

    code = run_cli("climax-bench", bench_main, ["--model", str(small_onnx), "--backends", "tensorrt",
                                                "--engine", str(small_onnx)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and ".engine" in err, err


def test_profile_leaves_no_files_behind(small_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from climax_deploy.validate.bench import profile_onnxruntime

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path / "tmp")
    assert profile_onnxruntime(small_onnx, seed=0, threads=1)
    assert list(scratch.iterdir()) == []


def test_climax_bench_attention_cuda_without_cuda_is_one_line(capsys) -> None:
    import torch

    from climax_deploy.cli import run_cli
    from climax_deploy.validate.bench_attention import main as attention_main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = run_cli("climax-bench-attention", attention_main, ["--device", "cuda", "--seq-len", "64", "--heads", "2",
                                                              "--head-dim", "16", "--repeats", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cuda" in err.lower(), err
