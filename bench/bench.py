"""`climax-bench`: whole-model latency, peak memory and parity per backend, side by side.

Each backend runs in its own process (so its peak RSS is its own) on the same seeded mountain samples:
PyTorch `literal` (the author's code's formulas, also the parity reference), PyTorch `fused`, ONNX Runtime on
the exported model, and TensorRT where an engine is given. The CPU peers a user would pick instead:
`openvino` (the OpenVINO runner, f32), `openvino-bf16` (where the CPU has bf16), `openvino-hand` (OpenVINO
run by hand on the same inlined model: no runner, f32 hint) and `torch-compile` (inductor, CPU; its
compilation is the warm-up). Latency is the median of `--runs` after `--warmup` runs; ratios are against
PyTorch `fused`; `--floor` adds the FLOP floor (matmul FLOPs over this machine's matmul rate, same run).

    climax-bench                                  # full preset, exports build/bench/full.onnx if absent
    climax-bench --preset small --runs 5 --json bench.json
    climax-bench --config grid.json --batch 4     # any architecture and grid, B = 4
    climax-bench --profile                        # also ONNX Runtime's top operators by time
    climax-bench --backends torch-fused,onnxruntime,openvino,openvino-hand,openvino-bf16,torch-compile --floor
    climax-bench --scaling --patches 2048,8192,32768   # time and memory over grids: bench/scaling.py
    climax-bench --scaling --plot scaling.png     # ... and drawn, log-log: bench/scaling_plot.py
    climax-bench --memory-model                   # TensorRT engines' memory from shapes: bench/memory_model.py
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
from typing import TYPE_CHECKING, Any

import numpy as np

from climax_deploy.cli import EXIT_FAILED, EXIT_OK, ArgParser, run_cli
from climax_deploy.errors import BadInputError
from climax_deploy.bench.scaling import DEFAULT_PATCHES

if TYPE_CHECKING:
    from climax_deploy.manifest import Manifest
    from climax_deploy.model.config import ModelConfig
    from climax_deploy.model.physics_attention import AttentionImpl
    from climax_deploy.runner import Runner

BACKENDS = ("torch-literal", "torch-fused", "onnxruntime", "tensorrt", "openvino", "openvino-bf16",
            "openvino-hand", "torch-compile")
OPENVINO_BACKENDS = {"openvino": "fp32", "openvino-bf16": "bf16", "openvino-hand": "fp32"}
DEFAULT_BACKENDS = ("torch-literal", "torch-fused", "onnxruntime")
BASELINE = "torch-fused"
REFERENCE = "torch-literal"
LEAD_TIME_H = 24.0


def _check_plan(backends: Sequence[str], engine: Path | None, runs: int, warmup: int, batch: int = 1) -> None:
    """BadInputError for unknown backends, tensorrt without an engine, or impossible run or batch counts."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise BadInputError(f"expected backends among {list(BACKENDS)}, got unknown {unknown}")
    if "tensorrt" in backends and engine is None:
        raise BadInputError("the tensorrt backend needs an engine (--engine FILE.engine), got none")
    if engine is not None and engine.suffix.lower() != ".engine":
        # Anything else would be loaded by another backend and timed under the tensorrt label.
        raise BadInputError(f"--engine must be a TensorRT .engine file, got {engine.name!r}")
    if runs < 1 or warmup < 0:
        raise BadInputError(f"expected runs >= 1 and warm-up runs >= 0, got {runs} and {warmup}")
    if batch < 1:
        raise BadInputError(f"expected a batch of >= 1 samples, got {batch}")


def bench_sample(manifest: Manifest, seed: int, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`batch` seeded mountain samples [B, V, H, W] (seeds seed, seed + 1, ...), standardised with the
    artifact's statistics, and their lead times [B]."""
    from climax_deploy.synthetic import synthetic_sample
    from climax_deploy.validate.terrain import make_terrain

    record = manifest.model
    samples = [synthetic_sample(record.variables, make_terrain("mountain", record.grid, s), s, record.standardisation)
               for s in range(seed, seed + batch)]  # fmt: skip
    return np.stack(samples), np.full(batch, LEAD_TIME_H, dtype=np.float32)


def import_backend(backend: str) -> None:
    """Import what `backend` runs on, so that the RSS measured next is the process before the model."""
    if backend.startswith("torch-"):
        import climax_deploy.model  # noqa: F401  (torch and the climax ops)
    elif backend == "onnxruntime":
        from climax_deploy.optional import ONNXRUNTIME

        ONNXRUNTIME.load()
    elif backend in OPENVINO_BACKENDS:
        from climax_deploy.optional import OPENVINO

        OPENVINO.load()


class OpenVinoByHand:
    """OpenVINO as a user runs it by hand: the inlined model compiled with the f32 hint, called directly
    (no runner: no input checks, no request pool). The runner's yardstick; reads the runner's IR cache."""

    def __init__(self, artifact: Path, threads: int | None) -> None:
        import openvino as ov

        from climax_deploy.manifest import read_onnx_manifest
        from climax_deploy.runtime.openvino_backend import build_ir, ir_cache_path

        ir = ir_cache_path(read_onnx_manifest(artifact), None, ov.__version__)
        if not ir.is_file():  # run_bench converts it beforehand, in its own process
            build_ir(artifact, ir, ov)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled: Any = ov.Core().compile_model(str(ir), "CPU", config)

    def predict_batched(self, x: np.ndarray, lead: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled({"x": x, "lead_times": lead})[0])

    def describe(self) -> dict[str, Any]:
        return {"backend": "openvino-hand", "precision": "fp32"}

    def __enter__(self) -> OpenVinoByHand:
        return self

    def __exit__(self, *exc: object) -> None:
        self.compiled = None


def bench_runner(backend: str, artifact: Path, manifest: Manifest, threads: int | None) -> Runner:
    """The runner of one backend (imports only what that backend needs); `artifact` is the .onnx or .engine."""
    if backend.startswith("torch-"):
        import torch

        from climax_deploy.model.runner import TorchRunner
        from climax_deploy.validate.parity import reference_from_manifest

        if threads:
            torch.set_num_threads(threads)
        attention: AttentionImpl = "literal" if backend == REFERENCE else "fused"
        model = reference_from_manifest(manifest)
        if backend == "torch-compile":
            return CompiledTorchRunner(model, manifest)
        return TorchRunner(model, attention=attention, precision="fp32", manifest=manifest)
    from climax_deploy.validate.parity import load_artifact

    if backend == "onnxruntime":
        from climax_deploy.runtime import OnnxRuntimeOptions

        return load_artifact(artifact, OnnxRuntimeOptions(providers="cpu", threads=threads))
    if backend == "openvino-hand":
        return OpenVinoByHand(artifact, threads)  # type: ignore[return-value]  (times the same calls)
    if backend in OPENVINO_BACKENDS:
        return load_artifact(artifact, {"precision": OPENVINO_BACKENDS[backend], "threads": threads}, "openvino")
    return load_artifact(artifact)


def CompiledTorchRunner(model: Any, manifest: Manifest) -> Runner:  # noqa: N802  (a class made on demand)
    """The fused PyTorch model under torch.compile (inductor, CPU), behind the runner contract."""
    import torch

    from climax_deploy.model.runner import TorchRunner

    class _Compiled(TorchRunner):
        backend = "torch-compile"

        def __init__(self) -> None:
            super().__init__(model, attention="fused", precision="fp32", manifest=manifest)
            self.compiled = torch.compile(model, backend="inductor")

        def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                y = self.compiled(torch.from_numpy(x), torch.from_numpy(lead_times), attention="fused")
            return np.asarray(y.float().numpy())

    return _Compiled()


def time_backend(
    backend: str,
    model_path: Path,
    output: Path,
    *,
    engine: Path | None = None,
    runs: int = 3,
    warmup: int = 1,
    seed: int = 0,
    threads: int | None = None,
    batch: int = 1,
) -> dict[str, Any]:
    """Time one backend in this process (the worker of run_bench); save its output to `output` (.npy).

    rss_before_gb is the process after importing the backend and making the samples, before the model:
    peak_rss_gb less it is what the model and its runs cost.
    """
    from climax_deploy.manifest import read_manifest

    _check_plan([backend], engine, runs, warmup, batch)
    manifest = read_manifest(model_path)
    x, lead = bench_sample(manifest, seed, batch)
    import_backend(backend)
    rss_before = peak_rss_bytes()
    artifact = engine if backend == "tensorrt" and engine is not None else model_path
    times: list[float] = []
    y = np.empty(0, dtype=np.float32)
    with bench_runner(backend, artifact, manifest, threads) as runner:
        for i in range(warmup + runs):
            start = time.perf_counter()
            y = runner.predict_batched(x, lead)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed)
            print(f"[climax-bench] {backend}: run {i + 1}/{warmup + runs} {elapsed:.2f} s"
                  f"{' (warm-up)' if i < warmup else ''}", file=sys.stderr, flush=True)  # fmt: skip
        described = runner.describe()
    np.save(output, y)
    return {
        "backend": backend,
        "batch": batch,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_rss_gb": peak_rss_bytes() / 1e9,
        "rss_before_gb": rss_before / 1e9,
        "describe": described,
    }


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started (exec), in bytes.

    Linux's VmHWM, not getrusage's ru_maxrss: ru_maxrss survives exec, so a worker started by a parent that
    holds torch would report the parent's size at fork as its own peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def profile_onnxruntime(model_path: Path, seed: int, threads: int | None, top: int = 10) -> list[dict[str, Any]]:
    """ONNX Runtime's own per-node profile of one run, summed by operator type."""
    from climax_deploy.manifest import read_onnx_manifest
    from climax_deploy.optional import ONNXRUNTIME
    from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME

    ort = ONNXRUNTIME.load()
    x, lead = bench_sample(read_onnx_manifest(model_path), seed)
    with tempfile.TemporaryDirectory(prefix="climax-bench-profile.") as tmp:  # the profile is read, then removed
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort_profile")
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        session.run(None, {INPUT_NAME: x, LEAD_TIMES_NAME: lead})
        events = json.loads(Path(session.end_profiling()).read_text())
        del session
    by_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            by_op[event["args"].get("op_name", "?")] += event["dur"] / 1e6
    total = sum(by_op.values()) or 1.0
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": op, "seconds": s, "share": s / total} for op, s in ranked]


def ensure_model(model: Path | None, source: str | Path, seed: int, directory: Path = Path("build/bench")) -> Path:
    """`model`, or DIRECTORY/<preset or config file's stem>.onnx, exported (seeded weights) unless up to date.

    Up to date: the export's manifest records the same architecture and seed, and the file is newer than
    every source file of the model and the exporter (a cached export must not outlive the code that made it).
    """
    if model is not None:
        return model
    from climax_deploy.model.config import resolve_config

    config = resolve_config(source)
    path = directory / f"{Path(str(source)).stem}.onnx"
    if not _export_is_current(path, config, seed):
        from climax_deploy.export.onnx_export import export_model
        from climax_deploy.progress import Progress

        export_model(source, path, seed=seed, progress=Progress("climax-bench"))
    return path


def _export_is_current(path: Path, config: ModelConfig, seed: int) -> bool:
    import importlib.util

    from climax_deploy.manifest import read_onnx_manifest
    from climax_deploy.model.config import ModelConfig

    if not path.is_file():
        return False
    try:
        record = read_onnx_manifest(path, verify=False).model
    except Exception:  # noqa: BLE001  (an unreadable cache is simply rebuilt)
        return False
    if ModelConfig.from_dict(dict(record.config)) != config or record.seed != seed or record.checkpoint:
        return False
    sources = []
    for package in ("climax_deploy.model", "climax_deploy.export"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            sources += Path(folder).glob("*.py")
    return all(path.stat().st_mtime >= s.stat().st_mtime for s in sources)


def parse_backends(text: str) -> list[str]:
    """--backends 'a,b' -> ['a', 'b'], each one of BACKENDS."""
    backends = [b.strip() for b in text.split(",") if b.strip()]
    if not backends or any(b not in BACKENDS for b in backends):
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(BACKENDS)} (comma-separated), got {text!r}")
    return backends


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


def run_bench(
    model_path: Path,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    *,
    engine: Path | None = None,
    runs: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    seed: int = 0,
    profile: bool = False,
    batch: int = 1,
    floor: bool = False,
    worker_timeout: float | None = None,
) -> dict[str, Any]:
    """Time each backend in its own process; ratios against PyTorch `fused`, parity against `literal`.

    floor: also the FLOP floor (the graph's matmul FLOPs over this machine's matmul rate, measured before and
    after the backends, the better kept). worker_timeout: seconds a backend's process may take (compilation
    included) before it is stopped and reported as timed out.
    """
    from climax_deploy.bench.scaling import machine_load
    from climax_deploy.validate.metrics import error_metrics

    _check_plan(backends, engine, runs, warmup, batch)
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, np.ndarray] = {}
    load_before = machine_load()
    rate = None
    if floor:
        from climax_deploy.bench.flops import measure_matmul_rate

        rate = measure_matmul_rate(threads)
    if any(b in OPENVINO_BACKENDS for b in backends):
        prepare_openvino(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            out = Path(tmp) / f"{backend}.npy"
            cmd = [sys.executable, "-m", "climax_deploy.bench.bench", "--worker", backend, "--model",
                   str(model_path), "--output", str(out), "--runs", str(runs), "--warmup", str(warmup),
                   "--seed", str(seed), "--batch", str(batch)]  # fmt: skip
            if threads:
                cmd += ["--threads", str(threads)]
            if engine:
                cmd += ["--engine", str(engine)]
            print(f"[climax-bench] {backend} ...", file=sys.stderr, flush=True)
            try:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=worker_timeout)
            except subprocess.TimeoutExpired:
                results[backend] = {"backend": backend, "error": f"timed out after {worker_timeout:g} s"}
                continue
            if proc.returncode != 0:
                killed = " (killed: out of memory?)" if proc.returncode == -9 else ""
                results[backend] = {"backend": backend, "error": f"worker exited {proc.returncode}{killed}"}
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
        "batch": batch,
        "runs": runs,
        "warmup": warmup,
        "load_before": load_before,
        "load_after": machine_load(),
        "results": list(results.values()),
    }
    if rate is not None:
        from climax_deploy.bench.flops import count_flops, measure_matmul_rate

        after = measure_matmul_rate(threads)
        rate = after if after["flops_per_s"] > rate["flops_per_s"] else rate  # a busy moment only lowers it
        flops = count_flops(model_path, batch)
        report["floor"] = {"flops": flops.to_dict(), "matmul_rate": rate, "floor_s": flops.total / rate["flops_per_s"]}
        for result in results.values():
            if "median_s" in result:
                result["ratio_vs_floor"] = result["median_s"] / report["floor"]["floor_s"]
    if profile and "onnxruntime" in backends:
        print("[climax-bench] profiling ONNX Runtime ...", file=sys.stderr, flush=True)
        report["onnxruntime_profile"] = profile_onnxruntime(model_path, seed, threads)
    return report


def prepare_openvino(model_path: Path) -> None:
    """Convert the export for OpenVINO (inline, save the IR) in its own process, before the timed workers:
    the conversion's memory is not the runner's, and a worker reads the cached IR as a user's second load does."""
    code = ("import sys; from climax_deploy.runtime import load; "
            "load(sys.argv[1], backend='openvino').close()")  # fmt: skip
    print("[climax-bench] converting for OpenVINO (cached) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", code, str(model_path)], check=False)


def format_bench(report: dict[str, Any]) -> str:
    """The benchmark table as text."""
    lines = [f"model: {report['model']}   machine: {report['machine']}   B = {report.get('batch', 1)}, "
             f"median of {report['runs']} runs after {report['warmup']} warm-up"]  # fmt: skip
    for key in ("load_before", "load_after"):
        if report.get(key, {}).get("load_average"):
            avg = report[key]["load_average"]
            lines.append(f"{key.replace('_', ' ')}: load average {avg['1min']:.2f}, {avg['5min']:.2f}, {avg['15min']:.2f}")
    floor = report.get("floor")
    if floor:
        rate = floor["matmul_rate"]
        lines.append(f"FLOP floor: {floor['flops']['total'] / 1e9:.0f} GFLOP (matmul) / {rate['flops_per_s'] / 1e9:.0f} "
                     f"GFLOP/s ({rate['library']} {rate['size']}^3) = {floor['floor_s']:.2f} s")  # fmt: skip
    header = (f"{'backend':<15} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS GB':>12} {'x fused':>8} "
              f"{'x floor':>8} {'rel L2 vs literal':>18}")  # fmt: skip
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['backend']:<15} {r['error']}")
            continue
        ratio = f"{r['ratio_vs_fused']:.2f}" if r.get("ratio_vs_fused") else "-"
        vs_floor = f"{r['ratio_vs_floor']:.2f}" if r.get("ratio_vs_floor") else "-"
        parity = r.get("parity_vs_literal", {}).get("rel_l2")
        parity_text = "-" if parity is None else f"{parity:.2e}"
        lines.append(
            f"{r['backend']:<15} {r['median_s']:9.2f} {min(r['times_s']):7.2f} {max(r['times_s']):7.2f} "
            f"{r['peak_rss_gb']:12.2f} {ratio:>8} {vs_floor:>8} {parity_text:>18}"
        )
    if report.get("onnxruntime_profile"):
        lines += ["", "ONNX Runtime, top operators (one run):"]
        for p in report["onnxruntime_profile"]:
            lines.append(f"  {p['op']:<22} {p['seconds']:7.2f} s  {100 * p['share']:5.1f} %")
    return "\n".join(lines)


def build_parser() -> ArgParser:
    """climax-bench's arguments (and the hidden ones of its per-backend worker processes)."""
    p = ArgParser(prog="climax-bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", default=None, help="preset to export when --model is not given (default full)")
    source.add_argument("--config", type=Path, metavar="FILE",
                        help="architecture and grid (.json/.yaml, as export-onnx --config) to export and benchmark; "
                             "with --scaling, the series' architecture (its grid is replaced per --patches)")  # fmt: skip
    source.add_argument("--model", type=Path,
                        help="exported .onnx to benchmark (default: build/bench/<preset or config>.onnx, exported "
                             "unless up to date)")  # fmt: skip
    p.add_argument("--engine", type=Path, help="TensorRT engine for the tensorrt backend")
    p.add_argument("--backends", type=parse_backends, default=list(DEFAULT_BACKENDS),
                   help=f"comma-separated, of {', '.join(BACKENDS)} (default {','.join(DEFAULT_BACKENDS)})")  # fmt: skip
    p.add_argument("--runs", type=int, default=3, help="timed runs per backend (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs per backend (default 1)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for torch and ONNX Runtime")
    p.add_argument("--batch", type=int, default=1, help="samples per predict (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="also profile ONNX Runtime's operators")
    p.add_argument("--floor", action="store_true",
                   help="also the FLOP floor: matmul FLOPs of the graph over this machine's matmul rate (same run)")
    p.add_argument("--worker-timeout", type=float, default=None, metavar="S",
                   help="stop a backend's process after S seconds (e.g. torch-compile's compilation)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--scaling", action="store_true",
                   help="time and peak memory per backend over --patches with the growth exponents, plus the full "
                        "preset; each model's FLOP floor against this machine's measured matmul rate")  # fmt: skip
    p.add_argument("--patches", default=DEFAULT_PATCHES, metavar="N,N|RxC,...",
                   help=f"--scaling's grids: patch counts (rows:cols near 1:2) or ROWSxCOLS patch grids "
                        f"(default {DEFAULT_PATCHES}); the architecture is --config's, else width 128, depth 2, 4 heads")  # fmt: skip
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="with --scaling: draw time and memory against patches (log-log) per backend, with the "
                        "growth exponents and the FLOP floor (needs the 'plot' extra)")  # fmt: skip
    p.add_argument("--no-full", dest="full", action="store_false",
                   help="--scaling without the full preset's row")  # fmt: skip
    p.add_argument("--workdir", type=Path, default=Path("build/bench/scaling"),
                   help="--scaling's exported models and their configs (default build/bench/scaling)")  # fmt: skip
    p.add_argument("--memory-model", action="store_true",
                   help="print the TensorRT engines' memory per attention mode, computed from shapes (docs/memory.md)")  # fmt: skip
    p.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run climax-bench (or, with --worker, time one backend and print its result as one JSON line)."""
    args = build_parser().parse_args(argv)
    if args.worker:
        result = time_backend(args.worker, args.model, args.output, engine=args.engine, runs=args.runs,
                              warmup=args.warmup, seed=args.seed, threads=args.threads, batch=args.batch)  # fmt: skip
        print(json.dumps(result, default=str))
        return EXIT_OK
    if args.memory_model:
        from climax_deploy.model.config import resolve_config
        from climax_deploy.bench.memory_model import format_memory_table, memory_table

        table = memory_table(resolve_config(args.config or args.preset or "full"), batch=args.batch)
        print(format_memory_table(table))
        _write_json(args.json, table, {})
        return EXIT_OK
    if args.plot is not None and not args.scaling:
        raise BadInputError(f"--plot draws the scaling series: expected --scaling with it, got --plot {args.plot} alone")
    _check_plan(args.backends, args.engine, args.runs, args.warmup, args.batch)  # before any export or worker
    if args.scaling:
        return _scaling(args)
    _write_json(args.json, None, {"--model": args.model, "--engine": args.engine, "--config": args.config})
    model = ensure_model(args.model, args.config or args.preset or "full", args.seed)
    report = run_bench(model, args.backends, engine=args.engine, runs=args.runs, warmup=args.warmup,
                       threads=args.threads, seed=args.seed, profile=args.profile, batch=args.batch,
                       floor=args.floor, worker_timeout=args.worker_timeout)  # fmt: skip
    print(format_bench(report))
    _write_json(args.json, report, {})
    failed = [r["backend"] for r in report["results"] if "error" in r]
    if failed:
        print(f"climax-bench: error: backend(s) {', '.join(failed)} failed; see their lines above", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _write_json(path: Path | None, report: dict[str, Any] | None, inputs: dict[str, Path | None]) -> None:
    """With `report` None: check that --json can be written (before any work); else write it atomically."""
    if path is None:
        return
    from climax_deploy.artifacts import check_outputs_distinct, check_writable, write_json_atomic

    if report is None:
        check_outputs_distinct(inputs, {"--json": path})
        check_writable(path)
    else:
        write_json_atomic(path, report)


def _scaling(args: argparse.Namespace) -> int:
    """climax-bench --scaling: the series over --patches (and the full preset), as a table and JSON."""
    from climax_deploy.bench.scaling import format_scaling, parse_patches, run_scaling

    if args.model is not None or args.engine is not None or args.preset not in (None, "full"):
        raise BadInputError("--scaling exports its own models: give the architecture with --config, not "
                            f"--model/--engine/--preset (got {args.model or args.engine or args.preset})")  # fmt: skip
    grids = parse_patches(args.patches)
    base = None
    if args.config is not None:
        from climax_deploy.model.config import load_config_file

        base = load_config_file(args.config)
    _write_json(args.json, None, {"--config": args.config})
    if args.plot is not None:
        from climax_deploy.artifacts import check_outputs_distinct, check_writable
        from climax_deploy.figures import check_png_path, require_matplotlib

        check_png_path(args.plot, "--plot")
        check_outputs_distinct({"--config": args.config}, {"--plot": args.plot, "--json": args.json})
        check_writable(args.plot)
        require_matplotlib()
    backends = [b for b in args.backends if b != "tensorrt"]
    report = run_scaling(grids, base=base, full=args.full, backends=backends, workdir=args.workdir,
                         runs=args.runs, warmup=args.warmup, batch=args.batch, threads=args.threads, seed=args.seed)  # fmt: skip
    print(format_scaling(report))
    _write_json(args.json, report, {})
    if args.plot is not None:
        from climax_deploy.bench.scaling_plot import plot_scaling

        plot_scaling(report, args.plot)
        print(f"wrote {args.plot}")
    failed = [f"{row['name']}: {r['backend']}" for row in report["rows"] for r in row["results"] if "error" in r]
    if failed:
        print(f"climax-bench: error: {', '.join(failed)} failed; see the table", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def entry() -> None:
    """Console script `climax-bench`."""
    sys.exit(run_cli("climax-bench", main))


if __name__ == "__main__":
    entry()
