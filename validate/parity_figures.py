"""check-parity's pictures: per terrain, maps of the terrain signal; a summary of errors against bounds.

Terrain maps: one row per output variable; columns: the truth's terrain signal y(terrain) - y(flat),
the backend's (on the same colour scale), their difference (backend - truth, on its own scale centred
on zero: its colour bar says how large it is) and the terrain's elevation. Summary: per case, each
variable's error against the float64 truth beside PyTorch's own error in the same precision, and the
bound the backend must meet; the same for the terrain signal's fidelity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from climax_deploy.figures import (
    Drawn,
    FigureLayout,
    grid_figure,
    map_panel,
    map_shape,
    new_figure,
    save_png,
    style_axes,
)
from climax_deploy.validate.parity import ParityFields, ParityReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes

COLUMNS = ("truth", "backend", "difference", "elevation")  # the panel names' suffixes: "<variable>/<column>"
PANEL_IN = 2.4  # width of one map panel, inches


def backend_label(report: ParityReport) -> str:
    """'onnxruntime fp16' (the runtime's own name for itself and the graded precision)."""
    return f"{report.backend.get('backend', 'backend')} {report.precision}"


def terrain_figure(report: ParityReport, fields: ParityFields, terrain: str, path: Path) -> FigureLayout:
    """The terrain maps of one terrain (not the flat baseline) as a PNG at `path`."""
    truth, backend = fields.signal(terrain)  # [O, H, W] each
    title = f"terrain signal y({terrain}) - y(flat): float64 PyTorch truth vs {backend_label(report)}"
    grid = grid_figure(len(fields.variables), len(COLUMNS), PANEL_IN, map_shape(fields.lat, fields.lon), title)
    fig, axes, bars = grid.figure, grid.axes, grid.colour_bars
    lat, lon = fields.lat, fields.lon
    drawn: dict[str, Drawn] = {}
    for v, name in enumerate(fields.variables):
        top = float(max(np.abs(truth[v]).max(), np.abs(backend[v]).max()))
        diff = backend[v] - truth[v]
        size = float(np.abs(diff).max())
        share = f" ({100 * size / top:.2g}%)" if top > 0 else ""
        panels = {
            "truth": map_panel(fig, axes[v][0], bars[v][0], truth[v], lat, lon, cmap="RdBu_r", symmetric=True, vmax=top,
                               label=f"\u0394{name} (standardised)"),
            "backend": map_panel(fig, axes[v][1], bars[v][1], backend[v], lat, lon, cmap="RdBu_r", symmetric=True, vmax=top,
                                 label=f"\u0394{name} (standardised)"),
            "difference": map_panel(fig, axes[v][2], bars[v][2], diff, lat, lon, cmap="PuOr_r", symmetric=True,
                                    label="backend \u2212 truth"),
            "elevation": map_panel(fig, axes[v][3], bars[v][3], fields.elevation[terrain], lat, lon, cmap="terrain",
                                   label="elevation (m)"),
        }  # fmt: skip
        titles = {"truth": "truth", "backend": backend_label(report), "difference": f"|diff| <= {size:.2g}{share}",
                  "elevation": f"{terrain} elevation"}  # fmt: skip
        for column, panel in panels.items():
            style_axes(panel.axes, title=f"{name}: {titles[column]}")
            drawn[f"{name}/{column}"] = panel
        axes[v][0].set_ylabel("latitude (deg N)", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("longitude (deg E)", fontsize=7)
    return save_png(fig, path, drawn)


def _case_chart(ax: Axes, variables: Sequence[str], errors: Sequence[float], yardstick: Sequence[float],
                bounds: Sequence[float], passed: Sequence[bool], what: str) -> None:  # fmt: skip
    """Per variable on log axes: the backend's error (red where over its bound), PyTorch's, the bound."""
    x = np.arange(len(variables))
    tiny = 1e-12  # log axes: a zero error is drawn at this floor
    finite = [(i, b) for i, b in enumerate(bounds) if math.isfinite(b)]
    ax.scatter([i for i, _ in finite], [b for _, b in finite], marker="_", s=500, linewidths=2, color="black",
               label="bound")  # fmt: skip
    ax.scatter(x + 0.12, np.maximum(yardstick, tiny), marker="s", s=22, color="0.55", label="PyTorch, same precision")
    ax.scatter(x - 0.12, np.maximum(errors, tiny), marker="o", s=26, label="backend", zorder=3,
               color=["tab:blue" if ok else "tab:red" for ok in passed])  # fmt: skip
    ax.set_yscale("log")
    ax.set_xticks(x, list(variables))
    ax.set_xlim(-0.6, len(variables) - 0.4)
    ax.set_ylabel(what, fontsize=7)
    ax.tick_params(which="both", labelsize=6)
    ax.grid(axis="y", which="major", alpha=0.3)


def summary_figure(report: ParityReport, path: Path) -> FigureLayout:
    """Per case and per terrain signal: error vs PyTorch's own error per variable, against the bound."""
    cases = list(dict.fromkeys(r.case for r in report.rows))
    terrains = list(dict.fromkeys(s.terrain for s in report.signal))
    cols = max(len(cases), len(terrains), 1)
    fig = new_figure(3.4 * cols, 5.8 if terrains else 3.0)
    verdict = "PASS" if report.passed else "FAIL"
    fig.suptitle(f"{verdict}: {backend_label(report)} against the float64 truth; red: over the bound", fontsize=9)
    grid = fig.subplots(2 if terrains else 1, cols, squeeze=False)
    drawn: dict[str, Drawn] = {}
    for c, case in enumerate(cases):
        rows = [r for r in report.rows if r.case == case]
        ax = grid[0, c]
        _case_chart(ax, [r.variable for r in rows], [r.metrics.rel_l2 for r in rows], [r.torch_rel_l2 for r in rows],
                    [r.bound for r in rows], [r.passed for r in rows], "relative L2 vs truth")  # fmt: skip
        style_axes(ax, title=f"output: {case}")
        drawn[f"output/{case}"] = Drawn(ax)
    for t, terrain in enumerate(terrains):
        rows_s = [s for s in report.signal if s.terrain == terrain]
        ax = grid[1, t]
        _case_chart(ax, [s.variable for s in rows_s], [s.fidelity for s in rows_s],
                    [s.torch_fidelity for s in rows_s], [s.bound for s in rows_s], [s.passed for s in rows_s],
                    "fidelity |d - d_truth| / |d_truth|")  # fmt: skip
        style_axes(ax, title=f"terrain signal: {terrain} - flat")
        drawn[f"signal/{terrain}"] = Drawn(ax)
    for row in grid:
        for ax in row:
            if not ax.has_data():
                ax.set_axis_off()
    handles, labels = grid[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=7)
    return save_png(fig, path, drawn)
