"""`climax-bench`: whole-model latency, peak memory and parity per backend, side by side.

Each backend runs in its own process (so its peak RSS is its own) on the same seeded mountain sample:
PyTorch `literal` (the seed's formulas, also the parity reference), PyTorch `fused`, ONNX Runtime on
the exported model, and TensorRT where an engine is given. Latency is the median of `--runs` after
`--warmup` runs; ratios are against PyTorch `fused`.

    climax-bench                                  # full preset, exports build/bench/full.onnx if absent
    climax-bench --preset small --runs 5 --json bench.json
    climax-bench --profile                        # also ONNX Runtime's top operators by time
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.cli import EXIT_OK, ArgParser, run_cli

BACKENDS = ("torch-literal", "torch-fused", "onnxruntime", "tensorrt")
DEFAULT_BACKENDS = ("torch-literal", "torch-fused", "onnxruntime")
BASELINE = "torch-fused"
REFERENCE = "torch-literal"


def _sample(config: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    from climax_deploy.synthetic import synthetic_sample
    from climax_deploy.validate.terrain import make_terrain

    grid = tuple(config["img_size"])
    x = synthetic_sample(tuple(config["variables"]), make_terrain("mountain", grid, seed), seed)[None]
    return x, np.array([24.0], dtype=np.float32)


def _predictor(backend: str, model_path: Path, manifest: dict[str, Any], threads: int | None) -> Any:
    """A forecaster for one backend (imports only what that backend needs)."""
    if backend.startswith("torch-"):
        import torch

        from climax_deploy.model.runner import TorchRunner
        from climax_deploy.validate.parity import reference_from_manifest

        if threads:
            torch.set_num_threads(threads)
        return TorchRunner(reference_from_manifest(manifest), attention=backend.removeprefix("torch-"))
    from climax_deploy.runtime import load

    if backend == "onnxruntime":
        return load(model_path, providers="cpu", threads=threads)
    return load(model_path)


def worker(args: argparse.Namespace) -> int:
    """Child process: time one backend, save its output, print a JSON result line."""
    from climax_deploy.artifacts import read_manifest

    model_path = Path(args.model)
    manifest = read_manifest(model_path)
    x, lead = _sample(manifest["model_config"], args.seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    predictor = _predictor(args.worker, Path(args.engine or model_path), manifest, args.threads)
    times = []
    y = None
    for i in range(args.warmup + args.runs):
        start = time.perf_counter()
        y = predictor.predict(x, lead)
        elapsed = time.perf_counter() - start
        if i >= args.warmup:
            times.append(elapsed)
        print(f"[climax-bench] {args.worker}: run {i + 1}/{args.warmup + args.runs} {elapsed:.2f} s"
              f"{' (warm-up)' if i < args.warmup else ''}", file=sys.stderr, flush=True)  # fmt: skip
    assert y is not None
    np.save(args.output, y)
    result = {
        "backend": args.worker,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "rss_before_gb": rss_before / 1e6,
        "describe": predictor.describe(),
    }
    print(json.dumps(result, default=str))
    return EXIT_OK


def profile_onnxruntime(model_path: Path, seed: int, threads: int | None, top: int = 10) -> list[dict[str, Any]]:
    """ONNX Runtime's own per-node profile of one run, summed by operator type."""
    import onnxruntime as ort

    from climax_deploy.artifacts import read_manifest

    manifest = read_manifest(model_path)
    x, lead = _sample(manifest["model_config"], seed)
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort_profile")
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"x": x, "lead_times": lead})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            by_op[event["args"].get("op_name", "?")] += event["dur"] / 1e6
    total = sum(by_op.values()) or 1.0
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": op, "seconds": s, "share": s / total} for op, s in ranked]


def _ensure_model(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    path = Path("build/bench") / f"{args.preset}.onnx"
    if not path.is_file():
        from climax_deploy.export import ExportOptions, export_onnx
        from climax_deploy.model import build_model
        from climax_deploy.progress import Progress

        export_onnx(build_model(args.preset, seed=args.seed), path, ExportOptions(),
                    {"preset": args.preset, "seed": args.seed}, Progress("climax-bench"))  # fmt: skip
    return path


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from climax_deploy.validate.metrics import error_metrics

    model_path = _ensure_model(args)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        from climax_deploy.errors import BadInputError

        raise BadInputError(f"unknown backends {unknown}; expected some of {list(BACKENDS)}")
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            out = Path(tmp) / f"{backend}.npy"
            cmd = [sys.executable, "-m", "climax_deploy.validate.bench", "--worker", backend, "--model",
                   str(model_path), "--output", str(out), "--runs", str(args.runs), "--warmup", str(args.warmup),
                   "--seed", str(args.seed)]  # fmt: skip
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.engine:
                cmd += ["--engine", str(args.engine)]
            print(f"[climax-bench] {backend} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                results[backend] = {"backend": backend, "error": f"worker exited {proc.returncode}"}
                continue
            results[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
            outputs[backend] = np.load(out)
    base = results.get(BASELINE, {}).get("median_s")
    for backend, result in results.items():
        if "median_s" not in result:
            continue
        result["ratio_vs_fused"] = result["median_s"] / base if base else None
        if REFERENCE in outputs:
            m = error_metrics(outputs[backend], outputs[REFERENCE])
            result["parity_vs_literal"] = {"rel_l2": m.rel_l2, "max_abs": m.max_abs}
    report: dict[str, Any] = {
        "model": str(model_path),
        "machine": _machine(),
        "runs": args.runs,
        "warmup": args.warmup,
        "results": list(results.values()),
    }
    if args.profile and "onnxruntime" in backends:
        print("[climax-bench] profiling ONNX Runtime ...", file=sys.stderr, flush=True)
        report["onnxruntime_profile"] = profile_onnxruntime(model_path, args.seed, args.threads)
    return report


def format_bench(report: dict[str, Any]) -> str:
    lines = [f"model: {report['model']}   machine: {report['machine']}   "
             f"median of {report['runs']} runs after {report['warmup']} warm-up"]  # fmt: skip
    header = f"{'backend':<15} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS GB':>12} {'x fused':>8} {'rel L2 vs literal':>18}"
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['backend']:<15} {r['error']}")
            continue
        ratio = f"{r['ratio_vs_fused']:.2f}" if r.get("ratio_vs_fused") else "-"
        parity = r.get("parity_vs_literal", {}).get("rel_l2")
        parity_text = "-" if parity is None else f"{parity:.2e}"
        lines.append(
            f"{r['backend']:<15} {r['median_s']:9.2f} {min(r['times_s']):7.2f} {max(r['times_s']):7.2f} "
            f"{r['peak_rss_gb']:12.2f} {ratio:>8} {parity_text:>18}"
        )
    if report.get("onnxruntime_profile"):
        lines += ["", "ONNX Runtime, top operators (one run):"]
        for p in report["onnxruntime_profile"]:
            lines.append(f"  {p['op']:<22} {p['seconds']:7.2f} s  {100 * p['share']:5.1f} %")
    return "\n".join(lines)


def build_parser() -> ArgParser:
    p = ArgParser(prog="climax-bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--preset", default="full", help="preset to export when --model is not given (default full)")
    p.add_argument("--model", help="exported .onnx to benchmark (default: build/bench/<preset>.onnx, exported if absent)")
    p.add_argument("--engine", help="TensorRT engine for the tensorrt backend")
    p.add_argument("--backends", default=",".join(DEFAULT_BACKENDS), help=f"comma-separated, of {', '.join(BACKENDS)}")
    p.add_argument("--runs", type=int, default=3, help="timed runs per backend (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs per backend (default 1)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for torch and ONNX Runtime")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="also profile ONNX Runtime's operators")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args)
    report = run_bench(args)
    print(format_bench(report))
    if args.json:
        from climax_deploy.artifacts import write_json_atomic

        write_json_atomic(args.json, report)
    return EXIT_OK


def entry() -> None:
    sys.exit(run_cli("climax-bench", main))


if __name__ == "__main__":
    entry()
