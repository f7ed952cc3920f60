"""Reading analysis files and writing forecast files (NetCDF or zarr), atomically.

xarray, netCDF4 and zarr are the optional `io` extra (climax_deploy.optional), imported on first use.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from climax_deploy.artifacts import atomic_path, make_temporary
from climax_deploy.errors import BadInputError, WriteError
from climax_deploy.optional import NETCDF4, XARRAY, ZARR

if TYPE_CHECKING:
    import xarray as xr

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
ZARR_SUFFIX = ".zarr"


def file_format(path: str | os.PathLike[str]) -> str:
    """'netcdf' or 'zarr' from the suffix; anything else is a user mistake."""
    suffix = Path(path).suffix.lower()
    if suffix in NETCDF_SUFFIXES:
        return "netcdf"
    if suffix == ZARR_SUFFIX:
        return "zarr"
    raise BadInputError(f"{path}: expected a NetCDF (.nc) or zarr (.zarr) path, got suffix {suffix or 'none'!r}")


def open_dataset(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a NetCDF file or zarr store and load it into memory (files are closed on return)."""
    xr = XARRAY.load()
    path = Path(path)
    fmt = file_format(path)
    if not path.exists():
        raise BadInputError(f"{path} does not exist")
    try:
        if fmt == "zarr":
            ZARR.load()
            with xr.open_zarr(path, consolidated=False) as ds:
                return ds.load()
        NETCDF4.load()
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.load()
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"{path}: cannot read it as {fmt} ({exc})") from exc


def write_dataset(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write NetCDF (compressed float32) or zarr; a crash leaves no half-written file behind, a failed
    write (a full disk: netCDF4 says only 'HDF error') is one WriteError line."""
    path = Path(path)
    try:
        return _write_dataset(ds, path)
    except (RuntimeError, OSError) as exc:
        if isinstance(exc, WriteError):
            raise
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        try:
            free = f"{shutil.disk_usage(_existing_parent(path)).free / 2**20:.0f} MiB free there"
        except OSError:
            free = "free space unknown"
        raise WriteError(f"cannot write {path} ({reason}; {free}); expected room for the file: free space or "
                         "write elsewhere") from None  # fmt: skip


def _existing_parent(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _write_dataset(ds: xr.Dataset, path: Path) -> Path:
    fmt = file_format(path)
    encoding = {name: {"dtype": "float32", "_FillValue": float("nan")} for name in ds.data_vars}
    coordinates = {name: {"_FillValue": None} for name in ds.coords}  # CF: coordinates have no missing values
    if fmt == "netcdf":
        NETCDF4.load()
        for enc in encoding.values():
            enc.update(zlib=True, complevel=4)
        with atomic_path(path) as tmp:
            ds.to_netcdf(tmp, engine="netcdf4", encoding={**coordinates, **encoding})
        return path
    ZARR.load()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise BadInputError(f"cannot write the zarr store {path}: a file is there; expected a folder path")
    tmp_dir = make_temporary(path, directory=True)  # mode from the umask, like every artifact
    try:
        store = tmp_dir / path.name
        # zarr v3: no consolidation
        ds.to_zarr(store, mode="w", encoding={**coordinates, **encoding}, consolidated=False)
        _replace_dir(store, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _replace_dir(new: Path, final: Path) -> None:
    """Move the finished store `new` to `final`; an old `final` is moved aside first, then deleted."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)

