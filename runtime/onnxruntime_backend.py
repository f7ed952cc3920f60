"""ONNX Runtime backend: CPU by default, the CUDA provider when installed and asked for (or 'auto').

Which providers the installed build offers and which the session really uses are both reported,
because a GPU silently unused after a package mismatch is the commonest complaint in the field.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.artifacts import read_manifest
from climax_deploy.errors import MissingBackendError, ModelFileError
from climax_deploy.runtime.base import Forecaster, ModelSpec
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

METADATA_KEY = "climax_deploy.manifest"
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingBackendError(
            "ONNX Runtime is not installed: pip install 'climax-deploy[cpu]' (or '[gpu]' for onnxruntime-gpu)"
        ) from exc
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers of the installed ONNX Runtime build."""
    return list(import_onnxruntime().get_available_providers())


def choose_providers(requested: str | list[str], available: list[str]) -> list[str]:
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


class OnnxRuntimeForecaster(Forecaster):
    """Runs an exported .onnx model with ONNX Runtime."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: str | list[str] = "auto",
        threads: int | None = None,
        verify: bool = True,
    ) -> None:
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        manifest = read_manifest(path, verify=verify)
        if manifest.get("kind") != "onnx":
            raise ModelFileError(f"{path}: manifest says kind {manifest.get('kind')!r}, expected 'onnx'")
        super().__init__(ModelSpec.from_manifest(manifest, str(path)))
        self.path = path
        self.providers_available = list(ort.get_available_providers())
        chosen = choose_providers(providers, self.providers_available)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from exc
        self._check_embedded_manifest(manifest)
        self.providers_used = list(self.session.get_providers())
        if "CUDAExecutionProvider" in chosen and "CUDAExecutionProvider" not in self.providers_used:
            log.warning("CUDAExecutionProvider was requested but the session fell back to %s", self.providers_used)
        log.info("ONNX Runtime providers available %s, used %s", self.providers_available, self.providers_used)

    def _check_embedded_manifest(self, manifest: dict[str, Any]) -> None:
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ModelFileError(f"{self.path}: not a climax-deploy model (no {METADATA_KEY} metadata)")
        embedded = json.loads(meta[METADATA_KEY])
        for key in ("variables", "output_variables", "grid", "precision", "batch"):
            if embedded.get(key) != manifest.get(key):
                raise ModelFileError(
                    f"{self.path}: manifest {key}={manifest.get(key)!r} disagrees with the file's {embedded.get(key)!r}"
                )
        names = [i.name for i in self.session.get_inputs()]
        if names != [INPUT_NAME, LEAD_TIMES_NAME]:
            raise ModelFileError(f"{self.path}: inputs {names}, expected {[INPUT_NAME, LEAD_TIMES_NAME]}")

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        (y,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x, LEAD_TIMES_NAME: lead_times})
        return np.asarray(y)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": str(self.path),
            "providers_available": self.providers_available,
            "providers_used": self.providers_used,
        }
