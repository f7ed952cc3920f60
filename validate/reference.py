"""The two PyTorch runs check-parity grades a backend with: float64 truth, and PyTorch in the backend's precision.

- Truth: the reference model in float64, `attention="fused"` (the bias form every backend computes,
  docs/model.md section 4; exact, O(N) memory, so it runs at 8192 patches).
- Same precision: what PyTorch itself achieves in the artifact's precision, the yardstick for the
  backend's error against the truth:
  - fp32: the model eager in float32 (fused attention);
  - fp16: `torch.autocast("cpu", float16)` with the output head in float32. Autocast runs the matrix
    products in float16 and keeps LayerNorm, softmax and reductions in float32, the elevation path
    stays float32 (it has no matrix product) and the physics attention computes in float32 on CPU:
    the fp32 islands of the fp16 export (climax_deploy.export.fp16), so the two round the same
    places. Plain `model.half()` would round the head and the elevation path too and be 2-5x less
    accurate than the export, which would loosen the bound.
  - bf16: the same recipe with `torch.autocast("cpu", bfloat16)`: the yardstick of OpenVINO's bf16
    inference precision on an fp32 export (its INFERENCE_PRECISION_HINT=bf16 likewise keeps the
    normalisations and softmax in f32 and runs the matrix products in bf16).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from climax_deploy.errors import BadInputError
from climax_deploy.model.climax import ClimaX
from climax_deploy.model.runner import TorchRunner

TRUTH_DTYPE = torch.float64
SAME_PRECISION: dict[str, str] = {
    "fp32": "PyTorch fp32 (eager, fused attention)",
    "fp16": "PyTorch fp16 (CPU autocast, fp32 islands as the export: head, LayerNorm, softmax, elevation path)",
    "bf16": "PyTorch bf16 (CPU autocast, the fp16 export's fp32 islands: head, LayerNorm, softmax, elevation path)",
}
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}
TRUTH = "PyTorch float64 (fused attention)"


class _Float32Island(nn.Module):
    """Runs the wrapped module in float32 with autocast off (the export's fp32 output head)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self.inner(h.float())


@contextlib.contextmanager
def _precision(model: ClimaX, precision: str) -> Iterator[torch.dtype]:
    """The model set up to run in `precision`; yields the dtype its inputs take. Restores the model."""
    if precision not in SAME_PRECISION and precision != "fp64":
        raise BadInputError(f"no PyTorch reference for precision {precision!r}; expected one of {sorted(SAME_PRECISION)}")
    if precision == "fp64":
        model.to(TRUTH_DTYPE)
        try:
            yield TRUTH_DTYPE
        finally:
            model.float()
        return
    model.float()
    if precision == "fp32":
        yield torch.float32
        return
    head = model.head
    model.head = _Float32Island(head)  # type: ignore[assignment]
    try:
        with torch.autocast("cpu", dtype=AUTOCAST_DTYPES[precision]):
            yield torch.float32
    finally:
        model.head = head


REFERENCE_BATCH = 4  # samples per forward: batching is 4-8x faster on CPU; 4 keeps full size to a few GB


def run_reference(
    model: ClimaX, cases: Mapping[str, np.ndarray], lead: np.ndarray, precision: str, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """The model on each case [b, V, H, W] in `precision` ('fp64' truth, 'fp32', 'fp16', 'bf16'); float64 outputs.

    device: where the model runs ('cuda': float64 on the GPU; the model is moved back to the CPU after).

    lead: one lead time for every sample, or one per sample of a single case. Cases run batched
    (REFERENCE_BATCH samples at a time).
    """
    model.eval()
    labels = list(cases)
    sizes = [cases[label].shape[0] for label in labels]
    x = np.concatenate([np.asarray(cases[label], dtype=np.float32) for label in labels])
    lead = np.asarray(lead, dtype=np.float64).reshape(-1)
    leads = np.full(x.shape[0], lead[0]) if lead.size == 1 else lead.copy()
    chunks = []
    model.to(device)
    try:
        with torch.inference_mode(), _precision(model, precision) as dtype:
            for start in range(0, x.shape[0], REFERENCE_BATCH):
                xs = torch.from_numpy(x[start : start + REFERENCE_BATCH]).to(device, dtype)
                lt = torch.from_numpy(leads[start : start + REFERENCE_BATCH]).to(device, dtype)
                chunks.append(model(xs, lt, attention="fused").double().cpu().numpy())
    finally:
        if device != "cpu":
            model.to("cpu")
    y = np.concatenate(chunks)
    bounds = np.cumsum([0, *sizes])
    return {label: y[bounds[i] : bounds[i + 1]] for i, label in enumerate(labels)}


class SamePrecisionRunner(TorchRunner):
    """check-parity's `--backend torch`: the reference model as the runner contract, in the precision's
    recipe above (so it grades exactly as the yardstick it is compared with)."""

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        assert self.model is not None
        return run_reference(self.model, {"x": x}, lead_times, self.spec.precision)["x"].astype(np.float32)


__all__ = ["SAME_PRECISION", "SamePrecisionRunner", "TRUTH", "TRUTH_DTYPE", "run_reference"]
