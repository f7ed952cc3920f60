"""`export-triton-repo`: a Triton Inference Server model repository from an ONNX model and/or engine."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from climax_deploy.cli import EXIT_OK, ArgParser, run_cli


def _sizes(text: str) -> tuple[int, ...]:
    import argparse

    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4, got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError("expected at least one batch size")
    return sizes


def build_parser() -> ArgParser:
    p = ArgParser(
        prog="export-triton-repo",
        description=(
            "Write a Triton Inference Server model repository: NAME_onnx (onnxruntime backend) from --onnx and, "
            "where an engine exists, NAME_trt (tensorrt backend) from --engine, each with a config.pbtxt "
            "(inputs x and lead_times, output y, dynamic batching with preferred batch sizes, instance groups, "
            "max queue delay) and the artifact's manifest."
        ),
    )
    p.add_argument("--onnx", type=Path, help="exported .onnx model (with its manifest)")
    p.add_argument("--engine", type=Path, help="TensorRT engine (.engine/.plan with its manifest)")
    p.add_argument("-o", "--output", type=Path, required=True, help="repository folder (created or updated)")
    p.add_argument("--name", default="climax", help="model name prefix (default climax)")
    p.add_argument("--max-batch", type=int, default=4, help="max_batch_size (default 4; capped by an engine's profile)")
    p.add_argument("--preferred-batch-sizes", type=_sizes, default=None, metavar="1,2,4",
                   help="dynamic batcher's preferred sizes (default: powers of two up to the max batch)")  # fmt: skip
    p.add_argument("--max-queue-delay-us", type=int, default=2000, help="batcher's queue delay (default 2000)")
    p.add_argument("--instances", type=int, default=1, help="instances per model (default 1)")
    p.add_argument("--onnx-device", choices=["cpu", "gpu"], default="cpu", help="ONNX model instances' kind")
    p.add_argument("--onnx-threads", type=int, default=None, help="ONNX Runtime intra-op threads per instance")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from climax_deploy.export.triton_repo import TritonRepoOptions, write_triton_repo

    options = TritonRepoOptions(
        name=args.name, max_batch=args.max_batch, preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_us=args.max_queue_delay_us, instances=args.instances, onnx_instance_kind=args.onnx_device,
        onnx_threads=args.onnx_threads,
    )  # fmt: skip
    configs = write_triton_repo(args.output, args.onnx, args.engine, options)
    for name, cfg in configs.items():
        print(f"wrote {cfg.parent}/ ({name})")
    print(f"serve it with: tritonserver --model-repository {args.output.resolve()}")
    return EXIT_OK


def entry() -> None:
    sys.exit(run_cli("export-triton-repo", main))
