"""`build-engine`: an exported ONNX model -> a TensorRT engine (+ manifest), written atomically."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from climax_deploy.cli import EXIT_OK, ArgParser, run_cli

if TYPE_CHECKING:
    from climax_deploy.export.tensorrt_profile import EngineOptions

DEFAULT_DYNAMIC_BATCH = "1,1,4"
ASSUMED_TENSORRT = "10.14"  # for --print-trtexec where TensorRT itself is not installed (first with IAttention)


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
                   help=f"optimisation profile over the batch (default: the export's fixed batch, else {DEFAULT_DYNAMIC_BATCH})")  # fmt: skip
    p.add_argument("--workspace", metavar="SIZE", help="workspace memory-pool limit, e.g. 4GiB (default: TensorRT's)")
    p.add_argument("--timing-cache", type=Path, metavar="FILE", help="timing cache to load if present and save after")
    p.add_argument("--opt-level", type=int, default=3, metavar="0-5", help="builder optimisation level (default 3)")
    p.add_argument("--version-compatible", action="store_true",
                   help="engine runs on later TensorRT releases and on the lean runtime (tensorrt_lean)")  # fmt: skip
    p.add_argument("--exclude-lean-runtime", action="store_true",
                   help="with --version-compatible: do not embed the lean runtime (the target ships its own)")  # fmt: skip
    p.add_argument("--hardware-compat", default="none", choices=["none", "ampere+", "same-cc"],
                   help="hardware-compatibility level (default none: this GPU's architecture only)")  # fmt: skip
    p.add_argument("--attention", default="inline", choices=["inline", "native", "plugin"],
                   help="inline: the parser expands the ONNX function (default); native: ONNX Attention-23 -> "
                        "TensorRT's fused attention (TensorRT >= 10.14); plugin: the fused Triton plugin")  # fmt: skip
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"],
                   help="auto (default): the graph's; fp16 on an fp32 graph uses TensorRT 10's FP16 flag")  # fmt: skip
    p.add_argument("--save-onnx", type=Path, metavar="FILE", help="also write the attention-rewritten ONNX")
    p.add_argument("--print-trtexec", action="store_true",
                   help="print the equivalent trtexec command (writing the rewritten ONNX it needs) and exit; "
                        "needs no TensorRT")  # fmt: skip
    p.add_argument("--target-tensorrt", metavar="X.Y",
                   help=f"with --print-trtexec: TensorRT version to plan for (default: installed, else {ASSUMED_TENSORRT})")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from climax_deploy.artifacts import read_manifest
    from climax_deploy.errors import BadInputError
    from climax_deploy.export.tensorrt_profile import BatchProfile, EngineOptions, parse_size

    if args.model.suffix != ".onnx":
        raise BadInputError(f"expected a .onnx model from export-onnx, got {args.model}")
    if not args.model.is_file():
        raise BadInputError(f"ONNX model {args.model} does not exist")
    output: Path = args.output or args.model.with_suffix(".engine")
    if output.suffix != ".engine":
        raise BadInputError(f"engine output must end in .engine, got {output.name!r}")
    source = read_manifest(args.model)
    fixed = source.get("batch")
    batch_text = args.batch or (f"{fixed},{fixed},{fixed}" if isinstance(fixed, int) else DEFAULT_DYNAMIC_BATCH)
    options = EngineOptions(
        batch=BatchProfile.parse(batch_text),
        workspace_bytes=parse_size(args.workspace) if args.workspace else None,
        timing_cache=args.timing_cache,
        opt_level=args.opt_level,
        version_compatible=args.version_compatible,
        exclude_lean_runtime=args.exclude_lean_runtime,
        hardware_compat=args.hardware_compat,
        attention=args.attention,
        precision=args.precision,
    )
    options.batch.check_against(fixed)
    if args.print_trtexec:
        return print_trtexec(args.model, output, options, source, args.target_tensorrt, args.save_onnx)
    return build(args.model, output, options, args.save_onnx, quiet=args.quiet)


def build(model: Path, output: Path, options: EngineOptions, save_onnx: Path | None, quiet: bool) -> int:
    from climax_deploy.export.tensorrt_build import build_engine, prepare_onnx, save_rewritten_onnx
    from climax_deploy.progress import Progress
    from climax_deploy.runtime.tensorrt_backend import import_tensorrt

    import_tensorrt()  # fail fast, before any ONNX work, with the one-line install hint
    if save_onnx is not None:
        save_rewritten_onnx(prepare_onnx(model, options.attention), save_onnx)
    manifest = build_engine(model, output, options, Progress("build-engine", enabled=not quiet))
    print(f"wrote {output} and {output}.manifest.json (TensorRT {manifest['tensorrt']['version']}, "
          f"{manifest['precision']}, attention {manifest['attention']}, batch {options.batch.min}..{options.batch.max}, "
          f"{manifest['build_seconds']} s)")  # fmt: skip
    return EXIT_OK


def print_trtexec(
    model: Path, output: Path, options: EngineOptions, source: dict[str, Any], target: str | None, save_onnx: Path | None
) -> int:
    from climax_deploy.export.tensorrt_build import prepare_onnx, save_rewritten_onnx
    from climax_deploy.export.tensorrt_profile import format_command, plan_build, trtexec_command
    from climax_deploy.runtime.tensorrt_backend import TensorRTVersion, tensorrt_available, tensorrt_version

    if target:
        version = TensorRTVersion.parse(target)
    else:
        version = tensorrt_version() if tensorrt_available() else TensorRTVersion.parse(ASSUMED_TENSORRT)
    plan = plan_build(str(source.get("precision", "fp32")), options, version)
    onnx_for_trtexec = model
    if options.attention != "inline" or save_onnx is not None:
        onnx_for_trtexec = save_onnx or model.with_name(f"{model.stem}.{options.attention}.onnx")
        save_rewritten_onnx(prepare_onnx(model, options.attention), onnx_for_trtexec)
    variables, grid = source["variables"], source["grid"]
    cmd = trtexec_command(onnx_for_trtexec, output, options, plan, len(variables), (int(grid[0]), int(grid[1])))
    if options.attention == "plugin":
        print("build-engine: note: trtexec cannot register the Python ElevationAttention plugin; "
              "use build-engine for --attention plugin", file=sys.stderr)  # fmt: skip
    print(f"# TensorRT {version}: {plan.path}")
    print(format_command(cmd))
    return EXIT_OK


def entry() -> None:
    sys.exit(run_cli("build-engine", main))


if __name__ == "__main__":  # pragma: no cover
    entry()
