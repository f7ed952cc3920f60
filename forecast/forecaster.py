"""Physical units in, physical units out: analysis `xarray.Dataset` -> forecast `xarray.Dataset`.

    from climax_deploy.forecast import PhysicalForecaster
    with PhysicalForecaster("build/climax_full.onnx") as fc:
        forecast = fc.forecast(analysis, static, lead_times=[12, 24, 48, 96], regrid="bilinear")

Variables are found (any order, extra ones ignored) in the analysis, then in the static dataset: by
name, then CF standard_name, then the ECMWF/CAMS aliases (forecast/variables.py), or as `rename` says;
lat2d/lon2d come from the coordinates when the files lack them. Mixing ratios convert to mass
concentrations only when asked (forecast/mixing_ratios.py). Inputs are standardised with
the artifact's manifest stats, outputs inverted per pollutant. xarray is imported lazily (the `io`
extra); torch is never imported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

import climax_deploy
from climax_deploy.errors import BadInputError, InferenceError
from climax_deploy.forecast import mixing_ratios
from climax_deploy.forecast.variables import find_variables
from climax_deploy.gridded.grid import REGRID_METHODS, Grid, coordinate_tolerance, horizontal_dims, orient, regrid_bilinear
from climax_deploy.gridded.grid_file import coordinate_grid, dataset_grid
from climax_deploy.gridded.units import to_model_units
from climax_deploy.inputs import check_lead_time_range, check_plausible
from climax_deploy.manifest import Manifest
from climax_deploy.optional import XARRAY
from climax_deploy.runner import Runner
from climax_deploy.runtime import load
from climax_deploy.schema import OUTPUTS, UNITS, domain_coordinates
from climax_deploy.standardisation import Standardisation

if TYPE_CHECKING:
    import xarray as xr

DEFAULT_DYNAMIC_BATCH = 4  # lead times per call when the model's batch is dynamic
DEFAULT_UNITS = "ug m-3"  # CAQRA's mass concentrations, for an output missing from schema.UNITS
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
    found: dict[str, str] = field(default_factory=dict)  # model variable -> where it came from, if not by name
    conversions: list[str] = field(default_factory=list)  # mixing ratios converted, with their assumptions


class PhysicalForecaster:
    """A loaded model that reads and writes physical units on named, gridded variables."""

    def __init__(
        self,
        model: Runner | str | os.PathLike[str],
        standardisation: Standardisation | None = None,
        batch_size: int | None = None,
        allow_implausible: bool = False,
        **load_options: Any,
    ) -> None:
        """model: a loaded Runner (kept open until `close`), or an artifact path loaded with
        `climax_deploy.runtime.load(model, **load_options)`.

        standardisation: default the artifact's manifest stats (the author's constants for a runner
        without a manifest). batch_size: lead times per model call, capped at the artifact's limit;
        default that limit, or DEFAULT_DYNAMIC_BATCH for a dynamic batch. allow_implausible: accept
        inputs outside schema.PLAUSIBLE_RANGES and lead times beyond schema.MAX_LEAD_TIME_HOURS
        (research runs); by default they are refused naming the variable, its cells and the range.
        """
        self.allow_implausible = allow_implausible
        if isinstance(model, Runner):
            if load_options:
                raise BadInputError(f"load options {sorted(load_options)} apply to a model path, not a loaded runner")
            self.runner = model
        else:
            self.runner = load(model, **load_options)
        if allow_implausible:
            self.runner.allow_implausible = True  # the research override reaches the runner's guards too
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
        self.grid = model_grid(self.manifest, self.spec.grid)

    # -- input --------------------------------------------------------------------------------------

    def prepare(
        self,
        analysis: xr.Dataset,
        static: xr.Dataset | None = None,
        regrid: str | None = None,
        target_grid: Grid | None = None,
        mask: str | Any | None = None,
        rename: dict[str, str] | None = None,
        convert_mixing_ratios: bool = False,
    ) -> PreparedInput:
        """Gather the model's variables, in the model's units, onto the model grid; standardise them.

        Variables are found by name, CF standard_name or alias, or `rename` ({file name: model name}).
        Mixing ratios (kg kg-1, ppb) of the pollutants are refused unless `convert_mixing_ratios`.
        Units are converted to climax_deploy.schema.UNITS (refused by name when missing or inconvertible);
        files are reoriented to the model grid (latitude direction, longitude convention) and must match
        its coordinates unless `regrid`. NaN is allowed only where `mask` is below 0.5: those cells get
        the standardised mean (0) and come out NaN.
        """
        if regrid is not None and regrid not in REGRID_METHODS:
            raise BadInputError(f"regrid must be one of {', '.join(REGRID_METHODS)} or None, got {regrid!r}")
        analysis = _one_time(analysis, "analysis")
        static = _one_time(static, "static") if static is not None else None
        sources = [("analysis", analysis)] + ([("static", static)] if static is not None else [])
        needed = [v for v in self.spec.variables if v not in COORDINATE_VARIABLES]
        found = find_variables(self.spec.variables, sources, rename)
        missing = [v for v in needed if v not in found]
        if missing:
            looked = " and ".join(name for name, _ in sources)
            raise BadInputError(
                f"missing variable(s) {', '.join(missing)} (looked in the {looked} datasets); "
                f"the model needs {', '.join(self.spec.variables)} (lat2d/lon2d may come from the coordinates), "
                "found by name, CF standard_name or ECMWF/CAMS short name; map others with --rename FILE=MODEL"
            )
        target = self._target_grid(target_grid)
        regridded = self._check_grid(dataset_grid(analysis, "analysis"), target, "analysis", regrid)
        fields: dict[str, np.ndarray] = {}
        labels: dict[str, str] = {}
        datasets = dict(sources)
        ratios: dict[str, mixing_ratios.Kind] = {}
        for name in self.spec.variables:
            if name not in found:  # lat2d / lon2d from the model grid's coordinates
                lon2d, lat2d = np.meshgrid(target.lon, target.lat)
                fields[name] = lat2d if name == "lat2d" else lon2d
                continue
            label, da = found[name].source, datasets[found[name].source][found[name].name]
            kind = mixing_ratios.mixing_ratio_kind(da.attrs, name) if name in OUTPUTS else None
            if kind is not None and not convert_mixing_ratios:
                raise BadInputError(
                    f"{label} variable {found[name].name!r} has units {str(da.attrs.get('units', ''))!r}, a {kind} "
                    f"mixing ratio of {name!r}; expected units convertible to {UNITS[name]!r}: pass "
                    "--convert-mixing-ratios (convert_mixing_ratios=True) to convert it with the file's surface "
                    "pressure and temperature, or convert it beforehand"
                )
            if kind is not None:
                values = mixing_ratios.as_fraction(da.values, da.attrs, found[name].name, label)
                ratios[name] = kind
            elif name in UNITS:
                values = to_model_units(da.values, da.attrs, found[name].name, UNITS[name], label)
            else:
                values = np.asarray(da.values, dtype=np.float64)
            fields[name], moved = self._on_grid(da.copy(data=values), label, target, regrid)
            regridded |= moved
            labels[name] = label
        conversions = []
        for name, kind in ratios.items():  # on the model grid, with p and T already in Pa and K
            fields[name] = mixing_ratios.to_mass_concentration(
                fields[name], kind, name, fields[mixing_ratios.PRESSURE], fields[mixing_ratios.TEMPERATURE]
            )
            units = str(datasets[found[name].source][found[name].name].attrs.get("units", "1"))
            conversions.append(mixing_ratios.describe(name, kind, found[name].name, units))
        valid, mask_name = self._mask(mask, sources, target, regrid)
        _check_finite(fields, labels, valid)
        if not self.allow_implausible:
            check_plausible(fields, valid, "analysis/static")
        x = self.standardisation.apply(fields, self.spec.variables)
        if valid is not None:
            x[:, ~valid] = 0.0  # the standardised mean: a neutral value where the forecast is masked out
        units = {name: UNITS.get(name, DEFAULT_UNITS) for name in self.spec.output_variables}
        where = {name: f.describe() for name, f in found.items() if f.how != "name"}
        return PreparedInput(x, target, _analysis_time(analysis), units, regridded, valid, mask_name, where, conversions)

    def _target_grid(self, target: Grid | None) -> Grid:
        """The model grid (the manifest's coordinates), or a caller's grid of the model's shape."""
        expected = tuple(self.spec.grid)
        if target is not None and target.shape != expected:
            raise BadInputError(f"target grid is {target.describe()}, the model expects {expected[0]} x {expected[1]}")
        return target if target is not None else self.grid

    def _check_grid(self, src: Grid, target: Grid, label: str, regrid: str | None) -> bool:
        """True when `src` must be resampled onto `target`; refused without `regrid`."""
        oriented, _, _ = orient(src, target)
        tol = coordinate_tolerance(target)
        if oriented.shape == target.shape and oriented.same_as(target, atol=tol):
            return False
        if regrid is None:
            raise BadInputError(
                f"{label} is on a {oriented.describe()} grid, the model expects {target.describe()} "
                f"(its manifest's grid, to {tol:.2g} degrees); pass regrid='bilinear' (--regrid bilinear) to "
                "resample it, or regrid the file beforehand"
            )
        return True

    def _on_grid(self, da: xr.DataArray, label: str, target: Grid, regrid: str | None) -> tuple[np.ndarray, bool]:
        """A 2-D field in the model's orientation on `target` (resampled if `regrid`), and whether it was."""
        source = f"{label} variable {da.name!r}"
        lat_dim, lon_dim = horizontal_dims(da.dims, source)
        extra = {str(d): int(n) for d, n in da.sizes.items() if d not in (lat_dim, lon_dim)}
        if any(n != 1 for n in extra.values()):
            raise BadInputError(
                f"{label} variable {da.name!r} has extra dims {extra}; give one 2-D field per variable "
                "(select one level or time, e.g. ds.isel(time=0))"
            )
        da = da.squeeze(drop=True).transpose(lat_dim, lon_dim)
        src = coordinate_grid(da, lat_dim, lon_dim, source)
        oriented, rows, cols = orient(src, target)
        values = np.asarray(da.values, dtype=np.float64)[rows][:, cols]
        if not self._check_grid(src, target, source, regrid):
            return values, False
        return regrid_bilinear(values, oriented, target), True

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
            values, _ = self._on_grid(found, "mask", target, regrid)
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
        if not self.allow_implausible:
            check_lead_time_range(leads)
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
        inside = y_phys if prepared.mask is None else y_phys[:, :, prepared.mask]
        if not np.isfinite(inside).all():  # never write an inf forecast as if it were one
            bad = [v for i, v in enumerate(self.spec.output_variables) if not np.isfinite(inside[:, i]).all()]
            raise InferenceError(
                f"the forecast of {', '.join(bad)} is not finite ({self.standardisation.source}'s stats "
                f"{[self.standardisation.mean_std(v) for v in bad]}); expected finite stats and inputs"
            )
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
        rename: dict[str, str] | None = None,
        convert_mixing_ratios: bool = False,
    ) -> xr.Dataset:
        """Forecast dataset with dims (lead_time, lat, lon), one variable per pollutant, physical units."""
        prepared = self.prepare(analysis, static, regrid=regrid, target_grid=target_grid, mask=mask, rename=rename,
                                convert_mixing_ratios=convert_mixing_ratios)  # fmt: skip
        y = self.predict_physical(prepared, lead_times, on_batch)
        return self.to_dataset(y, prepared, _check_lead_times(lead_times), regrid)

    def to_dataset(
        self, y: np.ndarray, prepared: PreparedInput, lead_times: list[float], regrid: str | None = None
    ) -> xr.Dataset:
        """Physical outputs [L, O, H, W] -> a CF dataset (lead_time, lat, lon) naming the model it came from."""
        xr = XARRAY.load()
        manifest = self.manifest
        coords: dict[str, Any] = {
            # A period, not a time: no axis T (CF 4.4 reads axis T as a time coordinate, which needs units
            # "<unit> since <date>"); the file's one T axis is valid_time (standard_name time).
            "lead_time": ("lead_time", np.asarray(lead_times, dtype=np.float64),
                          {"units": "hours", "standard_name": "forecast_period", "long_name": "lead time"}),
            "lat": ("lat", prepared.grid.lat,
                    {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude", "axis": "Y"}),
            "lon": ("lon", prepared.grid.lon,
                    {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude", "axis": "X"}),
        }  # fmt: skip
        if prepared.time is not None:
            coords["time"] = ((), prepared.time, {"standard_name": "forecast_reference_time",
                                                  "long_name": "analysis time"})  # fmt: skip
            if np.issubdtype(np.asarray(prepared.time).dtype, np.datetime64):
                valid = np.asarray(prepared.time) + np.asarray(
                    [np.timedelta64(int(round(h * 3600)), "s") for h in lead_times]
                )
                coords["valid_time"] = ("lead_time", valid, {"standard_name": "time", "long_name": "valid time",
                                                             "axis": "T"})  # fmt: skip
        mask_note = (
            f"cells outside the validity mask {prepared.mask_name!r} are NaN" if prepared.mask is not None else None
        )
        data_vars = {}
        for i, name in enumerate(self.spec.output_variables):
            attrs: dict[str, Any] = {
                "units": prepared.units.get(name, UNITS.get(name, DEFAULT_UNITS)),
                "long_name": LONG_NAMES.get(name, name),
                "standardisation_mean_std": list(self.standardisation.mean_std(name)),
            }
            if name in STANDARD_NAMES:  # only names from the CF standard name table
                attrs["standard_name"] = STANDARD_NAMES[name]
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
        if prepared.found:
            attrs["input_variables"] = "; ".join(f"{name} = {where}" for name, where in prepared.found.items())
        if prepared.conversions:
            attrs["input_conversions"] = "; ".join(prepared.conversions)
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


def model_grid(manifest: Manifest | None, shape: tuple[int, int]) -> Grid:
    """The model's grid: its manifest's coordinates, or the training domain's for a runner without one."""
    if manifest is not None:
        return Grid(np.asarray(manifest.model.lat, dtype=np.float64), np.asarray(manifest.model.lon, dtype=np.float64))
    lat, lon = domain_coordinates(shape)
    return Grid(np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64))


def _check_finite(fields: dict[str, np.ndarray], labels: dict[str, str], valid: np.ndarray | None) -> None:
    """NaN/inf only where the validity mask is below 0.5; anywhere else the model cannot use the field."""
    bad = [name for name, v in fields.items() if (~np.isfinite(v) if valid is None else ~np.isfinite(v) & valid).any()]
    if bad:
        where = "inside the validity mask" if valid is not None else "and no validity mask"
        named = ", ".join(f"{labels.get(n, 'grid')} variable {n!r}" for n in bad)
        raise BadInputError(
            f"{named} have NaN or infinite cells {where}; the model needs finite inputs there: pass --mask VAR "
            "(mask=...) below 0.5 where data is missing, or fill the gaps beforehand"
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
