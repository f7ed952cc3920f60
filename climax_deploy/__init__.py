"""climax-deploy: take the patch-level physics-guided ClimaX model from PyTorch to production.

The areas, each a top-level folder of the repository, top to bottom (an area imports only areas
below it; those on one line never import each other; pyproject.toml's import-linter contracts):
  climax_deploy.bench     the performance lab: climax-bench, climax-bench-attention, climax-gpu-check
  climax_deploy.validate  the parity harness: check-parity (torch)
  climax_deploy.serving   Triton Inference Server through pytriton
  climax_deploy.forecast  physical units and forecast files (xarray)
  climax_deploy.export    export-onnx, graph passes, build-engine, Triton model repositories (torch, onnx)
  climax_deploy.runtime   what a forecast system embeds: numpy + ONNX Runtime (+ TensorRT, lazily)
  climax_deploy.model     the PyTorch reference (torch)
  climax_deploy.gridded   NetCDF/zarr files, grids, units and stats files (xarray, lazily)
  climax_deploy.kernels   the fused elevation-attention kernel and its TensorRT plugin (torch, triton)
Below them all, the core (the modules directly in this package: errors, schema, manifest, runner,
TensorRT version policy, ...) imports no area.
"""

from __future__ import annotations

__version__ = "0.1.0"

from climax_deploy.errors import (
    BadInputError,
    ClimaxDeployError,
    EngineBuildError,
    ExportError,
    InferenceError,
    MissingBackendError,
    ModelFileError,
)

__all__ = [
    "__version__",
    "BadInputError",
    "ClimaxDeployError",
    "EngineBuildError",
    "ExportError",
    "InferenceError",
    "MissingBackendError",
    "ModelFileError",
]
