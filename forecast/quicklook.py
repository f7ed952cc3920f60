"""`climax-forecast --quicklook FILE.png`: maps of a forecast, one row per pollutant, one column per lead time.

Each pollutant's row shares one colour scale (its minimum and maximum over all lead times), one colour
bar at the row's end labelled with the variable's units; cells without a value (outside a validity
mask) are grey (climax_deploy.figures.MASKED_COLOUR).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.figures import Drawn, FigureLayout, grid_figure, map_panel, map_shape, save_png

if TYPE_CHECKING:
    import xarray as xr

PANEL_IN = 2.3  # width of one map, inches
DIMS = ("lead_time", "lat", "lon")


def quicklook(forecast: xr.Dataset, path: str | Path) -> FigureLayout:
    """The forecast (dims lead_time, lat, lon; as climax-forecast writes it) as a PNG grid of maps at `path`.

    Panels are named '<pollutant>/<lead time>h', e.g. 'pm25/24h'.
    """
    names = [str(n) for n, da in forecast.data_vars.items() if tuple(da.dims) == DIMS]
    if not names:
        raise BadInputError(f"a quicklook draws variables with dims {DIMS}; the forecast has none")
    lat = np.asarray(forecast["lat"].values, dtype=np.float64)
    lon = np.asarray(forecast["lon"].values, dtype=np.float64)
    leads = [float(h) for h in forecast["lead_time"].values]
    masked = any(bool(np.isnan(forecast[n].values).any()) for n in names)
    title = f"{forecast.attrs.get('title', 'forecast')}: {forecast.attrs.get('source', '')}".rstrip(": ")
    if masked:
        title += f"\ngrey cells: masked ({forecast.attrs.get('comment', 'no value')})"
    grid = grid_figure(len(names), len(leads), PANEL_IN, map_shape(lat, lon), title, bar_per_row=True)
    drawn: dict[str, Drawn] = {}
    for r, name in enumerate(names):
        values = np.asarray(forecast[name].values, dtype=np.float64)  # [L, H, W]
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        units = forecast[name].attrs.get("units", "")
        label = f"{name} ({units})" if units else name
        for c, hours in enumerate(leads):
            ax = grid.axes[r][c]
            drawn[f"{name}/{hours:g}h"] = map_panel(grid.figure, ax, grid.colour_bars[r][c], values[c], lat, lon,
                                                    cmap="viridis", label=label, vmin=lo, vmax=hi)  # fmt: skip
            ax.set_title(f"{name}, +{hours:g} h", fontsize=7)
        grid.axes[r][0].set_ylabel("latitude (deg N)", fontsize=7)
    for ax in grid.axes[-1]:
        ax.set_xlabel("longitude (deg E)", fontsize=7)
    return save_png(grid.figure, path, drawn)
