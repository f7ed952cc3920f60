"""`climax-bench --scaling --plot FILE.png`: time and memory against patches, log-log, per backend.

Drawn from run_scaling's results (a dict, as --json writes it), so a saved run can be drawn again:
per backend, the series' medians joined by a line, the least-squares fit whose slope is the growth
exponent (dashed, its value in the legend), and the full preset's row as an open marker; on the
time panel the FLOP floor (matmul FLOPs over the machine's measured rate) in black.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from climax_deploy.bench.scaling import LABELS, growth_exponent, run_memory_gb
from climax_deploy.errors import BadInputError
from climax_deploy.figures import Drawn, FigureLayout, new_figure, save_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PANELS = ("time", "memory")
COLOURS = {"torch-literal": "tab:red", "torch-fused": "tab:orange", "onnxruntime": "tab:blue", "tensorrt": "tab:green"}


def fitted_line(patches: Sequence[float], values: Sequence[float], slope: float) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares line of slope `slope` through the points in log-log, over their span of patches."""
    x, y = np.log(np.asarray(patches, dtype=float)), np.log(np.asarray(values, dtype=float))
    intercept = float(np.mean(y) - slope * np.mean(x))
    span = np.linspace(x.min(), x.max(), 20)
    return np.exp(span), np.exp(intercept + slope * span)


def _exponent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _measured(row: dict[str, Any], backend: str) -> dict[str, Any] | None:
    return next((r for r in row["results"] if r["backend"] == backend and "median_s" in r), None)


def _draw_backends(ax: Axes, report: dict[str, Any], what: str, value: Callable[[dict[str, Any]], float]) -> None:
    """One backend's measurements of `what` ('time' or 'memory') over the series, its fit, the full preset."""
    series = [row for row in report["rows"] if row["role"] == "series"]
    full = [row for row in report["rows"] if row["role"] != "series"]
    for backend in (b for b in LABELS if b in report["exponents"]):
        colour = COLOURS.get(backend, "tab:gray")
        points = [(row["patches"], value(r)) for row in series if (r := _measured(row, backend)) is not None]
        points = [(n, v) for n, v in points if v > 0]
        slope = report["exponents"][backend][what]
        if points:
            ax.plot([n for n, _ in points], [v for _, v in points], "o-", color=colour, lw=1.2, ms=4,
                    label=f"{LABELS[backend]}: ~ N^{_exponent(slope)}")  # fmt: skip
        if slope is not None and len(points) >= 2:
            x, y = fitted_line([n for n, _ in points], [v for _, v in points], slope)
            ax.plot(x, y, "--", color=colour, lw=0.8, alpha=0.7)
        for row in full:
            r = _measured(row, backend)
            if r is not None and value(r) > 0:
                ax.plot([row["patches"]], [value(r)], "o", mfc="none", color=colour, ms=6)


def plot_scaling(report: dict[str, Any], path: str | Path) -> FigureLayout:
    """Time and memory against patches on log-log axes, per backend, with exponents and the FLOP floor."""
    rows = report.get("rows") or []
    if not any(_measured(row, b) for row in rows for b in report.get("exponents", {})):
        raise BadInputError("the scaling results hold no measurement to plot (every backend failed or was skipped)")
    fig = new_figure(10.0, 4.2)
    series = report["series"]
    fig.suptitle(f"{report['machine']}; series: width {series['embed_dim']}, depth {series['depth']}, "
                 f"{series['num_heads']} heads; B = {report['batch']}, median of {report['runs']} runs", fontsize=8)  # fmt: skip
    time_ax, memory_ax = fig.subplots(1, 2)
    _draw_backends(time_ax, report, "time", lambda r: float(r["median_s"]))
    _draw_backends(memory_ax, report, "memory", run_memory_gb)
    floors = [(row["patches"], row["floor_s"]) for row in rows if row["role"] == "series" and row.get("floor_s")]
    if floors:
        slope = growth_exponent([n for n, _ in floors], [f for _, f in floors])
        time_ax.plot(*zip(*floors, strict=True), "s-.", color="black", lw=1, ms=3,
                     label=f"FLOP floor ({report['matmul_rate']['flops_per_s'] / 1e9:.0f} GFLOP/s): "
                           f"~ N^{_exponent(slope)}")  # fmt: skip
    full_floor = [(row["patches"], row["floor_s"]) for row in rows if row["role"] != "series" and row.get("floor_s")]
    if full_floor:
        time_ax.plot(*zip(*full_floor, strict=True), "s", mfc="none", color="black", ms=5)
    for ax, ylabel in ((time_ax, "median time per predict (s)"),
                       (memory_ax, "run memory: peak RSS less the backend's import (GB)")):  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("patches N", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", title="lines: the series; dashed: fit; open: full preset"
                  if any(row["role"] != "series" for row in rows) else "lines: the series; dashed: fit",
                  title_fontsize=6)  # fmt: skip
    time_ax.set_title("time", fontsize=9)
    memory_ax.set_title("memory", fontsize=9)
    return save_png(fig, path, {"time": Drawn(time_ax), "memory": Drawn(memory_ax)})
