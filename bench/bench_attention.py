"""Benchmark the physics attention: fused kernel / blocked CPU op vs SDPA and the author's code's literal form.

    climax-bench-attention --device cpu            # CPU op vs literal, N = 8192, 8 x 96, fp32
    climax-bench-attention --device cuda           # Triton kernel vs SDPA flash / SDPA+bias / literal fp32

Each variant runs in its own subprocess so its peak memory is its own: CPU peak = the child's
ru_maxrss minus its RSS before the call (tensors allocated before the timer are excluded from
"extra"); CUDA peak = torch.cuda.max_memory_allocated minus the inputs. Times are medians.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from climax_deploy.artifacts import check_writable, write_json_atomic
from climax_deploy.cli import EXIT_OK, ArgParser, run_cli
from climax_deploy.errors import BadInputError, MissingBackendError
from climax_deploy.optional import TORCH

VARIANTS = {
    "cpu": ("literal", "sdpa_bias", "op"),
    "cuda": ("flash_nobias", "sdpa_bias", "literal_fp32", "kernel"),
}
LABELS = {
    "literal": "author's literal (mask + renorm)",
    "sdpa_bias": "SDPA + materialised bias",
    "op": "torch.ops.climax (blocked)",
    "flash_nobias": "SDPA flash, no bias",
    "literal_fp32": "author's literal, fp32",
    "kernel": "fused Triton kernel",
}


def _rss_bytes() -> int:
    """This process's resident memory now (ru_maxrss is the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_variant(
    variant: str, device: str, batch: int, heads: int, seq_len: int, head_dim: int, dtype: str, repeats: int
) -> dict[str, Any]:
    """Time one variant in this process; returns median seconds, peak extra bytes, a checksum."""
    import torch
    import torch.nn.functional as F

    import climax_deploy.model  # noqa: F401  (registers torch.ops.climax)
    from climax_deploy.model.physics_attention import (
        elevation_bias,
        literal_elevation_attention,
    )

    dt = getattr(torch, dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (batch, heads, seq_len, head_dim)
    q, k, v = (torch.randn(shape, device=device, generator=gen, dtype=torch.float32).to(dt) for _ in range(3))
    e = torch.rand(batch, seq_len, device=device, generator=gen)
    e = (e - e.amin(1, keepdim=True)) / (e.amax(1, keepdim=True) - e.amin(1, keepdim=True))
    beta = torch.tensor(3.0, device=device)

    def call(q: torch.Tensor = q, k: torch.Tensor = k, v: torch.Tensor = v, e: torch.Tensor = e) -> torch.Tensor:
        if variant in ("literal", "literal_fp32"):
            return literal_elevation_attention(q.float(), k.float(), v.float(), e, beta)
        if variant == "sdpa_bias":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=elevation_bias(e, beta).unsqueeze(1).to(dt))
        if variant == "flash_nobias":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v)
        if variant == "op":
            return torch.ops.climax.elevation_attention(q, k, v, e, beta)
        if variant == "kernel":
            from climax_deploy.kernels import elevation_attention

            return elevation_attention(q, k, v, e, beta)
        raise BadInputError(f"variant must be one of {sorted(LABELS)}, got {variant!r}")

    cuda = device == "cuda"
    with torch.no_grad():
        # Prime code paths on tiny inputs first, so lazily loaded libraries do not count as memory.
        call(q[:, :, :64].contiguous(), k[:, :, :64].contiguous(), v[:, :, :64].contiguous(), e[:, :64].contiguous())
        if cuda:  # baseline: the inputs only; the peak covers warm-up and timed runs
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            base = _rss_bytes()
        out = call()  # warm-up (compiles the kernel on CUDA)
        checksum = float(out.float().abs().mean())
        del out
        times = []
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = call()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            del out
        if cuda:
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    out_bytes = math.prod(shape) * torch.empty((), dtype=dt).element_size()
    return {
        "variant": variant,
        "median_s": statistics.median(times),
        "peak_extra_bytes": max(peak, 0),
        "extra_beyond_output_bytes": max(peak - out_bytes, 0),
        "checksum": checksum,
        "repeats": repeats,
    }


def _child(variant: str, device: str, batch: int, heads: int, seq_len: int, head_dim: int, dtype: str,
           repeats: int) -> dict[str, Any]:  # fmt: skip
    """run_variant in a fresh process, so its peak memory is its own."""
    cmd = [
        sys.executable, "-m", "climax_deploy.bench.bench_attention", "--_child", variant,
        "--device", device, "--batch", str(batch), "--heads", str(heads),
        "--seq-len", str(seq_len), "--head-dim", str(head_dim), "--dtype", dtype,
        "--repeats", str(repeats),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"variant": variant, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _machine(device: str) -> str:
    if device == "cuda":
        import torch

        return str(torch.cuda.get_device_name())
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"


def fused_variant(device: str) -> str:
    """The variant the others are compared with: the Triton kernel on CUDA, the blocked op on CPU."""
    return "kernel" if device == "cuda" else "op"


def run_benchmark(
    device: str = "cpu",
    batches: Sequence[int] | None = None,
    heads: int = 8,
    seq_len: int = 8192,
    head_dim: int = 96,
    dtype: str | None = None,
    repeats: int | None = None,
    variants: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every variant of `device` at each batch size, each in its own process; defaults per device."""
    if device not in VARIANTS:
        raise BadInputError(f"device must be one of {list(VARIANTS)}, got {device!r}")
    variants = list(variants or VARIANTS[device])
    unknown = [v for v in variants if v not in VARIANTS[device]]
    if unknown:
        raise BadInputError(f"variants on {device} are {list(VARIANTS[device])}, got {unknown}")
    TORCH.load()  # every variant runs on torch (the `export` extra): named before any child starts
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise MissingBackendError(
                f"--device cuda needs a CUDA GPU visible to PyTorch, got none (torch {torch.__version__}, {build}); "
                "use --device cpu or install a CUDA build of PyTorch"
            )
    dtype = dtype or ("float16" if device == "cuda" else "float32")
    repeats = repeats or (20 if device == "cuda" else 3)
    report: dict[str, Any] = {"device": device, "machine": _machine(device), "runs": []}
    for batch in batches or ([1, 2] if device == "cuda" else [1]):
        results = [_child(v, device, batch, heads, seq_len, head_dim, dtype, repeats) for v in variants]
        report["runs"].append({"batch": batch, "heads": heads, "seq_len": seq_len, "head_dim": head_dim,
                               "dtype": dtype, "results": results})  # fmt: skip
    return report


def table(results: list[dict[str, Any]], fused: str) -> str:
    """Markdown table: median time, peak memory, and each variant's time over the fused variant's."""
    by = {r["variant"]: r for r in results}
    lines = ["| variant | median | peak extra memory | beyond the output | fused speed-up |", "|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {LABELS[r['variant']]} | failed: {r['error']} | | | |")
            continue
        ratio = ""
        if fused in by and "median_s" in by[fused]:
            ratio = f"{r['median_s'] / by[fused]['median_s']:.2f}x"
        lines.append(
            f"| {LABELS[r['variant']]} | {r['median_s'] * 1e3:.1f} ms | {r['peak_extra_bytes'] / 2**20:.0f} MiB "
            f"| {r['extra_beyond_output_bytes'] / 2**20:.0f} MiB | {ratio} |"
        )
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    """One heading and table per batch size."""
    fused = fused_variant(report["device"])
    blocks = []
    for run in report["runs"]:
        blocks.append(f"\n{report['machine']}: B={run['batch']}, H={run['heads']}, N={run['seq_len']}, "
                      f"D={run['head_dim']}, {run['dtype']}\n{table(run['results'], fused)}")  # fmt: skip
    return "\n".join(blocks)


def build_parser() -> ArgParser:
    """climax-bench-attention's arguments (and the hidden one of its per-variant child processes)."""
    parser = ArgParser(prog="climax-bench-attention", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", choices=tuple(VARIANTS), default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (cpu: 1; cuda: 1 2)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--head-dim", type=int, default=96)
    parser.add_argument("--dtype", default=None, help="q/k/v dtype (cpu: float32; cuda: float16)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per variant (cpu 3, cuda 20)")
    parser.add_argument("--variants", nargs="+", default=None, help="subset of the device's variants")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run climax-bench-attention (or, with --_child, time one variant and print it as one JSON line)."""
    args = build_parser().parse_args(argv)
    if args._child:
        dtype = args.dtype or ("float16" if args.device == "cuda" else "float32")
        repeats = args.repeats or (20 if args.device == "cuda" else 3)
        batch = args.batch[0] if args.batch else 1
        print(json.dumps(run_variant(args._child, args.device, batch, args.heads, args.seq_len, args.head_dim,
                                     dtype, repeats)))  # fmt: skip
        return EXIT_OK
    if args.json:
        check_writable(args.json)  # before the long run
    report = run_benchmark(args.device, args.batch, args.heads, args.seq_len, args.head_dim, args.dtype,
                           args.repeats, args.variants)  # fmt: skip
    print(format_report(report))
    if args.json:
        write_json_atomic(args.json, report)
    return EXIT_OK


def entry() -> None:
    """Console script `climax-bench-attention`."""
    sys.exit(run_cli("climax-bench-attention", main))


if __name__ == "__main__":
    entry()
