"""Build a TensorRT engine from an exported ONNX model, through Polygraphy's TensorRT loaders.

Polygraphy's `NetworkFromOnnxBytes` / `CreateConfig` / `EngineBytesFromNetwork` cover every setting
`build-engine` offers on TensorRT 10 and 11 (strongly typed networks, profiles, memory pools,
timing caches, optimisation level, hardware and version compatibility, progress monitors), and they
look up optional TensorRT features by name, so flags removed in 11 are never touched unless asked
for. What stays in our hands, typed against TensorRT's API:
- the version check and the build plan (strongly typed vs the FP16 flag), export/tensorrt_profile.py;
- the ONNX parser's flags: its defaults kept, ENABLE_PLUGIN_OVERRIDE (10.15+) added for the plugin;
- the progress monitor (an IProgressMonitor subclass) and the engine's manifest.

`build_engine` makes every check (file names, TensorRT, the export's manifest and checksum, the batch
profile); `plan_trtexec` makes the same checks and returns the equivalent trtexec line instead.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

import climax_deploy
from climax_deploy.artifacts import check_outputs_distinct, check_writable, write_bytes_atomic
from climax_deploy.errors import BadInputError, EngineBuildError
from climax_deploy.export.attention_modes import attention_pass
from climax_deploy.export.query_blocks import UnrollQueryBlocks
from climax_deploy.export.tensorrt_profile import (
    ASSUMED_TENSORRT,
    BuildPlan,
    Shapes,
    engine_profile,
    input_shapes,
    plan_build,
    trtexec_command,
)
from climax_deploy.cuda_driver import gpu_info
from climax_deploy.manifest import (
    BatchSpec,
    BuildOptions,
    EngineManifest,
    FileRecord,
    GpuRecord,
    OnnxManifest,
    read_onnx_manifest,
    write_artifact,
)
from climax_deploy.optional import TRITON
from climax_deploy.progress import Progress
from climax_deploy.tensorrt_version import TensorRTVersion, import_tensorrt, tensorrt_available, tensorrt_version

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

HARDWARE_COMPAT_ENUM = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
ENGINE_SUFFIX = ".engine"


def default_engine_path(onnx_path: str | os.PathLike[str]) -> Path:
    """MODEL.onnx -> MODEL.engine beside it."""
    return Path(onnx_path).with_suffix(ENGINE_SUFFIX)


def check_paths(onnx_path: Path, engine_path: Path, save_onnx: Path | None = None, timing_cache: Path | None = None) -> None:
    """BadInputError unless `onnx_path` is an existing .onnx file, `engine_path` ends in .engine, and the
    outputs are writable and overwrite neither the model nor its manifest or data."""
    if onnx_path.suffix != ".onnx":
        raise BadInputError(f"expected a .onnx model from export-onnx, got {onnx_path}")
    if not onnx_path.is_file():
        raise BadInputError(f"ONNX model {onnx_path} does not exist")
    if engine_path.suffix != ENGINE_SUFFIX:
        raise BadInputError(f"engine output must end in {ENGINE_SUFFIX}, got {engine_path.name!r}")
    check_outputs_distinct({"model": onnx_path}, {"-o": engine_path, "--save-onnx": save_onnx, "--timing-cache": timing_cache})
    check_writable(engine_path, save_onnx)


def read_source(onnx_path: Path, options: BuildOptions) -> tuple[OnnxManifest, BatchSpec]:
    """The export's manifest (its sha256 checked: the one time the ONNX file is hashed) and the engine's
    batch profile, `options.batch` resolved against the export's batch."""
    source = read_onnx_manifest(onnx_path)
    if source.custom_op is None:
        raise BadInputError(f"{onnx_path} was exported with --standard-ops (no ElevationAttention node); "
                            "build engines from the default export")  # fmt: skip
    return source, engine_profile(options.batch, source.batch)


def prepare_onnx(onnx_path: Path, attention: str) -> onnx.ModelProto:
    """What build-engine hands TensorRT: the exported model with its query-block Loops unrolled (an fp32
    export's; export/query_blocks.py says why) and the `--attention` mode's pass applied."""
    model = onnx.load(str(onnx_path))
    model = UnrollQueryBlocks()(model).model
    return attention_pass(attention)(model).model


def save_rewritten_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write the attention-rewritten model (for trtexec or inspection), checked, atomically."""
    data = model.SerializeToString()
    onnx.checker.check_model(model, full_check=False)
    write_bytes_atomic(path, data)


def register_elevation_plugin() -> None:
    """Register the fused ElevationAttention plugin (climax_deploy.kernels.trt_plugin) with TensorRT."""
    TRITON.load()  # the plugin compiles the Triton kernel ahead of time
    from climax_deploy.kernels import trt_plugin

    trt_plugin.register_elevation_attention_plugin()


def _progress_monitor(enabled: bool) -> trt.IProgressMonitor | None:
    """A TensorRT progress monitor printing build phases on stderr (TensorRT >= 10.0)."""
    if not enabled:
        return None
    import tensorrt as trt

    class PhasePrinter(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}
            self._tty = sys.stderr.isatty()

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            self._steps[phase_name] = num_steps
            indent = "  " if parent_phase else ""
            print(f"[build-engine] {indent}{phase_name} ({num_steps} steps)", file=sys.stderr, flush=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            if self._tty:
                total = self._steps.get(phase_name, 0)
                print(f"\r[build-engine]   {phase_name}: {step + 1}/{total}", end="", file=sys.stderr, flush=True)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            if self._tty:
                print(file=sys.stderr)

    return PhasePrinter()


# The ONNX parser's default flags (TensorRT's pyOnnxDoc.h, v10.13.0-v11.1): NATIVE_INSTANCENORM is
# ON by default and "required when building version-compatible or hardware-compatible engines".
# Polygraphy's NetworkFromOnnx*(flags=...) assigns parser.flags, replacing the defaults, so every
# flag set passed to it starts from these.
PARSER_DEFAULT_FLAGS: tuple[str, ...] = ("NATIVE_INSTANCENORM",)


def parser_flag_names(attention: str) -> tuple[str, ...]:
    """The OnnxParserFlag names to set for an `--attention` mode: the defaults, plus for the plugin
    ENABLE_PLUGIN_OVERRIDE (TensorRT >= 10.15; absent names are skipped). The node's plugin_namespace
    already routes it to the plugin; the override flag only adds that a plugin may shadow an ONNX op."""
    extra = ("ENABLE_PLUGIN_OVERRIDE",) if attention == "plugin" else ()
    return PARSER_DEFAULT_FLAGS + extra


def _parser_flags(attention: str) -> list[Any]:
    """parser_flag_names as this TensorRT's OnnxParserFlag values (names it lacks are skipped)."""
    import tensorrt as trt

    flags = [getattr(trt.OnnxParserFlag, name, None) for name in parser_flag_names(attention)]
    return [flag for flag in flags if flag is not None]


def mark_attention_decomposable(network: Any) -> int:
    """Let every IAttention of the parsed network fall back to several kernels where no fused one applies;
    return how many were marked.

    onnx-tensorrt's Attention importer leaves IAttention non-decomposable unless the node says
    `TRT_decomposable` (an attribute ONNX Runtime and the ONNX checker reject on Attention-23), and
    "By default, IAttention is not decomposable and TensorRT will try to use a single fused kernel"
    (include/NvInfer.h v11.1:6904; setDecomposable v11.1:7084). Native mode hands it float32 Q/K/V
    with a float32 additive mask (the fp32 softmax semantics, see attention_modes.attention23_function),
    for which no fused kernel is documented, so it must be decomposable. The boundary layers reach their
    IAttention through `.attention` and it takes `.decomposable` (python/src/infer/pyGraph.cpp v11.1:990,
    965; v10.14:906, 893), the same walk trtexec's --decomposableAttentions does
    (samples/common/sampleEngines.cpp v11.1:283-300).
    """
    import tensorrt as trt

    # Looked up by name: IAttention came in TensorRT 10.14, after the 10.13 stubs mypy checks against
    # (LayerType.ATTENTION_INPUT, IAttentionInputLayer: pyGraph.cpp v10.14 and v11.1:384, 993).
    attention_input, boundary_class = getattr(trt.LayerType, "ATTENTION_INPUT"), getattr(trt, "IAttentionInputLayer")
    marked = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type == attention_input:
            layer.__class__ = boundary_class  # get_layer returns the base ILayer (as Polygraphy downcasts)
            layer.attention.decomposable = True
            marked += 1
    return marked


def _create_config(options: BuildOptions, plan: BuildPlan, shapes: Shapes, show_progress: bool) -> Any:
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, Profile

    profile = Profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.add(name, min=lo, opt=opt, max=hi)
    pools = {trt.MemoryPoolType.WORKSPACE: options.workspace_bytes} if options.workspace_bytes else None
    level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_COMPAT_ENUM[options.hardware_compatibility])
    kwargs: dict[str, Any] = {
        "profiles": [profile],
        "memory_pool_limits": pools,
        "load_timing_cache": options.timing_cache,
        "builder_optimization_level": options.opt_level,
        "hardware_compatibility_level": level,
        "version_compatible": options.version_compatible or None,
        "exclude_lean_runtime": options.exclude_lean_runtime or None,
        "progress_monitor": _progress_monitor(show_progress),
        "tf32": options.tf32,  # Polygraphy clears BuilderFlag.TF32 unless asked (TensorRT sets it by default)
    }
    if plan.fp16_flag:
        kwargs["fp16"] = True  # TensorRT 10 only; plan_build refuses it on 11
    return CreateConfig(**kwargs)


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str] | None = None,
    options: BuildOptions | None = None,
    progress: Progress | None = None,
    save_onnx: str | os.PathLike[str] | None = None,
) -> EngineManifest:
    """Build `engine_path` (default MODEL.engine) and its manifest from an exported model; return the manifest.

    Checks, in order: the file names, TensorRT, the export's manifest and checksum, the batch profile
    against the export's batch, and what this TensorRT can build. `save_onnx` also writes the
    attention-rewritten ONNX the engine is built from.
    """
    options = options or BuildOptions()
    progress = progress or Progress("build-engine", enabled=False)
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else default_engine_path(onnx_path)
    timing_cache = Path(options.timing_cache) if options.timing_cache else None
    check_paths(onnx_path, engine_path, Path(save_onnx) if save_onnx is not None else None, timing_cache)
    module = import_tensorrt()  # MissingBackendError with the install line, before hashing a large model
    version = tensorrt_version(module)
    source, profile = read_source(onnx_path, options)
    plan = plan_build(source.precision, options, version)
    print(f"[build-engine] TensorRT {version}: {plan.path}; attention {options.attention}", file=sys.stderr)
    gpu = gpu_info()
    shapes = input_shapes(profile, len(source.model.variables), source.model.grid)

    with progress.stage(f"preparing the ONNX graph (attention {options.attention})"):
        model = prepare_onnx(onnx_path, options.attention)
        if save_onnx is not None:
            save_rewritten_onnx(model, Path(save_onnx))
        if options.attention == "plugin":
            register_elevation_plugin()
    start = time.perf_counter()
    with progress.stage(f"building the engine on {gpu.name}"):
        engine_bytes = _build_with_polygraphy(model, onnx_path, options, plan, shapes, progress.enabled)
    seconds = time.perf_counter() - start
    # Engine and manifest are renamed together, the sha256 taken from the staged engine.
    return write_artifact(engine_path, engine_bytes, engine_manifest(source, profile, options, plan, version, gpu, seconds))


def _build_with_polygraphy(
    model: onnx.ModelProto,
    onnx_path: Path,
    options: BuildOptions,
    plan: BuildPlan,
    shapes: Shapes,
    show_progress: bool,
) -> bytes:
    from polygraphy.backend.trt import EngineBytesFromNetwork, NetworkFromOnnxBytes

    with tempfile.TemporaryDirectory(prefix="climax-trt-") as tmp:
        # Weights beyond protobuf's 2 GB go to external data; the parser resolves them from a path.
        if model.ByteSize() > (1 << 31) - 1:
            path = Path(tmp) / onnx_path.name
            onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")
            from polygraphy.backend.trt import NetworkFromOnnxPath

            network = NetworkFromOnnxPath(str(path), strongly_typed=plan.strongly_typed,
                                          flags=_parser_flags(options.attention))  # fmt: skip
        else:
            network = NetworkFromOnnxBytes(model.SerializeToString(), strongly_typed=plan.strongly_typed,
                                           flags=_parser_flags(options.attention))  # fmt: skip
        if options.attention == "native":
            from polygraphy.backend.trt import PostprocessNetwork

            def decomposable(network: Any) -> None:
                if mark_attention_decomposable(network) != 1:
                    raise EngineBuildError("expected one IAttention (ElevationAttention's) in the parsed network")

            network = PostprocessNetwork(network, decomposable, name="decomposable attention")
        config = _create_config(options, plan, shapes, show_progress)
        build = EngineBytesFromNetwork(network, config=config,
                                       save_timing_cache=options.timing_cache)  # fmt: skip
        try:
            engine = build()
        except Exception as exc:  # Polygraphy raises PolygraphyException with TensorRT's errors logged
            raise EngineBuildError(f"TensorRT could not build the engine: {exc}") from exc
    if engine is None:
        raise EngineBuildError("TensorRT returned no engine (see its log above)")
    return bytes(engine)


def engine_versions(attention: str, version: TensorRTVersion) -> dict[str, str]:
    """What the engine was built with; a plugin engine also records Triton and the PTX it embeds
    (ISA and target: what --hardware-compat ampere+ relies on)."""
    versions = {"climax_deploy": climax_deploy.__version__, "tensorrt": str(version)}
    if attention == "plugin":
        from climax_deploy.kernels.trt_plugin import PTX_PROMISE

        versions["elevation_attention_ptx"] = PTX_PROMISE
        if TRITON.available():
            versions["triton"] = str(TRITON.load().__version__)
    return versions


def engine_manifest(
    source: OnnxManifest,
    profile: BatchSpec,
    options: BuildOptions,
    plan: BuildPlan,
    version: TensorRTVersion,
    gpu: GpuRecord,
    seconds: float,
) -> EngineManifest:
    """The engine's manifest: the export's model record as is, what runs the engine (TensorRT, GPU) and the
    build options with the batch profile and precision resolved. Its file name and sha256 are filled in by write_artifact."""
    return EngineManifest(
        build=replace(options, batch=profile, precision=plan.precision),
        model=source.model,
        source_onnx=FileRecord(source.file, source.sha256),
        source_precision=source.precision,
        tensorrt_version=str(version),
        gpu=gpu,
        build_path=plan.path,
        strongly_typed=plan.strongly_typed,
        build_seconds=round(seconds, 1),
        versions=engine_versions(options.attention, version),
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


@dataclass(frozen=True)
class TrtexecPlan:
    """The trtexec command equivalent to a build-engine run, for machines with only trtexec."""

    version: TensorRTVersion  # the TensorRT planned for
    plan: BuildPlan
    onnx_path: Path  # the model trtexec reads: the export, or its attention-rewritten copy
    command: list[str]
    notes: tuple[str, ...]  # what trtexec cannot do that build-engine would


def plan_trtexec(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str] | None = None,
    options: BuildOptions | None = None,
    target: TensorRTVersion | None = None,
    save_onnx: str | os.PathLike[str] | None = None,
) -> TrtexecPlan:
    """The trtexec line for this build, with the same checks as build_engine; needs no TensorRT.

    `target` is the TensorRT to plan for (default: the installed one, else ASSUMED_TENSORRT). For
    --attention native or plugin (or with `save_onnx`) the rewritten model is written for trtexec to
    read: `save_onnx`, else MODEL.<attention>.onnx beside the model.
    """
    options = options or BuildOptions()
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else default_engine_path(onnx_path)
    check_paths(onnx_path, engine_path, Path(save_onnx) if save_onnx is not None else None)
    source, profile = read_source(onnx_path, options)
    if target is None:
        target = tensorrt_version() if tensorrt_available() else ASSUMED_TENSORRT
    plan = plan_build(source.precision, options, target)
    model_path = onnx_path
    if options.attention != "inline" or save_onnx is not None:
        default = onnx_path.with_name(f"{onnx_path.stem}.{options.attention}.onnx")
        model_path = Path(save_onnx) if save_onnx is not None else default
        save_rewritten_onnx(prepare_onnx(onnx_path, options.attention), model_path)
    shapes = input_shapes(profile, len(source.model.variables), source.model.grid)
    notes: tuple[str, ...] = ()
    if options.attention == "plugin":
        notes = (
            "trtexec cannot register the Python ElevationAttention plugin; use build-engine for --attention plugin",
        )
    return TrtexecPlan(target, plan, model_path, trtexec_command(model_path, engine_path, options, plan, shapes), notes)


__all__ = [
    "PARSER_DEFAULT_FLAGS",
    "TrtexecPlan",
    "build_engine",
    "default_engine_path",
    "engine_manifest",
    "engine_versions",
    "mark_attention_decomposable",
    "parser_flag_names",
    "plan_trtexec",
    "prepare_onnx",
    "register_elevation_plugin",
    "save_rewritten_onnx",
]
