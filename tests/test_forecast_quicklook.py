"""climax-forecast --quicklook: maps per pollutant (rows) and lead time (columns), units, masked cells grey."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

xr = pytest.importorskip("xarray", reason="the io extra (xarray) is not installed")

from cli_run import run_main  # tests/ is on sys.path under pytest
from picture_checks import assert_panels_drawn, panel_pixels
from PIL import Image

from climax_deploy import figures
from climax_deploy.forecast.cli import main as forecast_main
from climax_deploy.forecast.quicklook import quicklook
from climax_deploy.forecast.synthetic import synthetic_datasets
from climax_deploy.optional import OptionalDependency
from climax_deploy.schema import OUTPUTS

GREY = round(float(figures.MASKED_COLOUR) * 255)


def forecast_dataset(masked: bool) -> xr.Dataset:
    """Two pollutants at three lead times on 16 x 32 cells, the western quarter NaN where `masked`."""
    lat, lon = np.linspace(50.0, 20.0, 16), np.linspace(80.0, 130.0, 32)
    rng = np.random.default_rng(0)
    data = {}
    for name, units in (("pm25", "ug m-3"), ("co", "mg m-3")):
        values = rng.gamma(2.0, 10.0, (3, 16, 32))
        if masked:
            values[:, :, :8] = np.nan
        data[name] = (("lead_time", "lat", "lon"), values, {"units": units})
    return xr.Dataset(data, coords={"lead_time": [12.0, 24.0, 48.0], "lat": lat, "lon": lon},
                      attrs={"comment": "cells outside the validity mask 'mask' are NaN"} if masked else {})  # fmt: skip


def test_quicklook_layout_units_and_masked_cells(tmp_path: Path) -> None:
    layout = quicklook(forecast_dataset(masked=True), tmp_path / "q.png")
    assert_panels_drawn(layout, [f"{v}/{h}h" for v in ("pm25", "co") for h in (12, 24, 48)])
    assert layout.panel("pm25/48h").label == "pm25 (ug m-3)" and layout.panel("co/12h").label == "co (mg m-3)"
    assert layout.panel("co/12h").vmax == layout.panel("co/48h").vmax  # one colour scale per pollutant
    pixels = panel_pixels(rgb(layout.path), layout.panel("co/24h"))
    west, east = pixels[:, : pixels.shape[1] // 4 - 3], pixels[:, pixels.shape[1] // 4 + 3 :]
    assert np.all(west == GREY), "the masked quarter is not all grey"
    assert not np.any(np.all(east == GREY, axis=-1)), "a grey cell where there are values"
    unmasked = quicklook(forecast_dataset(masked=False), tmp_path / "u.png")
    assert not np.any(np.all(panel_pixels(rgb(unmasked.path), unmasked.panel("co/24h")) == GREY, axis=-1))


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_cli_quicklook_of_a_masked_forecast(small_onnx: Path, tmp_path: Path) -> None:
    analysis, static = synthetic_datasets((32, 64), seed=5)
    analysis.to_netcdf(tmp_path / "a.nc")
    static.to_netcdf(tmp_path / "s.nc")
    args = ["--model", str(small_onnx), "--analysis", "a.nc", "--static", "s.nc", "--lead-times", "12,48",
            "--mask", "mask", "-o", "f.nc", "--quicklook", "q.png", "-q"]  # fmt: skip
    out = run_main("climax-forecast", forecast_main, args, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "wrote q.png" in out.stdout
    assert (tmp_path / "q.png").read_bytes().startswith(figures.PNG_SIGNATURE)
    with xr.open_dataset(tmp_path / "f.nc") as forecast:  # the same picture, with its layout, from the file
        layout = quicklook(forecast, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "q.png").read_bytes()
    assert_panels_drawn(layout, [f"{v}/{h}h" for v in OUTPUTS for h in (12, 48)])


@pytest.mark.parametrize(
    ("quicklook_arg", "absent", "message"),
    [
        ("q.jpg", False, "--quicklook writes a PNG: expected a FILE.png, got q.jpg"),
        ("q.png", True, "pip install 'climax-deploy[plot]'"),
    ],
)
def test_cli_quicklook_mistakes_are_one_line_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quicklook_arg: str, absent: bool, message: str
) -> None:
    if absent:
        monkeypatch.setattr(figures, "MATPLOTLIB", OptionalDependency("no_such_module_here",
                            "pip install 'climax-deploy[plot]'", "pictures"))  # fmt: skip
    (tmp_path / "m.onnx").write_bytes(b"not read: the check comes first")
    args = ["--model", "m.onnx", "--analysis", "a.nc", "-o", "f.nc", "--quicklook", quicklook_arg]
    out = run_main("climax-forecast", forecast_main, args, tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
