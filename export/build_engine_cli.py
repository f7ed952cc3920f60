"""`build-engine`: an exported ONNX model -> a TensorRT engine (+ manifest), written atomically."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from climax_deploy.cli import EXIT_OK, ArgParser, run_cli
from climax_deploy.export.tensorrt_profile import ASSUMED_TENSORRT, DEFAULT_DYNAMIC_PROFILE, format_command, parse_size
from climax_deploy.manifest import (
    ATTENTION_MODES,
    DEFAULT_OPT_LEVEL,
    HARDWARE_COMPAT_LEVELS,
    PRECISION_CHOICES,
    BatchSpec,
    BuildOptions,
)
from climax_deploy.tensorrt_version import TensorRTVersion


def build_parser() -> ArgParser:
    p = ArgParser(
        prog="build-engine",
        description=(
            "Build a TensorRT engine from a model written by export-onnx. An fp16 export (export-onnx "
            "--precision fp16) is built as a strongly typed network, which keeps its fp32 islands and is "
            "the only way TensorRT 11 builds fp16. Writes ENGINE and ENGINE.manifest.json atomically. "
            "Needs TensorRT's Python package and an NVIDIA GPU, except for --print-trtexec."
        ),
    )
    p.add_argument("model", type=Path, help="MODEL.onnx from export-onnx (its .manifest.json beside it)")
    p.add_argument("-o", "--output", type=Path, help="engine file (default: MODEL.engine beside the model)")
    p.add_argument("--batch", metavar="MIN,OPT,MAX",
                   help="optimisation profile over the batch (default: the export's fixed batch, "
                        f"else {DEFAULT_DYNAMIC_PROFILE})")  # fmt: skip
    p.add_argument("--workspace", dest="workspace_bytes", metavar="SIZE",
                   help="workspace memory-pool limit, e.g. 4GiB (default: TensorRT's)")  # fmt: skip
    p.add_argument("--timing-cache", metavar="FILE", help="timing cache to load if present and save after")
    p.add_argument("--opt-level", type=int, default=DEFAULT_OPT_LEVEL, metavar="0-5",
                   help=f"builder optimisation level (default {DEFAULT_OPT_LEVEL})")  # fmt: skip
    p.add_argument("--version-compatible", action="store_true",
                   help="engine runs on later TensorRT releases and on the lean runtime (tensorrt_lean)")  # fmt: skip
    p.add_argument("--exclude-lean-runtime", action="store_true",
                   help="with --version-compatible: do not embed the lean runtime (the target ships its own)")  # fmt: skip
    p.add_argument("--hardware-compat", dest="hardware_compatibility", default="none", choices=HARDWARE_COMPAT_LEVELS,
                   help="hardware-compatibility level (default none: this GPU's architecture only)")  # fmt: skip
    p.add_argument("--attention", default="inline", choices=ATTENTION_MODES,
                   help="inline: the parser expands the ONNX function (default); native: ONNX Attention-23 -> "
                        "TensorRT's fused attention (TensorRT >= 10.14); plugin: the fused Triton plugin")  # fmt: skip
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="auto (default): the graph's; fp16 on an fp32 graph uses TensorRT 10's FP16 flag")  # fmt: skip
    p.add_argument("--tf32", action="store_true",
                   help="let TensorRT use TF32 for float32 matrix products (BuilderFlag.TF32; default off: "
                        "full float32, as check-parity grades it)")  # fmt: skip
    p.add_argument("--save-onnx", type=Path, metavar="FILE", help="also write the attention-rewritten ONNX")
    p.add_argument("--print-trtexec", action="store_true",
                   help="print the equivalent trtexec command (writing the rewritten ONNX it needs) and exit; "
                        "needs no TensorRT")  # fmt: skip
    p.add_argument("--target-tensorrt", metavar="X.Y",
                   help="with --print-trtexec: TensorRT version to plan for "
                        f"(default: installed, else {ASSUMED_TENSORRT})")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.batch = BatchSpec.parse(args.batch) if args.batch else None
    args.workspace_bytes = parse_size(args.workspace_bytes) if args.workspace_bytes else None
    # Each BuildOptions field is the flag of the same name (its dest).
    options = BuildOptions(**{name: getattr(args, name) for name in BuildOptions.__dataclass_fields__})
    if args.print_trtexec:
        return print_trtexec(args.model, args.output, options, args.target_tensorrt, args.save_onnx)
    return build(args.model, args.output, options, args.save_onnx, quiet=args.quiet)


def build(model: Path, output: Path | None, options: BuildOptions, save_onnx: Path | None, quiet: bool) -> int:
    from climax_deploy.optional import ONNX_FOR_TENSORRT, POLYGRAPHY

    for dependency in (ONNX_FOR_TENSORRT, POLYGRAPHY):  # the `tensorrt` extra, named before any work
        dependency.load()
    from climax_deploy.export.tensorrt_build import build_engine, default_engine_path
    from climax_deploy.progress import Progress

    engine = output or default_engine_path(model)
    manifest = build_engine(model, engine, options, Progress("build-engine", enabled=not quiet), save_onnx)
    print(f"wrote {engine} and {engine}.manifest.json (TensorRT {manifest.tensorrt_version}, {manifest.precision}, "
          f"attention {manifest.build.attention}, batch {manifest.batch.min}..{manifest.batch.max}, "
          f"{manifest.build_seconds} s)")  # fmt: skip
    return EXIT_OK


def print_trtexec(
    model: Path, output: Path | None, options: BuildOptions, target: str | None, save_onnx: Path | None
) -> int:
    from climax_deploy.optional import ONNX_FOR_TENSORRT

    ONNX_FOR_TENSORRT.load()  # reads and rewrites the ONNX file: the `tensorrt` extra, named up front
    from climax_deploy.export.tensorrt_build import plan_trtexec
    recipe = plan_trtexec(model, output, options, TensorRTVersion.parse(target) if target else None, save_onnx)
    for note in recipe.notes:
        print(f"build-engine: note: {note}", file=sys.stderr)
    print(f"# TensorRT {recipe.version}: {recipe.plan.path}")
    print(format_command(recipe.command))
    return EXIT_OK


def entry() -> None:
    sys.exit(run_cli("build-engine", main))


if __name__ == "__main__":  # pragma: no cover
    entry()
