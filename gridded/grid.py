"""The model grid: finding lat/lon in a dataset, checking it, and bilinear resampling onto it.

The author's loader resized the CAQRA domain (0.1 degree, 336 x 432) bilinearly to 128 x 256, keeping
its extent. `regrid="bilinear"` does the same on coordinates: the target is an evenly spaced H x W grid
spanning the source's first and last latitude and longitude (or a grid the caller gives). Numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from climax_deploy.errors import BadInputError

LAT_NAMES = ("lat", "latitude", "y", "rlat")
LON_NAMES = ("lon", "longitude", "x", "rlon")
REGRID_METHODS = ("bilinear",)


@dataclass(frozen=True)
class Grid:
    """A rectilinear lat/lon grid (1-D cell-centre coordinates in degrees, either direction)."""

    lat: np.ndarray
    lon: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.lat), len(self.lon))

    def describe(self) -> str:
        return (
            f"{self.shape[0]} x {self.shape[1]} (lat {self.lat[0]:g}..{self.lat[-1]:g}, "
            f"lon {self.lon[0]:g}..{self.lon[-1]:g})"
        )

    def spanning(self, shape: tuple[int, int]) -> Grid:
        """An evenly spaced grid of `shape` over this grid's extent (the author's resize)."""
        return Grid(np.linspace(self.lat[0], self.lat[-1], shape[0]), np.linspace(self.lon[0], self.lon[-1], shape[1]))

    def same_as(self, other: Grid, atol: float = 1e-6) -> bool:
        """Same shape and coordinates within `atol` degrees, in the same order."""
        return (
            self.shape == other.shape
            and bool(np.allclose(self.lat, other.lat, atol=atol))
            and bool(np.allclose(self.lon, other.lon, atol=atol))
        )


def horizontal_dims(dims: Mapping[Any, int] | Any, source: str = "dataset") -> tuple[str, str]:
    """The names of the latitude and longitude dimensions, e.g. ('lat', 'lon') or ('latitude', 'longitude')."""
    names = [str(d) for d in dims]
    lat = next((n for n in LAT_NAMES if n in names), None)
    lon = next((n for n in LON_NAMES if n in names), None)
    if lat is None or lon is None:
        raise BadInputError(
            f"{source} has dims {names}; expected a latitude dim (one of {', '.join(LAT_NAMES)}) "
            f"and a longitude dim (one of {', '.join(LON_NAMES)})"
        )
    return lat, lon


def check_coordinate(values: np.ndarray, name: str, source: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise BadInputError(
            f"{source}: coordinate {name!r} must be 1-D with at least 2 points, got shape {values.shape}"
        )
    steps = np.diff(values)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise BadInputError(f"{source}: coordinate {name!r} must be strictly monotonic to regrid")
    return values


def wrap_longitudes(lon: np.ndarray, reference: float) -> np.ndarray:
    """Longitudes shifted by whole turns into [reference - 180, reference + 180): 0..360 <-> -180..180."""
    return (np.asarray(lon, dtype=np.float64) - reference + 180.0) % 360.0 - 180.0 + reference


def orient(src: Grid, model: Grid) -> tuple[Grid, np.ndarray, np.ndarray]:
    """`src` in the model's orientation: (grid, row order, column order), so that a field [..., H, W] on
    `src` reads field[..., rows, :][..., cols] on the returned grid.

    Latitude runs in the model's direction (an ascending file is flipped); longitudes are shifted by
    whole turns to the model's convention (0..360 or -180..180) when that leaves them distinct, then
    sorted in the model's direction.
    """
    rows = np.arange(len(src.lat))
    if (src.lat[-1] > src.lat[0]) != (model.lat[-1] > model.lat[0]):
        rows = rows[::-1]
    lon = src.lon
    reference = float(np.mean([model.lon.min(), model.lon.max()]))
    wrapped = wrap_longitudes(lon, reference)
    if len(np.unique(np.round(wrapped, 9))) == len(lon):
        lon = wrapped
    cols = np.argsort(lon, kind="stable")
    if model.lon[-1] < model.lon[0]:
        cols = cols[::-1]
    return Grid(src.lat[rows], lon[cols]), rows, cols


def coordinate_tolerance(model: Grid) -> float:
    """Coordinates within 1% of the model's smallest cell spacing count as the model's (float32 files)."""
    return 0.01 * float(min(np.abs(np.diff(model.lat)).min(), np.abs(np.diff(model.lon)).min()))


def linear_weights(src: np.ndarray, dst: np.ndarray, name: str, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Indices i and weights w so that f(dst) = (1 - w) f[i] + w f[i + 1]; no extrapolation."""
    ascending = src[-1] > src[0]
    s = src if ascending else src[::-1]
    lo, hi = s[0] - tol, s[-1] + tol
    if dst.min() < lo or dst.max() > hi:
        raise BadInputError(
            f"the target {name} range {dst.min():g}..{dst.max():g} is outside the source's {s[0]:g}..{s[-1]:g}; "
            "bilinear regridding does not extrapolate"
        )
    d = np.clip(dst, s[0], s[-1])
    i = np.clip(np.searchsorted(s, d, side="right") - 1, 0, len(s) - 2)
    w = (d - s[i]) / (s[i + 1] - s[i])
    if not ascending:  # map back to indices of the descending source
        i, w = len(s) - 2 - i, 1.0 - w
    return i, w


def regrid_bilinear(field: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Resample `field` [..., H_src, W_src] from `src` onto `dst` [..., H_dst, W_dst]; NaN propagates."""
    if field.shape[-2:] != src.shape:
        raise BadInputError(f"field shape {field.shape[-2:]} does not match its grid {src.shape}")
    iy, wy = linear_weights(src.lat, dst.lat, "latitude")
    ix, wx = linear_weights(src.lon, dst.lon, "longitude")
    f = np.asarray(field, dtype=np.float64)
    rows = f[..., iy, :] * (1 - wy)[:, None] + f[..., iy + 1, :] * wy[:, None]  # [..., H_dst, W_src]
    return rows[..., ix] * (1 - wx) + rows[..., ix + 1] * wx  # [..., H_dst, W_dst]
