"""One base exception for the toolkit and a few subclasses.

A message says what failed, what was expected versus what came, and what to do. The CLIs turn any
of these into one line on stderr and exit code 2.
"""

from __future__ import annotations


class ClimaxDeployError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class BadInputError(ClimaxDeployError, ValueError):
    """Input arrays, options or files that do not fit what the model expects."""


class ModelFileError(ClimaxDeployError):
    """A model artifact that is missing, truncated, tampered with or not from this toolkit."""


class ExportError(ClimaxDeployError):
    """Export to ONNX failed or produced a graph that breaks the toolkit's contract."""


class EngineBuildError(ClimaxDeployError):
    """TensorRT could not build or load an engine."""


class InferenceError(ClimaxDeployError, RuntimeError):
    """A loaded model failed while running (a backend call, not the caller's inputs)."""


class MissingBackendError(ClimaxDeployError, ImportError):
    """An optional dependency (torch, onnxruntime, TensorRT, ...) is not installed."""



class LockTimeoutError(ClimaxDeployError, TimeoutError):
    """Another process held an artifact's lock for longer than the timeout."""


class WriteError(ClimaxDeployError, OSError):
    """An output could not be written: a full disk, a quota, a read-only or vanished file system."""
