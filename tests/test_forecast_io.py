"""Physical units in and out: standardisation, stats files, regridding, masks, and the round trip
physical -> standardised -> ONNX model -> physical against the PyTorch reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

xr = pytest.importorskip("xarray", reason="the io extra (xarray) is not installed")

from climax_deploy.errors import BadInputError
from climax_deploy.forecast import Grid, PhysicalForecaster, read_stats_file, regrid_bilinear
from climax_deploy.forecast.synthetic import synthetic_datasets, terrain
from climax_deploy.manifest import BatchSpec, read_onnx_manifest
from climax_deploy.model import ClimaX
from climax_deploy.runner import ModelSpec, Runner
from climax_deploy.schema import OUTPUTS, STANDARDISATION, STANDARDISATION_EPS, VARIABLES
from climax_deploy.standardisation import Standardisation, merge_stats
from climax_deploy.synthetic import synthetic_sample

LEADS = [12.0, 24.0, 48.0, 96.0]
# ONNX Runtime vs PyTorch in fp32 agree to ~3e-6 in standardised units on the small preset; compared in
# physical units divided by each pollutant's std, 1e-4 leaves margin for summation order on 2 threads.
ROUND_TRIP_TOL = 1e-4


@pytest.fixture(scope="module")
def datasets() -> tuple[xr.Dataset, xr.Dataset]:
    return synthetic_datasets((32, 64), seed=3)


@pytest.fixture(scope="module")
def forecaster(small_onnx: Path) -> PhysicalForecaster:
    return PhysicalForecaster(small_onnx, threads=2)


def reference(
    model: ClimaX, analysis: xr.Dataset, static: xr.Dataset, stats: dict[str, tuple[float, float]]
) -> np.ndarray:
    """The PyTorch reference in physical units [L, O, H, W], standardised by hand from `stats`."""
    a = analysis.isel(time=0)
    lon2d, lat2d = np.meshgrid(a["lon"].values, a["lat"].values)
    fields = {**{v: a[v].values for v in a.data_vars}, "elevation": static["elevation"].values,
              "population": static["population"].values, "lat2d": lat2d, "lon2d": lon2d}  # fmt: skip
    x = np.stack(
        [(fields[v].astype(np.float64) - stats[v][0]) / (stats[v][1] + STANDARDISATION_EPS) for v in VARIABLES]
    )
    x = np.repeat(x[None].astype(np.float32), len(LEADS), axis=0)
    with torch.no_grad():
        y = model(torch.from_numpy(x), torch.tensor(LEADS), attention="literal").double().numpy()
    for i, name in enumerate(OUTPUTS):
        y[:, i] = y[:, i] * (stats[name][1] + STANDARDISATION_EPS) + stats[name][0]
    return y


def max_scaled_error(forecast: xr.Dataset, ref: np.ndarray, stats: dict[str, tuple[float, float]]) -> float:
    errors = [np.nanmax(np.abs(forecast[name].values - ref[:, i])) / stats[name][1] for i, name in enumerate(OUTPUTS)]
    return float(max(errors))


# -- round trip against the reference --------------------------------------------------------------


def test_round_trip_matches_reference(forecaster: PhysicalForecaster, small_model: ClimaX, datasets: tuple) -> None:
    analysis, static = datasets
    forecast = forecaster.forecast(analysis, static, LEADS)
    assert forecast["pm25"].dims == ("lead_time", "lat", "lon")
    assert list(forecast.data_vars) == list(OUTPUTS)
    ref = reference(small_model, analysis, static, dict(STANDARDISATION))
    assert max_scaled_error(forecast, ref, dict(STANDARDISATION)) < ROUND_TRIP_TOL
    # physical units, not standardised: pm25's mean sits near the training mean of 25, not near 0
    assert abs(float(forecast["pm25"].mean())) > 1.0


def test_round_trip_with_user_stats(tmp_path: Path, small_model: ClimaX, datasets: tuple) -> None:
    from climax_deploy.export import ExportOptions, Provenance, export_onnx

    user = {"pm25": (40.0, 30.0), "temp": (280.0, 10.0), "elevation": (500.0, 800.0)}
    path = tmp_path / "stats.onnx"
    written = export_onnx(small_model, path, ExportOptions(standardisation=user), Provenance(preset="small")).model
    assert written.standardisation.stats["pm25"] == (40.0, 30.0) and written.standardisation.stats["so2"] == (5.0, 5.0)
    stats = {**STANDARDISATION, **user}
    analysis, static = datasets
    with PhysicalForecaster(path, threads=2) as fc:
        forecast = fc.forecast(analysis, static, LEADS)
    assert forecast["pm25"].attrs["standardisation_mean_std"] == [40.0, 30.0]
    assert max_scaled_error(forecast, reference(small_model, analysis, static, stats), stats) < ROUND_TRIP_TOL
    # and the default constants would give a different answer: the stats really are applied
    assert max_scaled_error(forecast, reference(small_model, analysis, static, dict(STANDARDISATION)), stats) > 1e-2


# -- the dataset contract ----------------------------------------------------------------------------


def test_any_order_extra_variables_and_attributes(
    forecaster: PhysicalForecaster, small_onnx: Path, datasets: tuple
) -> None:
    analysis, static = datasets
    base = forecaster.forecast(analysis, static, [24.0])
    shuffled = analysis[list(reversed(list(analysis.data_vars)))].assign(extra=analysis["u"] * 0 + 7.0)
    again = forecaster.forecast(shuffled, static, [24.0])
    np.testing.assert_array_equal(base["o3"].values, again["o3"].values)
    attrs = again.attrs
    manifest = read_onnx_manifest(small_onnx)
    assert attrs["model_sha256"] == manifest.sha256 and attrs["model_file"] == small_onnx.name
    assert attrs["model_preset"] == "small" and attrs["climax_deploy_version"]
    assert attrs["standardisation"] == manifest.model.standardisation.source
    assert again["pm25"].attrs["units"] == "ug m-3" and "PM2.5" in again["pm25"].attrs["long_name"]
    assert again["lead_time"].attrs["units"] == "hours"
    assert "valid_time" in again.coords and "time" in again.coords


def test_lat2d_lon2d_from_coordinates_equal_explicit(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    lon2d, lat2d = np.meshgrid(analysis["lon"].values, analysis["lat"].values)
    explicit = analysis.assign(lat2d=(("lat", "lon"), lat2d, {"units": "degrees_north"}),
                               lon2d=(("lat", "lon"), lon2d, {"units": "degrees_east"}))  # fmt: skip
    a = forecaster.forecast(analysis, static, [12.0])
    b = forecaster.forecast(explicit, static, [12.0])
    np.testing.assert_array_equal(a["no2"].values, b["no2"].values)


def test_missing_variables_are_named(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    with pytest.raises(BadInputError, match=r"missing variable\(s\) so2, co .*analysis and static"):
        forecaster.forecast(analysis.drop_vars(["so2", "co"]), static, [12.0])
    with pytest.raises(BadInputError, match=r"missing variable\(s\) elevation, population"):
        forecaster.forecast(analysis, None, [12.0])


def test_other_grid_needs_explicit_regrid(forecaster: PhysicalForecaster) -> None:
    analysis, static = synthetic_datasets((40, 80), seed=1)
    with pytest.raises(BadInputError, match=r"40 x 80 .*expects 32 x 64.*regrid='bilinear'"):
        forecaster.forecast(analysis, static, [12.0])
    forecast = forecaster.forecast(analysis, static, [12.0], regrid="bilinear")
    assert forecast.sizes == {"lead_time": 1, "lat": 32, "lon": 64}
    assert forecast["lat"].values[0] == pytest.approx(55.0) and forecast["lon"].values[-1] == pytest.approx(136.0)
    assert "bilinear" in forecast.attrs["regrid"]
    # the same as regridding every field by hand first
    src = Grid(analysis["lat"].values, analysis["lon"].values)
    dst = src.spanning((32, 64))
    coords = {"lat": ("lat", dst.lat, {"units": "degrees_north"}), "lon": ("lon", dst.lon, {"units": "degrees_east"})}
    by_hand_a = xr.Dataset({v: (("lat", "lon"), regrid_bilinear(analysis[v].values[0], src, dst), analysis[v].attrs)
                            for v in analysis.data_vars},
                           coords=coords)  # fmt: skip
    by_hand_s = xr.Dataset({v: (("lat", "lon"), regrid_bilinear(static[v].values, src, dst), static[v].attrs)
                            for v in static.data_vars},
                           coords=coords)  # fmt: skip
    np.testing.assert_allclose(forecaster.forecast(by_hand_a, by_hand_s, [12.0])["pm10"].values, forecast["pm10"].values,
                               rtol=0, atol=1e-4)  # fmt: skip


def test_validity_mask_gives_nan_and_says_so(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    forecast = forecaster.forecast(analysis, static, [12.0, 24.0], mask="mask")
    outside = static["mask"].values < 0.5
    assert outside.any() and (~outside).any()
    for name in OUTPUTS:
        values = forecast[name].values
        assert np.isnan(values[:, outside]).all() and np.isfinite(values[:, ~outside]).all()
        assert "NaN" in forecast[name].attrs["comment"]
    assert forecast.attrs["validity_mask"] == "mask"
    with pytest.raises(BadInputError, match="mask variable 'nope'"):
        forecaster.forecast(analysis, static, [12.0], mask="nope")


def test_lead_times_are_batched_up_to_the_limit(small_onnx: Path, datasets: tuple) -> None:
    analysis, static = datasets
    calls: list[list[float]] = []
    with PhysicalForecaster(small_onnx, batch_size=3, threads=2) as fc:
        three = fc.forecast(analysis, static, LEADS, on_batch=lambda leads, s: calls.append(list(leads)))
    assert calls == [[12.0, 24.0, 48.0], [96.0]]
    with PhysicalForecaster(small_onnx, batch_size=1, threads=2) as fc:
        one = fc.forecast(analysis, static, LEADS)
    np.testing.assert_allclose(three["co"].values, one["co"].values, rtol=0, atol=1e-3)
    with PhysicalForecaster(small_onnx, threads=2) as fc, pytest.raises(BadInputError, match="distinct"):
        fc.forecast(analysis, static, [12, 12])


def test_several_analysis_times_are_refused(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    two = xr.concat([analysis, analysis.assign_coords(time=analysis["time"] + np.timedelta64(6, "h"))], dim="time")
    with pytest.raises(BadInputError, match="2 times.*isel"):
        forecaster.forecast(two, static, [12.0])


# -- building blocks ---------------------------------------------------------------------------------


class EchoRunner(Runner):
    """A manifest-less runner with a fixed batch: returns the input's output channels unchanged."""

    backend = "echo"

    def __init__(self, grid: tuple[int, int], batch: int) -> None:
        super().__init__(ModelSpec(VARIABLES, OUTPUTS, grid, BatchSpec.fixed(batch)))
        self.batches: list[list[float]] = []

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        self.batches.append(lead_times.tolist())
        return x[:, [VARIABLES.index(o) for o in OUTPUTS]]


def test_a_runner_without_manifest_fixed_batch_padded(datasets: tuple) -> None:
    """A loaded Runner works as well as a path: the author's constants, batches padded to the fixed size."""
    analysis, static = datasets
    runner = EchoRunner((32, 64), batch=3)
    calls: list[list[float]] = []
    with PhysicalForecaster(runner, batch_size=1) as fc:
        assert fc.batch_size == 3 and fc.standardisation.stats == STANDARDISATION
        forecast = fc.forecast(analysis, static, LEADS, on_batch=lambda leads, s: calls.append(list(leads)))
    assert runner.closed and calls == [[12.0, 24.0, 48.0], [96.0]]
    assert runner.batches == [[12.0, 24.0, 48.0], [96.0, 96.0, 96.0]]  # the last one padded
    for name in OUTPUTS:  # echoed, so standardise -> invert gives the analysis back
        np.testing.assert_allclose(forecast[name].values[-1], analysis[name].values[0], rtol=0, atol=1e-3)
    assert forecast.attrs["model_file"] == "" and "echo" in forecast.attrs["source"]
    with pytest.raises(BadInputError, match="apply to a model path"):
        PhysicalForecaster(EchoRunner((32, 64), 1), threads=2)


def test_demo_files_come_from_the_one_generator(datasets: tuple) -> None:
    """Standardised, the demo analysis is the parity harness's synthetic sample on the same terrain."""
    analysis, static = datasets
    a = analysis.isel(time=0)
    lon2d, lat2d = np.meshgrid(a["lon"].values, a["lat"].values)
    fields = {**{v: a[v].values for v in a.data_vars}, **{v: static[v].values for v in ("elevation", "population")},
              "lat2d": lat2d, "lon2d": lon2d}  # fmt: skip
    expected = synthetic_sample(VARIABLES, terrain((32, 64), seed=3), seed=3)
    np.testing.assert_allclose(Standardisation.defaults().apply(fields, VARIABLES), expected, rtol=0, atol=1e-5)
    assert a["lat"].values[0] > a["lat"].values[-1]  # north to south, as in the author's data
    assert a["temp"].attrs["units"] == "K" and static["elevation"].attrs["units"] == "m"


def test_stats_files_json_and_netcdf(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"pm25": [30, 20], "o3": {"mean": 50, "std": 10}}))
    assert read_stats_file(tmp_path / "s.json") == {"pm25": (30.0, 20.0), "o3": (50.0, 10.0)}
    ds = xr.Dataset({"mean": ("variable", [30.0, 1.0]), "std": ("variable", [20.0, 2.0])},
                    coords={"variable": ["pm25", "u"]})  # fmt: skip
    ds.to_netcdf(tmp_path / "s.nc")
    assert read_stats_file(tmp_path / "s.nc") == {"pm25": (30.0, 20.0), "u": (1.0, 2.0)}
    (tmp_path / "bad.json").write_text(json.dumps({"pm25": [30, -1]}))
    with pytest.raises(BadInputError, match="positive std"):
        read_stats_file(tmp_path / "bad.json")
    with pytest.raises(BadInputError, match="unknown variable.*pm1"):
        merge_stats({"pm1": (1.0, 1.0)}, VARIABLES)


def test_bilinear_is_exact_on_linear_fields_and_refuses_extrapolation() -> None:
    src = Grid(np.linspace(50, 10, 21), np.linspace(70, 140, 36))  # latitude descending, as in files
    dst = src.spanning((8, 13))
    lon2d, lat2d = np.meshgrid(src.lon, src.lat)
    field = 3.0 * lat2d - 0.5 * lon2d + 7.0
    out = regrid_bilinear(field, src, dst)
    dlon, dlat = np.meshgrid(dst.lon, dst.lat)
    np.testing.assert_allclose(out, 3.0 * dlat - 0.5 * dlon + 7.0, atol=1e-9)
    with pytest.raises(BadInputError, match="does not extrapolate"):
        regrid_bilinear(field, src, Grid(np.linspace(60, 10, 8), dst.lon))


def test_io_layer_is_torch_free() -> None:
    code = (
        "import sys, climax_deploy.runtime as r; assert 'xarray' not in sys.modules, 'runtime imported xarray'; "
        "import climax_deploy.forecast, climax_deploy.forecast.cli, climax_deploy.serving.load; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# -- units, orientation and masks of real files ------------------------------------------------------


def in_units(ds: xr.Dataset, names: tuple[str, ...] | list[str], convert: object, units: str) -> xr.Dataset:
    """The same physical state with `names` expressed in other `units` (convert: model units -> those)."""
    out = ds.copy()
    for name in names:
        out[name] = convert(ds[name]).astype(ds[name].dtype).assign_attrs({**ds[name].attrs, "units": units})  # type: ignore[operator]
    return out


def assert_same_forecast(a: xr.Dataset, b: xr.Dataset) -> None:
    for name in OUTPUTS:
        scale = STANDARDISATION[name][1]
        np.testing.assert_allclose(a[name].values / scale, b[name].values / scale, rtol=0, atol=1e-4, err_msg=name)
        assert a[name].attrs["units"] == b[name].attrs["units"] == "ug m-3"
    np.testing.assert_array_equal(a["lat"].values, b["lat"].values)
    np.testing.assert_array_equal(a["lon"].values, b["lon"].values)


def test_mg_degc_hpa_equal_ug_kelvin_pascal(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    other = in_units(analysis, OUTPUTS, lambda da: da / 1000.0, "mg m-3")
    other = in_units(other, ["temp"], lambda da: da - 273.15, "degC")
    other = in_units(other, ["psfc"], lambda da: da / 100.0, "hPa")
    assert_same_forecast(forecaster.forecast(other, static, [24.0]), forecaster.forecast(analysis, static, [24.0]))


def test_kg_per_m3_equals_ug_per_m3(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    other = in_units(analysis, OUTPUTS, lambda da: da * 1e-9, "kg m-3")
    static_km = in_units(static, ["elevation"], lambda da: da / 1000.0, "km")
    assert_same_forecast(forecaster.forecast(other, static_km, [24.0]), forecaster.forecast(analysis, static, [24.0]))


def test_latitude_ascending_equals_descending(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    flipped_a, flipped_s = analysis.isel(lat=slice(None, None, -1)), static.isel(lat=slice(None, None, -1))
    assert flipped_a["lat"].values[0] < flipped_a["lat"].values[-1]
    forecast = forecaster.forecast(flipped_a, flipped_s, [24.0], mask="mask")
    assert_same_forecast(forecast, forecaster.forecast(analysis, static, [24.0], mask="mask"))
    assert forecast["lat"].values[0] > forecast["lat"].values[-1]  # the model's orientation, north to south


@pytest.mark.parametrize(
    ("name", "units", "message"),
    [
        ("temp", None, r"variable 'temp' has no units attribute; expected units convertible to 'K'"),
        ("rh", None, r"variable 'rh' has no units attribute; expected units convertible to '%'"),
        ("pm25", "ppb", r"variable 'pm25' has units 'ppb'.*expected units convertible to 'ug m-3'"),
        ("o3", "kg kg-1", r"variable 'o3' has units 'kg kg-1'.*expected units convertible to 'ug m-3'"),
        ("psfc", "m s-1", r"variable 'psfc' has units 'm s-1'.*expected units convertible to 'Pa'"),
    ],
)
def test_missing_or_inconvertible_units_are_refused_by_name(
    forecaster: PhysicalForecaster, datasets: tuple, name: str, units: str | None, message: str
) -> None:
    analysis, static = datasets
    bad = analysis.copy(deep=True)
    bad[name].attrs = {k: v for k, v in analysis[name].attrs.items() if k != "units"}
    if units is not None:
        bad[name].attrs["units"] = units
    with pytest.raises(BadInputError, match=message):
        forecaster.forecast(bad, static, [12.0])


def test_dimensionless_without_units_is_assumed_with_a_warning(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    bare = static.copy(deep=True)
    bare["population"].attrs = {}
    with pytest.warns(UserWarning, match=r"'population' has no units attribute; taken as '1'"):
        forecast = forecaster.forecast(analysis, bare, [12.0])
    assert_same_forecast(forecast, forecaster.forecast(analysis, static, [12.0]))


def test_projected_or_unitless_coordinates_are_refused(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    projected = analysis.rename(lat="y", lon="x").assign_coords(
        y=("y", np.linspace(4e6, 0.0, 32), {"units": "m"}), x=("x", np.linspace(0.0, 6e6, 64), {"units": "m"})
    )
    with pytest.raises(BadInputError, match=r"coordinate 'y' has units 'm'.*projected.*degrees_north"):
        forecaster.forecast(projected, static, [12.0])
    unitless = analysis.copy(deep=True)
    unitless["lat"].attrs = {}
    with pytest.raises(BadInputError, match=r"coordinate 'lat' has no units.*degrees_north"):
        forecaster.forecast(unitless, static, [12.0])


def test_same_shape_other_grid_is_refused(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    shifted = analysis.assign_coords(lat=("lat", analysis["lat"].values + 2.0, analysis["lat"].attrs))
    with pytest.raises(BadInputError, match=r"analysis is on a 32 x 64 \(lat 57\.\.17.*the model expects 32 x 64 \(lat 55\.\.15.*--regrid bilinear"):
        forecaster.forecast(shifted, static, [12.0])


def test_manifest_records_the_model_grid(small_onnx: Path, forecaster: PhysicalForecaster, datasets: tuple) -> None:
    from climax_deploy.synthetic import coordinates

    model = read_onnx_manifest(small_onnx).model
    lat, lon = coordinates((32, 64))
    assert model.lat == tuple(lat) and model.lon == tuple(lon) and model.lat[0] > model.lat[-1]
    analysis, static = datasets
    rounded = analysis.assign_coords(lat=("lat", analysis["lat"].values.astype(np.float32) + 1e-4, {"units": "degrees_north"}))
    forecast = forecaster.forecast(rounded, static, [12.0])  # within tolerance: the manifest's coordinates come out
    assert forecast["lat"].values.tolist() == list(model.lat) and forecast["lon"].values.tolist() == list(model.lon)


def test_longitudes_0_360_are_wrapped_onto_the_model_grid() -> None:
    from climax_deploy.gridded.grid import orient

    model = Grid(np.linspace(10.0, -10.0, 5), np.linspace(-20.0, 40.0, 7))
    src = Grid(model.lat[::-1].copy(), np.sort(model.lon % 360.0))  # ascending latitude, 0..360 longitude
    field = np.arange(35.0).reshape(5, 7)
    oriented, rows, cols = orient(src, model)
    assert oriented.same_as(model)
    lon_of_field = src.lon[cols]
    np.testing.assert_allclose((lon_of_field + 180.0) % 360.0 - 180.0, model.lon)
    np.testing.assert_allclose(src.lat[rows], model.lat)
    assert field[rows][:, cols].shape == (5, 7)


def test_nan_where_masked_out_is_allowed(forecaster: PhysicalForecaster, datasets: tuple) -> None:
    analysis, static = datasets
    outside = static["mask"].values < 0.5

    def filled(value: float) -> xr.Dataset:
        out = analysis.copy()
        for name in ("pm25", "temp"):
            out[name] = analysis[name].where(~outside[None], value).assign_attrs(analysis[name].attrs)
        return out

    holes = forecaster.forecast(filled(np.nan), static, [12.0], mask="mask")
    garbage = forecaster.forecast(filled(1e6), static, [12.0], mask="mask")
    for name in OUTPUTS:
        assert np.isnan(holes[name].values[:, outside]).all() and np.isfinite(holes[name].values[:, ~outside]).all()
        np.testing.assert_array_equal(holes[name].values, garbage[name].values)
    with pytest.raises(BadInputError, match=r"pm25.*NaN.*--mask"):
        forecaster.forecast(filled(np.nan), static, [12.0])
