"""The embedded runtime: load an exported model and predict, with numpy and ONNX Runtime only.

    from climax_deploy.runtime import load
    with load("build/climax_full.onnx") as runner:
        y = runner.predict(x, lead_times)   # x [B, 15, 128, 256] float32, lead_times [B] hours

    # TensorRT through ONNX Runtime's TensorRT execution provider (onnxruntime-gpu + TensorRT's libraries):
    runner = load("build/climax_full_fp16.onnx", providers="tensorrt", trt_cache_dir="build/trt_cache")

    # OpenVINO on the CPU (pip install 'climax-deploy[openvino]'); the first load caches its IR:
    runner = load("build/climax_full.onnx", backend="openvino", threads=2)

This package imports numpy, ONNX Runtime and climax_deploy's core; TensorRT only when an engine is
loaded; OpenVINO only when asked for (and onnx once, to convert an export for it: openvino_backend.py). torch, Triton, xarray and the serving stack are never imported (import-linter checks it).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from climax_deploy.errors import BadInputError
from climax_deploy.runner import ModelSpec, Runner
from climax_deploy.runtime.onnxruntime_backend import OnnxRuntimeOptions, OnnxRuntimeRunner, available_providers

__all__ = ["BACKENDS", "ModelSpec", "OnnxRuntimeOptions", "OnnxRuntimeRunner", "Runner", "available_providers", "load"]


def _options(cls: Any, options: Any, overrides: dict[str, Any], path: str | os.PathLike[str]) -> Any:
    """A typed options object from `options` (or the defaults) with keyword overrides; unknown names are named."""
    if options is not None and not isinstance(options, cls):
        raise BadInputError(f"{path}: options must be {cls.__name__}, got {type(options).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise BadInputError(f"{path}: unknown load option(s) {unknown} for {cls.__name__}; expected some of {sorted(known)}")
    if "providers" in overrides and isinstance(overrides["providers"], list):
        overrides["providers"] = tuple(overrides["providers"])
    return dataclasses.replace(options or cls(), **overrides)


BACKENDS: dict[str, str] = {"onnxruntime": ".onnx", "openvino": ".onnx", "tensorrt": ".engine"}
DEFAULT_BACKEND = {".onnx": "onnxruntime", ".engine": "tensorrt"}


def load(path: str | os.PathLike[str], options: Any = None, *, backend: str | None = None, **overrides: Any) -> Runner:
    """Load a model artifact: by its suffix (`.onnx` -> ONNX Runtime, `.engine` -> TensorRT) unless
    `backend` names one of BACKENDS ('openvino' runs a .onnx file with OpenVINO on the CPU).

    options: OnnxRuntimeOptions, OpenVinoOptions or TensorRTOptions; keyword overrides set their fields, e.g.
    load("m.onnx", providers="cpu", threads=2), load("m.onnx", providers="tensorrt", trt_cache_dir="cache")
    (ONNX Runtime's TensorRT execution provider, fp16, engines cached in the folder), load("m.engine", device=1)
    or load("m.onnx", backend="openvino", precision="bf16").
    """
    suffix = Path(path).suffix.lower()
    if backend in (None, "auto"):
        if suffix not in DEFAULT_BACKEND:
            raise BadInputError(f"{path}: unknown model type {suffix!r}; expected a .onnx file or a TensorRT .engine")
        backend = DEFAULT_BACKEND[suffix]
    if backend not in BACKENDS:
        raise BadInputError(f"backend must be one of {['auto', *BACKENDS]}, got {backend!r}")
    if suffix != BACKENDS[backend]:
        raise BadInputError(f"{path}: backend {backend} runs {BACKENDS[backend]} files, got {suffix or 'no suffix'}")
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path, _options(OnnxRuntimeOptions, options, overrides, path))
    if backend == "openvino":
        # OpenVINO is imported only here (an optional extra); MissingBackendError says what to install.
        from climax_deploy.runtime.openvino_backend import OpenVinoOptions, OpenVinoRunner

        return OpenVinoRunner(path, _options(OpenVinoOptions, options, overrides, path))
    # TensorRT (or its lean runtime) is imported only here, so ONNX Runtime users never need it.
    from climax_deploy.runtime.tensorrt_runner import TensorRTOptions, TensorRTRunner

    return TensorRTRunner(path, _options(TensorRTOptions, options, overrides, path))
