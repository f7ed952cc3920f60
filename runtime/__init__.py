"""The embedded runtime: load an exported model and predict, with numpy and ONNX Runtime only.

    from climax_deploy.runtime import load
    forecaster = load("build/climax_full.onnx")
    y = forecaster.predict(x, lead_times)   # x [B, 15, 128, 256] float32, lead_times [B] hours

Importing this package never imports torch (a test enforces it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from climax_deploy.errors import BadInputError
from climax_deploy.runtime.base import Forecaster, ModelSpec
from climax_deploy.runtime.inputs import check_inputs
from climax_deploy.runtime.onnxruntime_backend import OnnxRuntimeForecaster, available_providers

__all__ = ["Forecaster", "ModelSpec", "OnnxRuntimeForecaster", "available_providers", "check_inputs", "load"]


def load(path: str | os.PathLike[str], **options: Any) -> Forecaster:
    """Load a model artifact by its suffix: `.onnx` -> ONNX Runtime, `.engine` -> TensorRT.

    Options for ONNX Runtime: providers ('auto', 'cpu', 'cuda' or a list of provider names),
    threads (intra-op threads), verify (check the manifest's sha256, default True).
    Options for TensorRT: device (CUDA device index, default 0), verify.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxRuntimeForecaster(path, **options)
    if suffix == ".engine":
        # TensorRT (or its lean runtime) is imported only here, so ONNX Runtime users never need it.
        from climax_deploy.runtime.tensorrt_backend import TensorRTForecaster

        return TensorRTForecaster(path, **options)
    raise BadInputError(f"{path}: unknown model type {suffix!r}; expected a .onnx file or a TensorRT .engine")
