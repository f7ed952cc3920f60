"""Error metrics between a backend and the reference, and the terrain-signal fidelity."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from climax_deploy.errors import BadInputError


@dataclass(frozen=True)
class Tolerance:
    """Upper bounds per output variable: relative L2 error and terrain-signal fidelity; and the
    element-wise bounds handed to Polygraphy (pass where |diff| <= atol or |diff| / |ref| <= rtol)."""

    rel_l2: float
    fidelity: float
    atol: float
    rtol: float


# fp32: the only differences are summation order and the +1e-8 of the seed's renormalisation
# (2e-7 relative at beta = 3); measured relative L2 is ~5e-7, so 1e-5 leaves 20x headroom while
# still catching any semantic change (a wrong sign or clamp moves relative L2 to 1e-2 or more).
# Element-wise, fp32 measures max |diff| ~3e-6 on outputs of order 1.
# fp16: half precision carries ~5e-4 relative rounding per op, accumulated over the network.
# Element-wise, ONNX Runtime CPU measures max |diff| 6e-4; TensorRT's fp16 kernels accumulate
# differently, so 1e-2 leaves room while still failing a broken physics path (terrain signal ~1e-2,
# errors of a wrong mask ~1e-1).
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rel_l2=1e-5, fidelity=1e-4, atol=1e-4, rtol=1e-3),
    "fp16": Tolerance(rel_l2=5e-3, fidelity=2e-2, atol=1e-2, rtol=1e-2),
}


def tolerance(precision: str) -> Tolerance:
    """The stated tolerance of `precision`; BadInputError naming the precisions that have one."""
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise BadInputError(
            f"precision {precision!r} has no stated tolerance; expected one of {sorted(TOLERANCES)}"
        ) from None


@dataclass(frozen=True)
class ErrorMetrics:
    """Errors of one output variable against the reference."""

    max_abs: float
    rmse: float
    rel_l2: float
    p999_abs: float
    cosine: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def error_metrics(actual: np.ndarray, reference: np.ndarray) -> ErrorMetrics:
    """Compare two arrays of one variable (any shape), in float64."""
    a = np.asarray(actual, dtype=np.float64).ravel()
    r = np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != r.shape:
        raise BadInputError(f"shapes differ: actual {actual.shape}, reference {reference.shape}")
    diff = np.abs(a - r)
    ref_norm = np.linalg.norm(r)
    norms = np.linalg.norm(a) * ref_norm
    return ErrorMetrics(
        max_abs=float(diff.max()) if diff.size else 0.0,
        rmse=float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0,
        rel_l2=float(np.linalg.norm(diff) / ref_norm) if ref_norm > 0 else float(np.linalg.norm(diff)),
        p999_abs=float(np.percentile(diff, 99.9)) if diff.size else 0.0,
        cosine=float(a @ r / norms) if norms > 0 else float(np.array_equal(a, r)),
    )


def signal_fidelity(delta_actual: np.ndarray, delta_reference: np.ndarray) -> float:
    """|delta_backend - delta_ref| / |delta_ref| (L2 norms): how well a backend keeps the terrain signal."""
    ref = np.asarray(delta_reference, dtype=np.float64)
    err = np.asarray(delta_actual, dtype=np.float64) - ref
    ref_norm = np.linalg.norm(ref)
    return float(np.linalg.norm(err) / ref_norm) if ref_norm > 0 else float(np.linalg.norm(err))
