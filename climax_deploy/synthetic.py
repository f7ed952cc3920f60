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
    "temp": (285.0, 15.0), "rh": (60.0, 25.0), "psfc": (95000.0, 5000.0),
    "pm10": (60.0, 40.0), "so2": (8.0, 6.0), "no2": (25.0, 15.0), "co": (300.0, 150.0), "o3": (45.0, 20.0),
    "pm25": (35.0, 25.0), "population": (5000.0, 20000.0),
}  # fmt: skip
# Wind fields for the wind-following scan (m s-1): `synthetic` turns region by region (the scan's
# order differs between regions, so dropping or garbling it shows in every output); the others are the
# edge cases of the author's scan: `calm` (every region angle 0), `zonal` (v = 0 and u < 0 everywhere:
# angle float32 pi), `meridional` (u = 0: angle +-pi/2), `masked` (the synthetic wind with a third of
# the domain set to the standardisation mean, 0 m s-1, as masked cells are filled: calm regions and
# partly calm ones).
WIND_KINDS = ("synthetic", "calm", "zonal", "meridional", "masked")
__all__ = [
    "LAT_RANGE", "LON_RANGE", "WIND_KINDS", "coordinates", "physical_fields", "smooth_field", "synthetic_sample",
    "wind_fields",
]  # fmt: skip


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


def turning_wind(rng: np.random.Generator, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A wind (u, v) in m s-1 whose direction turns across the domain: a smooth speed of 2..14 m s-1
    blowing at an angle that winds through several full turns, plus smooth eddies."""
    h, w = grid
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    turns = rng.uniform(1.5, 3.0, size=2)
    direction = 2 * np.pi * (turns[0] * yy + turns[1] * xx) + 1.5 * smooth_field(rng, grid) + rng.uniform(0, 2 * np.pi)
    speed = 8.0 + 3.0 * np.tanh(smooth_field(rng, grid))
    return speed * np.cos(direction), speed * np.sin(direction)


def wind_fields(kind: str, rng: np.random.Generator, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) in m s-1 of one of WIND_KINDS."""
    if kind not in WIND_KINDS:
        raise BadInputError(f"winds: expected one of {', '.join(WIND_KINDS)}, got {kind!r}")
    u, v = turning_wind(rng, grid)
    if kind == "calm":
        return np.zeros(grid), np.zeros(grid)
    if kind == "zonal":
        return -np.hypot(u, v), np.zeros(grid)
    if kind == "meridional":
        return np.zeros(grid), np.hypot(u, v) * np.sign(v + 1e-12)
    if kind == "masked":
        masked = smooth_field(rng, grid) > 0.45  # about a third of the cells, in blobs
        return np.where(masked, 0.0, u), np.where(masked, 0.0, v)
    return u, v


def physical_fields(
    variables: tuple[str, ...], terrain_m: np.ndarray, seed: int = 0, winds: str = "synthetic"
) -> dict[str, np.ndarray]:
    """Every variable in physical units on the terrain's grid; only `elevation` depends on the terrain,
    only u and v on `winds` (one of WIND_KINDS)."""
    grid = terrain_m.shape
    rng = np.random.default_rng(seed)
    lat, lon = coordinates(grid)
    lon2d, lat2d = np.meshgrid(lon, lat)
    fields: dict[str, np.ndarray] = {}
    wind = dict(zip(("u", "v"), wind_fields(winds, np.random.default_rng([seed, 1]), grid)))
    for name in variables:
        if name == ELEVATION_VARIABLE:
            fields[name] = terrain_m
        elif name == "lat2d":
            fields[name] = lat2d
        elif name == "lon2d":
            fields[name] = lon2d
        elif name in wind:
            fields[name] = wind[name]
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
    winds: str = "synthetic",
) -> np.ndarray:
    """One standardised input sample [V, H, W]; the same seed gives the same weather on any terrain.

    standardisation: the artifact's (from its manifest); default the author's constants.
    winds: one of WIND_KINDS (the other variables do not depend on it).
    """
    stats = standardisation or Standardisation.defaults()
    return stats.apply(physical_fields(variables, terrain_m, seed, winds), variables)
