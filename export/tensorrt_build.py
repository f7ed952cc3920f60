"""Build a TensorRT engine from an exported ONNX model, through Polygraphy's TensorRT loaders.

Polygraphy's `NetworkFromOnnxBytes` / `CreateConfig` / `EngineBytesFromNetwork` cover every setting
`build-engine` offers on TensorRT 10 and 11 (strongly typed networks, profiles, memory pools,
timing caches, optimisation level, hardware and version compatibility, progress monitors), and they
look up optional TensorRT features by name, so flags removed in 11 are never touched unless asked
for. What stays in our hands, typed against TensorRT's API:
- the version check and the build plan (strongly typed vs the FP16 flag), export/tensorrt_profile.py;
- the parser flag ENABLE_PLUGIN_OVERRIDE, which exists only from 10.15 (looked up by name);
- the progress monitor (an IProgressMonitor subclass) and the engine's manifest.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

import climax_deploy
from climax_deploy.artifacts import read_manifest, sha256_file, write_bytes_atomic, write_manifest
from climax_deploy.errors import BadInputError, EngineBuildError, MissingBackendError
from climax_deploy.export.attention_modes import attention_pass
from climax_deploy.export.tensorrt_profile import BuildPlan, EngineOptions, plan_build
from climax_deploy.progress import Progress
from climax_deploy.runtime.tensorrt_backend import (
    ENGINE_KIND,
    TensorRTVersion,
    gpu_info,
    import_tensorrt,
    tensorrt_version,
)

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

SOURCE_ONLY_KEYS = frozenset({"format", "file", "sha256", "kind", "external_data", "opset", "custom_op", "versions",
                              "created_utc", "batch", "precision"})  # fmt: skip
HARDWARE_COMPAT_ENUM = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}


def prepare_onnx(onnx_path: Path, attention: str) -> onnx.ModelProto:
    """Load the exported model and apply the `--attention` mode's pass."""
    model = onnx.load(str(onnx_path))
    return attention_pass(attention)(model).model


def save_rewritten_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write the attention-rewritten model (for trtexec or inspection), checked, atomically."""
    data = model.SerializeToString()
    onnx.checker.check_model(model, full_check=False)
    write_bytes_atomic(path, data)


def register_elevation_plugin() -> None:
    """Register the fused ElevationAttention plugin of the kernel issue with TensorRT."""
    try:
        from climax_deploy.kernels import trt_plugin
    except ImportError as exc:
        raise MissingBackendError(
            f"--attention plugin needs the ElevationAttention TensorRT plugin (climax_deploy.kernels."
            f"trt_plugin) with torch and triton installed ({exc}); use --attention inline or native"
        ) from exc
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


def _parser_flags(plan: BuildPlan, attention: str, version: TensorRTVersion) -> list[Any]:
    import tensorrt as trt

    flags: list[Any] = []
    if attention == "plugin":
        # plugin_namespace on the node already makes the parser prefer the plugin; where the parser
        # also has the explicit override flag (10.15+, absent from the 10.13 stubs) set it too.
        override = getattr(trt.OnnxParserFlag, "ENABLE_PLUGIN_OVERRIDE", None)
        if override is not None:
            flags.append(override)
    return flags


def _create_config(
    options: EngineOptions, plan: BuildPlan, shapes: dict[str, tuple[tuple[int, ...], ...]], show_progress: bool
) -> Any:
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, Profile

    profile = Profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.add(name, min=lo, opt=opt, max=hi)
    pools = {trt.MemoryPoolType.WORKSPACE: options.workspace_bytes} if options.workspace_bytes else None
    level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_COMPAT_ENUM[options.hardware_compat])
    kwargs: dict[str, Any] = {
        "profiles": [profile],
        "memory_pool_limits": pools,
        "load_timing_cache": str(options.timing_cache) if options.timing_cache else None,
        "builder_optimization_level": options.opt_level,
        "hardware_compatibility_level": level,
        "version_compatible": options.version_compatible or None,
        "exclude_lean_runtime": options.exclude_lean_runtime or None,
        "progress_monitor": _progress_monitor(show_progress),
    }
    if plan.fp16_flag:
        kwargs["fp16"] = True  # TensorRT 10 only; plan_build refuses it on 11
    return CreateConfig(**kwargs)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    options: EngineOptions,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build `engine_path` (+ its manifest) from an exported model; return the manifest."""
    progress = progress or Progress("build-engine", enabled=False)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise BadInputError(f"ONNX model {onnx_path} does not exist")
    source = read_manifest(onnx_path)
    if source.get("kind") != "onnx":
        raise BadInputError(f"{onnx_path}: manifest says kind {source.get('kind')!r}, expected an export-onnx model")
    options.batch.check_against(source.get("batch"))
    module = import_tensorrt()  # MissingBackendError with the install line when absent
    version = tensorrt_version(module)
    plan = plan_build(str(source.get("precision", "fp32")), options, version)
    print(f"[build-engine] TensorRT {version}: {plan.path}; attention {options.attention}", file=sys.stderr)
    gpu = gpu_info()
    grid = (int(source["grid"][0]), int(source["grid"][1]))
    shapes = options.batch.input_shapes(len(source["variables"]), grid)

    with progress.stage(f"preparing the ONNX graph (attention {options.attention})"):
        model = prepare_onnx(onnx_path, options.attention)
        if options.attention == "plugin":
            register_elevation_plugin()
    start = time.perf_counter()
    with progress.stage(f"building the engine on {gpu.name}"):
        engine_bytes = _build_with_polygraphy(model, onnx_path, options, plan, version, shapes, progress.enabled)
    seconds = time.perf_counter() - start
    write_bytes_atomic(engine_path, engine_bytes)
    manifest = engine_manifest(source, onnx_path, options, plan, version, gpu.as_dict(), seconds)
    write_manifest(engine_path, manifest)
    return manifest


def _build_with_polygraphy(
    model: onnx.ModelProto,
    onnx_path: Path,
    options: EngineOptions,
    plan: BuildPlan,
    version: TensorRTVersion,
    shapes: dict[str, tuple[tuple[int, ...], ...]],
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
                                          flags=_parser_flags(plan, options.attention, version) or None)  # fmt: skip
        else:
            network = NetworkFromOnnxBytes(model.SerializeToString(), strongly_typed=plan.strongly_typed,
                                           flags=_parser_flags(plan, options.attention, version) or None)  # fmt: skip
        config = _create_config(options, plan, shapes, show_progress)
        build = EngineBytesFromNetwork(network, config=config,
                                       save_timing_cache=str(options.timing_cache) if options.timing_cache else None)  # fmt: skip
        try:
            engine = build()
        except Exception as exc:  # Polygraphy raises PolygraphyException with TensorRT's errors logged
            raise EngineBuildError(f"TensorRT could not build the engine: {exc}") from exc
    if engine is None:
        raise EngineBuildError("TensorRT returned no engine (see its log above)")
    return bytes(engine)


def engine_manifest(
    source: dict[str, Any],
    onnx_path: Path,
    options: EngineOptions,
    plan: BuildPlan,
    version: TensorRTVersion,
    gpu: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The engine's manifest: what runs it (TensorRT, GPU), how it was built, and the model contract."""
    shapes = options.batch.input_shapes(len(source["variables"]), (int(source["grid"][0]), int(source["grid"][1])))
    batch: Any = options.batch.min if options.batch.min == options.batch.max else "dynamic"
    # Everything the export recorded about the model (config, standardisation, provenance, ...) carries
    # over; what describes the ONNX file itself is replaced by the engine's own entries below.
    inherited = {k: v for k, v in source.items() if k not in SOURCE_ONLY_KEYS}
    return {
        **inherited,
        "kind": ENGINE_KIND,
        "precision": plan.precision,
        "build_path": plan.path,
        "strongly_typed": plan.strongly_typed,
        "tensorrt": {"version": str(version), "major": version.major},
        "gpu": gpu,
        "attention": options.attention,
        "profile": options.batch.as_dict(),
        "profiles": [{name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in shapes.items()}],
        "batch": batch,
        "max_batch": options.batch.max,
        "workspace_bytes": options.workspace_bytes,
        "builder_optimization_level": options.opt_level,
        "hardware_compatibility": options.hardware_compat,
        "version_compatible": options.version_compatible,
        "exclude_lean_runtime": options.exclude_lean_runtime,
        "timing_cache": str(options.timing_cache) if options.timing_cache else None,
        "source_onnx": {"file": onnx_path.name, "sha256": sha256_file(onnx_path), "precision": source.get("precision")},
        "variables": source["variables"],
        "output_variables": source["output_variables"],
        "grid": source["grid"],
        "patch_size": source.get("patch_size"),
        "num_patches": source.get("num_patches"),
        "model_config": source.get("model_config"),
        "seed": source.get("seed"),
        "checkpoint": source.get("checkpoint"),
        "inputs": source.get("inputs"),
        "outputs": source.get("outputs"),
        "build_seconds": round(seconds, 1),
        "versions": {"climax_deploy": climax_deploy.__version__, "tensorrt": str(version)},
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


__all__ = ["build_engine", "engine_manifest", "prepare_onnx", "register_elevation_plugin", "save_rewritten_onnx"]
