"""ONNX Runtime backend: CPU by default, the CUDA provider when installed and asked for (or 'auto').

Which providers the installed build offers and which the session really uses are both reported,
because a GPU silently unused after a package mismatch is the commonest complaint in the field.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.errors import MissingBackendError, ModelFileError
from climax_deploy.manifest import OnnxManifest, check_embedded, read_onnx_manifest
from climax_deploy.optional import ONNXRUNTIME
from climax_deploy.runner import ModelSpec, Runner
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """How to run an exported .onnx file with ONNX Runtime."""

    providers: str | tuple[str, ...] = "auto"  # 'auto', 'cpu', 'cuda' or provider names
    threads: int | None = None  # intra-op threads (default: ONNX Runtime's)
    verify: bool = True  # check the manifest's sha256 before loading


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
        if "CUDAExecutionProvider" in missing:
            hint = "; the CUDA provider needs onnxruntime-gpu: pip install 'climax-deploy[gpu]' (not beside onnxruntime)"
        raise MissingBackendError(f"execution provider(s) {missing} not available; this build offers {available}{hint}")
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")  # fallback for ops a GPU provider does not claim
    return resolved


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
        super().__init__(ModelSpec.from_manifest(manifest), manifest)
        self.path = path
        self.options = options
        self.providers_available = list(ort.get_available_providers())
        chosen = choose_providers(options.providers, self.providers_available)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        session_options.log_severity_level = 3
        try:
            self.session: Any = ort.InferenceSession(str(path), session_options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from exc
        check_embedded(self.session.get_modelmeta().custom_metadata_map, manifest, str(path))
        names = [i.name for i in self.session.get_inputs()]
        if names != [INPUT_NAME, LEAD_TIMES_NAME]:
            raise ModelFileError(f"{path}: inputs {names}, expected {[INPUT_NAME, LEAD_TIMES_NAME]}")
        self.providers_used = list(self.session.get_providers())
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
        }
