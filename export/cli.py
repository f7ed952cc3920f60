"""`export-onnx`: trace the reference model to ONNX with the elevation attention as a custom op."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from climax_deploy.cli import EXIT_OK, ArgParser, run_cli
from climax_deploy.manifest import PRECISIONS, BatchSpec

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
    src.add_argument("--hparams", type=Path, metavar="FILE",
                     help="the training run's hparams.yaml (the author's layout: config.model, config.data): heads, "
                          "grid and variables, for a checkpoint that stores none and has no hparams.yaml beside it. "
                          "With --checkpoint and none of --preset/--config/--hparams, the heads must come from the "
                          "checkpoint: the full preset's 8 are assumed only with an explicit --preset full")  # fmt: skip
    p.add_argument("--checkpoint", type=Path, help="author's Lightning .ckpt or a plain state dict; default: random")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights when no checkpoint (default 0)")
    p.add_argument("-o", "--output", type=Path, default=Path(DEFAULT_OUTPUT), help=f"default {DEFAULT_OUTPUT}")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset of the default domain, 18..25 (default 18); others are refused")  # fmt: skip
    p.add_argument("--batch", default="dynamic", metavar="dynamic|N",
                   help="batch dimension: 'dynamic' (default) or a fixed size")  # fmt: skip
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default) or fp16: FP16 compute with FP32 islands for the elevation path, the "
                        "attention bias and softmax, LayerNorm, reductions and the output head; inputs and "
                        "outputs stay float32 (what TensorRT 11's strongly typed builds need)")  # fmt: skip
    p.add_argument("--stats", type=Path, metavar="FILE",
                   help="standardisation (mean, std) per variable in physical units, overriding the author's "
                        "constants for the variables it names: JSON {var: [mean, std]} or NetCDF (variables "
                        "'mean' and 'std' along a 'variable' dim); stored in the manifest for the runtime")  # fmt: skip
    p.add_argument("--grid", type=Path, metavar="FILE",
                   help="the training grid's cell-centre coordinates, recorded in the manifest so forecast files "
                        "are checked and reoriented against them: JSON {\"lat\": [...], \"lon\": [...]} or a "
                        "NetCDF file with 1-D lat/lon in degrees (default: the author's China domain)")  # fmt: skip
    p.add_argument("--heads-per-chunk", type=int, default=0, metavar="K",
                   help="attention computed K heads at a time (fp32 default 1: the least memory for ONNX Runtime "
                        "on CPU); fp16 exports keep all heads in one chain for TensorRT")  # fmt: skip
    p.add_argument("--standard-ops", action="store_true",
                   help="standard ONNX ops only: every model-local function inlined, no climax domain left, for "
                        "readers without ONNX functions (OpenVINO). The default keeps the custom nodes, which "
                        "build-engine needs (TensorRT plugin, native attention)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Heavy imports after argument parsing, so --help and usage errors are instant.
    from climax_deploy.export.onnx_export import DEFAULT_OPSET, ExportOptions, export_model
    from climax_deploy.progress import Progress

    options = ExportOptions(opset=args.opset or DEFAULT_OPSET, batch=BatchSpec.parse(args.batch),
                            precision=args.precision, heads_per_chunk=args.heads_per_chunk,
                            standard_ops=args.standard_ops)  # fmt: skip
    progress = Progress("export-onnx", enabled=not args.quiet)
    manifest = export_model(args.config or args.preset, args.output, options, seed=args.seed,
                            checkpoint=args.checkpoint, hparams=args.hparams, stats_file=args.stats,
                            grid_file=args.grid, progress=progress)  # fmt: skip
    total = sum(progress.timings.values())
    print(f"wrote {args.output} and {args.output}.manifest.json ({manifest.model.num_patches} patches, "
          f"{total:.1f} s)")  # fmt: skip
    return EXIT_OK


def entry() -> None:
    sys.exit(run_cli("export-onnx", main))
