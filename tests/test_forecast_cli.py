"""`climax-forecast` end to end on small synthetic analysis files that the tests write with xarray."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest

xr = pytest.importorskip("xarray", reason="the io extra (xarray) is not installed")

from cli_run import Completed, run_main  # tests/ is on sys.path under pytest

from climax_deploy.forecast import PhysicalForecaster, write_dataset
from climax_deploy.forecast.cli import main as forecast_main
from climax_deploy.forecast.synthetic import main as synthetic_main
from climax_deploy.forecast.synthetic import synthetic_datasets
from climax_deploy.schema import OUTPUTS

@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("analysis")
    analysis, static = synthetic_datasets((32, 64), seed=5)
    analysis.to_netcdf(folder / "analysis.nc")  # written by plain xarray, as a forecast centre would
    static.to_netcdf(folder / "static.nc")
    return folder / "analysis.nc", folder / "static.nc"


def forecast_cli(*args: str, cwd: Path) -> Completed:
    """climax-forecast ARGS, in-process (main(argv))."""
    return run_main("climax-forecast", forecast_main, args, cwd)


def test_analysis_file_to_forecast_file(small_onnx: Path, files: tuple[Path, Path], tmp_path: Path) -> None:
    analysis, static = files
    out = forecast_cli("--model", str(small_onnx), "--analysis", str(analysis), "--static", str(static),
                       "--lead-times", "12,24,48,96", "--batch-size", "2", "--threads", "2", "-o", "f.nc", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    # progress per lead time on stderr, batched two at a time; summary on stdout
    assert "lead time 12, 24 h" in out.stderr and "lead time 48, 96 h" in out.stderr and "(4/4)" in out.stderr
    assert "s per lead time" in out.stdout
    for name in OUTPUTS:
        assert any(line.startswith(name) for line in out.stdout.splitlines()), out.stdout
    with xr.open_dataset(tmp_path / "f.nc") as ds:
        assert dict(ds.sizes) == {"lead_time": 4, "lat": 32, "lon": 64}
        assert ds["lead_time"].values.tolist() == [12.0, 24.0, 48.0, 96.0]
        assert ds["o3"].attrs["units"] == "ug m-3" and ds.attrs["Conventions"].startswith("CF")
        assert ds.attrs["model_sha256"] and ds.attrs["climax_deploy_version"]
        from_file = ds["pm25"].values
    with PhysicalForecaster(small_onnx, threads=2) as fc:
        direct = fc.forecast(xr.open_dataset(analysis), xr.open_dataset(static), [12, 24, 48, 96])
    np.testing.assert_allclose(from_file, direct["pm25"].values, rtol=0, atol=1e-3)
    leftover = [p for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert not leftover, "temporary files left behind"  # the writers' lock file is not a temporary


def test_zarr_output_regrid_and_mask(small_onnx: Path, tmp_path: Path) -> None:
    analysis, static = synthetic_datasets((40, 80), seed=2)
    write_dataset(analysis, tmp_path / "a.zarr")
    write_dataset(static, tmp_path / "s.nc")
    args = [
        "--model",
        str(small_onnx),
        "--analysis",
        "a.zarr",
        "--static",
        "s.nc",
        "--lead-times",
        "24",
        "-o",
        "f.zarr",
    ]
    refused = forecast_cli(*args, cwd=tmp_path)
    assert refused.returncode == 2 and "40 x 80" in refused.stderr and "--regrid bilinear" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    out = forecast_cli(*args, "--regrid", "bilinear", "--mask", "mask", "-q", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and "validity mask 'mask'" in out.stdout
    ds = xr.open_zarr(tmp_path / "f.zarr", consolidated=False)
    assert dict(ds.sizes) == {"lead_time": 1, "lat": 32, "lon": 64}
    assert np.isnan(ds["co"].values).any() and ds.attrs["validity_mask"] == "mask"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lead-times", "12,abc"], "expected comma-separated hours"),
        (["-o", "f.csv"], "expected a NetCDF (.nc) or zarr (.zarr) path"),
        (["--mask", "nope"], "mask variable 'nope'"),
        (["--analysis", "missing.nc"], "does not exist"),
        (["--model", "missing.onnx"], "does not exist"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    small_onnx: Path, files: tuple[Path, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    analysis, static = files
    base = {"--model": str(small_onnx), "--analysis": str(analysis), "--static": str(static), "-o": "f.nc"}
    for flag, value in zip(extra[::2], extra[1::2]):
        base[flag] = value
    out = forecast_cli(*[x for kv in base.items() for x in kv], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_missing_static_fields_are_named(small_onnx: Path, files: tuple[Path, Path], tmp_path: Path) -> None:
    out = forecast_cli("--model", str(small_onnx), "--analysis", str(files[0]), "-o", "f.nc", cwd=tmp_path)
    assert out.returncode == 2 and "missing variable(s) elevation, population" in out.stderr


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    """The write is atomic: an error mid-write leaves neither a half file nor an earlier file changed."""
    analysis, _ = synthetic_datasets((8, 16), seed=0)
    target = tmp_path / "f.nc"
    target.write_bytes(b"earlier forecast")
    bad = analysis.assign(broken=(("lat", "lon"), np.array([[object()] * 16] * 8)))  # netCDF cannot encode it
    with pytest.raises(Exception):
        write_dataset(bad, target)
    assert target.read_bytes() == b"earlier forecast"
    assert [p.name for p in tmp_path.iterdir()] == ["f.nc"]


def test_demo_files_and_time_index(small_onnx: Path, tmp_path: Path) -> None:
    """`python -m climax_deploy.forecast.synthetic` writes files climax-forecast reads; --time-index picks a time."""
    demo = run_main("synthetic", synthetic_main, ["--grid", "32x64", "-o", "demo"], tmp_path)
    assert demo.returncode == 0, demo.stderr
    with xr.open_dataset(tmp_path / "demo" / "analysis.nc") as one:
        two = xr.concat([one, one.assign_coords(time=one["time"] + np.timedelta64(6, "h"))], dim="time")
        two.to_netcdf(tmp_path / "two.nc", encoding={"time": {"units": "hours since 2024-01-01"}})
    base = ["--model", str(small_onnx), "--static", "demo/static.nc", "--lead-times", "12", "-q"]
    refused = forecast_cli(*base, "--analysis", "two.nc", "-o", "f.nc", cwd=tmp_path)
    assert refused.returncode == 2 and "2 times" in refused.stderr and "--time-index" in refused.stderr
    out_of_range = forecast_cli(*base, "--analysis", "two.nc", "--time-index", "2", "-o", "f.nc", cwd=tmp_path)
    assert out_of_range.returncode == 2 and "time index 2 is out of range" in out_of_range.stderr
    out = forecast_cli(*base, "--analysis", "two.nc", "--time-index", "-1", "-o", "f.nc", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with xr.open_dataset(tmp_path / "f.nc") as ds:
        assert ds["time"].values == two["time"].values[-1]


# -- the same physical state in other units or orientation, through the CLI ------------------------------


def _other_units(analysis: xr.Dataset, static: xr.Dataset, case: str) -> tuple[xr.Dataset, xr.Dataset]:
    a, s = analysis.copy(deep=True), static.copy(deep=True)

    def convert(ds: xr.Dataset, name: str, factor: float, offset: float, units: str) -> None:
        ds[name] = (ds[name] * factor + offset).astype(np.float32).assign_attrs({**ds[name].attrs, "units": units})

    if case == "mg_degC_hPa":
        for name in OUTPUTS:
            convert(a, name, 1e-3, 0.0, "mg m-3")
        convert(a, "temp", 1.0, -273.15, "degC")
        convert(a, "psfc", 1e-2, 0.0, "hPa")
    elif case == "kg_m3":
        for name in OUTPUTS:
            convert(a, name, 1e-9, 0.0, "kg m-3")
    elif case == "lat_ascending":
        a, s = a.isel(lat=slice(None, None, -1)), s.isel(lat=slice(None, None, -1))
    return a, s


@pytest.fixture(scope="module")
def base_forecast(small_onnx: Path, files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    out = forecast_cli("--model", str(small_onnx), "--analysis", str(files[0]), "--static", str(files[1]),
                       "--lead-times", "24", "--mask", "mask", "--threads", "2", "-q", "-o", "f.nc", cwd=folder)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return folder / "f.nc"


@pytest.mark.parametrize("case", ["mg_degC_hPa", "kg_m3", "lat_ascending"])
def test_other_units_or_orientation_give_the_same_forecast(
    small_onnx: Path, files: tuple[Path, Path], base_forecast: Path, tmp_path: Path, case: str
) -> None:
    with xr.open_dataset(files[0]) as a0, xr.open_dataset(files[1]) as s0:
        analysis, static = _other_units(a0.load(), s0.load(), case)
    analysis.to_netcdf(tmp_path / "a.nc")
    static.to_netcdf(tmp_path / "s.nc")
    out = forecast_cli("--model", str(small_onnx), "--analysis", "a.nc", "--static", "s.nc", "--lead-times", "24",
                       "--mask", "mask", "--threads", "2", "-q", "-o", "f.nc", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    with xr.open_dataset(tmp_path / "f.nc") as got, xr.open_dataset(base_forecast) as want:
        np.testing.assert_array_equal(got["lat"].values, want["lat"].values)
        for name in OUTPUTS:
            np.testing.assert_allclose(got[name].values, want[name].values, rtol=1e-4, atol=1e-3, err_msg=name)
            assert got[name].attrs["units"] == "ug m-3"


def test_inconvertible_units_are_one_line(small_onnx: Path, files: tuple[Path, Path], tmp_path: Path) -> None:
    with xr.open_dataset(files[0]) as a0:
        analysis = a0.load()
    analysis["co"].attrs["units"] = "K"
    analysis.to_netcdf(tmp_path / "a.nc")
    out = forecast_cli("--model", str(small_onnx), "--analysis", "a.nc", "--static", str(files[1]), "-o", "f.nc",
                       cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "'co' has units 'K'" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    analysis["co"].attrs["units"] = "ug m-3"
    analysis["no2"].attrs["units"] = "ppb"  # a mixing ratio: refused unless --convert-mixing-ratios
    analysis.to_netcdf(tmp_path / "a.nc")
    out = forecast_cli("--model", str(small_onnx), "--analysis", "a.nc", "--static", str(files[1]), "-o", "f.nc",
                       cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "'no2' has units 'ppb', a volume mixing ratio of 'no2'" in out.stderr, out.stderr
    assert "--convert-mixing-ratios" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_forecast_file_is_cf_clean(base_forecast: Path) -> None:
    import netCDF4

    with netCDF4.Dataset(base_forecast) as nc:
        for name, axis in (("lat", "Y"), ("lon", "X"), ("valid_time", "T")):
            var = nc.variables[name]
            assert "_FillValue" not in var.ncattrs(), f"{name} has a _FillValue"
            assert var.getncattr("axis") == axis
        assert " since " in nc.variables["valid_time"].getncattr("units")  # CF 4.4: a time coordinate
        lead = nc.variables["lead_time"]  # a period (forecast_period), so no axis T (cfchecks: ERROR 4.4)
        assert lead.dtype in (np.float32, np.float64) and lead.getncattr("units") == "hours"
        assert "axis" not in lead.ncattrs()
        assert nc.variables["lat"].getncattr("standard_name") == "latitude"
        assert nc.variables["lon"].getncattr("standard_name") == "longitude"
        for name in OUTPUTS:
            assert nc.variables[name].getncattr("standard_name").startswith("mass_concentration_of_")
            assert nc.variables[name].getncattr("units") == "ug m-3"


def test_forecast_file_is_readable_by_others(small_onnx: Path, files: tuple[Path, Path], tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = forecast_cli("--model", str(small_onnx), "--analysis", str(files[0]), "--static", str(files[1]),
                           "--lead-times", "12", "-q", "-o", "f.nc", cwd=tmp_path)  # fmt: skip
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE((tmp_path / "f.nc").stat().st_mode) & 0o044 == 0o044


def test_load_test_with_nothing_listening_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from climax_deploy.serving.load import main as load_test_main

    out = run_main("climax-load-test", load_test_main, ["--url", f"127.0.0.1:{port}", "-n", "1", "--duration", "5"], tmp_path)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if not line.startswith("[climax-load-test]")]
    assert len(errors) == 1 and "Traceback" not in out.stderr and f"127.0.0.1:{port}" in errors[0], out.stderr
