"""climax-deploy: take the patch-level physics-guided ClimaX model from PyTorch to production.

Subpackages (each maps to a top-level folder of the repository):
  climax_deploy.model     the PyTorch reference (needs torch)
  climax_deploy.export    `export-onnx` and the ONNX graph passes (needs torch, onnx, onnxscript)
  climax_deploy.runtime   the embedded runtime (numpy + onnxruntime only)
  climax_deploy.validate  `check-parity`, terrains and metrics (needs torch)

This top-level module imports nothing heavy, so `climax_deploy.runtime` stays torch-free.
"""

from __future__ import annotations

__version__ = "0.1.0"

from climax_deploy.errors import (
    BadInputError,
    ClimaxDeployError,
    EngineBuildError,
    ExportError,
    MissingBackendError,
    ModelFileError,
    ParityError,
)

__all__ = [
    "__version__",
    "BadInputError",
    "ClimaxDeployError",
    "EngineBuildError",
    "ExportError",
    "MissingBackendError",
    "ModelFileError",
    "ParityError",
]
