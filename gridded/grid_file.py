"""The horizontal grid of a dataset or a gridded file, from its 1-D lat/lon coordinates in degrees.

Used by the forecaster (the analysis' grid) and by export-onnx --grid (a model's training grid).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from climax_deploy.errors import BadInputError
from climax_deploy.gridded.files import open_dataset
from climax_deploy.gridded.grid import Grid, check_coordinate, horizontal_dims
from climax_deploy.gridded.units import check_degrees

if TYPE_CHECKING:
    import xarray as xr


def dataset_grid(ds: xr.Dataset, source: str) -> Grid:
    """The horizontal grid of a dataset, from its 1-D lat/lon coordinates in degrees."""
    lat_dim, lon_dim = horizontal_dims(ds.sizes, source)
    return coordinate_grid(ds, lat_dim, lon_dim, source)


def read_grid_file(path: str | os.PathLike[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(lat, lon) cell centres from a NetCDF/zarr file's 1-D coordinates in degrees (export-onnx --grid)."""
    ds = open_dataset(path)
    try:
        grid = dataset_grid(ds, str(path))
    finally:
        ds.close()
    return tuple(float(v) for v in grid.lat), tuple(float(v) for v in grid.lon)


def coordinate_grid(obj: Any, lat_dim: str, lon_dim: str, source: str) -> Grid:
    """The grid of a Dataset or DataArray along its `lat_dim` and `lon_dim` coordinates."""
    for dim, axis in ((lat_dim, "lat"), (lon_dim, "lon")):
        if dim not in obj.coords:
            raise BadInputError(
                f"{source}: dim {dim!r} has no coordinate values; give 1-D lat/lon coordinates in degrees"
            )
        check_degrees(obj[dim].attrs, dim, axis, source)
    return Grid(
        check_coordinate(obj[lat_dim].values, lat_dim, source), check_coordinate(obj[lon_dim].values, lon_dim, source)
    )


__all__ = ["coordinate_grid", "dataset_grid", "read_grid_file"]
