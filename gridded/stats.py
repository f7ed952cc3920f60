"""Reading a user's standardisation stats file: JSON, or NetCDF through xarray (the `io` extra).

The standardisation itself (Standardisation, check_stats, merge_stats) is in
`climax_deploy.standardisation`; this module only adds the NetCDF reader, which needs xarray.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.gridded.files import NETCDF_SUFFIXES
from climax_deploy.optional import NETCDF4, XARRAY
from climax_deploy.standardisation import check_stats, read_json_stats


def read_stats_file(path: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """A user's stats file -> {variable: (mean, std)} in physical units.

    JSON: {var: [mean, std]} (or a manifest holding one). NetCDF: data variables `mean` and `std`
    along a `variable` dimension whose coordinate holds the names.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"stats file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_json_stats(path)
    if suffix in NETCDF_SUFFIXES:
        return _read_netcdf_stats(path)
    raise BadInputError(f"{path}: expected a .json or .nc stats file, got suffix {suffix or 'none'!r}")


def _read_netcdf_stats(path: Path) -> dict[str, tuple[float, float]]:
    xr = XARRAY.load()
    NETCDF4.load()
    try:
        ds = xr.open_dataset(path, engine="netcdf4")
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot read it as NetCDF ({exc})") from exc
    with ds:
        missing = [v for v in ("mean", "std") if v not in ds.data_vars]
        if missing or "variable" not in ds.dims:
            raise BadInputError(
                f"{path}: expected data variables 'mean' and 'std' along a 'variable' dimension, "
                f"got variables {sorted(map(str, ds.data_vars))} and dims {sorted(map(str, ds.dims))}"
            )
        names = [str(n) for n in ds["variable"].values]
        means = np.asarray(ds["mean"].values, dtype=np.float64)
        stds = np.asarray(ds["std"].values, dtype=np.float64)
    return check_stats({n: (m, s) for n, m, s in zip(names, means, stds)}, str(path))


__all__ = ["read_stats_file"]
