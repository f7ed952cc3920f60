"""ONNX export of the reference model and the graph passes that shape it.

Every name is imported on first use: the passes need onnx, `export_model`, `export_onnx`,
`ExportOptions` and `Provenance` need torch. So `import climax_deploy.export.<cli>` works in an
install without the `export` extra, and the console scripts can say which extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climax_deploy.export.elevation_function import AttachElevationFunction, elevation_attention_function
    from climax_deploy.export.onnx_export import ExportOptions, Provenance, export_model, export_onnx
    from climax_deploy.export.passes import DEFAULT_OPSET, GraphPass, PassResult, run_passes

# name -> the module of this area that defines it
_HOME = {
    "AttachElevationFunction": "elevation_function",
    "elevation_attention_function": "elevation_function",
    "DEFAULT_OPSET": "passes",
    "GraphPass": "passes",
    "PassResult": "passes",
    "run_passes": "passes",
    "ExportOptions": "onnx_export",
    "Provenance": "onnx_export",
    "export_model": "onnx_export",
    "export_onnx": "onnx_export",
}

__all__ = sorted(_HOME, key=str.lower)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
