"""Error metrics against the float64 truth, the terrain-signal fidelity, and the one table of tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from climax_deploy.errors import BadInputError

DEFAULT_VARIABLE = ""  # the key of the default entry in a precision's per-variable tolerances


@dataclass(frozen=True)
class Tolerance:
    """How far a backend may stray from the float64 truth, for one output variable.

    Graded against PyTorch run in the backend's own precision (fp32 eager; fp16 autocast with the
    export's fp32 islands): a backend passes where

        error(backend vs truth) <= factor * error(PyTorch same precision vs truth) + floor

    for the output's relative L2 error (floor `rel_l2_floor`) and for the terrain signal's fidelity
    (floor `fidelity_floor`, plus `rel_l2_floor` carried over from the outputs: see `fidelity_bound`). `atol`/`rtol` are the element-wise bounds handed to Polygraphy
    (pass where |diff| <= atol or |diff| / |truth| <= rtol).
    """

    factor: float
    rel_l2_floor: float
    fidelity_floor: float
    atol: float
    rtol: float

    def rel_l2_bound(self, torch_rel_l2: float) -> float:
        return self.factor * torch_rel_l2 + self.rel_l2_floor

    def fidelity_bound(self, torch_fidelity: float, output_per_signal: float = 0.0) -> float:
        """The terrain signal's bound; output_per_signal = |y_truth(terrain)| / |delta_truth| (L2 norms).

        Besides the relative floor, the signal's error may reach the outputs' own floor
        (`rel_l2_floor` x |y|): a signal smaller than what the precision resolves in y (a DEM that
        normalises to flat differs from the flat baseline by ~1e-9) cannot be held to a relative bound.
        """
        return self.factor * torch_fidelity + self.fidelity_floor + self.rel_l2_floor * output_per_signal

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# The one table of tolerances: per precision, per output variable, with a "" default (as Polygraphy's
# comparator takes per-output tolerances). Every help text, report and Polygraphy command reads it.
#
# factor 4: backends sum in other orders and fuse differently from eager PyTorch. Measured on the
# small preset (11 terrains of tests/test_parity_benign.py, beta 0..150): ONNX Runtime's error vs
# float64 is 1.1-1.6x PyTorch fp32's (terrain signal 1.0-1.5x), 0.6-1.2x PyTorch fp16's (signal
# 0.5-1.0x); full preset 1.2-1.5x at fp32. The physics mutations of tests/test_parity_mutations.py
# move the terrain-signal fidelity to 0.2-3 (bounds ~1e-4 at fp32, ~7e-2 at fp16).
# Floors: where PyTorch in that precision happens to be nearly exact (flat terrain, a tiny signal),
# the bound falls back to what the precision resolves: fp32 relative L2 1e-6 (~10 ulp of float32),
# fidelity 1e-5; fp16 relative L2 1e-4 and fidelity 5e-3 (~0.2-10 ulp of float16 on signals of 1 %).
# Element-wise (Polygraphy): fp32 measures max |diff| ~3e-6 on outputs of order 1; fp16 6e-4.
TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "fp32": {DEFAULT_VARIABLE: Tolerance(factor=4.0, rel_l2_floor=1e-6, fidelity_floor=1e-5, atol=1e-4, rtol=1e-3)},
    "fp16": {DEFAULT_VARIABLE: Tolerance(factor=4.0, rel_l2_floor=1e-4, fidelity_floor=5e-3, atol=1e-2, rtol=1e-2)},
    "bf16": {DEFAULT_VARIABLE: Tolerance(factor=4.0, rel_l2_floor=8e-4, fidelity_floor=4e-2, atol=8e-2, rtol=8e-2)},
}


def tolerances(precision: str) -> dict[str, Tolerance]:
    """The per-variable tolerances of `precision` ("" is the default); BadInputError naming those that exist."""
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise BadInputError(
            f"precision {precision!r} has no stated tolerance; expected one of {sorted(TOLERANCES)}"
        ) from None


def tolerance(precision: str, variable: str = DEFAULT_VARIABLE) -> Tolerance:
    """The tolerance of one output variable in `precision`: its own entry, else the default."""
    table = tolerances(precision)
    return table.get(variable, table[DEFAULT_VARIABLE])


def describe_tolerances(precision: str) -> str:
    """'default: error <= 4 x PyTorch fp32's + floor (...)' from the table, for help texts and reports."""
    parts = []
    for variable, t in tolerances(precision).items():
        name = "default" if variable == DEFAULT_VARIABLE else variable
        parts.append(f"{name}: error <= {t.factor:g} x PyTorch {precision}'s + floor (outputs: rel L2 "
                     f"{t.rel_l2_floor:.0e}; terrain signal: fidelity {t.fidelity_floor:.0e} + the outputs' floor)")  # fmt: skip
    return "; ".join(parts)


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
