"""Operational I/O: physical units and named, gridded variables in; forecast files out.

    from climax_deploy.forecast import PhysicalForecaster, open_dataset, write_dataset

Datasets and files need the optional `io` extra (xarray, netCDF4, zarr), imported on first use; the
grid helpers are numpy only. Standardisation lives in `climax_deploy.standardisation`; this package
adds reading a user's NetCDF stats file (`read_stats_file`). `climax_deploy.runtime` does not import
this package; synthetic demo files: `python -m climax_deploy.forecast.synthetic`.
"""

from __future__ import annotations

from climax_deploy.forecast.files import file_format, open_dataset, write_dataset
from climax_deploy.forecast.forecaster import PhysicalForecaster, PreparedInput, dataset_grid, select_time
from climax_deploy.forecast.grid import REGRID_METHODS, Grid, regrid_bilinear
from climax_deploy.forecast.stats import read_stats_file

__all__ = [
    "REGRID_METHODS",
    "Grid",
    "PhysicalForecaster",
    "PreparedInput",
    "dataset_grid",
    "file_format",
    "open_dataset",
    "read_stats_file",
    "regrid_bilinear",
    "select_time",
    "write_dataset",
]
