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
