"""climax-gpu-check: run every check this toolkit has for a CUDA machine, with or without TensorRT.

    climax-gpu-check                         # everything there is: kernel sweep, reference, bench, TensorRT
    climax-gpu-check --skip bench tensorrt   # the numerics only
    python bench/gpu_check.py             # the same from a plain checkout, no pip install (docs/gpu_check.md)

Rows, each pass / FAIL / error / skip:
- kernel: the fused Triton kernel against the float64 bias-form reference, over N in {1, 7, 65, 129,
  8193}, head dims {64, 96, 128}, fp32/fp16/bf16 and beta in {0, 3, 50} (tolerances of
  tests/test_kernels.py: element-wise atol + rtol |ref| by dtype);
- reference: the PyTorch reference's fused attention against its literal form, small preset, fp32
  and fp16, graded by check-parity's tolerance table against the float64 literal model;
- bench: `climax-bench-attention --device cuda` (every variant must run);
- tensorrt: where TensorRT imports, per preset and attention mode an fp16 engine is built, checked
  with check-parity and timed (needs the export extra: torch, onnx).
A table goes to stdout and OUT/gpu_check.json. Exit 0 only when at least one row ran and every row
that ran passed; 1 otherwise; 2 (one line on stderr) where no CUDA device is visible.
"""

from __future__ import annotations

import argparse
import functools
import math
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __name__ == "__main__" and __package__ in (None, ""):  # `python bench/gpu_check.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from checkout_bootstrap import bootstrap_checkout  # type: ignore[import-not-found]

    bootstrap_checkout(Path(__file__).resolve().parents[1])
    del bootstrap_checkout

from climax_deploy.cli import EXIT_FAILED, EXIT_OK, ArgParser, run_cli
from climax_deploy.errors import MissingBackendError

if TYPE_CHECKING:
    import torch

GROUPS = ("kernel", "reference", "bench", "tensorrt")
SEQ_LENS = (1, 7, 65, 129, 8193)
HEAD_DIMS = (64, 96, 128)
DTYPES = ("float32", "float16", "bfloat16")
BETAS = (0.0, 3.0, 50.0)
# Element-wise (atol, rtol) against the float64 reference, by q/k/v dtype; reasons in tests/test_kernels.py.
KERNEL_TOLERANCES = {"float32": (2e-5, 1e-5), "float16": (2e-3, 4e-3), "bfloat16": (2e-2, 3e-2)}
LONG_SEQUENCE = 4096  # from here on a case runs with one batch and one head (the float64 reference is N x N)
TENSORRT_MODES = ("inline", "native", "plugin")


@dataclass
class Row:
    """One check's outcome: status is pass, fail, error (it could not run to the end) or skip."""

    group: str
    name: str
    status: str
    detail: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ran(self) -> bool:
        return self.status != "skip"


def verdict(rows: Sequence[Row]) -> tuple[bool, str]:
    """Passed only when at least one row ran and every row that ran passed; and a one-line summary."""
    ran = [r for r in rows if r.ran]
    failed = [r for r in ran if r.status != "pass"]
    skipped = len(rows) - len(ran)
    if not ran:
        return False, f"FAIL: no check ran ({skipped} skipped)"
    if failed:
        return False, f"FAIL: {len(failed)} of {len(ran)} rows that ran failed ({skipped} skipped)"
    return True, f"PASS: all {len(ran)} rows that ran passed ({skipped} skipped)"


def timed_row(group: str, name: str, check: Callable[[], Row]) -> Row:
    """Run one check; an exception becomes an error row (the others still run)."""
    start = time.perf_counter()
    try:
        row = check()
    except Exception as exc:  # one failing check must not hide the rest
        traceback.print_exc(file=sys.stderr)
        row = Row(group, name, "error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    row.seconds = time.perf_counter() - start
    return row


# -- kernel sweep ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelCase:
    seq_len: int
    head_dim: int
    dtype: str
    beta: float

    @property
    def batch_heads(self) -> tuple[int, int]:
        return (1, 1) if self.seq_len >= LONG_SEQUENCE else (2, 2)

    @property
    def name(self) -> str:
        return f"N={self.seq_len} D={self.head_dim} {self.dtype} beta={self.beta:g}"


def kernel_cases(
    seq_lens: Iterable[int] = SEQ_LENS,
    head_dims: Iterable[int] = HEAD_DIMS,
    dtypes: Iterable[str] = DTYPES,
    betas: Iterable[float] = BETAS,
) -> list[KernelCase]:
    return [KernelCase(n, d, t, b) for n in seq_lens for d in head_dims for t in dtypes for b in betas]


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, beta: float) -> torch.Tensor:
    """The bias form in float64: softmax(q k^T / sqrt(D) + max(-softplus(beta (e_j - e_i)), ln 1e-6)) v."""
    import torch

    from climax_deploy.model.physics_attention import elevation_bias

    qd, kd, vd, ed = (t.double() for t in (q, k, v, e))
    scores = qd @ kd.transpose(-2, -1) / math.sqrt(q.shape[-1])
    bias = elevation_bias(ed, torch.tensor(beta, dtype=torch.float64, device=e.device)).unsqueeze(1)
    return torch.softmax(scores + bias, dim=-1) @ vd


def kernel_inputs(case: KernelCase, device: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded q, k, v ~ N(0, 1) in the case's dtype and min-max normalised elevations [B, N] in [0, 1]."""
    import torch

    b, h = case.batch_heads
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (b, h, case.seq_len, case.head_dim)
    q, k, v = (torch.randn(shape, generator=gen, device=device).to(getattr(torch, case.dtype)) for _ in range(3))
    e = torch.rand(b, case.seq_len, generator=gen, device=device)
    span = e.amax(1, keepdim=True) - e.amin(1, keepdim=True)
    e = torch.where(span > 1e-6, (e - e.amin(1, keepdim=True)) / span.clamp_min(1e-6), torch.zeros_like(e))
    return q, k, v, e


def kernel_row(case: KernelCase, device: str, kernel: Callable[..., torch.Tensor] | None = None) -> Row:
    """The kernel (default: climax_deploy.kernels.elevation_attention) on one case, against float64."""
    import torch

    if kernel is None:
        from climax_deploy.kernels import elevation_attention

        kernel = elevation_attention
    q, k, v, e = kernel_inputs(case, device)
    out = kernel(q, k, v, e, torch.tensor(case.beta, device=device))
    ref = exact_attention(q, k, v, e, case.beta)
    atol, rtol = KERNEL_TOLERANCES[case.dtype]
    if out.shape != ref.shape or out.dtype != q.dtype:
        return Row("kernel", case.name, "fail", f"output {tuple(out.shape)} {out.dtype}, expected {tuple(ref.shape)} {q.dtype}")
    err = (out.double() - ref).abs()
    ratio = float((err / (atol + rtol * ref.abs())).max())  # <= 1: within tolerance everywhere
    finite = bool(torch.isfinite(out).all())
    status = "pass" if finite and ratio <= 1.0 else "fail"
    detail = f"max |err| {float(err.max()):.2e}, worst err/tol {ratio:.2f}" + ("" if finite else ", non-finite output")
    return Row("kernel", case.name, status, detail, {"max_abs_err": float(err.max()), "worst_err_over_tol": ratio})


# -- PyTorch reference: fused vs literal ------------------------------------------------------------


def reference_row(precision: str, device: str, preset: str = "small", terrains: Sequence[str] = ("mountain", "flat")) -> Row:
    """The reference's fused attention in `precision` against the float64 literal model, graded like check-parity:
    rel L2 (fused vs truth) <= factor x rel L2 (literal in the same precision vs truth) + floor."""
    import numpy as np
    import torch

    from climax_deploy.model import build_model
    from climax_deploy.synthetic import synthetic_sample
    from climax_deploy.validate.metrics import error_metrics, tolerance
    from climax_deploy.validate.terrain import make_terrain

    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
    model = build_model(preset, seed=0).eval()
    cfg = model.config
    x = np.stack([synthetic_sample(cfg.variables, make_terrain(t, cfg.img_size), 0) for t in terrains])
    lead = torch.full((len(terrains),), 24.0, device=device)
    xt = torch.from_numpy(x).to(device)
    with torch.inference_mode():
        truth = model.to(device, torch.float64)(xt.double(), lead.double(), attention="literal").cpu().numpy()
        model.to(device, dtype)
        fused = model(xt.to(dtype), lead, attention="fused").float().cpu().numpy()
        literal = model(xt.to(dtype), lead, attention="literal").float().cpu().numpy()
    tol = tolerance(precision)
    fused_err = error_metrics(fused, truth).rel_l2
    literal_err = error_metrics(literal, truth).rel_l2
    bound = tol.rel_l2_bound(literal_err)
    finite = bool(np.isfinite(fused).all())
    status = "pass" if finite and fused_err <= bound else "fail"
    detail = f"rel L2 fused {fused_err:.2e} vs bound {bound:.2e} (literal {literal_err:.2e})"
    return Row("reference", f"{preset} {precision} fused vs literal ({', '.join(terrains)})", status, detail,
               {"fused_rel_l2": fused_err, "literal_rel_l2": literal_err, "bound": bound})  # fmt: skip


# -- climax-bench-attention --device cuda -----------------------------------------------------------


def bench_row(**kwargs: Any) -> Row:
    """climax-bench-attention --device cuda (in-process; its variants run in child processes)."""
    from climax_deploy.bench.bench_attention import format_report, run_benchmark

    report = run_benchmark("cuda", **kwargs)
    print(format_report(report), flush=True)
    results = [r for run in report["runs"] for r in run["results"]]
    errors = [f"{r['variant']}: {r['error']}" for r in results if "error" in r]
    speedups = {}
    for run in report["runs"]:
        by = {r["variant"]: r for r in run["results"] if "median_s" in r}
        if "kernel" in by and "sdpa_bias" in by:
            speedups[f"B={run['batch']}"] = by["sdpa_bias"]["median_s"] / by["kernel"]["median_s"]
    detail = "; ".join(errors) if errors else "kernel speed-up over SDPA+bias " + ", ".join(
        f"{k} {v:.2f}x" for k, v in speedups.items())  # fmt: skip
    return Row("bench", "climax-bench-attention --device cuda", "fail" if errors else "pass", detail,
               {"report": report})  # fmt: skip


# -- TensorRT (only where it imports) ---------------------------------------------------------------


def tensorrt_rows(presets: Sequence[str], modes: Sequence[str], out: Path, runs: int = 20) -> list[Row]:
    """Per preset: export fp16; per attention mode: build an engine, check parity, time predict() (batch 1)."""
    import numpy as np

    from climax_deploy.export import ExportOptions, export_model
    from climax_deploy.export.tensorrt_build import build_engine
    from climax_deploy.manifest import BatchSpec, BuildOptions
    from climax_deploy.synthetic import synthetic_sample
    from climax_deploy.validate.parity import load_artifact, run_parity
    from climax_deploy.validate.terrain import make_terrain

    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for preset in presets:
        onnx_path = out / f"{preset}_fp16.onnx"
        try:
            record = export_model(preset, onnx_path, ExportOptions(precision="fp16"), seed=0).model
        except Exception as exc:  # reported as the preset's one row; the next preset still runs
            rows.append(Row("tensorrt", f"{preset} export fp16", "error", f"{type(exc).__name__}: {exc}"))
            continue
        x = synthetic_sample(record.variables, make_terrain("mountain", record.grid), 0, record.standardisation)[None]
        lead = np.full(1, 24.0, np.float32)
        for mode in modes:

            def check(mode: str = mode, onnx_path: Path = onnx_path, preset: str = preset) -> Row:
                engine = onnx_path.with_name(f"{onnx_path.stem}.{mode}.engine")
                options = BuildOptions(batch=BatchSpec(1, 1, 2), attention=mode, timing_cache=str(out / "timing.cache"))
                manifest = build_engine(onnx_path, engine, options)
                report = run_parity(engine, ("mountain", "flat"))
                worst = max(r.metrics.rel_l2 / r.bound for r in report.rows)
                with load_artifact(engine) as runner:
                    for _ in range(3):
                        runner.predict(x, lead)
                    times = []
                    for _ in range(runs):
                        start = time.perf_counter()
                        runner.predict(x, lead)  # host -> device -> host included
                        times.append((time.perf_counter() - start) * 1e3)
                metrics = {"build_seconds": manifest.build_seconds, "worst_rel_l2_over_bound": worst,
                           "median_ms": statistics.median(times)}  # fmt: skip
                return Row("tensorrt", f"{preset} fp16 engine ({mode})", "pass" if report.passed else "fail",
                           f"parity {'pass' if report.passed else 'FAIL'}, worst rel L2 / bound {worst:.2f}, "
                           f"predict {metrics['median_ms']:.2f} ms", metrics)  # fmt: skip

            rows.append(timed_row("tensorrt", f"{preset} fp16 engine ({mode})", check))
    return rows


# -- the run ----------------------------------------------------------------------------------------


def require_cuda() -> dict[str, Any]:
    """The CUDA device and versions, or MissingBackendError in one line (no CUDA, or torch without it)."""
    try:
        import torch
    except ImportError:
        raise MissingBackendError(
            "no CUDA device: torch is not installed: pip install 'climax-deploy[gpu,export,kernels]' "
            "with a CUDA build of torch"
        ) from None
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise MissingBackendError(f"no CUDA device visible to PyTorch (torch {torch.__version__}, {build}); "
                                  "nothing was checked")  # fmt: skip
    props = torch.cuda.get_device_properties(0)
    env: dict[str, Any] = {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
                           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}  # fmt: skip
    for name in ("triton", "tensorrt"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # absent, or a stubs-only package without a version
            env[name] = None
    return env


def tensorrt_present() -> bool:
    from climax_deploy.optional import TENSORRT

    return TENSORRT.available()


def run_checks(args: argparse.Namespace, device: str = "cuda") -> list[Row]:
    """Every group not skipped, in order; a group whose dependency is absent is one skip row."""
    rows: list[Row] = []
    if "kernel" not in args.skip:
        from climax_deploy.optional import TRITON

        if TRITON.available():
            for case in kernel_cases(args.seq_lens, args.head_dims, args.dtypes, args.betas):
                rows.append(timed_row("kernel", case.name, functools.partial(kernel_row, case, device)))
        else:
            rows.append(Row("kernel", "Triton kernel sweep", "skip", TRITON.missing_message()))
    if "reference" not in args.skip:
        for precision in ("fp32", "fp16"):
            check = functools.partial(reference_row, precision, device)
            rows.append(timed_row("reference", f"small {precision} fused vs literal", check))
    if "bench" not in args.skip:
        rows.append(timed_row("bench", "climax-bench-attention --device cuda", bench_row))
    if "tensorrt" not in args.skip:
        if tensorrt_present():
            rows += tensorrt_rows(args.presets, args.modes, args.out)
        else:
            rows.append(Row("tensorrt", "TensorRT engines", "skip", "TensorRT does not import here"))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """One line per row: group, name, status, seconds, detail."""
    lines = [f"{'group':<10} {'check':<44} {'status':<6} {'s':>7}  detail", "-" * 100]
    for r in rows:
        status = {"pass": "pass", "fail": "FAIL", "error": "ERROR", "skip": "skip"}[r.status]
        lines.append(f"{r.group:<10} {r.name:<44} {status:<6} {r.seconds:7.1f}  {r.detail}")
    return "\n".join(lines)


def write_report(path: Path, environment: dict[str, Any], rows: Sequence[Row], passed: bool, summary: str) -> None:
    from climax_deploy.artifacts import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"environment": environment, "passed": passed, "summary": summary,
                             "rows": [asdict(r) for r in rows]})  # fmt: skip


def build_parser() -> ArgParser:
    p = ArgParser(prog="climax-gpu-check", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("build/gpu_check"), help="output folder (gpu_check.json)")
    p.add_argument("--skip", nargs="+", choices=GROUPS, default=[], help="groups not to run")
    p.add_argument("--seq-lens", type=int, nargs="+", default=list(SEQ_LENS), help="kernel sweep N")
    p.add_argument("--head-dims", type=int, nargs="+", default=list(HEAD_DIMS), help="kernel sweep head dims")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES), help="kernel sweep q/k/v dtypes")
    p.add_argument("--betas", type=float, nargs="+", default=list(BETAS), help="kernel sweep beta")
    p.add_argument("--presets", nargs="+", default=["small", "full"], help="TensorRT rows: presets")
    p.add_argument("--modes", nargs="+", choices=TENSORRT_MODES, default=list(TENSORRT_MODES), help="TensorRT rows: attention modes")
    return p


def main(argv: Sequence[str] | None = None, device_check: Callable[[], dict[str, Any]] = require_cuda,
         device: str = "cuda") -> int:  # fmt: skip
    """Exit 0 when at least one row ran and all that ran passed, 1 otherwise; no CUDA: 2 (one line)."""
    args = build_parser().parse_args(argv)
    environment = device_check()  # MissingBackendError -> run_cli prints one line, exit 2
    print(", ".join(f"{k} {v}" for k, v in environment.items()), flush=True)
    rows = run_checks(args, device)
    passed, summary = verdict(rows)
    print("\n" + format_table(rows))
    report = args.out / "gpu_check.json"
    write_report(report, environment, rows, passed, summary)
    print(f"\nwrote {report}; {summary}")
    return EXIT_OK if passed else EXIT_FAILED


def entry() -> None:
    """Console script `climax-gpu-check`."""
    sys.exit(run_cli("climax-gpu-check", main))


if __name__ == "__main__":
    entry()
