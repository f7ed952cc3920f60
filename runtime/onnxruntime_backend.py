"""ONNX Runtime backend: CPU by default, the CUDA provider when installed and asked for (or 'auto'),
TensorRT through ONNX Runtime's TensorRT execution provider when asked for (providers="tensorrt").

Which providers the installed build offers and which the session really uses are both reported,
because a GPU silently unused after a package mismatch is the commonest complaint in the field.

The TensorRT route (onnxruntime-gpu with TensorRT's libraries): ONNX Runtime builds a TensorRT engine
for the subgraphs TensorRT supports and runs the rest on CUDA, then CPU. The model-local functions
(climax::ElevationAttention, the climax.shapes reductions) need no inlining beforehand: ONNX Runtime
inlines every function node no provider claims before it partitions the graph (graph_partitioner.cc,
InlineFunctionsAOT), so the TensorRT provider sees the function bodies' standard ops. TensorRT plugins
reach ONNX Runtime as custom ops of the `trt.plugins` domain only (tensorrt_execution_provider_custom_ops.cc),
not `climax`. Not run here (no GPU, no TensorRT): whether the provider's capability check could still
claim the ElevationAttention node whole is unverified. Options are passed by the
names ONNX Runtime parses (tensorrt_execution_provider_info.cc, provider_option_names; all values
strings, booleans as "1"/"0" per parse_string.h).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.artifacts import cache_folder
from climax_deploy.errors import BadInputError, MissingBackendError, ModelFileError
from climax_deploy.manifest import OnnxManifest, check_embedded, read_onnx_manifest
from climax_deploy.optional import ONNXRUNTIME
from climax_deploy.runner import ModelSpec, Runner
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
TENSORRT_HINT = (
    "the TensorRT provider needs onnxruntime-gpu (pip install 'climax-deploy[gpu]', not beside onnxruntime) "
    "and TensorRT's libraries (libnvinfer) on the library path"
)


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """How to run an exported .onnx file with ONNX Runtime."""

    providers: str | tuple[str, ...] = "auto"  # 'auto', 'cpu', 'cuda', 'tensorrt' or provider names
    threads: int | None = None  # intra-op threads (default: ONNX Runtime's)
    verify: bool = True  # check the manifest's sha256 before loading
    # TensorRT execution provider only (providers="tensorrt"):
    trt_cache_dir: str | os.PathLike[str] | None = None  # engine + timing cache folder (created); None: no cache
    # trt_fp16_enable: let TensorRT pick fp16 kernels for float32 tensors. Off: an fp16 export's casts carry
    # its types, and the flag would let TensorRT run its float32 islands in fp16 (refused for fp16 exports).
    trt_fp16: bool = False
    trt_workspace_bytes: int | None = None  # TensorRT workspace limit (default: ONNX Runtime's)
    # With trt_fp16: keep LayerNormalization out of TensorRT (it runs on CUDA, float32) and ask for ONNX
    # Runtime's Pow + ReduceMean fp32 fallback; see LAYERNORM_FP32_OPTIONS. Without trt_fp16 nothing is needed.
    trt_layernorm_fp32: bool = True


# ONNX Runtime's TensorRT provider (tensorrt_execution_provider_info.cc, provider_option_names; the
# TensorRT provider's CreateNetwork / op exclusion in tensorrt_execution_provider.cc):
# - trt_op_types_to_exclude: a comma-separated list of op types the provider never claims; setting it
#   replaces the provider's default list (the data-dependent-shape ops NonMaxSuppression, NonZero,
#   RoiAlign), so that list is kept. LayerNormalization then runs on the CUDA provider in its input type,
#   float32: TensorRT's fp16 flag cannot reach it.
# - trt_layer_norm_fp32_fallback: read only when trt_fp16_enable is set; it pins an ElementWise(Pow) layer
#   followed by a Reduce layer to fp32 (a LayerNorm decomposed into primitive ops), not a
#   LayerNormalization node (TensorRT's INormalizationLayer), hence the exclusion above.
TRT_DEFAULT_EXCLUDED_OPS = ("NonMaxSuppression", "NonZero", "RoiAlign")
LAYERNORM_FP32_OPTIONS = {
    "trt_op_types_to_exclude": ",".join((*TRT_DEFAULT_EXCLUDED_OPS, "LayerNormalization")),
    "trt_layer_norm_fp32_fallback": "1",
}


def available_providers() -> list[str]:
    """Execution providers of the installed ONNX Runtime build."""
    return list(ONNXRUNTIME.load().get_available_providers())


def choose_providers(requested: str | tuple[str, ...] | list[str], available: list[str]) -> list[str]:
    """'auto' -> CUDA then CPU where CUDA exists, else CPU; 'cpu'/'cuda' or explicit names are checked."""
    if requested == "auto":
        wanted = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
        return wanted + ["CPUExecutionProvider"]
    names = [requested] if isinstance(requested, str) else list(requested)
    resolved = [PROVIDER_ALIASES.get(n.lower(), n) for n in names]
    missing = [n for n in resolved if n not in available]
    if missing:
        hint = ""
        if TENSORRT_PROVIDER in missing:
            hint = f"; {TENSORRT_HINT}"
        elif "CUDAExecutionProvider" in missing:
            hint = "; the CUDA provider needs onnxruntime-gpu: pip install 'climax-deploy[gpu]' (not beside onnxruntime)"
        raise MissingBackendError(f"execution provider(s) {missing} not available; this build offers {available}{hint}")
    if TENSORRT_PROVIDER in resolved and "CUDAExecutionProvider" in available and "CUDAExecutionProvider" not in resolved:
        # ONNX Runtime's advice: CUDA next, for the nodes TensorRT does not take.
        resolved.insert(resolved.index(TENSORRT_PROVIDER) + 1, "CUDAExecutionProvider")
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")  # fallback for ops a GPU provider does not claim
    return resolved


def tensorrt_cache_dir(path: str | os.PathLike[str]) -> Path:
    """The TensorRT cache folder as an absolute path, created if missing; BadInputError if it cannot be one."""
    return cache_folder(path, "trt_cache_dir")


def tensorrt_provider_options(options: OnnxRuntimeOptions) -> dict[str, str]:
    """The TensorRT execution provider's options, by the names and value formats ONNX Runtime parses.

    Names: onnxruntime/core/providers/tensorrt/tensorrt_execution_provider_info.cc (provider_option_names);
    booleans "1"/"0" (core/common/parse_string.h). The engine cache and the timing cache share the folder.
    """
    provider: dict[str, str] = {"trt_fp16_enable": "1" if options.trt_fp16 else "0"}
    if options.trt_fp16 and options.trt_layernorm_fp32:
        # fp32 exports only (check_trt_fp16): their LayerNorms would otherwise be open to fp16 kernels. Without
        # the flag TensorRT keeps float32 tensors in float32, so an fp16 export's casts keep its LayerNorms fp32.
        provider.update(LAYERNORM_FP32_OPTIONS)
    if options.trt_workspace_bytes is not None:
        if options.trt_workspace_bytes <= 0:
            raise BadInputError(f"trt_workspace_bytes must be > 0, got {options.trt_workspace_bytes}")
        provider["trt_max_workspace_size"] = str(int(options.trt_workspace_bytes))
    if options.trt_cache_dir is not None:
        folder = str(tensorrt_cache_dir(options.trt_cache_dir))
        provider.update({
            "trt_engine_cache_enable": "1", "trt_engine_cache_path": folder,
            "trt_timing_cache_enable": "1", "trt_timing_cache_path": folder,
        })  # fmt: skip
    return provider


def check_trt_fp16(precision: str, options: OnnxRuntimeOptions) -> None:
    """BadInputError when trt_fp16 is asked for an fp16 export: its float32 islands (elevation normalisation,
    bias + softmax, head) would be open to fp16 kernels, the loss they exist to prevent."""
    if options.trt_fp16 and precision == "fp16":
        raise BadInputError(
            "trt_fp16 applies to fp32 exports only: an fp16 export's casts already choose fp16, and the flag would let "
            "TensorRT run its float32 islands in fp16; drop trt_fp16"
        )


def session_providers(chosen: list[str], options: OnnxRuntimeOptions) -> list[str | tuple[str, dict[str, str]]]:
    """`chosen` as InferenceSession's `providers`: the TensorRT provider with its options, the others by name."""
    trt_set = options.trt_cache_dir is not None or options.trt_workspace_bytes is not None or options.trt_fp16
    if not options.trt_layernorm_fp32 and not options.trt_fp16:
        raise BadInputError("trt_layernorm_fp32=False only matters with trt_fp16 (fp32 exports); drop it")
    if TENSORRT_PROVIDER not in chosen:
        if trt_set:
            raise BadInputError("trt_* options apply to the TensorRT provider only; add providers='tensorrt'")
        return list(chosen)
    trt = tensorrt_provider_options(options)
    if options.trt_cache_dir is None:
        log.info("no trt_cache_dir: TensorRT rebuilds its engines in every new session (minutes for the full model)")
    return [(name, trt) if name == TENSORRT_PROVIDER else name for name in chosen]


class OnnxRuntimeRunner(Runner):
    """Runs an exported .onnx model with ONNX Runtime."""

    backend = "onnxruntime"
    manifest: OnnxManifest

    def __init__(self, path: str | os.PathLike[str], options: OnnxRuntimeOptions | None = None) -> None:
        options = options or OnnxRuntimeOptions()
        ort = ONNXRUNTIME.load()
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        manifest = read_onnx_manifest(path, verify=options.verify)
        check_trt_fp16(manifest.precision, options)
        super().__init__(ModelSpec.from_manifest(manifest), manifest)
        self.path = path
        self.options = options
        self.providers_available = list(ort.get_available_providers())
        chosen = choose_providers(options.providers, self.providers_available)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Memory patterns add a second whole-graph buffer from the second run on: full preset 2.09 -> 1.16 GB
        # peak without them, same latency (docs/memory.md).
        session_options.enable_mem_pattern = False
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        session_options.log_severity_level = 3
        providers = session_providers(chosen, options)
        self.provider_options = {name: opts for name, opts in (p for p in providers if isinstance(p, tuple))}
        try:
            self.session: Any = ort.InferenceSession(str(path), session_options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from exc
        check_embedded(self.session.get_modelmeta().custom_metadata_map, manifest, str(path))
        names = [i.name for i in self.session.get_inputs()]
        if names != [INPUT_NAME, LEAD_TIMES_NAME]:
            raise ModelFileError(f"{path}: inputs {names}, expected {[INPUT_NAME, LEAD_TIMES_NAME]}")
        self.providers_used = list(self.session.get_providers())
        if TENSORRT_PROVIDER in chosen and TENSORRT_PROVIDER not in self.providers_used:
            # onnxruntime-gpu lists the provider even when TensorRT's libraries are missing, then falls back.
            raise MissingBackendError(f"{path}: {TENSORRT_PROVIDER} was requested but the session fell back to "
                                      f"{self.providers_used}; {TENSORRT_HINT}")  # fmt: skip
        if "CUDAExecutionProvider" in chosen and "CUDAExecutionProvider" not in self.providers_used:
            log.warning("CUDAExecutionProvider was requested but the session fell back to %s", self.providers_used)
        log.info("ONNX Runtime providers available %s, used %s", self.providers_available, self.providers_used)

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        (y,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x, LEAD_TIMES_NAME: lead_times})
        return np.asarray(y)

    def _close_impl(self) -> None:
        # The session (and its memory arena) is freed when its last reference goes.
        self.session = None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": str(self.path),
            "providers_available": self.providers_available,
            "providers_used": self.providers_used,
            "provider_options": self.provider_options,
        }
