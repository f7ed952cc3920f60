"""Operational I/O: physical units and named, gridded variables in; forecast files out.

    from climax_deploy.forecast import PhysicalForecaster, open_dataset, write_dataset

The file readers and writers, grids, units and stats files it re-exports live in
`climax_deploy.gridded` (export-onnx reads grid and stats files with them too). Datasets and files
need the optional `io` extra (xarray, netCDF4, zarr), imported on first use. `climax_deploy.runtime`
does not import this package; synthetic demo files: `python -m climax_deploy.forecast.synthetic`.
"""

from __future__ import annotations

from climax_deploy.forecast.forecaster import PhysicalForecaster, PreparedInput, select_time
from climax_deploy.gridded.files import file_format, open_dataset, write_dataset
from climax_deploy.gridded.grid import REGRID_METHODS, Grid, regrid_bilinear
from climax_deploy.gridded.grid_file import dataset_grid
from climax_deploy.gridded.stats import read_stats_file

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
