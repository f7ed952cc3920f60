"""check-parity --report: terrain-signal maps, an error summary and index.html, for a right and a wrong model.

The wrong model is a physics mutation (beta negated, tests/parity_cases.py) exported whole at fp32:
its report's difference panels must span a far larger range than the right model's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_run import run_main  # tests/ is on sys.path under pytest
from parity_cases import export_small, mutated_model
from picture_checks import assert_panels_drawn

from climax_deploy import figures
from climax_deploy.export import Provenance
from climax_deploy.figures import FigureLayout
from climax_deploy.model import build_model
from climax_deploy.optional import OptionalDependency
from climax_deploy.schema import OUTPUTS
from climax_deploy.validate import parity
from climax_deploy.validate.cli import main as check_parity
from climax_deploy.validate.parity import ParityReport, run_parity
from climax_deploy.validate.parity_figures import COLUMNS
from climax_deploy.validate.parity_report import write_parity_report

PROVENANCE = Provenance(preset="small", seed=0)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("parity_report")
    return {
        "right": export_small(folder / "right.onnx", "fp32", "unmutated", build_model("small", seed=0), PROVENANCE),
        "wrong": export_small(folder / "wrong.onnx", "fp32", "unmutated", mutated_model("beta negated"), PROVENANCE),
    }


@pytest.fixture(scope="module")
def reports(models: dict[str, Path]) -> dict[str, tuple[ParityReport, dict[str, FigureLayout]]]:
    out = {}
    for kind, path in models.items():
        report = run_parity(path, ["mountain", "flat"], mixed_batch=False)
        out[kind] = (report, write_parity_report(report, path.parent / f"{kind}_report"))
    return out


def test_one_map_per_terrain_and_a_summary(reports: dict[str, tuple[ParityReport, dict[str, FigureLayout]]]) -> None:
    report, layouts = reports["right"]
    assert report.passed
    assert sorted(layouts) == ["mountain.png", "summary.png"]  # flat is the baseline: no map of its own
    maps = layouts["mountain.png"]
    assert_panels_drawn(maps, [f"{v}/{c}" for v in OUTPUTS for c in COLUMNS])
    for v in OUTPUTS:  # the truth's and the backend's signal share one colour scale
        truth, backend = maps.panel(f"{v}/truth"), maps.panel(f"{v}/backend")
        assert (truth.vmin, truth.vmax) == (backend.vmin, backend.vmax) and truth.value_range > 0
    assert maps.panel("pm25/elevation").vmax > 4000  # the massif's peaks, in metres
    assert_panels_drawn(layouts["summary.png"], ["output/mountain", "output/flat", "signal/mountain"])


def test_a_wrong_backend_shows_in_its_difference_panels(
    reports: dict[str, tuple[ParityReport, dict[str, FigureLayout]]],
) -> None:
    right, wrong = reports["right"][1]["mountain.png"], reports["wrong"][1]["mountain.png"]
    assert not reports["wrong"][0].passed
    assert_panels_drawn(wrong, [p.name for p in right.panels])
    for v in OUTPUTS:
        ratio = wrong.panel(f"{v}/difference").value_range / right.panel(f"{v}/difference").value_range
        assert ratio > 100, f"{v}: the wrong model's difference spans only {ratio:.1f} x the right one's"


def test_index_html_holds_the_tables_and_pictures(
    reports: dict[str, tuple[ParityReport, dict[str, FigureLayout]]],
) -> None:
    report, layouts = reports["wrong"]
    page = (layouts["summary.png"].path.parent / "index.html").read_text()
    assert "check-parity: FAIL" in page and page.count("<table>") == 2
    assert page.count('<tr class="fail">') == sum(not r.passed for r in report.rows) + sum(
        not s.passed for s in report.signal
    )
    assert '<img src="summary.png"' in page and '<img src="mountain.png"' in page
    for v in OUTPUTS:
        assert f"<td>{v}</td>" in page


def test_cli_writes_the_report_of_a_failing_model(
    models: dict[str, Path],
    reports: dict[str, tuple[ParityReport, dict[str, FigureLayout]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """check-parity exits 1 (fail) and still writes the pictures; the parity run is the fixture's, reused."""
    monkeypatch.setattr(parity, "run_parity", lambda *args, **kwargs: reports["wrong"][0])
    out = run_main("check-parity", check_parity, [str(models["wrong"]), "--report", "rep", "-q", "--no-mixed-batch"],
                   cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "wrote rep/index.html" in out.stdout
    assert {p.name for p in (tmp_path / "rep").iterdir() if not p.name.startswith(".")} == {
        "index.html", "summary.png", "mountain.png"
    }


@pytest.mark.parametrize("mistake", ["a file", "no matplotlib"])
def test_cli_report_mistakes_are_one_line_before_the_run(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mistake: str
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the parity run started")

    monkeypatch.setattr(parity, "run_parity", must_not_run)
    if mistake == "a file":
        (tmp_path / "rep").write_text("x")
        message = "cannot write into rep: it is not a folder"
    else:
        absent = OptionalDependency("no_such_module_here", "pip install 'climax-deploy[plot]'", "pictures")
        monkeypatch.setattr(figures, "MATPLOTLIB", absent)
        message = "needs no_such_module_here, which is not installed: pip install 'climax-deploy[plot]'"
    out = run_main("check-parity", check_parity, [str(models["right"]), "--report", "rep"], cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
