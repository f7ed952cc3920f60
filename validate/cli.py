"""`check-parity`: compare an exported model with the PyTorch reference on mountain and flat terrain."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from climax_deploy.cli import EXIT_FAILED, EXIT_OK, ArgParser, run_cli
from climax_deploy.errors import BadInputError
from climax_deploy.synthetic import WIND_KINDS
from climax_deploy.validate.metrics import TOLERANCES, describe_tolerances
from climax_deploy.validate.parity import BACKENDS, MIXED_BATCH_MAX_PATCHES


def _tolerances_help() -> str:
    """'fp32: default: <= 4 x PyTorch fp32's error + floor (...); fp16: ...' from the one table of tolerances."""
    return "; ".join(f"{p}: {describe_tolerances(p)}" for p in TOLERANCES)


def build_parser() -> ArgParser:
    """check-parity's arguments."""
    p = ArgParser(
        prog="check-parity",
        description=(
            "Run an exported model and the PyTorch reference on the same seeded inputs over mountain and "
            "flat terrain; grade the model's per-variable errors and its terrain signal y(mountain) - y(flat) "
            "against the float64 PyTorch truth, relative to PyTorch's own error in the model's precision. "
            "Exit 0 pass, 1 fail, 2 bad input."
        ),
    )
    p.add_argument("model", type=Path, help="exported .onnx file or TensorRT .engine (with its .manifest.json beside it)")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS),
                   help="auto (default): by suffix (.onnx -> onnxruntime, .engine -> tensorrt); openvino: the "
                        ".onnx on OpenVINO (CPU) in --precision fp32 or bf16; torch: the PyTorch model of the "
                        "manifest run eagerly in --precision")  # fmt: skip
    p.add_argument("--precision", choices=list(TOLERANCES), default=None,
                   help=f"the precision to grade in: PyTorch's yardstick and the tolerances ({_tolerances_help()}); "
                        "default: the artifact's")  # fmt: skip
    p.add_argument("--save-polygraphy", type=Path, metavar="DIR",
                   help="write the inputs and the truth's outputs in Polygraphy's JSON formats to DIR, with "
                        "polygraphy run commands (absolute paths) in DIR/README.txt")  # fmt: skip
    p.add_argument("--terrain", action="append", metavar="NAME|FILE.npy",
                   help="mountain, flat, plateau, or an H x W .npy DEM in metres; repeatable "
                        "(default: mountain and flat; flat is always added as the signal baseline)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic weather fields (default 0)")
    p.add_argument("--winds", choices=WIND_KINDS, default="synthetic",
                   help="wind fields of every case: synthetic (turning, default) or an edge case of the "
                        "wind-following scan: calm, zonal, meridional, masked (a third set to the mean)")
    p.add_argument("--lead-time", type=float, default=24.0, help="lead time in hours (default 24)")
    p.add_argument("--mixed-batch", action=argparse.BooleanOptionalAction, default=None,
                   help="also run all terrains as one batch, split at the artifact's batch limit "
                        f"(default: on up to {MIXED_BATCH_MAX_PATCHES} patches)")  # fmt: skip
    p.add_argument("--checkpoint", type=Path, help="weights for the reference if not recorded in the manifest")
    p.add_argument("--providers", default="auto",
                   help="ONNX Runtime providers: auto (default), cpu, cuda, tensorrt (the TensorRT execution provider: "
                        "the gate its results must pass before that route serves, docs/tensorrt.md)")  # fmt: skip
    p.add_argument("--trt-cache-dir", type=Path, metavar="DIR",
                   help="--providers tensorrt: TensorRT's engine and timing cache folder; give the one serving uses, "
                        "so the engines graded are the engines served")  # fmt: skip
    p.add_argument("--trt-fp16", action="store_true",
                   help="--providers tensorrt, fp32 exports: let TensorRT pick fp16 kernels (LayerNorms stay fp32 "
                        "unless --no-trt-layernorm-fp32)")  # fmt: skip
    p.add_argument("--trt-layernorm-fp32", action=argparse.BooleanOptionalAction, default=True,
                   help="with --trt-fp16: keep LayerNormalization out of TensorRT, in fp32 on CUDA (default on)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime (or OpenVINO) intra-op threads")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="also write pictures to DIR: per terrain, maps of the truth's and the backend's terrain "
                        "signal, their difference and the elevation; a summary of errors against the bounds; "
                        "index.html with the tables (needs the 'plot' extra)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def ort_options(args: argparse.Namespace) -> Any:
    """check-parity's ONNX Runtime options; --trt-* without --providers tensorrt is refused in one line."""
    from climax_deploy.runtime import OnnxRuntimeOptions
    from climax_deploy.runtime.onnxruntime_backend import session_providers

    options = OnnxRuntimeOptions(providers=args.providers, threads=args.threads, trt_cache_dir=args.trt_cache_dir,
                                 trt_fp16=args.trt_fp16, trt_layernorm_fp32=args.trt_layernorm_fp32)  # fmt: skip
    if args.providers.lower() not in ("tensorrt", "tensorrtexecutionprovider"):
        if args.trt_cache_dir is not None or args.trt_fp16 or not args.trt_layernorm_fp32:
            raise BadInputError("--trt-cache-dir, --trt-fp16 and --no-trt-layernorm-fp32 need --providers tensorrt")
        return options
    session_providers(["TensorrtExecutionProvider"], options)  # the option rules, before the long run
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run check-parity; exit 0 pass, 1 fail (a ClimaxDeployError becomes exit 2 in `entry`)."""
    args = build_parser().parse_args(argv)
    from climax_deploy.artifacts import check_outputs_distinct, check_writable, check_writable_dir, write_json_atomic
    from climax_deploy.progress import Progress
    from climax_deploy.validate.parity import format_report, run_parity, tensorrt_route_problem

    # Before the long run: no output may overwrite an input, and every output must be writable.
    terrains = {f"--terrain {t}": Path(t) for t in args.terrain or [] if t.endswith(".npy")}
    outputs = {"--json": args.json, "--save-polygraphy": args.save_polygraphy, "--report": args.report}
    check_outputs_distinct({"model": args.model, "--checkpoint": args.checkpoint, **terrains}, outputs)
    check_writable(args.json)
    check_writable_dir(args.save_polygraphy, args.report)
    if args.report is not None:
        from climax_deploy.figures import require_matplotlib

        require_matplotlib()
    onnx = args.model.suffix == ".onnx"
    load_options: Any = ort_options(args) if onnx else None
    if load_options is None and (args.trt_cache_dir is not None or args.trt_fp16 or not args.trt_layernorm_fp32):
        raise BadInputError("--trt-* options apply to .onnx files run with --providers tensorrt")
    if args.backend == "openvino":
        if args.providers != "auto":
            raise BadInputError(f"--providers {args.providers} is an ONNX Runtime option; --backend openvino runs on the CPU")
        load_options = {"threads": args.threads}
    report = run_parity(
        args.model,
        args.terrain or ["mountain", "flat"],
        seed=args.seed,
        lead_time=args.lead_time,
        mixed_batch=args.mixed_batch,
        checkpoint=args.checkpoint,
        load_options=load_options,
        progress=Progress("check-parity", enabled=not args.quiet),
        backend_name=args.backend,
        precision=args.precision,
        save_polygraphy=args.save_polygraphy,
        winds=args.winds,
    )
    print(format_report(report))
    route_problem = tensorrt_route_problem(report.backend, load_options)
    if route_problem:
        print(f"FAIL: {route_problem}")
    if args.json:
        write_json_atomic(args.json, report.as_dict())
    if args.report:
        from climax_deploy.validate.parity_report import INDEX, write_parity_report

        write_parity_report(report, args.report)
        print(f"wrote {args.report / INDEX} and its pictures")
    return EXIT_OK if report.passed and not route_problem else EXIT_FAILED


def entry() -> None:
    """Console script `check-parity`."""
    sys.exit(run_cli("check-parity", main))
