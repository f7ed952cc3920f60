"""ONNX export of the reference model and the graph passes that shape it."""

from __future__ import annotations

from climax_deploy.export.elevation_function import AttachElevationFunction, elevation_attention_function
from climax_deploy.export.onnx_export import DEFAULT_OPSET, ExportOptions, export_onnx
from climax_deploy.export.passes import GraphPass, PassResult, run_passes

__all__ = [
    "AttachElevationFunction",
    "DEFAULT_OPSET",
    "ExportOptions",
    "GraphPass",
    "PassResult",
    "elevation_attention_function",
    "export_onnx",
    "run_passes",
]
