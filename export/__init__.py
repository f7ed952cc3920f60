"""ONNX export of the reference model and the graph passes that shape it.

`export_model`, `export_onnx`, `ExportOptions` and `Provenance` need torch; they are imported on first
use, so the passes and `build-engine` work in an environment with onnx but without torch.
"""

from __future__ import annotations

from typing import Any

from climax_deploy.export.elevation_function import AttachElevationFunction, elevation_attention_function
from climax_deploy.export.passes import DEFAULT_OPSET, GraphPass, PassResult, run_passes

__all__ = [
    "AttachElevationFunction",
    "DEFAULT_OPSET",
    "ExportOptions",
    "GraphPass",
    "PassResult",
    "Provenance",
    "elevation_attention_function",
    "export_model",
    "export_onnx",
    "run_passes",
]

_LAZY = {"ExportOptions", "Provenance", "export_model", "export_onnx"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from climax_deploy.export import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
