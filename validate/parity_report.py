"""`check-parity --report DIR`: the parity maps and summary as PNG, with index.html holding the tables.

    DIR/index.html      verdict, backend, both tables, the pictures below
    DIR/summary.png     error vs PyTorch's own error per variable, against the bound
    DIR/<terrain>.png   per terrain (not the flat baseline): the terrain-signal maps
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from climax_deploy.artifacts import write_bytes_atomic
from climax_deploy.errors import BadInputError
from climax_deploy.figures import FigureLayout
from climax_deploy.validate.metrics import describe_tolerances
from climax_deploy.validate.parity import ParityReport
from climax_deploy.validate.parity_figures import backend_label, summary_figure, terrain_figure

SUMMARY = "summary.png"
INDEX = "index.html"


def terrain_file(terrain: str) -> str:
    """A terrain's PNG name: its label with anything but letters, digits, '-' and '_' replaced (a DEM
    named like the summary gets a suffix rather than overwrite it)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", terrain) + ".png"
    return name if name != SUMMARY else name.replace(".png", "_terrain.png")


def write_parity_report(report: ParityReport, directory: str | Path) -> dict[str, FigureLayout]:
    """Write the pictures and index.html into `directory`; the layouts by file name."""
    if report.fields is None:
        raise BadInputError("this parity report carries no fields to draw; expected one from run_parity")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    layouts = {SUMMARY: summary_figure(report, folder / SUMMARY)}
    for terrain in report.fields.signal_terrains:
        name = terrain_file(terrain)
        layouts[name] = terrain_figure(report, report.fields, terrain, folder / name)
    write_bytes_atomic(folder / INDEX, index_html(report, list(layouts)).encode())
    return layouts


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], failed: Sequence[bool]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        ('<tr class="fail">' if bad else "<tr>") + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row, bad in zip(rows, failed, strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def index_html(report: ParityReport, pictures: Sequence[str]) -> str:
    """The report page: verdict, what was compared, the output and terrain-signal tables, the pictures."""
    p = report.precision
    outputs = _table(
        ["case", "variable", "max abs", "rel L2", f"PyTorch {p}", "ratio", "bound", "cosine", "ok"],
        [[r.case, r.variable, f"{r.metrics.max_abs:.2e}", f"{r.metrics.rel_l2:.2e}", f"{r.torch_rel_l2:.2e}",
          f"{r.ratio:.2f}", f"{r.bound:.2e}", f"{r.metrics.cosine:.7f}", "yes" if r.passed else "NO"]
         for r in report.rows],
        [not r.passed for r in report.rows],
    )  # fmt: skip
    signal = _table(
        ["terrain", "variable", "mean |delta|", "fidelity", f"PyTorch {p}", "ratio", "bound", "ok"],
        [[s.terrain, s.variable, f"{s.mean_abs_delta:.4e}", f"{s.fidelity:.2e}", f"{s.torch_fidelity:.2e}",
          f"{s.ratio:.2f}", f"{s.bound:.2e}", "yes" if s.passed else "NO"] for s in report.signal],
        [not s.passed for s in report.signal],
    )  # fmt: skip
    verdict = "PASS" if report.passed else "FAIL"
    images = "".join(f'<h2>{html.escape(name.removesuffix(".png"))}</h2><img src="{html.escape(name)}" '
                     f'alt="{html.escape(name)}">' for name in pictures)  # fmt: skip
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}tr.fail td{background:#fdd}"
             "img{max-width:100%}")  # fmt: skip
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>check-parity: {verdict}</title>"
        f"<style>{style}</style></head><body>\n"
        f"<h1>check-parity: {verdict} ({html.escape(backend_label(report))})</h1>\n"
        f"<p>truth: {html.escape(report.truth)}; yardstick: {html.escape(report.same_precision)}<br>"
        f"pass where error vs truth {html.escape(describe_tolerances(p))}</p>\n"
        f"<h2>output vs float64 truth (relative L2)</h2>\n{outputs}\n"
        f"<h2>terrain signal y(t) - y(flat) vs the truth's (fidelity)</h2>\n{signal}\n{images}\n</body></html>\n"
    )
