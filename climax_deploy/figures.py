"""Pictures: matplotlib figures (the `plot` extra) drawn off-screen and written atomically as PNG.

    fig = new_figure(width_in, height_in)              # a Figure on the Agg canvas; pyplot is never used
    ax = fig.add_subplot(...); ...                     # (or grid_figure: maps on a fixed grid, fast to lay out)
    layout = save_png(fig, "out.png", {"pm25/difference": Drawn(ax, vmin, vmax)})

`save_png` returns where each named panel lies in the PNG (pixel boxes) and its colour scale, so a
caller or a test can check a picture without reading matplotlib's state. No network, no map data:
the maps are plain lat/lon axes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from climax_deploy.artifacts import write_bytes_atomic
from climax_deploy.errors import BadInputError
from climax_deploy.optional import MATPLOTLIB

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Coordinates = Union[Sequence[float], np.ndarray]  # cell centres in degrees, 1-D

DPI = 90
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MASKED_COLOUR = "0.75"  # grey: cells without a value (outside a validity mask)


@dataclass(frozen=True)
class Drawn:
    """A panel as drawn: its axes and, for a map, the limits and label of its colour scale."""

    axes: Axes
    vmin: float | None = None
    vmax: float | None = None
    label: str | None = None


@dataclass(frozen=True)
class Panel:
    """Where a panel's plotting area lies in the PNG, and its colour scale (None for a chart)."""

    name: str
    box: tuple[int, int, int, int]  # left, top, right, bottom in pixels, origin top left
    vmin: float | None = None
    vmax: float | None = None
    label: str | None = None  # the colour bar's label, units included

    @property
    def value_range(self) -> float:
        """vmax - vmin of the colour scale (0 for a chart)."""
        return 0.0 if self.vmin is None or self.vmax is None else self.vmax - self.vmin


@dataclass(frozen=True)
class FigureLayout:
    """A written PNG: its path, size (width, height in pixels) and named panels."""

    path: Path
    size: tuple[int, int]
    panels: tuple[Panel, ...]

    def panel(self, name: str) -> Panel:
        found = [p for p in self.panels if p.name == name]
        if not found:
            raise KeyError(f"no panel {name!r}; panels: {', '.join(p.name for p in self.panels)}")
        return found[0]


def check_png_path(path: str | Path, option: str) -> Path:
    """A picture's output path must end in .png (the one format written)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise BadInputError(f"{option} writes a PNG: expected a FILE.png, got {path}")
    return path


def require_matplotlib() -> None:
    """MissingBackendError with the install hint when matplotlib is absent (before any long work)."""
    MATPLOTLIB.load()


def new_figure(width_in: float, height_in: float, constrained: bool = True) -> Figure:
    """A figure on the Agg canvas (constrained layout unless told); no pyplot state, safe to make many."""
    MATPLOTLIB.load()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


@dataclass(frozen=True)
class MapGrid:
    """A figure of rows x cols map panels, placed in fixed inches, each with a colour bar to its right
    (or, with one bar per row, the last column only: None elsewhere)."""

    figure: Figure
    axes: list[list[Axes]]  # [row][col]
    colour_bars: list[list[Axes | None]]  # [row][col]


# Fixed margins (inches) of a MapGrid: room for tick labels, colour-bar labels and panel titles.
LEFT_IN, RIGHT_IN, TOP_IN, BOTTOM_IN = 0.75, 0.15, 0.6, 0.5
BAR_GAP_IN, BAR_IN, AFTER_BAR_IN, COL_GAP_IN, ROW_GAP_IN = 0.06, 0.1, 0.95, 0.45, 0.5


def grid_figure(
    rows: int, cols: int, panel_width_in: float, shape: float, title: str, bar_per_row: bool = False
) -> MapGrid:
    """rows x cols map panels of the given width and height/width `shape` (map_shape) under `title`, laid
    out by hand: constrained layout over dozens of axes costs seconds, a fixed grid nothing.
    bar_per_row: one colour bar per row, right of its last panel (the row shares one colour scale)."""
    panel_h = panel_width_in * shape
    with_bar = panel_width_in + BAR_GAP_IN + BAR_IN + AFTER_BAR_IN
    step_x = panel_width_in + COL_GAP_IN if bar_per_row else with_bar
    step_y = panel_h + ROW_GAP_IN
    width = LEFT_IN + (cols - 1) * step_x + with_bar - AFTER_BAR_IN + RIGHT_IN + 0.45  # + the last bar's labels
    height = TOP_IN + rows * step_y - ROW_GAP_IN + BOTTOM_IN + 0.15 * title.count("\n")
    top = TOP_IN + 0.15 * title.count("\n")
    fig = new_figure(width, height, constrained=False)
    fig.suptitle(title, y=1.0 - 0.08 / height, va="top", fontsize=9)
    axes: list[list[Axes]] = []
    bars: list[list[Axes | None]] = []
    for r in range(rows):
        bottom = height - top - r * step_y - panel_h
        row_axes: list[Axes] = []
        row_bars: list[Axes | None] = []
        for c in range(cols):
            left = LEFT_IN + c * step_x
            row_axes.append(fig.add_axes((left / width, bottom / height, panel_width_in / width, panel_h / height)))
            if bar_per_row and c < cols - 1:
                row_bars.append(None)
                continue
            bar_left = left + panel_width_in + BAR_GAP_IN
            row_bars.append(fig.add_axes((bar_left / width, bottom / height, BAR_IN / width, panel_h / height)))
        axes.append(row_axes)
        bars.append(row_bars)
    return MapGrid(fig, axes, bars)


def save_png(fig: Figure, path: str | Path, panels: Mapping[str, Drawn]) -> FigureLayout:
    """Render `fig`, write it atomically as PNG at `path`, and say where each panel lies in it."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # draws: the boxes below are final
    data = buffer.getvalue()
    width, height = (int(round(v)) for v in fig.canvas.get_width_height())
    boxes = []
    for name, drawn in panels.items():
        b = drawn.axes.bbox  # display pixels, origin bottom left
        boxes.append(Panel(name, (int(math.ceil(b.x0)), int(math.ceil(height - b.y1)), int(b.x1), int(height - b.y0)),
                           drawn.vmin, drawn.vmax, drawn.label))  # fmt: skip
    write_bytes_atomic(path, data)
    return FigureLayout(path, (width, height), tuple(boxes))


def lon_stretch(lat: Coordinates) -> float:
    """Axes aspect of a lat/lon map: a degree of longitude is cos(latitude) of a degree of latitude."""
    return 1.0 / max(math.cos(math.radians(float(np.mean(lat)))), 0.1)


def map_shape(lat: Coordinates, lon: Coordinates) -> float:
    """Height / width of a map of these cell centres, as drawn by map_panel."""
    lat_span, lon_span = float(np.ptp(lat)) or 1.0, float(np.ptp(lon)) or 1.0
    return lon_stretch(lat) * lat_span / lon_span


def map_panel(
    fig: Figure,
    ax: Axes,
    bar_axes: Axes | None,
    field: np.ndarray,
    lat: Coordinates,
    lon: Coordinates,
    *,
    cmap: str,
    label: str,
    vmin: float | None = None,
    vmax: float | None = None,
    symmetric: bool = False,
) -> Drawn:
    """One field [H, W] on lat/lon axes (cell centres, any row order), its labelled colour bar in `bar_axes`
    (None: no bar, as where a row of panels shares one).

    NaN cells are masked and shown grey. symmetric: a colour scale centred on zero (|field|'s max
    unless vmax is given), for signed fields such as differences.
    """
    values = np.ma.masked_invalid(np.asarray(field, dtype=np.float64))
    finite = values.compressed()
    if symmetric:
        top = vmax if vmax is not None else (float(np.abs(finite).max()) if finite.size else 0.0)
        top = top if top > 0 else 1e-30  # an all-zero field: a flat scale around zero
        vmin, vmax = -top, top
    else:
        lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
        hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        vmin, vmax = lo, (hi if hi > lo else lo + max(abs(lo), 1.0) * 1e-9)
    import matplotlib as mpl

    colours = mpl.colormaps[cmap].with_extremes(bad=MASKED_COLOUR)
    mesh = ax.pcolormesh(np.asarray(lon), np.asarray(lat), values, cmap=colours, vmin=vmin, vmax=vmax,
                         shading="nearest", rasterized=True)  # fmt: skip
    ax.tick_params(labelsize=6)
    if bar_axes is not None:
        bar = fig.colorbar(mesh, cax=bar_axes)
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=6)
        bar.formatter.set_powerlimits((-2, 3))  # type: ignore[attr-defined]
        bar.ax.yaxis.get_offset_text().set_fontsize(6)
    return Drawn(ax, vmin, vmax, label)


def style_axes(ax: Axes, **labels: Any) -> None:
    """Small fonts for dense grids of panels; labels as set_xlabel/set_ylabel/set_title keywords."""
    ax.tick_params(labelsize=6)
    for key, text in labels.items():
        getattr(ax, f"set_{key}")(text, fontsize=7)
