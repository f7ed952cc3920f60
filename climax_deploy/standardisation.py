"""Per-variable standardisation: physical units <-> the standardised fields the model sees.

The model was trained on (x - mean) / (std + eps) per variable. An exported artifact's manifest
carries the (mean, std) pairs it was trained with; the author's constants (climax_deploy.schema)
are the default. Torch-free and xarray-free: reading a NetCDF stats file lives in climax_deploy.forecast.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.artifacts import parse_json
from climax_deploy.errors import BadInputError
from climax_deploy.schema import PLAUSIBLE_RANGES, STANDARDISATION, STANDARDISATION_EPS, UNITS

STATS_MAGNITUDE_LIMIT = 1e30  # a mean or std beyond this overflows float32 outputs (an all-inf forecast)

JSON_KEY = "standardisation"


@dataclass(frozen=True)
class Standardisation:
    """(mean, std) per variable in physical units; `apply` standardises, `invert` undoes it."""

    stats: Mapping[str, tuple[float, float]]
    eps: float = STANDARDISATION_EPS
    source: str = field(default="defaults", compare=False)

    @classmethod
    def defaults(cls, variables: Sequence[str] | None = None) -> Standardisation:
        """The author's constants (all of them, or those of `variables`)."""
        return cls(merge_stats(None, variables or tuple(STANDARDISATION)), STANDARDISATION_EPS, "the author's constants")

    def mean_std(self, name: str) -> tuple[float, float]:
        try:
            return self.stats[name]
        except KeyError:
            raise BadInputError(
                f"no standardisation for variable {name!r} in {self.source}; it has {', '.join(self.stats)}"
            ) from None

    def apply(self, fields: Mapping[str, np.ndarray], variables: Sequence[str]) -> np.ndarray:
        """Physical fields by name -> standardised float32 [V, ...] in `variables` order."""
        out = []
        for name in variables:
            mean, std = self.mean_std(name)
            out.append((np.asarray(fields[name], dtype=np.float64) - mean) / (std + self.eps))
        return np.stack(out).astype(np.float32)

    def invert(self, y: np.ndarray, variables: Sequence[str], axis: int = 1) -> np.ndarray:
        """Standardised outputs with `variables` along `axis` -> physical units (float32)."""
        if y.shape[axis] != len(variables):
            raise BadInputError(f"expected {len(variables)} channels on axis {axis}, got shape {y.shape}")
        shape = [1] * y.ndim
        shape[axis] = len(variables)
        means = np.array([self.mean_std(v)[0] for v in variables], dtype=np.float64).reshape(shape)
        scales = np.array([self.mean_std(v)[1] + self.eps for v in variables], dtype=np.float64).reshape(shape)
        return (y.astype(np.float64) * scales + means).astype(np.float32)

    def to_json(self) -> dict[str, list[float]]:
        return {name: [float(m), float(s)] for name, (m, s) in self.stats.items()}


def check_stats(entry: Any, source: str) -> dict[str, tuple[float, float]]:
    """{name: [mean, std]} or {name: {"mean": m, "std": s}} -> checked {name: (mean, std)}."""
    if not isinstance(entry, Mapping):
        raise BadInputError(f"{source}: expected a mapping of variable -> [mean, std], got {type(entry).__name__}")
    stats: dict[str, tuple[float, float]] = {}
    for name, value in entry.items():
        pair: Any = (value.get("mean"), value.get("std")) if isinstance(value, Mapping) else value
        try:
            mean, std = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise BadInputError(
                f"{source}: {name!r} must be [mean, std] or {{'mean': m, 'std': s}}, got {value!r}"
            ) from None
        if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
            raise BadInputError(f"{source}: {name!r} needs a finite mean and a positive std, got ({mean}, {std})")
        lo, hi = PLAUSIBLE_RANGES.get(str(name), (-STATS_MAGNITUDE_LIMIT, STATS_MAGNITUDE_LIMIT))
        if abs(mean) > STATS_MAGNITUDE_LIMIT or std > hi - lo:
            raise BadInputError(
                f"{source}: {name!r} has (mean, std) ({mean:g}, {std:g}); expected a std no wider than its plausible "
                f"range {lo:g}..{hi:g} {UNITS.get(str(name), '')} and |mean| <= {STATS_MAGNITUDE_LIMIT:g} "
                "(in the model's units: schema.UNITS)"
            )
        stats[str(name)] = (mean, std)
    return stats


def merge_stats(
    overrides: Mapping[str, tuple[float, float]] | None, variables: Sequence[str], source: str = "stats file"
) -> dict[str, tuple[float, float]]:
    """The author's constants for `variables`, with `overrides` on top; unknown names are an error."""
    stats = {name: STANDARDISATION[name] for name in variables if name in STANDARDISATION}
    if overrides:
        unknown = sorted(set(overrides) - set(variables))
        if unknown:
            raise BadInputError(
                f"{source}: unknown variable(s) {', '.join(unknown)}; the model's variables are {', '.join(variables)}"
            )
        stats.update(overrides)
    return stats


def read_json_stats(path: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """A JSON stats file: {var: [mean, std]}, or a manifest / {"standardisation": {...}} holding one."""
    path = Path(path)
    entry = parse_json(path.read_bytes(), str(path))
    if isinstance(entry, Mapping) and isinstance(entry.get("model"), Mapping) and JSON_KEY in entry["model"]:
        entry = entry["model"][JSON_KEY]  # a climax-deploy manifest
    elif isinstance(entry, Mapping) and JSON_KEY in entry:
        entry = entry[JSON_KEY]
    return check_stats(entry, str(path))
