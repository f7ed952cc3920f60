"""Gridded data files, shared by export and forecast: NetCDF/zarr files, grids, units and stats files.

    from climax_deploy.gridded.files import open_dataset, write_dataset
    from climax_deploy.gridded.grid_file import read_grid_file     # export-onnx --grid
    from climax_deploy.gridded.stats import read_stats_file         # export-onnx --stats

xarray, netCDF4, zarr, pint and cf-xarray (the `io` extra) are imported on first use; grid.py is numpy only.
"""
