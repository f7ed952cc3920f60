"""`climax-bench --scaling`: latency and peak memory per backend over a series of patch counts.

One architecture (default: the narrow model, width 128, depth 2, 4 heads) on grids of growing
patch counts, plus the full preset on its own grid; each backend in its own process per grid (so its
peak RSS is its own), median of `--runs`. Per backend, the growth exponents of time and memory are the
least-squares slopes of log(value) over log(patches). Memory for the exponent is the run's own: the
process's peak RSS less its RSS after importing the backend, before loading the model. Each model's
FLOP floor is its matmul FLOPs (counted from the ONNX graph, `bench/flops.py`) over this machine's
fp32 matmul rate, measured in the same run. The machine's load is recorded before and after.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from climax_deploy.errors import BadInputError

if TYPE_CHECKING:
    from climax_deploy.model.config import ModelConfig

NARROW = {"embed_dim": 128, "depth": 2, "num_heads": 4}  # the narrow model
DEFAULT_PATCHES = "2048,8192,32768"
MEMORY_HEADROOM = 0.8  # a backend runs only where its modelled memory is under this share of what is free


def patch_grid(patches: int) -> tuple[int, int]:
    """rows x cols == patches, as close to the full preset's 1:2 (rows:cols) as the divisors allow."""
    if patches < 1:
        raise BadInputError(f"expected a patch count >= 1, got {patches}")
    rows = max(r for r in range(1, math.isqrt(patches // 2 or 1) + 1) if patches % r == 0)
    return rows, patches // rows


def parse_patches(text: str) -> list[tuple[int, int]]:
    """'2048,8192' or '32x64,64x128' (patch rows x cols) -> [(rows, cols), ...], ascending, distinct."""
    grids = []
    for item in (t.strip().lower() for t in text.split(",")):
        try:
            if "x" in item:
                rows, cols = (int(v) for v in item.split("x"))
            else:
                rows, cols = patch_grid(int(item))
        except ValueError:
            raise BadInputError(f"--patches: expected patch counts or ROWSxCOLS grids, comma-separated, "
                                f"got {item!r} in {text!r}") from None  # fmt: skip
        if rows < 1 or cols < 1:
            raise BadInputError(f"--patches: expected grids of at least 1 x 1 patches, got {item!r}")
        grids.append((rows, cols))
    if not grids:
        raise BadInputError(f"--patches: expected at least one patch count, got {text!r}")
    return sorted(set(grids), key=lambda g: (g[0] * g[1], g))


def series_config(base: ModelConfig, grid: tuple[int, int]) -> ModelConfig:
    """`base` on a patch grid of rows x cols, named by its width, depth, heads and patch count."""
    rows, cols = grid
    p = base.patch_size
    name = f"w{base.embed_dim}-d{base.depth}-h{base.num_heads}-{rows}x{cols}"
    return base.on_image((rows * p, cols * p), name)


def narrow_config() -> ModelConfig:
    """The scaling series' default architecture: the full preset's, width 128, depth 2, 4 heads."""
    from climax_deploy.model.config import PRESETS

    return dataclasses.replace(PRESETS["full"], **NARROW, name="narrow")


def growth_exponent(patches: Sequence[float], values: Sequence[float]) -> float | None:
    """The least-squares slope of log(value) over log(patches): value ~ patches ** slope; None if < 2 points."""
    points = [(math.log(n), math.log(v)) for n, v in zip(patches, values, strict=True) if v > 0]
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def literal_bytes(config: ModelConfig, batch: int) -> int:
    """PyTorch `literal`'s N x N tensors: the [B, N, N] rise and mask, ~3 live [B, H, N, N] fp32 at its peak."""
    n = config.num_patches
    return 4 * batch * n * n * (3 * config.num_heads + 2)


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_load(top: int = 5) -> dict[str, Any]:
    """The load averages and the busiest processes (by %CPU, from `ps`), to print beside the timings."""
    load = dict(zip(("1min", "5min", "15min"), os.getloadavg(), strict=True)) if hasattr(os, "getloadavg") else {}
    busiest: list[str] = []
    try:
        ps = subprocess.run(["ps", "-eo", "pid,pcpu,rss,comm", "--sort=-pcpu"], capture_output=True, text=True,
                            timeout=10, check=True).stdout.splitlines()[1:]  # fmt: skip
        for line in ps:
            pid, pcpu, rss, comm = line.split(None, 3)
            if int(pid) != os.getpid() and comm.strip() != "ps" and float(pcpu) >= 1.0:
                busiest.append(f"{comm.strip()} (pid {pid}, {pcpu}% CPU, {int(rss) / 1e6:.1f} GB)")
            if len(busiest) >= top:
                break
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return {"load_average": load, "cores": os.cpu_count(), "busiest": busiest}


def plan_backends(config: ModelConfig, backends: Sequence[str], batch: int,
                  free: int | None) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    """The backends to run on `config`, and why the others are skipped (PyTorch literal where it cannot fit)."""
    run, skipped = [], {}
    for backend in backends:
        need = literal_bytes(config, batch) if backend == "torch-literal" else 0
        if free is not None and need > MEMORY_HEADROOM * free:
            skipped[backend] = f"skipped: N x N needs ~{need / 1e9:.0f} GB, {free / 1e9:.0f} GB free"
        else:
            run.append(backend)
    return run, skipped


def write_config(config: ModelConfig, directory: Path) -> Path:
    """`config` as DIR/<name>.json (what `export-onnx --config` and `climax-bench --config` read)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{config.name}.json"
    data = config.to_dict()
    data.pop("name")
    text = json.dumps(data, indent=1) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def run_scaling(
    grids: Sequence[tuple[int, int]],
    *,
    base: ModelConfig | None = None,
    full: bool = True,
    backends: Sequence[str] = ("torch-literal", "torch-fused", "onnxruntime"),
    workdir: Path = Path("build/bench/scaling"),
    runs: int = 3,
    warmup: int = 1,
    batch: int = 1,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Export (or reuse) each model, time every backend on it in its own process, and fit the exponents."""
    from climax_deploy.model.config import PRESETS
    from climax_deploy.bench.bench import _machine, ensure_model, run_bench
    from climax_deploy.bench.flops import count_flops, measure_matmul_rate

    base = base or narrow_config()
    models = [("series", series_config(base, g)) for g in grids]
    if full:
        models.append(("full", PRESETS["full"]))
    load_before = machine_load()
    rate = measure_matmul_rate(threads)
    rows = []
    for role, config in models:
        path = ensure_model(None, write_config(config, workdir) if role == "series" else "full", seed,
                            directory=workdir)  # fmt: skip
        flops = count_flops(path, batch)
        todo, skipped = plan_backends(config, backends, batch, available_bytes())
        print(f"[climax-bench] {config.name}: {config.num_patches} patches, {flops.total / 1e9:.1f} GFLOP, "
              f"backends {', '.join(todo)}", file=sys.stderr, flush=True)  # fmt: skip
        bench = run_bench(path, todo, runs=runs, warmup=warmup, threads=threads, seed=seed, batch=batch)
        rows.append({"role": role, "name": config.name, "config": config.to_dict(), "patches": config.num_patches,
                     "grid": list(config.grid), "model": str(path), "flops": flops.to_dict(),
                     "results": bench["results"], "skipped": skipped})  # fmt: skip
    rate_after = measure_matmul_rate(threads)
    if rate_after["flops_per_s"] > rate["flops_per_s"]:
        rate = rate_after  # the machine's rate is the best it reached; a busy moment only lowers a measurement
    for row in rows:
        row["floor_s"] = row["flops"]["total"] / rate["flops_per_s"]
    return {
        "machine": _machine(),
        "load_before": load_before,
        "load_after": machine_load(),
        "matmul_rate": rate,
        "runs": runs,
        "warmup": warmup,
        "batch": batch,
        "threads": threads,
        "series": base.to_dict() | {"name": base.name},
        "rows": rows,
        "exponents": fit_exponents([r for r in rows if r["role"] == "series"], backends),
    }


def run_memory_gb(result: dict[str, Any]) -> float:
    """The run's own memory: peak RSS less the RSS after importing the backend, before loading the model."""
    return result["peak_rss_gb"] - result.get("rss_before_gb", 0.0)


def fit_exponents(rows: Sequence[dict[str, Any]], backends: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per backend, the growth exponents of median time and run memory over the rows it ran on."""
    fits = {}
    for backend in backends:
        points = [(row["patches"], r) for row in rows for r in row["results"]
                  if r["backend"] == backend and "median_s" in r]  # fmt: skip
        fits[backend] = {
            "time": growth_exponent([n for n, _ in points], [r["median_s"] for _, r in points]),
            "memory": growth_exponent([n for n, _ in points], [run_memory_gb(r) for _, r in points]),
            "patches": [n for n, _ in points],
        }
    return fits


LABELS = {"onnxruntime": "ONNX Runtime", "torch-fused": "PyTorch fused", "torch-literal": "PyTorch literal",
          "tensorrt": "TensorRT"}  # fmt: skip


def _cell(row: dict[str, Any], backend: str) -> str:
    if backend in row["skipped"]:
        return row["skipped"][backend]
    r = next((r for r in row["results"] if r["backend"] == backend), None)
    if r is None:
        return "-"
    if "median_s" not in r:
        return f"failed ({r.get('error', '?')})"
    return f"{r['median_s']:.2f} s, {r['peak_rss_gb']:.2f} GB"


def _ratio(row: dict[str, Any], backend: str, against: str | None) -> str:
    times = {r["backend"]: r.get("median_s") for r in row["results"]}
    t = times.get(backend)
    base = row["floor_s"] if against is None else times.get(against)
    return f"{t / base:.2f}" if t and base else "-"


def _exponent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_scaling(report: dict[str, Any]) -> str:
    """The scaling table (Markdown), the exponents, the FLOP floor and the machine's load."""
    backends = [b for b in LABELS if b in report["exponents"]]
    series = report["series"]
    load = report["load_before"]
    avg = load["load_average"]
    lines = [
        f"machine: {report['machine']}; fp32 matmul rate {report['matmul_rate']['flops_per_s'] / 1e9:.0f} GFLOP/s "
        f"({report['matmul_rate']['library']}, {report['matmul_rate']['size']}^3, best in this run)",
        f"load average before {_load(avg)}, after {_load(report['load_after']['load_average'])} "
        f"({load['cores']} cores); busiest before: {'; '.join(load['busiest']) or 'none'}",
        f"B = {report['batch']}, fp32, median of {report['runs']} runs after {report['warmup']} warm-up, "
        "each backend in its own process; memory is the process's peak RSS",
        "",
        "| model | patches (grid) | matmul GFLOP | FLOP floor | "
        + " | ".join(LABELS[b] for b in backends) + " | ORT / fused | ORT / floor |",
        "| --- " * (6 + len(backends)) + "|",
    ]
    width = f"width {series['embed_dim']}, depth {series['depth']}, {series['num_heads']} heads"
    for row in report["rows"]:
        name = width if row["role"] == "series" else "full preset"
        rows, cols = row["grid"]
        lines.append(f"| {name} | {row['patches']} ({rows} x {cols}) | {row['flops']['total'] / 1e9:.1f} | "
                     f"{row['floor_s']:.2f} s | " + " | ".join(_cell(row, b) for b in backends)
                     + f" | {_ratio(row, 'onnxruntime', 'torch-fused')} | {_ratio(row, 'onnxruntime', None)} |")  # fmt: skip
    fits = report["exponents"]
    series_patches = [row["patches"] for row in report["rows"] if row["role"] == "series"]
    span = f"{min(series_patches)}-{max(series_patches)}" if series_patches else "-"
    lines.append(f"| growth exponent, time / memory | {span} | | | "
                 + " | ".join(f"{_exponent(fits[b]['time'])} / {_exponent(fits[b]['memory'])}" for b in backends)
                 + " | | |")  # fmt: skip
    lines += ["", "Growth exponents: least-squares slope of log(median time) and log(peak RSS less the RSS after "
              "importing the backend) over log(patches), over the grids each backend ran on."]  # fmt: skip
    unresolved = sorted({u for row in report["rows"] for u in row["flops"]["unresolved"]})
    if unresolved:
        lines.append(f"FLOP count incomplete (shapes unresolved, floor is lower still): {', '.join(unresolved[:5])}")
    cores = load["cores"] or 1
    if avg and avg.get("1min", 0) > 0.25 * cores:
        lines.append(f"The machine was busy when the run started (1-min load {avg['1min']:.2f} on {cores} cores): "
                     "these are not quiet-machine timings.")  # fmt: skip
    return "\n".join(lines)


def _load(avg: dict[str, float]) -> str:
    return " ".join(f"{avg[k]:.2f}" for k in ("1min", "5min", "15min") if k in avg) or "unknown"
