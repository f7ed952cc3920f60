"""Seeded synthetic weather in physical units: the one generator behind parity inputs, benchmarks
and the demo analysis files (climax_deploy.forecast.synthetic). numpy only.

Latitude runs north to south (row 0 is the northern edge), as in the author's data.
"""

from __future__ import annotations

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.schema import ELEVATION_VARIABLE, LAT_RANGE, LON_RANGE, domain_coordinates
from climax_deploy.standardisation import Standardisation

# Rough physical ranges for the synthetic fields: (centre, amplitude) in each variable's units.
_SYNTHETIC_RANGE = {
    "u": (2.0, 8.0), "v": (0.0, 8.0), "temp": (285.0, 15.0), "rh": (60.0, 25.0), "psfc": (95000.0, 5000.0),
    "pm10": (60.0, 40.0), "so2": (8.0, 6.0), "no2": (25.0, 15.0), "co": (300.0, 150.0), "o3": (45.0, 20.0),
    "pm25": (35.0, 25.0), "population": (5000.0, 20000.0),
}  # fmt: skip
__all__ = ["LAT_RANGE", "LON_RANGE", "coordinates", "physical_fields", "smooth_field", "synthetic_sample"]


def coordinates(grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(lat north to south, lon west to east) in degrees over the author's domain (schema.LAT_RANGE, LON_RANGE)."""
    lat, lon = domain_coordinates(grid)
    return np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)


def smooth_field(rng: np.random.Generator, grid: tuple[int, int], modes: int = 6) -> np.ndarray:
    """A smooth random field [H, W] with zero mean and unit standard deviation."""
    h, w = grid
    yy, xx = np.meshgrid(np.linspace(0, 2 * np.pi, h), np.linspace(0, 2 * np.pi, w), indexing="ij")
    field = np.zeros(grid)
    for _ in range(modes):
        ky, kx = rng.integers(1, 5, size=2)
        field += rng.normal() * np.sin(ky * yy + kx * xx + rng.uniform(0, 2 * np.pi))
    field += 0.2 * rng.standard_normal(grid)
    return (field - field.mean()) / (field.std() + 1e-12)


def physical_fields(variables: tuple[str, ...], terrain_m: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Every variable in physical units on the terrain's grid; only `elevation` depends on the terrain."""
    grid = terrain_m.shape
    rng = np.random.default_rng(seed)
    lat, lon = coordinates(grid)
    lon2d, lat2d = np.meshgrid(lon, lat)
    fields: dict[str, np.ndarray] = {}
    for name in variables:
        if name == ELEVATION_VARIABLE:
            fields[name] = terrain_m
        elif name == "lat2d":
            fields[name] = lat2d
        elif name == "lon2d":
            fields[name] = lon2d
        elif name in _SYNTHETIC_RANGE:
            centre, amplitude = _SYNTHETIC_RANGE[name]
            value = centre + amplitude * smooth_field(rng, grid)
            fields[name] = np.abs(value) if name == "population" else value
        else:
            raise BadInputError(f"no synthetic generator for variable {name!r}")
    return fields


def synthetic_sample(
    variables: tuple[str, ...],
    terrain_m: np.ndarray,
    seed: int = 0,
    standardisation: Standardisation | None = None,
) -> np.ndarray:
    """One standardised input sample [V, H, W]; the same seed gives the same weather on any terrain.

    standardisation: the artifact's (from its manifest); default the author's constants.
    """
    stats = standardisation or Standardisation.defaults()
    return stats.apply(physical_fields(variables, terrain_m, seed), variables)
