"""Physical units in, physical units out: analysis `xarray.Dataset` -> forecast `xarray.Dataset`.

    from climax_deploy.forecast import PhysicalForecaster
    with PhysicalForecaster("build/climax_full.onnx") as fc:
        forecast = fc.forecast(analysis, static, lead_times=[12, 24, 48, 96], regrid="bilinear")

Variables are found by name (any order, extra ones ignored) in the analysis, then in the static
dataset; lat2d/lon2d come from the coordinates when the files lack them. Inputs are standardised with
the artifact's manifest stats, outputs inverted per pollutant. xarray is imported lazily (the `io`
extra); torch is never imported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

import climax_deploy
from climax_deploy.errors import BadInputError
from climax_deploy.forecast.grid import REGRID_METHODS, Grid, check_coordinate, horizontal_dims, regrid_bilinear
from climax_deploy.optional import XARRAY
from climax_deploy.runner import Runner
from climax_deploy.runtime import load
from climax_deploy.standardisation import Standardisation

if TYPE_CHECKING:
    import xarray as xr

DEFAULT_DYNAMIC_BATCH = 4  # lead times per call when the model's batch is dynamic
DEFAULT_UNITS = "ug m-3"  # CAQRA's mass concentrations; an analysis variable's own `units` wins
LONG_NAMES = {
    "pm25": "PM2.5 mass concentration", "pm10": "PM10 mass concentration", "so2": "SO2 mass concentration",
    "no2": "NO2 mass concentration", "co": "CO mass concentration", "o3": "O3 mass concentration",
}  # fmt: skip
STANDARD_NAMES = {
    "pm25": "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air",
    "pm10": "mass_concentration_of_pm10_ambient_aerosol_particles_in_air",
    "so2": "mass_concentration_of_sulfur_dioxide_in_air",
    "no2": "mass_concentration_of_nitrogen_dioxide_in_air",
    "co": "mass_concentration_of_carbon_monoxide_in_air",
    "o3": "mass_concentration_of_ozone_in_air",
}
COORDINATE_VARIABLES = {"lat2d": "lat", "lon2d": "lon"}  # filled from the grid when a file lacks them

BatchCallback = Callable[[Sequence[float], float], None]  # (lead times of the batch, seconds)


@dataclass
class PreparedInput:
    """One analysis on the model grid: standardised [V, H, W], its grid, time and pollutant units."""

    x: np.ndarray
    grid: Grid
    time: Any | None
    units: dict[str, str]
    regridded: bool
    mask: np.ndarray | None = None  # [H, W] bool, True where the forecast is valid
    mask_name: str | None = None


class PhysicalForecaster:
    """A loaded model that reads and writes physical units on named, gridded variables."""

    def __init__(
        self,
        model: Runner | str | os.PathLike[str],
        standardisation: Standardisation | None = None,
        batch_size: int | None = None,
        **load_options: Any,
    ) -> None:
        """model: a loaded Runner (kept open until `close`), or an artifact path loaded with
        `climax_deploy.runtime.load(model, **load_options)`.

        standardisation: default the artifact's manifest stats (the author's constants for a runner
        without a manifest). batch_size: lead times per model call, capped at the artifact's limit;
        default that limit, or DEFAULT_DYNAMIC_BATCH for a dynamic batch.
        """
        if isinstance(model, Runner):
            if load_options:
                raise BadInputError(f"load options {sorted(load_options)} apply to a model path, not a loaded runner")
            self.runner = model
        else:
            self.runner = load(model, **load_options)
        self.spec = self.runner.spec
        self.manifest = self.runner.manifest
        if standardisation is not None:
            self.standardisation = standardisation
        elif self.manifest is not None:
            self.standardisation = self.manifest.model.standardisation
        else:
            self.standardisation = Standardisation.defaults(self.spec.variables)
        limit = self.runner.batch_limit(batch_size)
        self.batch_size = limit if limit is not None else DEFAULT_DYNAMIC_BATCH

    # -- input --------------------------------------------------------------------------------------

    def prepare(
        self,
        analysis: xr.Dataset,
        static: xr.Dataset | None = None,
        regrid: str | None = None,
        target_grid: Grid | None = None,
        mask: str | Any | None = None,
    ) -> PreparedInput:
        """Gather the model's variables by name onto the model grid and standardise them."""
        if regrid is not None and regrid not in REGRID_METHODS:
            raise BadInputError(f"regrid must be one of {', '.join(REGRID_METHODS)} or None, got {regrid!r}")
        analysis = _one_time(analysis, "analysis")
        static = _one_time(static, "static") if static is not None else None
        sources = [("analysis", analysis)] + ([("static", static)] if static is not None else [])
        needed = [v for v in self.spec.variables if v not in COORDINATE_VARIABLES]
        missing = [v for v in needed if not any(v in ds.data_vars for _, ds in sources)]
        if missing:
            looked = " and ".join(name for name, _ in sources)
            raise BadInputError(
                f"missing variable(s) {', '.join(missing)} (looked in the {looked} datasets); "
                f"the model needs {', '.join(self.spec.variables)} (lat2d/lon2d may come from the coordinates)"
            )
        src_grid = dataset_grid(analysis, "analysis")
        target = self._target_grid(src_grid, regrid, target_grid)
        fields: dict[str, np.ndarray] = {}
        units: dict[str, str] = {}
        for name in self.spec.variables:
            found = next(((label, ds) for label, ds in sources if name in ds.data_vars), None)
            if found is None:  # lat2d / lon2d from the target grid's coordinates
                lon2d, lat2d = np.meshgrid(target.lon, target.lat)
                fields[name] = lat2d if name == "lat2d" else lon2d
                continue
            label, ds = found
            fields[name] = self._on_grid(ds[name], label, target, regrid)
            if "units" in ds[name].attrs:
                units[name] = str(ds[name].attrs["units"])
        valid, mask_name = self._mask(mask, sources, target, regrid)
        x = self.standardisation.apply(fields, self.spec.variables)
        return PreparedInput(x, target, _analysis_time(analysis), units, not src_grid.same_as(target), valid, mask_name)

    def _target_grid(self, src: Grid, regrid: str | None, target: Grid | None) -> Grid:
        expected = tuple(self.spec.grid)
        if target is not None and target.shape != expected:
            raise BadInputError(f"target grid is {target.describe()}, the model expects {expected[0]} x {expected[1]}")
        if target is None and src.shape == expected:
            return src  # already on the model grid: pass through
        if target is not None and src.same_as(target):
            return src
        if regrid is None:
            raise BadInputError(
                f"analysis is on a {src.describe()} grid, the model expects {expected[0]} x {expected[1]} "
                f"(lat x lon) over the same domain; pass regrid='bilinear' (--regrid bilinear) to resample it "
                "as the author's loader did, or regrid the file beforehand"
            )
        return target or src.spanning(expected)  # type: ignore[arg-type]

    def _on_grid(self, da: xr.DataArray, label: str, target: Grid, regrid: str | None) -> np.ndarray:
        lat_dim, lon_dim = horizontal_dims(da.dims, f"{label} variable {da.name!r}")
        extra = {str(d): int(n) for d, n in da.sizes.items() if d not in (lat_dim, lon_dim)}
        if any(n != 1 for n in extra.values()):
            raise BadInputError(
                f"{label} variable {da.name!r} has extra dims {extra}; give one 2-D field per variable "
                "(select one level or time, e.g. ds.isel(time=0))"
            )
        da = da.squeeze(drop=True).transpose(lat_dim, lon_dim)
        values = np.asarray(da.values, dtype=np.float64)
        grid = _grid_of(da, lat_dim, lon_dim, f"{label} variable {da.name!r}")
        if grid.same_as(target):
            return values
        if regrid is None:
            raise BadInputError(
                f"{label} variable {da.name!r} is on a {grid.describe()} grid, not the analysis/model grid "
                f"{target.describe()}; pass regrid='bilinear' (--regrid bilinear) or regrid it beforehand"
            )
        return regrid_bilinear(values, grid, target)

    def _mask(
        self, mask: str | Any | None, sources: list[tuple[str, xr.Dataset]], target: Grid, regrid: str | None
    ) -> tuple[np.ndarray | None, str | None]:
        """A validity mask: a variable name in the static/analysis data, or an array on the model grid."""
        if mask is None:
            return None, None
        if isinstance(mask, str):
            found = next((ds[mask] for _, ds in reversed(sources) if mask in ds.data_vars), None)
            if found is None:
                raise BadInputError(f"mask variable {mask!r} is in neither the static nor the analysis dataset")
            values = self._on_grid(found, "mask", target, regrid)
            name = mask
        else:
            values = np.asarray(getattr(mask, "values", mask), dtype=np.float64)
            if values.shape != target.shape:
                raise BadInputError(f"mask has shape {values.shape}, expected the model grid {target.shape}")
            name = str(getattr(mask, "name", None) or "mask")
        valid = np.isfinite(values) & (values >= 0.5)  # after bilinear resampling, a half-way threshold
        if not valid.any():
            raise BadInputError(f"mask {name!r} marks no cell as valid on the model grid")
        return valid, name

    # -- forecast -----------------------------------------------------------------------------------

    def predict_physical(
        self, prepared: PreparedInput, lead_times: Sequence[float], on_batch: BatchCallback | None = None
    ) -> np.ndarray:
        """Run the model for every lead time, batched; return physical [L, O, H, W] float32."""
        leads = _check_lead_times(lead_times)
        x = np.broadcast_to(prepared.x, (len(leads), *prepared.x.shape))  # one analysis, every lead time
        lead = np.asarray(leads, dtype=np.float32)
        began, reported = time.perf_counter(), 0

        def progress(done: int, total: int) -> None:
            nonlocal began, reported
            now = time.perf_counter()
            if on_batch is not None:
                on_batch(leads[reported:done], now - began)
            began, reported = now, done

        y_std = self.runner.predict_batched(x, lead, max_batch=self.batch_size, on_batch=progress)  # [L, O, H, W]
        y_phys = self.standardisation.invert(y_std, self.spec.output_variables, axis=1)
        if prepared.mask is not None:
            y_phys[:, :, ~prepared.mask] = np.nan
        return y_phys

    def forecast(
        self,
        analysis: xr.Dataset,
        static: xr.Dataset | None = None,
        lead_times: Sequence[float] = (12, 24, 48, 96),
        regrid: str | None = None,
        target_grid: Grid | None = None,
        mask: str | Any | None = None,
        on_batch: BatchCallback | None = None,
    ) -> xr.Dataset:
        """Forecast dataset with dims (lead_time, lat, lon), one variable per pollutant, physical units."""
        prepared = self.prepare(analysis, static, regrid=regrid, target_grid=target_grid, mask=mask)
        y = self.predict_physical(prepared, lead_times, on_batch)
        return self.to_dataset(y, prepared, _check_lead_times(lead_times), regrid)

    def to_dataset(
        self, y: np.ndarray, prepared: PreparedInput, lead_times: list[float], regrid: str | None = None
    ) -> xr.Dataset:
        """Physical outputs [L, O, H, W] -> a CF dataset (lead_time, lat, lon) naming the model it came from."""
        xr = XARRAY.load()
        manifest = self.manifest
        coords: dict[str, Any] = {
            "lead_time": ("lead_time", np.asarray(lead_times, dtype=np.float64),
                          {"units": "hours", "standard_name": "forecast_period", "long_name": "lead time"}),
            "lat": ("lat", prepared.grid.lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", prepared.grid.lon, {"units": "degrees_east", "standard_name": "longitude"}),
        }  # fmt: skip
        if prepared.time is not None:
            coords["time"] = ((), prepared.time, {"standard_name": "forecast_reference_time"})
            if np.issubdtype(np.asarray(prepared.time).dtype, np.datetime64):
                valid = np.asarray(prepared.time) + np.asarray(
                    [np.timedelta64(int(round(h * 3600)), "s") for h in lead_times]
                )
                coords["valid_time"] = ("lead_time", valid, {"standard_name": "time"})
        mask_note = (
            f"cells outside the validity mask {prepared.mask_name!r} are NaN" if prepared.mask is not None else None
        )
        data_vars = {}
        for i, name in enumerate(self.spec.output_variables):
            attrs = {
                "units": prepared.units.get(name, DEFAULT_UNITS),
                "long_name": LONG_NAMES.get(name, name),
                "standard_name": STANDARD_NAMES.get(name, name),
                "standardisation_mean_std": list(self.standardisation.mean_std(name)),
            }
            if mask_note:
                attrs["comment"] = mask_note
            data_vars[name] = (("lead_time", "lat", "lon"), y[:, i], attrs)
        attrs = {
            "Conventions": "CF-1.8",
            "title": "Physics-guided ClimaX air-quality forecast",
            "source": f"climax-deploy {climax_deploy.__version__} ({self.runner.backend}, {self.spec.precision})",
            "climax_deploy_version": climax_deploy.__version__,
            "model_file": manifest.file if manifest is not None else "",
            "model_sha256": manifest.sha256 if manifest is not None else "",
            "model_preset": (manifest.model.preset or "") if manifest is not None else "",
            "standardisation": self.standardisation.source,
            "regrid": f"{regrid} (from the analysis grid)"
            if prepared.regridded
            else "none (analysis on the model grid)",
            "history": f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} climax-deploy forecast",
        }
        if mask_note:
            attrs["validity_mask"] = str(prepared.mask_name)
            attrs["comment"] = mask_note
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    # -- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the runner (also one passed in: the forecaster owns it from construction)."""
        self.runner.close()

    def __enter__(self) -> PhysicalForecaster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def dataset_grid(ds: xr.Dataset, source: str) -> Grid:
    """The horizontal grid of a dataset, from its 1-D lat/lon coordinates."""
    lat_dim, lon_dim = horizontal_dims(ds.sizes, source)
    return _grid_of(ds, lat_dim, lon_dim, source)


def _grid_of(obj: Any, lat_dim: str, lon_dim: str, source: str) -> Grid:
    for dim in (lat_dim, lon_dim):
        if dim not in obj.coords:
            raise BadInputError(
                f"{source}: dim {dim!r} has no coordinate values; give 1-D lat/lon coordinates in degrees"
            )
    return Grid(
        check_coordinate(obj[lat_dim].values, lat_dim, source), check_coordinate(obj[lon_dim].values, lon_dim, source)
    )


def select_time(ds: xr.Dataset, index: int | None, source: str = "analysis") -> xr.Dataset:
    """The analysis time `index` (negative counts from the end) of a dataset with a `time` dim; else `ds`."""
    if index is None or "time" not in ds.sizes:
        return ds
    if not -ds.sizes["time"] <= index < ds.sizes["time"]:
        raise BadInputError(f"time index {index} is out of range: {source} has {ds.sizes['time']} times")
    return ds.isel(time=index)


def _one_time(ds: xr.Dataset, source: str) -> xr.Dataset:
    """Select the only analysis time; several times are a user decision, not ours."""
    for dim in ("time", "valid_time"):
        if dim in ds.sizes:
            if ds.sizes[dim] != 1:
                raise BadInputError(
                    f"{source} has {ds.sizes[dim]} times on dim {dim!r}; forecast from one analysis time: "
                    f"select it first (ds.isel({dim}=i), or --time-index i)"
                )
            ds = ds.isel({dim: 0})
    return ds


def _analysis_time(ds: xr.Dataset) -> Any | None:
    for name in ("time", "valid_time"):
        if name in ds.coords and ds[name].ndim == 0:
            return ds[name].values
    return None


def _check_lead_times(lead_times: Sequence[float]) -> list[float]:
    leads = [float(h) for h in np.atleast_1d(np.asarray(lead_times, dtype=np.float64))]
    if not leads:
        raise BadInputError("no lead times given; expected hours such as 12,24,48,96")
    if any(not np.isfinite(h) or h < 0 for h in leads):
        raise BadInputError(f"lead times must be finite hours >= 0, got {leads}")
    if len(set(leads)) != len(leads):
        raise BadInputError(f"lead times must be distinct, got {leads}")
    return leads
