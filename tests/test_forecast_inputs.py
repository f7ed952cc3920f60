"""Inputs as operational centres write them: names, CF standard names, ECMWF/CAMS aliases, --rename,
mixing ratios converted on request (against hand-computed values), and CF-clean forecast files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

xr = pytest.importorskip("xarray", reason="the io extra (xarray) is not installed")

from cli_run import run_main  # tests/ is on sys.path under pytest

from climax_deploy.errors import BadInputError
from climax_deploy.forecast import PhysicalForecaster
from climax_deploy.forecast.cli import main as forecast_main
from climax_deploy.forecast.mixing_ratios import as_fraction, to_mass_concentration
from climax_deploy.forecast.synthetic import synthetic_datasets
from climax_deploy.forecast.variables import parse_renames

# The model's name -> (ECMWF/CAMS short name, CF standard name), as an IFS/CAMS analysis carries them.
ECMWF = {
    "u": ("u10", "eastward_wind"), "v": ("v10", "northward_wind"), "temp": ("t2m", "air_temperature"),
    "rh": ("r2", "relative_humidity"), "psfc": ("sp", "surface_air_pressure"),
    "pm25": ("pm2p5", "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air"),
    "pm10": ("pm10", "mass_concentration_of_pm10_ambient_aerosol_particles_in_air"),
    "o3": ("go3", "mass_concentration_of_ozone_in_air"), "so2": ("so2", "mass_concentration_of_sulfur_dioxide_in_air"),
    "no2": ("no2", "mass_concentration_of_nitrogen_dioxide_in_air"),
    "co": ("co", "mass_concentration_of_carbon_monoxide_in_air"),
}  # fmt: skip


@pytest.fixture(scope="module")
def datasets() -> tuple[xr.Dataset, xr.Dataset]:
    return synthetic_datasets((32, 64), seed=7)


@pytest.fixture(scope="module")
def forecaster(small_onnx: Path) -> PhysicalForecaster:
    return PhysicalForecaster(small_onnx, threads=2)


def as_centre_writes(analysis: xr.Dataset, names: dict[str, str], standard_names: bool = True) -> xr.Dataset:
    """`analysis` with its variables renamed (model name -> file name), each tagged with its CF standard name."""
    out = analysis.rename({model: file for model, file in names.items() if model != file})
    if standard_names:
        for model, file in names.items():
            out[file].attrs["standard_name"] = ECMWF[model][1]
    return out


# -- lookup ----------------------------------------------------------------------------------------


def test_ecmwf_cams_short_names_with_standard_names(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    centre = as_centre_writes(analysis, {m: short for m, (short, _) in ECMWF.items()})
    want = forecaster.prepare(analysis, static)
    got = forecaster.prepare(centre, static)
    np.testing.assert_array_equal(got.x, want.x)
    assert got.found["temp"] == "analysis variable 't2m' (by standard name)"


def test_aliases_alone_without_standard_names(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    centre = as_centre_writes(analysis, {m: short for m, (short, _) in ECMWF.items()}, standard_names=False)
    got = forecaster.prepare(centre, static)
    np.testing.assert_array_equal(got.x, forecaster.prepare(analysis, static).x)
    assert got.found["o3"] == "analysis variable 'go3' (by alias)" and "pm10" not in got.found  # pm10: by name


def test_standard_names_alone_find_any_name(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    centre = as_centre_writes(analysis, {m: f"field_{i}" for i, m in enumerate(ECMWF)})
    np.testing.assert_array_equal(forecaster.prepare(centre, static).x, forecaster.prepare(analysis, static).x)


def test_ambiguous_standard_names_are_refused_naming_both(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    centre = as_centre_writes(analysis, {m: short for m, (short, _) in ECMWF.items()})
    centre["t"] = centre["t2m"] + 1.0  # e.g. the lowest model level's temperature beside the 2 m one
    with pytest.raises(BadInputError, match=r"variables 't2m' and 't' each match the model's 'temp' by standard name"):
        forecaster.prepare(centre, static)
    resolved = forecaster.prepare(centre, static, rename={"t2m": "temp"})
    np.testing.assert_array_equal(resolved.x, forecaster.prepare(analysis, static).x)


def test_rename_maps_any_name_and_is_checked(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    odd = analysis.rename({"temp": "temperature_2m_corrected"})
    with pytest.raises(BadInputError, match=r"missing variable\(s\) temp .*--rename FILE=MODEL"):
        forecaster.prepare(odd, static)
    got = forecaster.prepare(odd, static, rename=parse_renames(["temperature_2m_corrected=temp"]))
    np.testing.assert_array_equal(got.x, forecaster.prepare(analysis, static).x)
    with pytest.raises(BadInputError, match=r"--rename targets tmp, which the model does not read"):
        forecaster.prepare(odd, static, rename={"temperature_2m_corrected": "tmp"})
    mislabelled = analysis.drop_vars("v")
    mislabelled["u"].attrs["standard_name"] = "northward_wind"  # found as u by name, as v by standard name
    with pytest.raises(BadInputError, match=r"analysis variable 'u' would be both 'u' and 'v'"):
        forecaster.prepare(mislabelled, static)
    for bad in ("t2m", "=temp", "t2m="):
        with pytest.raises(BadInputError, match="FILE_NAME=MODEL_NAME"):
            parse_renames([bad])


# -- mixing ratios -----------------------------------------------------------------------------------
# Hand-computed (30-digit decimal arithmetic, not this code):
#   5e-8 kg kg-1 at 101325 Pa, 288.15 K: 5e-8 * 101325 / (287.05 * 288.15) * 1e9 = 61.2506132995 ug m-3
#   40 ppb O3 at 101325 Pa, 298.15 K: 40e-9 * 101325 * 0.047997 / (8.314462618 * 298.15) * 1e9 = 78.4732606014
#   2 ppb SO2 at 95000 Pa, 280 K: 2e-9 * 95000 * 0.064066 / (8.314462618 * 280) * 1e9 = 5.22864304528
# (1 ppb of O3 at 25 degC and 1 atm is 1.96 ug m-3, the factor air-quality tables give.)


def test_mixing_ratios_against_hand_computed_values() -> None:
    p, t = np.array([101325.0]), np.array([288.15])
    assert to_mass_concentration(np.array([5e-8]), "mass", "o3", p, t)[0] == pytest.approx(61.2506132995, rel=1e-11)
    ppb = as_fraction(np.array([40.0]), {"units": "ppb"}, "go3", "analysis")
    assert ppb[0] == pytest.approx(40e-9, rel=1e-15)
    c = to_mass_concentration(ppb, "volume", "o3", p, np.array([298.15]))
    assert c[0] == pytest.approx(78.4732606014, rel=1e-11)
    so2 = as_fraction(np.array([2.0]), {"units": "nmol mol-1"}, "so2", "analysis")
    assert to_mass_concentration(so2, "volume", "so2", np.array([95000.0]), np.array([280.0]))[0] == pytest.approx(
        5.22864304528, rel=1e-11
    )
    with pytest.raises(BadInputError, match="molar mass"):
        to_mass_concentration(np.array([1e-9]), "volume", "pm25", p, t)


def constant_state(analysis: xr.Dataset, p: float, t: float) -> xr.Dataset:
    out = analysis.copy()
    out["psfc"] = xr.full_like(analysis["psfc"], p).assign_attrs(analysis["psfc"].attrs)
    out["temp"] = xr.full_like(analysis["temp"], t).assign_attrs(analysis["temp"].attrs)
    return out


def test_cams_mass_mixing_ratio_converts_only_when_asked(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    state = constant_state(analysis, 101325.0, 288.15)
    want = state.copy()
    want["o3"] = xr.full_like(state["o3"], 61.2506132995).assign_attrs(units="ug m-3")
    cams = state.drop_vars("o3")
    cams["go3"] = xr.full_like(state["o3"], 5e-8).assign_attrs(units="kg kg**-1",
                                                              standard_name="mass_fraction_of_ozone_in_air")  # fmt: skip
    with pytest.raises(BadInputError, match=r"'go3' has units 'kg kg\*\*-1', a mass mixing ratio of 'o3'.*--convert-mixing"):
        forecaster.prepare(cams, static)
    got = forecaster.prepare(cams, static, convert_mixing_ratios=True)
    np.testing.assert_allclose(got.x, forecaster.prepare(want, static).x, rtol=0, atol=5e-7)  # 2 float32 ulps at 2
    (note,) = got.conversions
    assert "o3 from 'go3': mass mixing ratio (kg kg**-1) x dry-air density p / (R_d T), R_d = 287.05" in note


def test_ppb_converts_with_the_molar_mass(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    state = constant_state(analysis, 101325.0, 298.15)
    want = state.copy()
    want["o3"] = xr.full_like(state["o3"], 78.4732606014).assign_attrs(units="ug m-3")
    ppb = state.copy()
    ppb["o3"] = xr.full_like(state["o3"], 40.0).assign_attrs(units="ppb")
    got = forecaster.prepare(ppb, static, convert_mixing_ratios=True)
    np.testing.assert_allclose(got.x, forecaster.prepare(want, static).x, rtol=0, atol=5e-7)  # 2 float32 ulps at 2
    assert "M = 47.997 g mol-1, R = 8.314462618" in got.conversions[0]


# -- the CLI and the file it writes -------------------------------------------------------------------


def cf_rule_errors(path: Path) -> list[str]:
    """What the CF checker (cfchecks 4.1, CF-1.8) reports on a forecast's time coordinates, as rules:
    (4.4) a variable with axis T is a time coordinate, so its units must be '<unit> since <date>';
    (4.4) a forecast_period is a period: units of time without a reference date."""
    import netCDF4

    errors = []
    with netCDF4.Dataset(path) as nc:
        if not str(getattr(nc, "Conventions", "")).startswith("CF-1."):
            errors.append("no CF Conventions attribute")
        for name, var in nc.variables.items():
            units = str(getattr(var, "units", ""))
            if getattr(var, "axis", None) == "T" and " since " not in units:
                errors.append(f"(4.4) {name}: axis T with units {units!r}, not '<unit> since <date>'")
            if getattr(var, "standard_name", None) == "forecast_period" and (" since " in units or not units):
                errors.append(f"(4.4) {name}: a forecast_period needs units of time, got {units!r}")
    return errors


def test_cams_file_to_cf_clean_forecast(small_onnx: Path, datasets: tuple, tmp_path: Path) -> None:
    analysis, static = datasets
    centre = as_centre_writes(analysis, {m: short for m, (short, _) in ECMWF.items()})
    centre["go3"] = (centre["go3"] * 1e-9 / 1.2).assign_attrs(units="kg kg-1", standard_name="mass_fraction_of_ozone_in_air")
    centre = centre.rename({"sp": "surface_pressure_hourly"})
    centre["surface_pressure_hourly"].attrs.pop("standard_name")
    centre.to_netcdf(tmp_path / "cams.nc")
    static.to_netcdf(tmp_path / "static.nc")
    out = run_main("climax-forecast", forecast_main, ["--model", str(small_onnx), "--analysis", "cams.nc", "--static",
                   "static.nc", "--rename", "surface_pressure_hourly=psfc", "--convert-mixing-ratios", "--lead-times",
                   "12,24", "--threads", "2", "-q", "-o", "f.nc"], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "converted o3 from 'go3': mass mixing ratio (kg kg-1) x dry-air density" in out.stderr
    assert cf_rule_errors(tmp_path / "f.nc") == []
    with xr.open_dataset(tmp_path / "f.nc") as ds:
        assert "R_d = 287.05 J kg-1 K-1" in ds.attrs["input_conversions"]
        assert "psfc = analysis variable 'surface_pressure_hourly' (by rename)" in ds.attrs["input_variables"]
        assert ds.cf.axes["T"] == ["valid_time"]  # one time axis: lead_time is a period
        assert "axis" not in ds["lead_time"].attrs and ds["lead_time"].attrs["standard_name"] == "forecast_period"


def test_cf_rules_catch_a_period_with_axis_t(tmp_path: Path) -> None:
    """The rule check fails on what the toolkit wrote before (lead_time in hours with axis T)."""
    ds = xr.Dataset(coords={"lead_time": ("lead_time", [12.0], {"units": "hours", "standard_name": "forecast_period",
                                                               "axis": "T"})}, attrs={"Conventions": "CF-1.8"})  # fmt: skip
    ds.to_netcdf(tmp_path / "old.nc")
    assert cf_rule_errors(tmp_path / "old.nc") == ["(4.4) lead_time: axis T with units 'hours', not '<unit> since <date>'"]
