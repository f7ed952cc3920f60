#!/usr/bin/env python3
"""GPU check: build TensorRT engines, check their parity, and time them next to PyTorch eager.

Run where TensorRT, a CUDA GPU and torch with CUDA exist (e.g. NVIDIA's TensorRT container with
`pip install -e '.[export,tensorrt,kernels]'`):

    python scripts/gpu_check.py                      # small and full presets, inline/native/plugin
    python scripts/gpu_check.py --presets small --modes inline,native --runs 50

For each preset it exports the fp16 graph (fp32 islands), then per attention mode it builds an
engine, runs check-parity (fp16 tolerances, mountain and flat), and measures predict() latency
(median of --runs after --warmup, host<->device copies included) and GPU memory. PyTorch eager fp32
and fp16 (fused attention) run on the same GPU for comparison. A mode that fails to build is
reported and the others go on. Writes OUT/gpu_check.json; exit 0 when every built engine passes
parity, 1 otherwise, 2 when TensorRT or the GPU is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from climax_deploy.manifest import OnnxManifest

MODES = ("inline", "native", "plugin")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="small,full", help="comma-separated presets (default small,full)")
    p.add_argument("--modes", default=",".join(MODES), help="attention modes (default inline,native,plugin)")
    p.add_argument("--batch", type=int, default=1, help="batch for timing (profile is 1..batch)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per backend (>= 20; default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--workspace", default="8GiB", help="TensorRT workspace limit (default 8GiB)")
    p.add_argument("--out", type=Path, default=Path("build/gpu_check"), help="output folder")
    args = p.parse_args(argv)
    if args.runs < 20:
        p.error("--runs must be >= 20")
    return args


def preflight() -> dict[str, Any]:
    """Versions and the GPU, or exit 2 with what is missing."""
    from climax_deploy.errors import MissingBackendError
    from climax_deploy.runtime.tensorrt_backend import gpu_info, tensorrt_version

    try:
        version = tensorrt_version()
        gpu = gpu_info()
        import torch

        if not torch.cuda.is_available():
            raise MissingBackendError("torch has no CUDA here: install a CUDA build of torch for the eager baselines")
    except MissingBackendError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return {"tensorrt": str(version), "gpu": dataclasses.asdict(gpu), "torch": torch.__version__,
            "cuda": torch.version.cuda}  # fmt: skip


def gpu_used_bytes() -> int:
    """Device memory in use on the current GPU, by every process."""
    import torch

    free, total = torch.cuda.mem_get_info()
    return int(total - free)


def time_calls(fn: Callable[[], Any], runs: int, warmup: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median, min and max milliseconds of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "runs": runs}


def sample_batch(manifest: OnnxManifest, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """`batch` copies of the seeded mountain sample, standardised with the export's statistics."""
    from climax_deploy.synthetic import synthetic_sample
    from climax_deploy.validate.terrain import make_terrain

    record = manifest.model
    x = synthetic_sample(record.variables, make_terrain("mountain", record.grid), 0, record.standardisation)[None]
    return np.repeat(x, batch, axis=0), np.full(batch, 24.0, np.float32)


def torch_eager(preset: str, dtype_name: str, x: np.ndarray, lead: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """PyTorch eager on the GPU (fused attention) in `dtype_name`: latency and peak memory."""
    import torch

    from climax_deploy.model import build_model

    dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype_name]
    gc.collect()  # the previous row's model and buffers
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = gpu_used_bytes()
    model = build_model(preset, seed=0).to("cuda", dtype)
    xt, lt = torch.from_numpy(x).to("cuda", dtype), torch.from_numpy(lead).to("cuda")

    def call() -> None:
        with torch.inference_mode():
            model(xt, lt, attention="fused")

    timing = time_calls(call, args.runs, args.warmup, torch.cuda.synchronize)
    result = {"backend": f"pytorch eager {dtype_name} (fused attention)", **timing,
              "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
              "gpu_used_delta_mib": (gpu_used_bytes() - before) / 2**20}  # fmt: skip
    return result  # the model and buffers go with this frame; the next row starts with empty_cache()


def engine_row(preset: str, mode: str, onnx_path: Path, x: np.ndarray, lead: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Build one attention mode's engine, check its parity, time it; an error is reported in the row."""
    import torch

    from climax_deploy.export.tensorrt_build import build_engine
    from climax_deploy.export.tensorrt_profile import EngineOptions, parse_size
    from climax_deploy.manifest import BatchSpec
    from climax_deploy.validate.parity import load_artifact, run_parity

    engine = onnx_path.with_name(f"{onnx_path.stem}.{mode}.engine")
    row: dict[str, Any] = {"backend": f"tensorrt fp16 ({mode})", "engine": str(engine)}
    try:
        options = EngineOptions(batch=BatchSpec(1, args.batch, max(args.batch, 2)), attention=mode,
                                workspace_bytes=parse_size(args.workspace),
                                timing_cache=args.out / "timing.cache")  # fmt: skip
        manifest = build_engine(onnx_path, engine, options)
        row.update(build_seconds=manifest.build_seconds, build_path=manifest.build_path)
        report = run_parity(engine, ("mountain", "flat"))
        row["parity_passed"] = report.passed
        row["worst_rel_l2"] = max(r.metrics.rel_l2 for r in report.rows)
        row["worst_fidelity"] = max(s.fidelity for s in report.signal)
        torch.cuda.empty_cache()
        before = gpu_used_bytes()
        with load_artifact(engine) as runner:
            row.update(time_calls(lambda: runner.predict_batched(x, lead), args.runs, args.warmup, lambda: None))
            row["gpu_used_delta_mib"] = (gpu_used_bytes() - before) / 2**20
    except Exception as exc:  # a mode that fails is reported; the others still run
        row["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    return row


def main(argv: list[str] | None = None) -> int:
    """Every preset x attention mode; exit 0 when every engine that built passes parity."""
    args = parse_args(argv)
    env = preflight()
    args.out.mkdir(parents=True, exist_ok=True)
    from climax_deploy.export import ExportOptions, export_model

    print(f"TensorRT {env['tensorrt']} on {env['gpu']['name']} (cc {env['gpu']['compute_capability']}), "
          f"torch {env['torch']} CUDA {env['cuda']}", flush=True)  # fmt: skip
    results: dict[str, Any] = {"environment": env, "presets": {}}
    for preset in args.presets.split(","):
        onnx_path = args.out / f"{preset}_fp16.onnx"
        manifest = export_model(preset, onnx_path, ExportOptions(precision="fp16"), seed=0)
        x, lead = sample_batch(manifest, args.batch)
        rows = [torch_eager(preset, "fp32", x, lead, args), torch_eager(preset, "fp16", x, lead, args)]
        rows += [engine_row(preset, mode, onnx_path, x, lead, args) for mode in args.modes.split(",")]
        results["presets"][preset] = rows
        print_table(preset, args.batch, rows)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    engines = [r for rows in results["presets"].values() for r in rows if r["backend"].startswith("tensorrt")]
    ok = all(r.get("parity_passed") for r in engines if "error" not in r)
    print(f"wrote {args.out / 'gpu_check.json'}; parity {'PASS' if ok else 'FAIL'} for every engine that built")
    return 0 if ok else 1


def print_table(preset: str, batch: int, rows: list[dict[str, Any]]) -> None:
    """One preset's rows as a text table on stdout."""
    print(f"\n{preset} preset, batch {batch}")
    header = f"{'backend':<40} {'median ms':>10} {'GPU MiB':>9} {'rel L2':>9} {'fidelity':>9}  parity"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:<40} error: {r['error'][:120]}")
            continue
        mem = r.get("peak_allocated_mib", r.get("gpu_used_delta_mib", float("nan")))
        parity = {True: "pass", False: "FAIL"}.get(r.get("parity_passed"), "-")  # type: ignore[arg-type]
        rel = f"{r['worst_rel_l2']:9.2e}" if "worst_rel_l2" in r else f"{'-':>9}"
        fid = f"{r['worst_fidelity']:9.2e}" if "worst_fidelity" in r else f"{'-':>9}"
        print(f"{r['backend']:<40} {r['median_ms']:10.2f} {mem:9.0f} {rel} {fid}  {parity}")
    print("GPU MiB: PyTorch = peak allocated by its allocator; TensorRT = device memory in use after the runs "
          "minus before loading (weights + activations + context)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
