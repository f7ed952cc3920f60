"""The forecaster contract every backend obeys: predict(x, lead_times) -> y, with checked inputs.

Like Polygraphy's runners, the public method checks state and inputs, then calls a backend hook
(`_predict_impl`), so ONNX Runtime, TensorRT and the PyTorch reference behave identically at the
boundary. Torch-free.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.runtime.inputs import check_inputs


@dataclass(frozen=True)
class ModelSpec:
    """What a model artifact consumes and produces, read from its manifest."""

    variables: tuple[str, ...]
    output_variables: tuple[str, ...]
    grid: tuple[int, int]
    batch: int | None = None  # None: any batch size
    max_batch: int | None = None  # an engine's optimisation-profile limit
    precision: str = "fp32"
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], source: str = "manifest") -> ModelSpec:
        try:
            batch = manifest.get("batch", "dynamic")
            return cls(
                variables=tuple(manifest["variables"]),
                output_variables=tuple(manifest["output_variables"]),
                grid=(int(manifest["grid"][0]), int(manifest["grid"][1])),
                batch=None if batch == "dynamic" else int(batch),
                max_batch=manifest.get("max_batch"),
                precision=str(manifest.get("precision", "fp32")),
                manifest=manifest,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelFileError(f"{source}: manifest lacks or mangles a required field ({exc!r})") from exc

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        return (self.batch or "B", len(self.variables), *self.grid)


class Forecaster(abc.ABC):
    """A loaded model: `predict(x [B, V, H, W] float32, lead_times [B] hours) -> [B, O, H, W] float32`.

    Safe to call from several threads at once. Use as a context manager or call `close()`.
    """

    backend: str = "abstract"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._closed = False

    def predict(self, x: Any, lead_times: Any) -> np.ndarray:
        if self._closed:
            raise BadInputError(f"this {self.backend} forecaster was closed; load the model again")
        x, lead_times = check_inputs(self.spec, x, lead_times)
        y = self._predict_impl(x, lead_times)
        expected = (x.shape[0], len(self.spec.output_variables), *self.spec.grid)
        if y.shape != expected:  # a backend bug, never the user's fault: fail loudly
            raise ModelFileError(f"{self.backend} returned shape {y.shape}, expected {expected}")
        return np.asarray(y, dtype=np.float32)

    @abc.abstractmethod
    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        """Run the backend on checked float32 inputs."""

    def describe(self) -> dict[str, Any]:
        """Backend, devices and settings in use, for logs and parity tables."""
        return {"backend": self.backend, "precision": self.spec.precision}

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Forecaster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
