"""The runner contract every backend obeys: ONNX Runtime, TensorRT and the PyTorch reference.

    with load("m.onnx") as runner:              # construction loads; close() releases the session
        y = runner.predict(x, lead_times)       # one batch the artifact accepts
        y = runner.predict_batched(x, lead)     # any batch: split at the artifact's limit and within a
                                                # memory budget, padded to a fixed batch; forecasting,
                                                # serving and parity use it

Like Polygraphy's runners, the public methods check state and inputs, then call backend hooks
(`_predict_impl`, `_close_impl`), so every backend behaves identically at the boundary. Torch-free.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.inputs import check_model_inputs, standardised_guards
from climax_deploy.manifest import BatchSpec, Manifest

# predict_batched splits a batch so that one call's activations stay within this many bytes (a model
# whose batch is dynamic would otherwise run any batch in one go: 8.4 GB for 1000 small-preset samples).
DEFAULT_MEMORY_BUDGET_BYTES = 2 << 30
FLOAT_BYTES = 4


def activation_bytes_per_sample(manifest: Manifest) -> int:
    """A conservative estimate of one sample's working memory in a backend: unblocked attention scores of
    the heads computed together (scores and softmax, [heads, N, N] twice; fp32 exports compute them in
    query blocks and need less, docs/memory.md) and the token activations of a
    block (32 x [N, D]: residual, norms, the MLP's widened hidden and ONNX Runtime's copies), plus the
    sample's input and output fields. Small preset (fp32, one head per chunk): 10.7 MB estimated, 8.1 MB
    measured (ONNX Runtime on CPU, peak RSS of batch 64 less batch 1, over 63)."""
    m = manifest.model
    n, d = m.num_patches, int(m.config.get("embed_dim", 768))
    heads = int(getattr(manifest, "heads_per_chunk", 0) or m.config.get("num_heads", 8))
    h, w = m.grid
    fields = (len(m.variables) + len(m.output_variables)) * h * w
    return FLOAT_BYTES * (2 * heads * n * n + 32 * n * d + fields)


@dataclass(frozen=True)
class ModelSpec:
    """What a runner consumes and produces."""

    variables: tuple[str, ...]
    output_variables: tuple[str, ...]
    grid: tuple[int, int]
    batch: BatchSpec = field(default_factory=BatchSpec.dynamic)
    precision: str = "fp32"
    # Standardised interval each variable's x must lie in (climax_deploy.inputs.standardised_guards).
    guards: tuple[tuple[float, float] | None, ...] = ()

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ModelSpec:
        m = manifest.model
        stats = m.standardisation

        def standardise(name: str, value: float) -> float:
            mean, std = stats.mean_std(name)
            return (value - mean) / (std + stats.eps)

        guards = standardised_guards(m.variables, standardise)
        return cls(m.variables, m.output_variables, m.grid, manifest.batch, manifest.precision, guards)

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        return (self.batch.size or "B", len(self.variables), *self.grid)


class Runner(abc.ABC):
    """A loaded model: `predict(x [B, V, H, W] float32, lead_times [B] hours) -> [B, O, H, W] float32`.

    Safe to call from several threads at once. Use as a context manager or call `close()`, which
    releases the backend's session or engine; a closed runner refuses to predict.
    """

    backend: ClassVar[str] = "abstract"

    def __init__(self, spec: ModelSpec, manifest: Manifest | None = None) -> None:
        self.spec = spec
        self.manifest = manifest  # None for a PyTorch model built in memory
        self._closed = False
        # Research runs only: accept lead times past the maximum and standardised x outside the guards.
        self.allow_implausible = False

    @property
    def closed(self) -> bool:
        return self._closed

    def predict(self, x: Any, lead_times: Any) -> np.ndarray:
        """One batch the artifact accepts (see `spec.batch`); `predict_batched` takes any batch."""
        if self._closed:
            raise BadInputError(f"this {self.backend} runner was closed; load the model again")
        x, lead_times = check_model_inputs(self.spec, x, lead_times, self.allow_implausible)
        y = self._predict_impl(x, lead_times)
        expected = (x.shape[0], len(self.spec.output_variables), *self.spec.grid)
        if y.shape != expected:  # a backend bug, never the user's fault: fail loudly
            raise ModelFileError(f"{self.backend} returned shape {y.shape}, expected {expected}")
        return np.asarray(y, dtype=np.float32)

    def batch_limit(self, requested: int | None = None) -> int | None:
        """The largest batch one call runs: the artifact's limit, capped by `requested` where it allows."""
        if requested is not None and requested < 1:
            raise BadInputError(f"batch size must be a positive integer, got {requested}")
        spec = self.spec.batch
        if spec.size is not None:
            return spec.size
        if requested is None:
            return spec.max
        return max(spec.min, requested if spec.max is None else min(requested, spec.max))

    def budget_batch(self, memory_budget: int | None = None) -> int | None:
        """The most samples one call may run within `memory_budget` bytes (DEFAULT_MEMORY_BUDGET_BYTES),
        from the manifest's model size (activation_bytes_per_sample); None without a manifest."""
        budget = DEFAULT_MEMORY_BUDGET_BYTES if memory_budget is None else memory_budget
        if budget <= 0:
            raise BadInputError(f"memory budget must be a positive number of bytes, got {budget}")
        if self.manifest is None:
            return None
        return max(1, budget // activation_bytes_per_sample(self.manifest))

    def predict_batched(
        self,
        x: Any,
        lead_times: Any,
        max_batch: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        memory_budget: int | None = None,
    ) -> np.ndarray:
        """`predict` for any number of samples: split at the artifact's (or `max_batch`'s) limit and so
        that one call stays within `memory_budget` bytes (DEFAULT_MEMORY_BUDGET_BYTES; `budget_batch`),
        and padded by repeating the last sample where the artifact needs more samples than a chunk has.
        A fixed-batch artifact runs its batch whatever the budget.

        on_batch(done, total) is called after each chunk (progress).
        """
        if not isinstance(x, np.ndarray) or x.ndim < 1:
            return self.predict(x, lead_times)  # the same clear error as predict
        lead = np.asarray(lead_times)
        if lead.ndim != 1 or lead.shape[0] != x.shape[0]:
            return self.predict(x, lead_times)
        total = x.shape[0]
        chunk = self.batch_limit(max_batch) or total
        within = self.budget_batch(memory_budget)
        if within is not None and self.spec.batch.size is None:
            chunk = max(self.spec.batch.min, min(chunk, within))
        outputs = []
        for start in range(0, total, chunk):
            xs, ls = x[start : start + chunk], lead[start : start + chunk]
            n = xs.shape[0]
            pad = max(self.spec.batch.min - n, 0)
            if pad:
                xs = np.concatenate([xs, np.repeat(xs[-1:], pad, axis=0)])
                ls = np.concatenate([ls, np.repeat(ls[-1:], pad)])
            outputs.append(self.predict(xs, ls)[:n])
            if on_batch is not None:
                on_batch(start + n, total)
        return np.concatenate(outputs) if outputs else self.predict(x, lead_times)

    @abc.abstractmethod
    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        """Run the backend on checked float32 inputs."""

    def _close_impl(self) -> None:
        """Release the backend's session, engine or model (called once)."""

    def describe(self) -> dict[str, Any]:
        """Backend, devices and settings in use, for logs and parity tables."""
        return {"backend": self.backend, "precision": self.spec.precision}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_impl()

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["DEFAULT_MEMORY_BUDGET_BYTES", "ModelSpec", "Runner", "activation_bytes_per_sample"]
