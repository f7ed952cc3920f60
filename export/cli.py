"""`export-onnx`: trace the reference model to ONNX with the elevation attention as a custom op."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from climax_deploy.cli import EXIT_OK, ArgParser, parse_batch, run_cli

DEFAULT_OUTPUT = "build/climax_full.onnx"


def build_parser() -> ArgParser:
    p = ArgParser(
        prog="export-onnx",
        description=(
            "Export the patch-level physics-guided ClimaX to ONNX. The physics attention becomes one "
            "climax::ElevationAttention node whose model-local function uses standard ops, so ONNX "
            "Runtime runs the file as is and TensorRT can swap the node for a plugin. Writes MODEL.onnx "
            "and MODEL.onnx.manifest.json atomically."
        ),
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help="architecture preset: full (default, 8192 patches) or small")
    src.add_argument("--config", type=Path, help="architecture config file (.json or .yaml), e.g. depth 6")
    p.add_argument("--checkpoint", type=Path, help="author's Lightning .ckpt or a plain state dict; default: random")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights when no checkpoint (default 0)")
    p.add_argument("-o", "--output", type=Path, default=Path(DEFAULT_OUTPUT), help=f"default {DEFAULT_OUTPUT}")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset of the default domain (default 18)")
    p.add_argument("--batch", type=parse_batch, default=None, metavar="dynamic|N",
                   help="batch dimension: 'dynamic' (default) or a fixed size")  # fmt: skip
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="fp32 (default) or fp16: FP16 compute with FP32 islands for the elevation path, the "
                        "attention bias and softmax, LayerNorm, reductions and the output head; inputs and "
                        "outputs stay float32 (what TensorRT 11's strongly typed builds need)")  # fmt: skip
    p.add_argument("--stats", type=Path, metavar="FILE",
                   help="standardisation (mean, std) per variable in physical units, overriding the author's "
                        "constants for the variables it names: JSON {var: [mean, std]} or NetCDF (variables "
                        "'mean' and 'std' along a 'variable' dim); stored in the manifest for the runtime")  # fmt: skip
    p.add_argument("--heads-per-chunk", type=int, default=0, metavar="K",
                   help="attention computed K heads at a time (fp32 default 1: the least memory for ONNX Runtime "
                        "on CPU); fp16 exports keep all heads in one chain for TensorRT")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Heavy imports after argument parsing, so --help and usage errors are instant.
    from climax_deploy.artifacts import sha256_file
    from climax_deploy.errors import BadInputError
    from climax_deploy.export.onnx_export import DEFAULT_OPSET, ExportOptions, export_onnx
    from climax_deploy.model import build_model, resolve_config
    from climax_deploy.progress import Progress

    source = args.config if args.config is not None else (args.preset or "full")
    resolve_config(source)  # fail fast, before any progress output, on a bad preset or config
    if args.output.suffix != ".onnx":
        raise BadInputError(f"--output must end in .onnx, got {str(args.output)!r}")
    stats = None
    if args.stats is not None:  # fail fast on a bad stats file, before the slow model build
        from climax_deploy.forecast.stats import merge_stats, read_stats_file

        stats = read_stats_file(args.stats)
        merge_stats(stats, resolve_config(source).variables, str(args.stats))
    progress = Progress("export-onnx", enabled=not args.quiet)
    with progress.stage("building the PyTorch model"):
        model = build_model(source, seed=args.seed, checkpoint=args.checkpoint)
    provenance = {
        "preset": str(source) if args.config is None else None,
        "config_file": str(args.config) if args.config is not None else None,
        "seed": args.seed if args.checkpoint is None else None,
        "checkpoint": None
        if args.checkpoint is None
        else {"path": str(args.checkpoint.resolve()), "sha256": sha256_file(args.checkpoint)},
    }
    options = ExportOptions(opset=args.opset or DEFAULT_OPSET, batch=args.batch, precision=args.precision,
                            heads_per_chunk=args.heads_per_chunk or 0,
                            standardisation=stats)  # fmt: skip
    if args.stats is not None:
        provenance["stats_file"] = {"path": str(args.stats.resolve()), "sha256": sha256_file(args.stats)}
    export_onnx(model, args.output, options, provenance, progress)
    total = sum(progress.timings.values())
    print(f"wrote {args.output} and {args.output}.manifest.json ({model.config.num_patches} patches, "
          f"{total:.1f} s)")  # fmt: skip
    return EXIT_OK


def entry() -> None:
    sys.exit(run_cli("export-onnx", main))
