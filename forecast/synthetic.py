"""Synthetic analysis and static files in physical units, for demos and tests (torch-free).

python -m climax_deploy.forecast.synthetic --grid 32x64 -o build/synthetic
# -> build/synthetic/analysis.nc (u, v, temp, rh, psfc, six pollutants; time, lat, lon)
#    build/synthetic/static.nc   (elevation, population, mask)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.forecast.files import import_xarray, write_dataset

LAT_RANGE = (55.0, 15.0)  # north to south, over China and Taiwan like the author's domain
LON_RANGE = (72.0, 136.0)
# (centre, amplitude, units, long name) of each dynamic variable
DYNAMIC = {
    "u": (2.0, 6.0, "m s-1", "eastward wind"), "v": (0.0, 6.0, "m s-1", "northward wind"),
    "temp": (285.0, 12.0, "K", "air temperature"), "rh": (60.0, 20.0, "%", "relative humidity"),
    "psfc": (95000.0, 4000.0, "Pa", "surface pressure"), "pm25": (35.0, 20.0, "ug m-3", "PM2.5"),
    "pm10": (60.0, 30.0, "ug m-3", "PM10"), "so2": (8.0, 5.0, "ug m-3", "SO2"), "no2": (25.0, 12.0, "ug m-3", "NO2"),
    "co": (300.0, 120.0, "ug m-3", "CO"), "o3": (45.0, 15.0, "ug m-3", "O3"),
}  # fmt: skip


def _smooth(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """A smooth field in [-1, 1]-ish from a few random waves over the coordinates."""
    yy, xx = np.meshgrid(np.deg2rad(lat) * 4, np.deg2rad(lon) * 4, indexing="ij")
    field = np.zeros(yy.shape)
    for _ in range(4):
        ky, kx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        field += rng.normal() * np.sin(ky * yy + kx * xx + phase)
    return field / (np.abs(field).max() + 1e-12)


def synthetic_datasets(
    grid: tuple[int, int] = (32, 64), seed: int = 0, time: str = "2024-01-15T00:00"
) -> tuple[Any, Any]:
    """(analysis, static) xarray Datasets on a regular lat/lon grid of `grid` over the author's domain."""
    xr = import_xarray()
    rng = np.random.default_rng(seed)
    lat = np.linspace(*LAT_RANGE, grid[0])
    lon = np.linspace(*LON_RANGE, grid[1])
    coords = {"lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"})}
    analysis = xr.Dataset(
        {
            name: (
                ("time", "lat", "lon"),
                (c + a * _smooth(rng, lat, lon))[None].astype(np.float32),
                {"units": units, "long_name": long_name},
            )
            for name, (c, a, units, long_name) in DYNAMIC.items()
        },  # fmt: skip
        coords={**coords, "time": ("time", [np.datetime64(time, "ns")])},
        attrs={"title": "climax-deploy synthetic analysis (not real data)"},
    )
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    mountain = 4500.0 * np.exp(-(((lat2d - 33.0) / 6.0) ** 2 + ((lon2d - 88.0) / 10.0) ** 2))  # a plateau in the west
    elevation = mountain + 300.0 * (1 + _smooth(rng, lat, lon))
    population = np.abs(20000.0 * _smooth(rng, lat, lon)) * np.exp(-(((lon2d - 115.0) / 15.0) ** 2))
    mask = ((((lat2d - 35.0) / 18.0) ** 2 + ((lon2d - 104.0) / 30.0) ** 2) <= 1.0).astype(np.float32)
    static = xr.Dataset(
        {
            "elevation": (
                ("lat", "lon"),
                elevation.astype(np.float32),
                {"units": "m", "long_name": "surface elevation"},
            ),
            "population": (("lat", "lon"), population.astype(np.float32), {"units": "1", "long_name": "population"}),
            "mask": (("lat", "lon"), mask, {"long_name": "validity mask (1 inside the domain)"}),
        },
        coords=coords,
        attrs={"title": "climax-deploy synthetic static fields (not real data)"},
    )
    return analysis, static


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m climax_deploy.forecast.synthetic", description=__doc__.splitlines()[0]
    )
    p.add_argument("--grid", default="32x64", help="HxW (default 32x64, the small preset; full is 128x256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "-o", "--output", type=Path, default=Path("build/synthetic"), help="folder for analysis.nc, static.nc"
    )
    args = p.parse_args(argv)
    h, _, w = args.grid.partition("x")
    analysis, static = synthetic_datasets((int(h), int(w)), args.seed)
    write_dataset(analysis, args.output / "analysis.nc")
    write_dataset(static, args.output / "static.nc")
    print(f"wrote {args.output / 'analysis.nc'} and {args.output / 'static.nc'} ({h} x {w})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
