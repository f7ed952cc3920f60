"""Synthetic analysis and static files in physical units, for demos and tests (torch-free).

The fields are those of `climax_deploy.synthetic`, the toolkit's one generator (also behind parity
inputs and benchmarks), on its coordinates; this module adds a terrain, a validity mask and the
units and long names a forecast centre's files carry.

python -m climax_deploy.forecast.synthetic --grid 32x64 -o build/synthetic
# -> build/synthetic/analysis.nc (u, v, temp, rh, psfc, six pollutants; time, lat, lon)
#    build/synthetic/static.nc   (elevation, population, mask)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from climax_deploy.cli import EXIT_OK, ArgParser, run_cli
from climax_deploy.gridded.files import write_dataset
from climax_deploy.optional import XARRAY
from climax_deploy.schema import ELEVATION_VARIABLE, VARIABLES
from climax_deploy.synthetic import coordinates, physical_fields, smooth_field

if TYPE_CHECKING:
    import xarray as xr

PROG = "python -m climax_deploy.forecast.synthetic"
STATIC_VARIABLES = (ELEVATION_VARIABLE, "population")
COORDINATE_VARIABLES = ("lat2d", "lon2d")  # a forecast takes them from the files' coordinates
ANALYSIS_VARIABLES = tuple(v for v in VARIABLES if v not in STATIC_VARIABLES + COORDINATE_VARIABLES)
# (units, long name) per variable: file metadata only; the values come from climax_deploy.synthetic
METADATA = {
    "u": ("m s-1", "eastward wind"), "v": ("m s-1", "northward wind"), "temp": ("K", "air temperature"),
    "rh": ("%", "relative humidity"), "psfc": ("Pa", "surface pressure"), "pm25": ("ug m-3", "PM2.5"),
    "pm10": ("ug m-3", "PM10"), "so2": ("ug m-3", "SO2"), "no2": ("ug m-3", "NO2"), "co": ("ug m-3", "CO"),
    "o3": ("ug m-3", "O3"), "elevation": ("m", "surface elevation"), "population": ("1", "population"),
}  # fmt: skip


def terrain(grid: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Surface elevation [H, W] in metres: a plateau in the west of the domain over rolling hills."""
    lat, lon = coordinates(grid)
    lon2d, lat2d = np.meshgrid(lon, lat)
    plateau = 4500.0 * np.exp(-(((lat2d - 33.0) / 6.0) ** 2 + ((lon2d - 88.0) / 10.0) ** 2))
    rng = np.random.default_rng([seed, 1])  # a stream of its own: hills independent of the weather
    hills = 300.0 * (1.0 + 0.5 * smooth_field(rng, grid))
    return np.clip(plateau + hills, 0.0, None)


def validity_mask(grid: tuple[int, int]) -> np.ndarray:
    """1 inside an ellipse over the domain's centre, 0 outside: a stand-in for a land or region mask."""
    lat, lon = coordinates(grid)
    lon2d, lat2d = np.meshgrid(lon, lat)
    return ((((lat2d - 35.0) / 18.0) ** 2 + ((lon2d - 104.0) / 30.0) ** 2) <= 1.0).astype(np.float32)


def synthetic_datasets(
    grid: tuple[int, int] = (32, 64), seed: int = 0, time: str = "2024-01-15T00:00"
) -> tuple[xr.Dataset, xr.Dataset]:
    """(analysis, static) Datasets on a regular lat/lon `grid` over the author's domain.

    The weather is physical_fields(VARIABLES, terrain(grid, seed), seed): standardised, it is the
    sample `climax_deploy.synthetic.synthetic_sample` gives for the same terrain and seed.
    """
    xr = XARRAY.load()
    lat, lon = coordinates(grid)
    fields = physical_fields(VARIABLES, terrain(grid, seed), seed)
    coords = {"lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"})}

    def variable(name: str, dims: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray, dict[str, str]]:
        units, long_name = METADATA[name]
        values = fields[name].astype(np.float32)
        return dims, values[None] if dims[0] == "time" else values, {"units": units, "long_name": long_name}

    analysis = xr.Dataset(
        {name: variable(name, ("time", "lat", "lon")) for name in ANALYSIS_VARIABLES},
        coords={**coords, "time": ("time", [np.datetime64(time, "ns")])},
        attrs={"title": "climax-deploy synthetic analysis (not real data)"},
    )
    static = xr.Dataset(
        {
            **{name: variable(name, ("lat", "lon")) for name in STATIC_VARIABLES},
            "mask": (("lat", "lon"), validity_mask(grid), {"long_name": "validity mask (1 inside the domain)"}),
        },
        coords=coords,
        attrs={"title": "climax-deploy synthetic static fields (not real data)"},
    )
    return analysis, static


def parse_grid(text: str) -> tuple[int, int]:
    """'32x64' -> (32, 64)."""
    h, sep, w = text.lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit() and int(h) > 1 and int(w) > 1):
        raise argparse.ArgumentTypeError(f"expected HxW with H, W >= 2 (e.g. 32x64), got {text!r}")
    return int(h), int(w)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(
        prog=PROG,
        description="Write synthetic analysis.nc and static.nc in physical units (not real data).",
    )
    p.add_argument("--grid", type=parse_grid, default=(32, 64),
                   help="HxW (default 32x64, the small preset; full is 128x256)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "-o", "--output", type=Path, default=Path("build/synthetic"), help="folder for analysis.nc, static.nc"
    )
    args = p.parse_args(argv)
    analysis, static = synthetic_datasets(args.grid, args.seed)
    write_dataset(analysis, args.output / "analysis.nc")
    write_dataset(static, args.output / "static.nc")
    h, w = args.grid
    print(f"wrote {args.output / 'analysis.nc'} and {args.output / 'static.nc'} ({h} x {w})")
    return EXIT_OK


def entry() -> None:
    sys.exit(run_cli(PROG, main))


if __name__ == "__main__":
    entry()
