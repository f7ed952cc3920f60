"""Operational I/O: physical units and named, gridded variables in; forecast files out.

Needs the optional `io` extra (xarray, netCDF4, zarr) for datasets and files; the standardisation and
grid helpers are numpy only. `climax_deploy.runtime` does not import this package.
"""

from __future__ import annotations

from climax_deploy.forecast.files import file_format, import_xarray, open_dataset, write_dataset
from climax_deploy.forecast.forecaster import PhysicalForecaster, PreparedInput, dataset_grid
from climax_deploy.forecast.grid import REGRID_METHODS, Grid, regrid_bilinear
from climax_deploy.standardisation import Standardisation, merge_stats, read_stats_file

__all__ = [
    "REGRID_METHODS",
    "Grid",
    "PhysicalForecaster",
    "PreparedInput",
    "Standardisation",
    "dataset_grid",
    "file_format",
    "import_xarray",
    "merge_stats",
    "open_dataset",
    "read_stats_file",
    "regrid_bilinear",
    "write_dataset",
]
