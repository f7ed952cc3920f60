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
- aot: the TensorRT plugin's PTX launched with TensorRT's 22 arguments (cuda-python or CuPy) vs the JIT kernel;
- tensorrt: where TensorRT imports, per preset and attention mode an fp16 engine is built, checked
  with check-parity (references on the GPU, once per preset) and timed (needs the export extra).
Rows are planned to fit --budget-s (default 480 s: 8 minutes on one H100/H200); what does not fit,
or whose dependency is absent, is a skip row with the reason, printed before and after the run.
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

GROUPS = ("kernel", "aot", "reference", "bench", "tensorrt")
SEQ_LENS = (1, 7, 65, 129, 8193)
HEAD_DIMS = (64, 96, 128)
DTYPES = ("float32", "float16", "bfloat16")
BETAS = (0.0, 3.0, 50.0)
# Element-wise (atol, rtol) against the float64 reference, by q/k/v dtype; reasons in tests/test_kernels.py.
KERNEL_TOLERANCES = {"float32": (2e-5, 1e-5), "float16": (2e-3, 4e-3), "bfloat16": (2e-2, 3e-2)}
LONG_SEQUENCE = 4096  # from here on a case runs with one batch and one head (the float64 reference is N x N)
TENSORRT_MODES = ("inline", "native", "plugin")
# The AOT PTX (what the TensorRT plugin embeds) launched with TensorRT's 22 arguments, vs the JIT kernel.
AOT_CASES = (("float16", 96, 1000), ("float16", 128, 129), ("bfloat16", 64, 257), ("float32", 128, 65))
BUDGET_S = 480.0  # the whole check on one H100/H200: 8 minutes
# Planning estimates in seconds (not measured on a GPU: guesses to be replaced by a run's gpu_check.json):
# a JIT/AOT compile per (dtype, head dim), a kernel case, a reference row, the benchmark, and per
# TensorRT preset an fp16 export + GPU references, and per attention mode an engine build + parity.
ESTIMATES = {
    "compile": 8.0, "kernel_case": 0.5, "aot_case": 1.0, "reference": 20.0, "bench": 90.0,
    "tensorrt_small_prepare": 20.0, "tensorrt_small_mode": 40.0,
    "tensorrt_full_prepare": 120.0, "tensorrt_full_mode": 240.0,
}  # fmt: skip


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


# -- the AOT PTX with TensorRT's argument list --------------------------------------------------------

_TRITON_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def aot_row(dtype: str, head_dim: int, seq_len: int, device: str, launcher: str | None = None) -> Row:
    """The plugin's PTX (trt_plugin.compile_ptx) launched through the CUDA driver with TensorRT's 22
    arguments (kernels/aot_launch.py), against the JIT kernel and the float64 bias form on the same inputs."""
    import torch

    from climax_deploy.kernels import aot_launch, elevation_attention, trt_plugin

    case = KernelCase(seq_len, head_dim, dtype, 50.0)
    q, k, v, e = kernel_inputs(case, device, seed=7)
    beta = torch.tensor(case.beta, device=device)
    compiled = trt_plugin.compile_ptx(_TRITON_TYPES[dtype], "fp32", "fp32", head_dim)
    out = torch.empty_like(q)
    ptrs = {"Q": q.data_ptr(), "K": k.data_ptr(), "V": v.data_ptr(), "E": e.data_ptr(), "BETA": beta.data_ptr(),
            "OUT": out.data_ptr()}  # fmt: skip
    packed = aot_launch.pack_launch(compiled, ptrs, tuple(q.shape))
    used = aot_launch.launch(compiled, packed, torch.cuda.current_stream().cuda_stream, launcher)
    jit = elevation_attention(q, k, v, e, beta)
    ref = exact_attention(q, k, v, e, case.beta)  # float64 on the GPU
    atol, rtol = KERNEL_TOLERANCES[dtype]
    tol = atol + rtol * ref.abs()
    aot_ratio = float(((out.double() - ref).abs() / tol).max())
    jit_ratio = float(((jit.double() - ref).abs() / tol).max())
    diff = float((out.double() - jit.double()).abs().max())
    ok = bool(torch.isfinite(out).all()) and aot_ratio <= 1.0
    detail = (f"via {used}: AOT worst err/tol {aot_ratio:.2f}, JIT {jit_ratio:.2f}, max |AOT - JIT| {diff:.2e}, "
              f"grid {packed.grid} block {packed.block[0]} smem {packed.shared_mem}")  # fmt: skip
    return Row("aot", f"N={seq_len} D={head_dim} {dtype} PTX, 22 args", "pass" if ok else "fail", detail,
               {"launcher": used, "aot_worst_err_over_tol": aot_ratio, "jit_worst_err_over_tol": jit_ratio,
                "max_abs_aot_minus_jit": diff})  # fmt: skip


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


class TensorRTPreset:
    """One preset's fp16 export and its GPU references, made once and shared by its attention modes."""

    def __init__(self, preset: str, out: Path, reference_device: str) -> None:
        self.preset, self.out, self.reference_device = preset, out, reference_device
        self.references: dict[Any, Any] = {}  # run_parity's reference cache: float64 truth and fp16, on the GPU
        self._export: Any = None

    def onnx(self) -> Path:
        from climax_deploy.export import ExportOptions, export_model

        path = self.out / f"{self.preset}_fp16.onnx"
        if self._export is None:
            self.out.mkdir(parents=True, exist_ok=True)
            self._export = export_model(self.preset, path, ExportOptions(precision="fp16"), seed=0).model
        return path

    def row(self, mode: str, runs: int = 20) -> Row:
        """Build an engine in `mode`, check parity (references computed once, on the GPU), time predict() (batch 1)."""
        import numpy as np

        from climax_deploy.export.tensorrt_build import build_engine
        from climax_deploy.manifest import BatchSpec, BuildOptions
        from climax_deploy.synthetic import synthetic_sample
        from climax_deploy.validate.parity import load_artifact, run_parity
        from climax_deploy.validate.terrain import make_terrain

        onnx_path = self.onnx()
        record = self._export
        x = synthetic_sample(record.variables, make_terrain("mountain", record.grid), 0, record.standardisation)[None]
        lead = np.full(1, 24.0, np.float32)
        engine = onnx_path.with_name(f"{onnx_path.stem}.{mode}.engine")
        options = BuildOptions(batch=BatchSpec(1, 1, 2), attention=mode, timing_cache=str(self.out / "timing.cache"))
        manifest = build_engine(onnx_path, engine, options)
        report = run_parity(engine, ("mountain", "flat"), reference_device=self.reference_device,
                            reference_cache=self.references)  # fmt: skip
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
        return Row("tensorrt", f"{self.preset} fp16 engine ({mode})", "pass" if report.passed else "fail",
                   f"parity {'pass' if report.passed else 'FAIL'}, worst rel L2 / bound {worst:.2f}, "
                   f"predict {metrics['median_ms']:.2f} ms", metrics)  # fmt: skip


# -- the plan: what runs within the budget, and what does not (with the reason) ----------------------


@dataclass
class PlannedRow:
    """A check the plan keeps: its group, name, estimated seconds and the function that runs it."""

    group: str
    name: str
    estimate_s: float
    check: Callable[[], Row]


@dataclass
class Plan:
    rows: list[PlannedRow]
    skipped: list[Row]  # status "skip", each with its reason
    budget_s: float

    @property
    def estimate_s(self) -> float:
        return sum(r.estimate_s for r in self.rows)

    def describe(self) -> str:
        lines = [f"plan: {len(self.rows)} rows, estimated {self.estimate_s:.0f} s of the {self.budget_s:.0f} s budget"]
        if self.skipped:
            lines.append(f"not running ({len(self.skipped)}):")
            lines += [f"  {r.group} {r.name}: {r.detail}" for r in self.skipped]
        return "\n".join(lines)


def missing_dependencies(device: str) -> dict[str, str]:
    """Why a group cannot run here, by dependency: triton, launcher (cuda-python or CuPy), tensorrt."""
    from climax_deploy.kernels import aot_launch
    from climax_deploy.optional import TRITON

    missing = {}
    if not TRITON.available():
        missing["triton"] = TRITON.missing_message()
    if device != "cuda":
        missing["launcher"] = f"the PTX needs a CUDA device (running on {device})"
    else:
        try:
            aot_launch.available_launcher()
        except MissingBackendError as exc:
            missing["launcher"] = str(exc)
    if not tensorrt_present():
        missing["tensorrt"] = "TensorRT does not import here"
    return missing


def plan_checks(args: argparse.Namespace, device: str = "cuda", missing: dict[str, str] | None = None) -> Plan:
    """Every row of the groups not skipped, in order, kept while its estimate fits the budget.

    missing: why a dependency is absent (missing_dependencies(device) when not given). A row that does
    not fit what is left of the budget is a skip row saying so; later, cheaper rows still run.
    """
    missing = missing_dependencies(device) if missing is None else missing
    triton, launcher = missing.get("triton"), missing.get("launcher")
    budget = float(args.budget_s)
    est = ESTIMATES
    candidates: list[PlannedRow] = []
    skipped: list[Row] = []

    if "kernel" not in args.skip:
        if triton:
            skipped.append(Row("kernel", "Triton kernel sweep", "skip", triton))
        else:
            seen: set[tuple[int, str]] = set()
            for case in kernel_cases(args.seq_lens, args.head_dims, args.dtypes, args.betas):
                first = (case.head_dim, case.dtype) not in seen
                seen.add((case.head_dim, case.dtype))
                cost = est["kernel_case"] + (est["compile"] if first else 0.0)
                candidates.append(PlannedRow("kernel", case.name, cost, functools.partial(kernel_row, case, device)))
    if "aot" not in args.skip:
        if triton or launcher:
            skipped.append(Row("aot", "AOT PTX with TensorRT's 22 arguments", "skip", triton or launcher or ""))
        else:
            for dtype, head_dim, n in AOT_CASES:
                name = f"N={n} D={head_dim} {dtype} PTX, 22 args"
                candidates.append(PlannedRow("aot", name, est["aot_case"] + est["compile"],
                                             functools.partial(aot_row, dtype, head_dim, n, device)))  # fmt: skip
    if "reference" not in args.skip:
        for precision in ("fp32", "fp16"):
            candidates.append(PlannedRow("reference", f"small {precision} fused vs literal", est["reference"],
                                         functools.partial(reference_row, precision, device)))  # fmt: skip
    if "bench" not in args.skip:
        candidates.append(PlannedRow("bench", "climax-bench-attention --device cuda", est["bench"], bench_row))
    if "tensorrt" not in args.skip:
        if "tensorrt" in missing:
            skipped.append(Row("tensorrt", "TensorRT engines", "skip", missing["tensorrt"]))
        else:
            for preset in args.presets:
                group = TensorRTPreset(preset, args.out, device)
                size = "full" if preset == "full" else "small"
                for i, mode in enumerate(args.modes):
                    cost = est[f"tensorrt_{size}_mode"] + (est[f"tensorrt_{size}_prepare"] if i == 0 else 0.0)
                    candidates.append(PlannedRow("tensorrt", f"{preset} fp16 engine ({mode})", cost,
                                                 functools.partial(group.row, mode)))  # fmt: skip

    kept: list[PlannedRow] = []
    left = budget
    for row in candidates:
        if row.estimate_s <= left:
            kept.append(row)
            left -= row.estimate_s
        else:
            skipped.append(Row(row.group, row.name, "skip",
                               f"estimated {row.estimate_s:.0f} s, {left:.0f} s of the {budget:.0f} s budget left "
                               "(--budget-s or --skip to change the plan)"))  # fmt: skip
    return Plan(kept, skipped, budget)


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


def run_checks(args: argparse.Namespace, device: str = "cuda", plan: Plan | None = None) -> list[Row]:
    """The plan's rows in order, then its skip rows. A row whose estimate no longer fits the budget's
    remaining wall time (earlier rows ran long) is skipped with that reason instead of run."""
    plan = plan or plan_checks(args, device)
    print(plan.describe(), flush=True)
    start = time.perf_counter()
    rows: list[Row] = []
    late: list[Row] = []
    for planned in plan.rows:
        elapsed = time.perf_counter() - start
        if elapsed + planned.estimate_s > plan.budget_s:
            late.append(Row(planned.group, planned.name, "skip",
                            f"budget spent: {elapsed:.0f} s elapsed, estimated {planned.estimate_s:.0f} s more"))  # fmt: skip
            continue
        rows.append(timed_row(planned.group, planned.name, planned.check))
    return rows + plan.skipped + late


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
    p.add_argument("--budget-s", type=float, default=BUDGET_S,
                   help=f"wall-time budget; rows that would not fit are skipped and listed (default {BUDGET_S:.0f})")
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
    not_run = [r for r in rows if not r.ran]
    if not_run:
        print(f"\nnot run ({len(not_run)}):")
        for r in not_run:
            print(f"  {r.group} {r.name}: {r.detail}")
    report = args.out / "gpu_check.json"
    write_report(report, environment, rows, passed, summary)
    print(f"\nwrote {report}; {summary}")
    return EXIT_OK if passed else EXIT_FAILED


def entry() -> None:
    """Console script `climax-gpu-check`."""
    sys.exit(run_cli("climax-gpu-check", main))


if __name__ == "__main__":
    entry()
