"""Checks of model inputs, shared by every runner: a clear error, never a wrong answer. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.schema import MAX_LEAD_TIME_HOURS, PLAUSIBLE_RANGES, UNITS

OVERRIDE_HINT = "pass --allow-implausible (allow_implausible=True) for a research run"

if TYPE_CHECKING:
    from climax_deploy.runner import ModelSpec


# Every runner refuses standardised inputs outside their variable's plausible range widened by three
# times its width each way: a guard against garbage (x = 1e30, a field x 1000), not a physics check;
# forecast inputs in physical units get the strict check (`check_plausible`).
GUARD_WIDTHS = 3.0


def standardised_guards(variables: Sequence[str], standardise: Any) -> tuple[tuple[float, float] | None, ...]:
    """Per variable, the standardised interval runners accept (None: no range in schema.PLAUSIBLE_RANGES).
    `standardise(name, value)` maps a physical value to the model's units."""
    guards: list[tuple[float, float] | None] = []
    for name in variables:
        if name not in PLAUSIBLE_RANGES:
            guards.append(None)
            continue
        lo, hi = (standardise(name, v) for v in PLAUSIBLE_RANGES[name])
        width = hi - lo
        guards.append((lo - GUARD_WIDTHS * width, hi + GUARD_WIDTHS * width))
    return tuple(guards)


def check_model_inputs(
    spec: ModelSpec, x: Any, lead_times: Any, allow_implausible: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validate x [B, V, H, W] float32 and lead_times [B] (hours); return contiguous float32 arrays.

    Unless `allow_implausible`: lead times up to MAX_LEAD_TIME_HOURS, and x within `spec.guards`."""
    if not isinstance(x, np.ndarray):
        raise BadInputError(f"x must be a numpy.ndarray of shape {_shape(spec)}, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise BadInputError(f"x must be float32, got {x.dtype}; convert with x.astype(np.float32)")
    if x.ndim != 4:
        raise BadInputError(f"x must have 4 dimensions {_shape(spec)}, got shape {x.shape}")
    batch, nvars, height, width = x.shape
    if nvars != len(spec.variables):
        raise BadInputError(
            f"x has {nvars} variables on axis 1, expected {len(spec.variables)} in this order: {', '.join(spec.variables)}"
        )
    if (height, width) != spec.grid:
        raise BadInputError(f"x is on a {height} x {width} grid, the model expects {spec.grid[0]} x {spec.grid[1]}")
    if batch < 1:
        raise BadInputError("x has an empty batch (axis 0 has size 0)")
    spec.batch.check(batch)
    lead = _lead_times(lead_times, batch)
    _check_finite(spec, x)
    if not allow_implausible:
        check_lead_time_range(lead.tolist())
        _check_guards(spec, x)
    return np.ascontiguousarray(x), lead


def _check_guards(spec: ModelSpec, x: np.ndarray) -> None:
    if not spec.guards:
        return
    low, high = x.min(axis=(0, 2, 3)), x.max(axis=(0, 2, 3))
    parts = []
    for i, guard in enumerate(spec.guards):
        if guard is not None and (low[i] < guard[0] or high[i] > guard[1]):
            outside = int(np.count_nonzero((x[:, i] < guard[0]) | (x[:, i] > guard[1])))
            parts.append(f"{spec.variables[i]!r} {outside} cells outside {guard[0]:.4g}..{guard[1]:.4g} "
                         f"(min {float(low[i]):.4g}, max {float(high[i]):.4g})")  # fmt: skip
    if parts:
        raise BadInputError(
            f"implausible standardised x: {'; '.join(parts)} (each variable's plausible range, standardised, "
            f"widened by {GUARD_WIDTHS:g} times its width); standardise physical fields first, or {OVERRIDE_HINT}"
        )


def _lead_times(lead_times: Any, batch: int) -> np.ndarray:
    arr = np.asarray(lead_times)
    if arr.dtype.kind not in "iuf":
        raise BadInputError(f"lead_times must be numbers of hours, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise BadInputError(f"lead_times must be a 1-D array with one entry per sample ({batch}), got a scalar")
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise BadInputError(f"lead_times must have shape ({batch},) to match the batch of x, got {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise BadInputError(f"lead_times contain NaN or Inf: {arr.tolist()}")
    if (arr < 0).any():
        raise BadInputError(f"lead_times must be >= 0 hours, got {arr.tolist()}")
    return np.ascontiguousarray(arr)


def _check_finite(spec: ModelSpec, x: np.ndarray) -> None:
    finite = np.isfinite(x)
    if finite.all():
        return
    bad = (~finite).sum(axis=(0, 2, 3))
    parts = [f"{spec.variables[i]} ({int(n)} values)" for i, n in enumerate(bad) if n]
    raise BadInputError(f"x contains NaN or Inf in {', '.join(parts)}; fill or mask them before predicting")


def _shape(spec: ModelSpec) -> str:
    return "[" + ", ".join(str(d) for d in spec.input_shape) + "]"


def check_plausible(fields: Mapping[str, np.ndarray], valid: np.ndarray | None = None, source: str = "input") -> None:
    """BadInputError unless every field in physical units (schema.UNITS) lies in schema.PLAUSIBLE_RANGES
    wherever `valid` (a mask, default everywhere) holds: one line naming each variable, its cells
    outside and the range. Variables without a range pass."""
    parts = []
    for name, values in fields.items():
        if name not in PLAUSIBLE_RANGES:
            continue
        lo, hi = PLAUSIBLE_RANGES[name]
        arr = np.asarray(values)
        sel = arr[valid] if valid is not None else arr
        outside = (sel < lo) | (sel > hi)
        count = int(np.count_nonzero(outside))
        if count:
            bad = sel[outside]
            parts.append(f"{name!r} {count} of {sel.size} cells outside {lo:g}..{hi:g} {UNITS.get(name, '')}"
                         f" (min {float(bad.min()):.4g}, max {float(bad.max()):.4g})")  # fmt: skip
    if parts:
        raise BadInputError(
            f"implausible {source} values: {'; '.join(parts)}; check the units attributes (x 1000? a fraction "
            f"labelled %?), or {OVERRIDE_HINT}"
        )


def check_lead_time_range(lead_times: Sequence[float]) -> None:
    """BadInputError for lead times beyond MAX_LEAD_TIME_HOURS (training used 12..96 h)."""
    far = [float(f"{h:.6g}") for h in lead_times if h > MAX_LEAD_TIME_HOURS]
    if far:
        raise BadInputError(
            f"lead times {far[:5]} h exceed the plausible maximum {MAX_LEAD_TIME_HOURS:g} h (the model was "
            f"trained on 12..96 h); expected hours such as 12,24,48,96, or {OVERRIDE_HINT}"
        )
