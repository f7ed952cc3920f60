"""Physically implausible inputs are refused by name, and UDUNITS spellings convert right (issue 18, deliverable 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

xr = pytest.importorskip("xarray", reason="the io extra (xarray) is not installed")

from cli_run import run_main  # tests/ is on sys.path under pytest

from climax_deploy.errors import BadInputError
from climax_deploy.forecast import PhysicalForecaster
from climax_deploy.forecast.cli import main as forecast_main
from climax_deploy.forecast.synthetic import synthetic_datasets
from climax_deploy.gridded.units import to_model_units
from climax_deploy.inputs import check_plausible
from climax_deploy.schema import MAX_LEAD_TIME_HOURS, PLAUSIBLE_RANGES, UNITS, VARIABLES
from climax_deploy.standardisation import check_stats, read_json_stats


@pytest.fixture(scope="module")
def datasets() -> tuple[xr.Dataset, xr.Dataset]:
    return synthetic_datasets((32, 64), seed=5)


@pytest.fixture(scope="module")
def forecaster(small_onnx: Path) -> PhysicalForecaster:
    with PhysicalForecaster(small_onnx, threads=1) as fc:
        yield fc


def test_every_input_variable_has_a_plausible_range_beside_its_units() -> None:
    assert set(PLAUSIBLE_RANGES) == set(UNITS) == set(VARIABLES)
    assert PLAUSIBLE_RANGES["temp"] == (150.0, 350.0) and PLAUSIBLE_RANGES["psfc"] == (30_000.0, 110_000.0)
    assert all(lo < hi for lo, hi in PLAUSIBLE_RANGES.values())


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        ("temp", lambda v: v * 1000, "'temp' 2048 of 2048 cells outside 150..350 K"),
        ("pm25", lambda v: v - 1000, "'pm25' 2048 of 2048 cells outside 0..100000 ug m-3"),
        ("rh", lambda v: v * 100, "'rh'"),  # rh in % labelled 1 (a fraction) becomes 0..10,000 %
        ("u", lambda v: v + 1e30, "'u' 2048 of 2048 cells outside -150..150 m s-1"),
        ("psfc", lambda v: v / 1000, "'psfc'"),  # kPa labelled Pa
    ],
)
def test_implausible_inputs_are_refused_by_name(
    forecaster: PhysicalForecaster, datasets: tuple[xr.Dataset, xr.Dataset], name: str, edit: object, expected: str
) -> None:
    analysis, static = (ds.copy(deep=True) for ds in datasets)
    analysis[name] = edit(analysis[name]).assign_attrs(analysis[name].attrs)  # type: ignore[operator]
    with pytest.raises(BadInputError, match="implausible") as caught:
        forecaster.prepare(analysis, static)
    message = str(caught.value)
    assert expected in message and "--allow-implausible" in message and "\n" not in message
    PhysicalForecaster(forecaster.runner, allow_implausible=True).prepare(analysis, static)  # the research override


def test_only_cells_inside_the_mask_are_judged() -> None:
    temp = np.full((2, 3), 280.0)
    temp[0, 0] = 5.0
    valid = np.ones((2, 3), bool)
    with pytest.raises(BadInputError, match=r"'temp' 1 of 6 cells outside 150\.\.350 K \(min 5, max 5\)"):
        check_plausible({"temp": temp}, valid)
    valid[0, 0] = False
    check_plausible({"temp": temp}, valid)


def test_far_lead_times_are_refused(small_onnx: Path, datasets: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    datasets[0].to_netcdf(tmp_path / "a.nc")
    datasets[1].to_netcdf(tmp_path / "s.nc")
    common = ["--model", str(small_onnx), "--analysis", "a.nc", "--static", "s.nc", "--threads", "1", "-q"]
    out = run_main("climax-forecast", forecast_main, [*common, "--lead-times", "12,1e30", "-o", "f.nc"], tmp_path)
    assert out.returncode == 2 and f"exceed the plausible maximum {MAX_LEAD_TIME_HOURS:g} h" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and not (tmp_path / "f.nc").exists()
    out = run_main("climax-forecast", forecast_main,
                   [*common, "--lead-times", "300", "--allow-implausible", "-o", "f.nc"], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_implausible_file_through_the_cli_is_one_line(
    small_onnx: Path, datasets: tuple[xr.Dataset, xr.Dataset], tmp_path: Path
) -> None:
    analysis = datasets[0].copy(deep=True)
    analysis["rh"] = (analysis["rh"] * 100).assign_attrs(units="1")  # rh in % labelled a fraction
    analysis.to_netcdf(tmp_path / "a.nc")
    datasets[1].to_netcdf(tmp_path / "s.nc")
    out = run_main("climax-forecast", forecast_main, ["--model", str(small_onnx), "--analysis", "a.nc", "--static",
                   "s.nc", "--lead-times", "24", "-q", "-o", "f.nc"], tmp_path)  # fmt: skip
    assert out.returncode == 2 and "'rh'" in out.stderr and "-1..110 %" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1


@pytest.mark.parametrize("spelling", ["deg C", "degrees C", "degree C", "degree_C", "degrees_C", "degC"])
def test_udunits_celsius_spellings_convert(spelling: str) -> None:
    got = to_model_units(np.array([20.0]), {"units": spelling}, "temp", "K", "analysis")
    np.testing.assert_allclose(got, [293.15])


def test_udunits_kelvin_fahrenheit_and_scaled_units_convert() -> None:
    np.testing.assert_allclose(to_model_units(np.array([280.0]), {"units": "deg K"}, "temp", "K", "a"), [280.0])
    np.testing.assert_allclose(to_model_units(np.array([68.0]), {"units": "degF"}, "temp", "K", "a"), [293.15])
    np.testing.assert_allclose(to_model_units(np.array([68.0]), {"units": "degrees F"}, "temp", "K", "a"), [293.15])
    got = to_model_units(np.array([25.0]), {"units": "1e-9 kg m-3"}, "pm25", "ug m-3", "a")
    np.testing.assert_allclose(got, [25.0])
    np.testing.assert_allclose(to_model_units(np.array([1013.0]), {"units": "100 Pa"}, "psfc", "Pa", "a"), [101300.0])
    with pytest.raises(BadInputError, match="scale factor must be a positive finite number"):
        to_model_units(np.array([1.0]), {"units": "0 kg m-3"}, "pm25", "ug m-3", "a")


def test_stats_that_would_overflow_the_forecast_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"'pm25' has \(mean, std\) \(25, 1e\+308\)"):
        check_stats({"pm25": [25.0, 1e308]}, "stats.json")
    with pytest.raises(BadInputError, match="'extra'"):
        check_stats({"extra": [1e35, 1.0]}, "stats.json")
    stats = tmp_path / "stats.json"
    for bad in ("[25.0, 0.0]", "[25.0, -3.0]", "[25.0, Infinity]"):
        stats.write_text(f'{{"pm25": {bad}}}')
        with pytest.raises(BadInputError, match="stats.json"):
            read_json_stats(stats)
    stats.write_text(json.dumps({"pm25": [25.0, 15.0], "temp": [0.0, 1.0]}))
    assert read_json_stats(stats)["temp"] == (0.0, 1.0)


def test_every_runner_guards_against_garbage_in_standardised_x(small_onnx) -> None:
    """x = 1e30 or a field x 1000 through the library (or a served request) is one line, not an
    all-inf forecast; random standardised fields pass; the research override lets it through."""
    import numpy as np
    import pytest

    from climax_deploy.errors import BadInputError
    from climax_deploy.runtime import load

    with load(small_onnx, providers="cpu") as runner:
        x = np.random.default_rng(0).standard_normal((1, 15, 32, 64)).astype(np.float32)
        runner.predict(x, np.array([24.0], dtype=np.float32))
        bad = x.copy()
        bad[0, 2, :4] = 1e30  # temperature
        with pytest.raises(BadInputError, match=r"implausible standardised x: 'temp' 256 cells outside"):
            runner.predict(bad, np.array([24.0], dtype=np.float32))
        with pytest.raises(BadInputError, match=r"lead times \[1e\+30\] h exceed the plausible maximum"):
            runner.predict(x, np.array([1e30], dtype=np.float32))
        runner.allow_implausible = True
        assert runner.predict(x, np.array([300.0], dtype=np.float32)).shape == (1, 6, 32, 64)
