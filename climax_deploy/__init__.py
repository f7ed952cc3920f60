"""climax-deploy: take the patch-level physics-guided ClimaX model from PyTorch to production.

The core (modules directly in this package: errors, schema, manifest, runner, inputs,
standardisation, synthetic, optional, artifacts, cli, progress) imports no other area. The areas,
each a top-level folder of the repository:
  climax_deploy.model     the PyTorch reference (torch)
  climax_deploy.kernels   the fused elevation-attention kernel and its TensorRT plugin (torch, triton)
  climax_deploy.export    export-onnx, graph passes, build-engine, Triton model repositories (torch, onnx)
  climax_deploy.runtime   what a forecast system embeds: numpy + ONNX Runtime (+ TensorRT, lazily)
  climax_deploy.forecast  physical units and forecast files (xarray)
  climax_deploy.serving   Triton Inference Server through pytriton
  climax_deploy.validate  check-parity and benchmarks (torch)
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
