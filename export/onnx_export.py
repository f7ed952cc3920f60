"""Export the reference model to ONNX with the physics attention as one custom-domain node."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import torch

import climax_deploy
from climax_deploy.artifacts import sha256_file, write_manifest
from climax_deploy.errors import BadInputError, ExportError
from climax_deploy.export.attention_layout import AttentionLayout, ExpandSelfAttention
from climax_deploy.export.elevation_function import AttachElevationFunction
from climax_deploy.export.passes import DEFAULT_OPSET, GraphPass, elevation_functions, elevation_nodes, run_passes
from climax_deploy.model import ClimaX
from climax_deploy.progress import Progress
from climax_deploy.standardisation import Standardisation, merge_stats
from climax_deploy.schema import (
    CUSTOM_DOMAIN,
    CUSTOM_OP,
    CUSTOM_OP_VERSION,
    INPUT_NAME,
    LEAD_TIMES_NAME,
    OUTPUT_NAME,
    STANDARDISATION_EPS,
)

log = logging.getLogger(__name__)

METADATA_KEY = "climax_deploy.manifest"
PROTOBUF_LIMIT = 2**31 - 1  # protobuf's 2 GB ceiling; beyond it weights go to external data


@dataclass
class ExportOptions:
    opset: int = DEFAULT_OPSET
    batch: int | None = None  # None: dynamic batch
    precision: str = "fp32"
    external_data_threshold: int = PROTOBUF_LIMIT
    # {variable: (mean, std)} overriding the author's constants; recorded in the manifest (issue 6).
    standardisation: dict[str, tuple[float, float]] | None = None
    heads_per_chunk: int | None = 0  # 0: by precision (see attention_layout); None: all heads at once


class _ExportWrapper(torch.nn.Module):
    """Calls the reference with the custom-op attention: the switch is a call argument, not state."""

    def __init__(self, model: ClimaX) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, lead_times: torch.Tensor) -> torch.Tensor:
        return self.model(x, lead_times, attention="onnx")


def trace_to_onnx(model: ClimaX, options: ExportOptions) -> onnx.ModelProto:
    """torch.onnx.export (dynamo) -> ModelProto holding one climax::ElevationAttention node."""
    cfg = model.config
    example_batch = options.batch or 2
    x = torch.zeros(example_batch, len(cfg.variables), *cfg.img_size)
    lead_times = torch.full((example_batch,), 24.0)
    dynamic_shapes = None
    if options.batch is None:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = {"x": {0: batch}, "lead_times": {0: batch}}
    # The exporter is chatty (warnings, print statements); keep it out of the user's terminal.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for noisy in ("torch", "onnxscript", "onnx_ir"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                _ExportWrapper(model).eval(),
                (x, lead_times),
                dynamo=True,
                input_names=[INPUT_NAME, LEAD_TIMES_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes,
                opset_version=options.opset,
                optimize=True,
                external_data=False,
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError("torch.onnx.export returned no program")
    return program.model_proto


PRECISIONS: tuple[str, ...] = ("fp32", "fp16")


DEFAULT_HEADS_PER_CHUNK = 1  # fp32 for ONNX Runtime on CPU: one head's scores at a time (see README, Performance)


def attention_layout(model: ClimaX, options: ExportOptions) -> AttentionLayout:
    """fp32: heads in chunks (CPU memory); fp16 (TensorRT): all heads in one fused chain."""
    cfg = model.config
    chunk = options.heads_per_chunk
    if chunk == 0:
        chunk = None if options.precision == "fp16" else DEFAULT_HEADS_PER_CHUNK
    if options.precision == "fp16" and chunk is not None and chunk < cfg.num_heads:
        raise BadInputError("fp16 exports keep all heads in one chain (for TensorRT); drop --heads-per-chunk")
    return AttentionLayout(cfg.num_heads, cfg.head_dim, chunk)


def export_passes(layout: AttentionLayout, precision: str = "fp32") -> list[GraphPass]:
    """Attach the ElevationAttention function, expand SelfAttention; for fp16, cast with fp32 islands."""
    passes: list[GraphPass] = [AttachElevationFunction(layout), ExpandSelfAttention(layout)]
    if precision == "fp16":
        from climax_deploy.export.fp16 import ConvertToFp16

        passes.append(ConvertToFp16())
    return passes


def versions() -> dict[str, str]:
    import onnxscript

    return {
        "climax_deploy": climax_deploy.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "python": platform.python_version(),
    }


def build_manifest(model: ClimaX, options: ExportOptions, provenance: dict[str, Any]) -> dict[str, Any]:
    """Everything a runtime or check-parity needs to know about the file, except its checksum."""
    cfg = model.config
    batch: int | str = options.batch if options.batch is not None else "batch"
    h, w = cfg.img_size
    return {
        "kind": "onnx",
        "precision": options.precision,
        "inputs": [
            {"name": INPUT_NAME, "shape": [batch, len(cfg.variables), h, w], "dtype": "float32"},
            {"name": LEAD_TIMES_NAME, "shape": [batch], "dtype": "float32", "units": "hours"},
        ],
        "outputs": [{"name": OUTPUT_NAME, "shape": [batch, len(cfg.outputs), h, w], "dtype": "float32"}],
        "batch": "dynamic" if options.batch is None else options.batch,
        "variables": list(cfg.variables),
        "output_variables": list(cfg.outputs),
        "grid": [h, w],
        "patch_size": cfg.patch_size,
        "num_patches": cfg.num_patches,
        "model_config": cfg.to_dict(),
        "custom_op": {"domain": CUSTOM_DOMAIN, "name": CUSTOM_OP, "version": CUSTOM_OP_VERSION},
        # (mean, std) per variable in physical units, the runtime's standardisation (runtime/io/stats.py).
        "standardisation": Standardisation(merge_stats(options.standardisation, cfg.variables, "standardisation")).to_manifest(),
        "standardisation_eps": STANDARDISATION_EPS,
        "opset": options.opset,
        "versions": versions(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **provenance,
    }


def set_metadata(model: onnx.ModelProto, manifest: dict[str, Any]) -> None:
    del model.metadata_props[:]
    entries = {
        METADATA_KEY: json.dumps(manifest, sort_keys=True),
        "climax_deploy.version": climax_deploy.__version__,
        "climax_deploy.precision": str(manifest["precision"]),
        "climax_deploy.variables": ",".join(manifest["variables"]),
        "climax_deploy.outputs": ",".join(manifest["output_variables"]),
    }
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "climax-deploy"
    model.producer_version = climax_deploy.__version__


def check_contract(model: onnx.ModelProto) -> None:
    """The file the toolkit promises: one ElevationAttention node and its one function."""
    nodes, functions = elevation_nodes(model), elevation_functions(model)
    if len(nodes) != 1 or len(functions) != 1:
        raise ExportError(
            f"expected one {CUSTOM_DOMAIN}::{CUSTOM_OP} node and one function, got {len(nodes)} and {len(functions)}"
        )


def save_model(model: onnx.ModelProto, output: Path, threshold: int = PROTOBUF_LIMIT) -> dict[str, str]:
    """Check and write the model atomically; weights go to `<name>.data` beyond `threshold` bytes.

    Returns {external data file name: sha256} (empty when the weights are inline).
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    external = model.ByteSize() > threshold
    data_name = output.name + ".data"
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        tmp_model = Path(tmp) / output.name
        if external:
            onnx.save_model(model, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)  # fmt: skip
        else:
            onnx.save_model(model, tmp_model)
        try:
            onnx.checker.check_model(str(tmp_model), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"exported model fails onnx.checker: {exc}") from exc
        checksums = {}
        if external:
            checksums[data_name] = sha256_file(Path(tmp) / data_name)
            os.replace(Path(tmp) / data_name, output.parent / data_name)
        elif (output.parent / data_name).exists():
            (output.parent / data_name).unlink()  # stale weights of an earlier, larger export
        os.replace(tmp_model, output)
    return checksums


def export_onnx(
    model: ClimaX,
    output: str | Path,
    options: ExportOptions | None = None,
    provenance: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export `model` to `output` (+ `<output>.manifest.json`); return the manifest."""
    options = options or ExportOptions()
    progress = progress or Progress("export-onnx", enabled=False)
    output = Path(output)
    if output.suffix != ".onnx":
        raise BadInputError(f"output must end in .onnx, got {output.name!r}")
    if options.batch is not None and options.batch < 1:
        raise BadInputError(f"--batch must be 'dynamic' or a positive integer, got {options.batch}")
    if options.precision not in PRECISIONS:
        raise BadInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}")
    layout = attention_layout(model, options)
    with progress.stage(f"tracing {model.config.name} model ({model.config.num_patches} patches)"):
        proto = trace_to_onnx(model, options)
    with progress.stage("attaching the ElevationAttention function" + (
        " and casting to fp16 (fp32 islands)" if options.precision == "fp16" else "")):
        proto = run_passes(proto, export_passes(layout, options.precision)).model
        check_contract(proto)
    manifest = build_manifest(model, options, provenance or {})
    manifest["attention_layout"] = {"heads_per_chunk": layout.num_heads // layout.chunks, "chunks": layout.chunks}
    set_metadata(proto, manifest)
    with progress.stage("checking and writing"):
        external = save_model(proto, output, options.external_data_threshold)
    if external:
        manifest["external_data"] = external
    write_manifest(output, manifest)
    log.info("wrote %s (%s)", output, "external data" if external else "inline weights")
    return manifest


__all__ = ["ExportOptions", "export_onnx", "save_model", "trace_to_onnx", "DEFAULT_OPSET"]
