"""Per-variable standardisation: physical units <-> the standardised fields the model sees.

The model was trained on (x - mean) / (std + eps) per variable. The exported artifact's manifest
carries the (mean, std) pairs it was trained with (`"standardisation"`); artifacts exported before
that field existed fall back to the author's constants in `climax_deploy.schema`. Torch-free; reading
a NetCDF stats file needs xarray (the `io` extra), JSON does not.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.schema import STANDARDISATION, STANDARDISATION_EPS

log = logging.getLogger(__name__)

MANIFEST_KEY = "standardisation"


@dataclass(frozen=True)
class Standardisation:
    """(mean, std) per variable in physical units; `apply` standardises, `invert` undoes it."""

    stats: Mapping[str, tuple[float, float]]
    eps: float = STANDARDISATION_EPS
    source: str = field(default="defaults", compare=False)

    @classmethod
    def defaults(cls) -> Standardisation:
        """The author's constants (shared/NOTES.md)."""
        return cls(dict(STANDARDISATION), STANDARDISATION_EPS, "the author's constants")

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], source: str = "manifest") -> Standardisation:
        """The artifact's stats; the author's constants where an older manifest has none."""
        entry = manifest.get(MANIFEST_KEY)
        if entry is None:
            log.warning("%s has no %r entry; using the author's constants", source, MANIFEST_KEY)
            return cls.defaults()
        stats = check_stats(entry, source)
        return cls(stats, float(manifest.get("standardisation_eps", STANDARDISATION_EPS)), source)

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

    def to_manifest(self) -> dict[str, list[float]]:
        return {name: [float(m), float(s)] for name, (m, s) in self.stats.items()}


def check_stats(entry: Any, source: str) -> dict[str, tuple[float, float]]:
    """{name: [mean, std]} or {name: {"mean": m, "std": s}} -> checked {name: (mean, std)}."""
    if not isinstance(entry, Mapping):
        raise BadInputError(f"{source}: expected a mapping of variable -> [mean, std], got {type(entry).__name__}")
    stats: dict[str, tuple[float, float]] = {}
    for name, value in entry.items():
        if isinstance(value, Mapping):
            pair: Any = (value.get("mean"), value.get("std"))
        else:
            pair = value
        try:
            mean, std = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise BadInputError(
                f"{source}: {name!r} must be [mean, std] or {{'mean': m, 'std': s}}, got {value!r}"
            ) from None
        if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
            raise BadInputError(f"{source}: {name!r} needs a finite mean and a positive std, got ({mean}, {std})")
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


def read_stats_file(path: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """A user's stats file: JSON ({var: [mean, std]}) or NetCDF (data variables `mean` and `std`
    along a `variable` dimension whose coordinate holds the names)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"stats file {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            entry = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInputError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(entry, Mapping) and MANIFEST_KEY in entry:
            entry = entry[MANIFEST_KEY]  # a manifest, or {"standardisation": {...}}
        return check_stats(entry, str(path))
    if path.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        return _read_netcdf_stats(path)
    raise BadInputError(f"{path}: expected a .json or .nc stats file, got {path.suffix or 'no suffix'!r}")


def _read_netcdf_stats(path: Path) -> dict[str, tuple[float, float]]:
    from climax_deploy.forecast.files import import_xarray

    xr = import_xarray()
    with xr.open_dataset(path) as ds:
        missing = [v for v in ("mean", "std") if v not in ds.data_vars]
        if missing or "variable" not in ds.dims:
            raise BadInputError(
                f"{path}: expected data variables 'mean' and 'std' along a 'variable' dimension, "
                f"got variables {sorted(map(str, ds.data_vars))} and dims {sorted(map(str, ds.dims))}"
            )
        names = [str(n) for n in ds["variable"].values]
        means = np.asarray(ds["mean"].values, dtype=np.float64)
        stds = np.asarray(ds["std"].values, dtype=np.float64)
    return check_stats({n: (m, s) for n, m, s in zip(names, means, stds)}, str(path))
