"""Export the reference model to ONNX with the physics attention as one custom-domain node.

`export_model` is what `export-onnx` runs: it resolves the architecture, reads a stats file, builds
the model and records where everything came from. `export_onnx` exports a model already in memory.
Both write MODEL.onnx and its manifest (climax_deploy.manifest) and return the OnnxManifest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import torch

import climax_deploy
from climax_deploy.artifacts import (
    DATA_SUFFIX,
    ArtifactWriter,
    check_outputs_distinct,
    check_writable,
    parse_json,
    sha256_file,
)
from climax_deploy.errors import BadInputError, ExportError
from climax_deploy.export.attention_layout import DEFAULT_BLOCK_ELEMENTS, AttentionLayout, ExpandSelfAttention
from climax_deploy.export.elevation_function import AttachElevationFunction
from climax_deploy.export.passes import DEFAULT_OPSET, GraphPass, elevation_functions, elevation_nodes, run_passes
from climax_deploy.export.shape_compat import shape_compat_passes
from climax_deploy.export.standard_ops import InlineStandardOps
from climax_deploy.export.wind_scan_function import AttachWindScanFunction
from climax_deploy.manifest import (
    PRECISIONS,
    BatchSpec,
    FileRecord,
    ModelRecord,
    OnnxManifest,
    embedded_metadata,
    stage_manifest,
)
from climax_deploy.model import ClimaX, ModelConfig
from climax_deploy.progress import Progress
from climax_deploy.schema import (
    CUSTOM_DOMAIN,
    CUSTOM_OP,
    CUSTOM_OP_VERSION,
    INPUT_NAME,
    LEAD_TIMES_NAME,
    OUTPUT_NAME,
    STANDARDISATION_EPS,
    domain_coordinates,
)
from climax_deploy.standardisation import Standardisation, merge_stats, read_json_stats

log = logging.getLogger(__name__)

PROTOBUF_LIMIT = 2**31 - 1  # protobuf's 2 GB ceiling; beyond it weights go to external data
MAX_DYNAMIC_BATCH = 4096  # upper bound of the traced dynamic batch dimension
# Default-domain opsets the exporter and the graph passes produce as asked (checked by export and
# ONNX Runtime); torch.onnx writes opset 18 whatever is asked below 18, and 17 fails onnx.checker.
MIN_OPSET = 18
MAX_OPSET = 25
DEFAULT_HEADS_PER_CHUNK = 1  # fp32 for ONNX Runtime on CPU: one head's scores at a time (see README, Performance)


@dataclass(frozen=True)
class ExportOptions:
    """How to export: opset, batch ('dynamic' or a fixed size), precision, layout, standardisation."""

    opset: int = DEFAULT_OPSET
    batch: BatchSpec = field(default_factory=BatchSpec.dynamic)  # BatchSpec.dynamic() or BatchSpec.fixed(n)
    precision: str = "fp32"
    external_data_threshold: int = PROTOBUF_LIMIT
    # {variable: (mean, std)} overriding the author's constants; recorded in the manifest.
    standardisation: Mapping[str, tuple[float, float]] | None = None
    heads_per_chunk: int | None = 0  # 0: by precision (see attention_layout); None: all heads at once
    # (lat, lon) cell centres of the training grid, in the model's row/column order; None: the author's domain.
    coordinates: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # Every model-local function inlined, no custom domain left (export/standard_ops.py): for readers
    # without ONNX functions (OpenVINO). The default keeps the custom nodes (TensorRT plugin, build-engine).
    standard_ops: bool = False


@dataclass(frozen=True)
class Provenance:
    """Where the weights and the architecture came from; recorded in the manifest's model record."""

    seed: int | None = None  # seeded random weights, or
    checkpoint: FileRecord | None = None  # the checkpoint the weights came from
    preset: str | None = None
    config_file: FileRecord | None = None
    stats_file: FileRecord | None = None


def file_record(path: str | os.PathLike[str]) -> FileRecord:
    """A provenance record of `path`: its absolute path and sha256."""
    path = Path(path)
    return FileRecord(str(path.resolve()), sha256_file(path))


def check_options(options: ExportOptions, output: Path) -> None:
    """BadInputError on an option or output name export_onnx would refuse (cheap: before tracing)."""
    if output.suffix != ".onnx":
        raise BadInputError(f"output must end in .onnx, got {output.name!r}")
    if not MIN_OPSET <= options.opset <= MAX_OPSET:
        raise BadInputError(f"expected an opset {MIN_OPSET}..{MAX_OPSET} (what the exporter writes as asked), got {options.opset}")
    if options.batch.size is None and options.batch != BatchSpec.dynamic():
        raise BadInputError(f"export takes batch 'dynamic' or a fixed size N, got {options.batch}")
    if options.precision not in PRECISIONS:
        raise BadInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}")


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
    example_batch = options.batch.size or 2
    x = torch.zeros(example_batch, len(cfg.variables), *cfg.img_size)
    lead_times = torch.full((example_batch,), 24.0)
    dynamic_shapes = None
    if options.batch.size is None:
        batch = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
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


def attention_layout(model: ClimaX, options: ExportOptions) -> AttentionLayout:
    """fp32 (ONNX Runtime): heads in chunks and queries in blocks, memory linear in N; fp16 (TensorRT):
    all heads and queries in one fused chain."""
    cfg = model.config
    chunk = options.heads_per_chunk
    if chunk == 0:
        chunk = None if options.precision == "fp16" else DEFAULT_HEADS_PER_CHUNK
    if options.precision == "fp16" and chunk is not None and chunk < cfg.num_heads:
        raise BadInputError("fp16 exports keep all heads in one chain (for TensorRT); drop --heads-per-chunk")
    block = None if options.precision == "fp16" else DEFAULT_BLOCK_ELEMENTS
    return AttentionLayout(cfg.num_heads, cfg.head_dim, chunk, block)


def export_passes(layout: AttentionLayout, precision: str = "fp32", model: ClimaX | None = None) -> list[GraphPass]:
    """Attach the ElevationAttention function (and the WindScanOrder function of `model`'s scan), expand
    SelfAttention; for fp16, cast with fp32 islands; last, keep the graph readable by ONNX Runtime's
    symbolic_shape_infer (export/shape_compat.py)."""
    passes: list[GraphPass] = [AttachElevationFunction(layout), ExpandSelfAttention(layout)]
    if model is not None:
        passes.insert(0, AttachWindScanFunction(model.wind_scan, model.config.img_size))
    if precision == "fp16":
        from climax_deploy.export.fp16 import ConvertToFp16

        passes.append(ConvertToFp16())
    return passes + shape_compat_passes()


def versions() -> dict[str, str]:
    import onnxscript

    return {
        "climax_deploy": climax_deploy.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "python": platform.python_version(),
    }


def model_record(config: ModelConfig, options: ExportOptions, provenance: Provenance) -> ModelRecord:
    """What the model is (shared by the export and every engine built from it) and where it came from."""
    source = "the author's constants" if not options.standardisation else "the given standardisation"
    stats = merge_stats(options.standardisation, config.variables, "standardisation")
    h, w = config.img_size
    lat, lon = grid_coordinates(config, options)
    return ModelRecord(
        variables=tuple(config.variables),
        output_variables=tuple(config.outputs),
        grid=(h, w),
        lat=lat,
        lon=lon,
        patch_size=config.patch_size,
        num_patches=config.num_patches,
        config=config.to_dict(),
        standardisation=Standardisation(stats, STANDARDISATION_EPS, source),
        seed=provenance.seed,
        checkpoint=provenance.checkpoint,
        preset=provenance.preset,
        config_file=provenance.config_file,
        stats_file=provenance.stats_file,
    )


def grid_coordinates(config: ModelConfig, options: ExportOptions) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The training grid's (lat, lon): the given ones, checked against the model's grid, or the author's domain."""
    h, w = config.img_size
    if options.coordinates is None:
        return domain_coordinates((h, w))  # the author's domain, latitude north to south
    lat, lon = (tuple(float(v) for v in axis) for axis in options.coordinates)
    for name, values, size in (("lat", lat, h), ("lon", lon, w)):
        if len(values) != size:
            raise BadInputError(f"grid {name} has {len(values)} values, the model's grid needs {size} ({h} x {w})")
        steps = np.diff(np.asarray(values))
        if not np.isfinite(values).all() or not ((steps > 0).all() or (steps < 0).all()):
            raise BadInputError(f"grid {name} must be finite and strictly monotonic (cell centres), got {values[:4]}...")
    if max(abs(v) for v in lat) > 90:
        raise BadInputError(f"grid lat must lie within -90..90 degrees_north, got {min(lat)}..{max(lat)}")
    return lat, lon


def read_grid(path: str | os.PathLike[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A grid file -> (lat, lon) cell centres: JSON {"lat": [...], "lon": [...]} here, NetCDF via climax_deploy.gridded."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"grid file {path} does not exist")
    if path.suffix.lower() != ".json":
        from climax_deploy.gridded.grid_file import read_grid_file

        return read_grid_file(path)
    data = parse_json(path.read_bytes(), f"grid file {path}")
    try:
        return tuple(map(float, data["lat"])), tuple(map(float, data["lon"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{path}: expected JSON {{\"lat\": [...], \"lon\": [...]}} of numbers ({exc!r})") from None


def set_metadata(model: onnx.ModelProto, manifest: OnnxManifest) -> None:
    """Embed the manifest (climax_deploy.manifest.embedded_metadata) and the producer in the model."""
    del model.metadata_props[:]
    for key, value in embedded_metadata(manifest).items():
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


def stage_model(writer: ArtifactWriter, model: onnx.ModelProto, output: Path, threshold: int = PROTOBUF_LIMIT) -> tuple[Path, dict[str, str]]:
    """Check the model and stage it in `writer`; weights go to `<name>.data` beyond `threshold` bytes.

    Returns the staged model file and {external data file name: sha256} (empty when inline; a stale
    `<name>.data` of an earlier, larger export is then removed with the commit).
    """
    external = model.ByteSize() > threshold
    data_name = output.name + DATA_SUFFIX
    tmp = writer.temporary_dir()
    tmp_model = tmp / output.name
    if external:
        onnx.save_model(model, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)  # fmt: skip
    else:
        onnx.save_model(model, tmp_model)
    try:
        onnx.checker.check_model(str(tmp_model), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported model fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    checksums = {}
    if external:
        checksums[data_name] = sha256_file(tmp / data_name)
        writer.stage(output.parent / data_name, tmp / data_name)
    else:
        writer.remove.append(output.parent / data_name)
    writer.stage(output, tmp_model)
    return tmp_model, checksums


def save_model(model: onnx.ModelProto, output: Path, threshold: int = PROTOBUF_LIMIT) -> dict[str, str]:
    """Check and write the model atomically (no manifest); return {external data file name: sha256}."""
    with ArtifactWriter(output) as writer:
        return stage_model(writer, model, output, threshold)[1]


def export_onnx(
    model: ClimaX,
    output: str | os.PathLike[str],
    options: ExportOptions | None = None,
    provenance: Provenance | None = None,
    progress: Progress | None = None,
) -> OnnxManifest:
    """Export `model` to `output` (+ `<output>.manifest.json`); return the manifest as written."""
    options = options or ExportOptions()
    provenance = provenance or Provenance()
    progress = progress or Progress("export-onnx", enabled=False)
    output = Path(output)
    check_options(options, output)
    layout = attention_layout(model, options)
    with progress.stage(f"tracing {model.config.name} model ({model.config.num_patches} patches)"):
        proto = trace_to_onnx(model, options)
    fp16 = " and casting to fp16 (fp32 islands)" if options.precision == "fp16" else ""
    with progress.stage(f"attaching the ElevationAttention function{fp16}"):
        proto = run_passes(proto, export_passes(layout, options.precision, model)).model
        check_contract(proto)
    if options.standard_ops:
        with progress.stage("inlining the functions (standard ONNX ops only)"):
            proto = run_passes(proto, [InlineStandardOps()]).model
    manifest = OnnxManifest(
        precision=options.precision,
        batch=options.batch,
        model=model_record(model.config, options, provenance),
        opset=options.opset,
        heads_per_chunk=layout.num_heads // layout.chunks,
        versions=versions(),
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        custom_op=None if options.standard_ops else (CUSTOM_DOMAIN, CUSTOM_OP, CUSTOM_OP_VERSION),
    )
    set_metadata(proto, manifest)
    with progress.stage("checking and writing"), ArtifactWriter(output) as writer:
        # Model, external data and manifest are renamed together: a failure leaves the old set.
        staged, external = stage_model(writer, proto, output, options.external_data_threshold)
        written = stage_manifest(writer, output, replace(manifest, external_data=external), staged)
    log.info("wrote %s (%s)", output, "external data" if external else "inline weights")
    return written


def read_stats(path: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """A stats file -> {variable: (mean, std)}: JSON here, NetCDF through climax_deploy.gridded (xarray)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"stats file {path} does not exist")
    if path.suffix.lower() == ".json":
        return read_json_stats(path)
    from climax_deploy.gridded.stats import read_stats_file

    return read_stats_file(path)


def export_model(
    source: str | Path | None,
    output: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    hparams: str | Path | None = None,
    stats_file: str | os.PathLike[str] | None = None,
    grid_file: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> OnnxManifest:
    """Build the model of `source` (a preset name, a .json/.yaml config file, or None) and export it.

    Weights come from `checkpoint`, else are random with `seed`; `hparams` is a training run's
    hparams.yaml (see `climax_deploy.model.build_model` for which settings win and when a checkpoint is
    refused). `stats_file` (JSON or NetCDF) overrides the standardisation of the variables it names;
    `grid_file` (JSON or NetCDF) gives the training grid's lat/lon (default: the author's domain).
    The manifest records all of it, with checksums. Paths are checked before the model is built, the
    stats file before the (slow) trace.
    """
    from climax_deploy.model import PRESETS, build_model, resolve_config

    # An unknown preset or a bad config file fails before any progress output.
    known = resolve_config(source) if source is not None else None
    options = options or ExportOptions()
    output = Path(output)
    check_options(options, output)
    is_preset = source is not None and str(source) in PRESETS
    config_file = Path(source) if source is not None and not is_preset else Path(hparams) if hparams else None
    inputs = {"--checkpoint": checkpoint, "--stats": stats_file, "--config": config_file, "--hparams": hparams,
              "--grid": grid_file}  # fmt: skip
    check_outputs_distinct(inputs, {"-o": output})
    check_writable(output)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise BadInputError(f"checkpoint {checkpoint} does not exist")
    if stats_file is not None and options.standardisation:
        raise BadInputError("give the standardisation as options or as a stats file, not both")
    stats = read_stats(stats_file) if stats_file is not None else None
    if stats is not None and known is not None and checkpoint is None and hparams is None:
        merge_stats(stats, known.variables, str(stats_file))  # the variables are known: check before the build
    if grid_file is not None:
        options = replace(options, coordinates=read_grid(grid_file))
    progress = progress or Progress("export-onnx", enabled=False)
    with progress.stage("building the PyTorch model"):
        model = build_model(source, seed=seed, checkpoint=checkpoint, hparams=hparams)
    if stats is not None:
        merge_stats(stats, model.config.variables, str(stats_file))  # unknown variables fail before the trace
        options = replace(options, standardisation=stats)
    grid_coordinates(model.config, options)  # a grid of the wrong size fails before the trace
    provenance = Provenance(
        seed=seed if checkpoint is None else None,
        checkpoint=file_record(checkpoint) if checkpoint is not None else None,
        preset=str(source) if is_preset else None,
        config_file=file_record(config_file) if config_file is not None else None,
        stats_file=file_record(stats_file) if stats_file is not None else None,
    )
    return export_onnx(model, output, options, provenance, progress)


__all__ = [
    "DEFAULT_OPSET",
    "ExportOptions",
    "MAX_OPSET",
    "MIN_OPSET",
    "Provenance",
    "export_model",
    "export_onnx",
    "file_record",
    "read_stats",
    "save_model",
    "trace_to_onnx",
]
