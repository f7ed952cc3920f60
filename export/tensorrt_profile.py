"""Engine build settings that need no TensorRT: batch profiles, sizes, build plans, trtexec lines.

The options themselves are one record, climax_deploy.manifest.BuildOptions. Everything here is pure Python so it is unit-tested on machines without TensorRT; the TensorRT
calls live in export/tensorrt_build.py.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from climax_deploy.errors import BadInputError, EngineBuildError
from climax_deploy.manifest import BatchSpec, BuildOptions
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME
from climax_deploy.tensorrt_version import TensorRTVersion

DEFAULT_DYNAMIC_PROFILE = BatchSpec(1, 1, 4)  # the profile of a dynamic-batch export unless --batch says otherwise
ASSUMED_TENSORRT = TensorRTVersion(10, 14)  # --print-trtexec without TensorRT installed: the first with IAttention
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
               "g": 1 << 30, "gib": 1 << 30, "kb": 1000, "mb": 1000**2, "gb": 1000**3}  # fmt: skip

Shapes = dict[str, tuple[tuple[int, ...], ...]]  # {input name: (min shape, opt shape, max shape)}


def engine_profile(requested: BatchSpec | None, exported: BatchSpec) -> BatchSpec:
    """The optimisation profile of an engine built from an export of batch `exported`.

    None asks for the default: the export's fixed batch, else DEFAULT_DYNAMIC_PROFILE. A profile needs a
    maximum, and must lie within what the export takes.
    """
    if requested is None:
        return exported if exported.size is not None else DEFAULT_DYNAMIC_PROFILE
    if requested.max is None:
        raise BadInputError(f"an engine's batch profile needs a maximum: give MIN,OPT,MAX or N, got {requested}")
    requested.within(exported)
    return requested


def input_shapes(profile: BatchSpec, num_variables: int, grid: tuple[int, int]) -> Shapes:
    """{input name: (min shape, opt shape, max shape)} of the model's two inputs over the batch `profile`."""
    if profile.max is None:
        raise BadInputError(f"input shapes need a batch profile with a maximum, got {profile}")
    h, w = grid
    batches = (profile.min, profile.opt, profile.max)
    return {
        INPUT_NAME: tuple((b, num_variables, h, w) for b in batches),
        LEAD_TIMES_NAME: tuple((b,) for b in batches),
    }


def parse_size(text: str) -> int:
    """'4GiB', '512M', '1073741824' -> bytes (binary units for K/M/G, decimal for KB/MB/GB)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match[2].lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise BadInputError(f"expected a size like 4GiB, 512MiB or a byte count, got {text!r}")
    value = int(float(match[1]) * _SIZE_UNITS[unit])
    if value <= 0:
        raise BadInputError(f"size must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class BuildPlan:
    """How TensorRT is driven for one build, decided from the graph, the request and the version."""

    precision: str  # what the engine computes in: "fp32" or "fp16"
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    fp16_flag: bool  # BuilderFlag.FP16 (TensorRT 10 only; deprecated since 10.12)
    path: str  # a one-line description printed to the user and kept in the manifest


def plan_build(graph_precision: str, options: BuildOptions, version: TensorRTVersion) -> BuildPlan:
    """Choose strongly typed vs the FP16 builder flag, and refuse what this TensorRT cannot do.

    - An fp16 graph (export-onnx --precision fp16) is built strongly typed on 10.x and 11.x: the
      ONNX casts decide every tensor's type, so the FP32 islands survive.
    - An fp32 graph asked for fp16 uses BuilderFlag.FP16 on 10.x (TensorRT picks per layer; the
      islands are not guaranteed); 11.x has no such flag, so it is refused with what to do instead.
    """
    requested = graph_precision if options.precision == "auto" else options.precision
    if graph_precision == "fp16" and requested == "fp32":
        raise EngineBuildError("the ONNX graph is fp16; an fp32 engine needs an fp32 export (export-onnx --precision fp32)")
    if options.attention == "native" and not version.has_native_attention:
        raise EngineBuildError(
            f"--attention native needs TensorRT >= 10.14 (ONNX Attention -> IAttention), not {version}. "
            "Use --attention inline or upgrade TensorRT"
        )
    if options.attention == "plugin" and not version.has_python_plugins:
        raise EngineBuildError(f"--attention plugin needs TensorRT >= 10.9 (ahead-of-time Python plugins), not {version}")
    if options.attention == "plugin" and options.version_compatible:
        # NvInfer.h (v10.13.0 ~10217, v11.1 ~11133): version-compatible plans carry plugins only as plugin
        # libraries (IBuilderConfig::setPluginsToSerialize); nothing documents that an ahead-of-time
        # Python (QDP) kernel runs under the lean or dispatch runtime. Refused until a GPU run shows it does.
        raise EngineBuildError(
            "--version-compatible cannot carry the --attention plugin kernel (TensorRT serialises only plugin "
            "libraries into version-compatible plans); use --attention inline or native, or drop --version-compatible"
        )
    if graph_precision == "fp16":
        return BuildPlan("fp16", True, False, f"strongly typed fp16 graph with fp32 islands (TensorRT {version})")
    if requested == "fp16":
        if not version.has_fp16_flag:
            raise EngineBuildError(
                f"TensorRT {version} builds strongly typed networks only (no FP16 builder flag); "
                "export an fp16 graph with export-onnx --precision fp16 and build that"
            )
        return BuildPlan("fp16", False, True,
                         f"fp32 graph with BuilderFlag.FP16 (TensorRT {version}; deprecated since 10.12, "
                         "fp32 islands not guaranteed: prefer an fp16 export)")  # fmt: skip
    return BuildPlan("fp32", True, False, f"strongly typed fp32 (TensorRT {version})")


TRTEXEC_HARDWARE_COMPAT = {"none": "none", "ampere+": "ampere+", "same-cc": "sameComputeCapability"}


def trtexec_command(
    onnx_path: Path, engine_path: Path, options: BuildOptions, plan: BuildPlan, shapes: Shapes
) -> list[str]:
    """The trtexec invocation equivalent to this build (for machines with only trtexec); `shapes` from input_shapes."""

    def shape_arg(index: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in s[index])}" for name, s in shapes.items())

    cmd = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={shape_arg(0)}",
        f"--optShapes={shape_arg(1)}",
        f"--maxShapes={shape_arg(2)}",
        f"--builderOptimizationLevel={options.opt_level}",
    ]
    if plan.strongly_typed:
        cmd.append("--stronglyTyped")
    if plan.fp16_flag:
        cmd.append("--fp16")
    if not options.tf32:
        cmd.append("--noTF32")  # trtexec enables TF32 unless told (samples/common/sampleEngines.cpp v11.1:618)
    if options.attention == "native":
        # The one IAttention (ElevationAttention's) may fall back to several kernels where no fused one
        # applies: what build-engine sets through the API (mark_attention_decomposable).
        cmd.append("--decomposableAttentions=*")
    if options.workspace_bytes:
        cmd.append(f"--memPoolSize=workspace:{max(1, options.workspace_bytes >> 20)}M")
    if options.timing_cache:
        cmd.append(f"--timingCacheFile={options.timing_cache}")
    if options.version_compatible:
        cmd.append("--versionCompatible")
    if options.exclude_lean_runtime:
        cmd.append("--excludeLeanRuntime")
    if options.hardware_compatibility != "none":
        cmd.append(f"--hardwareCompatibilityLevel={TRTEXEC_HARDWARE_COMPAT[options.hardware_compatibility]}")
    return cmd


def format_command(cmd: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in cmd)


__all__ = [
    "ASSUMED_TENSORRT",
    "BuildPlan",
    "DEFAULT_DYNAMIC_PROFILE",
    "Shapes",
    "engine_profile",
    "format_command",
    "input_shapes",
    "parse_size",
    "plan_build",
    "trtexec_command",
]
