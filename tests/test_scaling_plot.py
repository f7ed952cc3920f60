"""climax-bench --scaling --plot: time and memory against patches, log-log, from a synthetic results object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_main  # tests/ is on sys.path under pytest
from picture_checks import assert_panels_drawn

from climax_deploy.bench import scaling
from climax_deploy.bench.bench import main as bench_main
from climax_deploy.bench.scaling import fit_exponents, narrow_config
from climax_deploy.bench.scaling_plot import PANELS, fitted_line, plot_scaling
from climax_deploy.errors import BadInputError

# seconds and GB at 1024 patches, and the growth exponents the synthetic measurements follow
LAWS = {"torch-literal": (0.05, 2.0, 0.02, 2.0), "torch-fused": (0.04, 1.6, 0.01, 1.0),
        "onnxruntime": (0.02, 1.5, 0.01, 1.1)}  # fmt: skip


def synthetic_report(patches: tuple[int, ...] = (1024, 4096, 16384)) -> dict[str, Any]:
    """run_scaling's results as if measured: power laws per backend, PyTorch literal skipped at the top."""
    rows = []
    for n in (*patches, 8192):
        role = "series" if n in patches else "full"
        results, skipped = [], {}
        for backend, (t0, t_exp, m0, m_exp) in LAWS.items():
            if backend == "torch-literal" and n == max(patches):
                skipped[backend] = "skipped: N x N needs ~60 GB, 24 GB free"
                continue
            scale = 3.0 if role == "full" else 1.0  # the full preset is wider: slower at the same N
            results.append({"backend": backend, "median_s": scale * t0 * (n / 1024) ** t_exp, "rss_before_gb": 0.5,
                            "peak_rss_gb": 0.5 + scale * m0 * (n / 1024) ** m_exp})  # fmt: skip
        rows.append({"role": role, "name": f"r{n}", "patches": n, "results": results, "skipped": skipped,
                     "floor_s": 0.002 * (n / 1024) ** 1.7})  # fmt: skip
    series = [r for r in rows if r["role"] == "series"]
    return {"machine": "test machine", "batch": 1, "runs": 3, "matmul_rate": {"flops_per_s": 5e10},
            "series": narrow_config().to_dict() | {"name": "narrow"}, "rows": rows,
            "exponents": fit_exponents(series, list(LAWS))}  # fmt: skip


def test_the_fitted_exponents_are_the_laws() -> None:
    fits = synthetic_report()["exponents"]
    for backend, (_, t_exp, _, m_exp) in LAWS.items():
        assert fits[backend]["time"] == pytest.approx(t_exp) and fits[backend]["memory"] == pytest.approx(m_exp)
    x, y = fitted_line([1024, 4096], [1.0, 16.0], 2.0)
    assert (x[0], y[0], x[-1], y[-1]) == pytest.approx((1024, 1.0, 4096, 16.0))


def test_plot_has_a_time_and_a_memory_panel_with_exponents(tmp_path: Path) -> None:
    layout = plot_scaling(synthetic_report(), tmp_path / "s.png")
    assert_panels_drawn(layout, list(PANELS))
    time_axes = layout.panels[0]
    width, height = layout.size
    assert width > 1.5 * height  # two panels side by side
    assert time_axes.box[2] < layout.panels[1].box[0]


def test_plot_legends_carry_the_exponents_and_the_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The legend texts as drawn: each backend's exponent, the FLOP floor's, on log-log axes."""
    from climax_deploy import figures

    seen: dict[str, Any] = {}
    save = figures.save_png

    def keep(fig, path, panels):  # type: ignore[no-untyped-def]
        seen.update({name: drawn.axes for name, drawn in panels.items()})
        return save(fig, path, panels)

    monkeypatch.setattr("climax_deploy.bench.scaling_plot.save_png", keep)
    plot_scaling(synthetic_report(), tmp_path / "s.png")
    legend = [t.get_text() for t in seen["time"].get_legend().get_texts()]
    assert legend == ["ONNX Runtime: ~ N^1.50", "PyTorch fused: ~ N^1.60", "PyTorch literal: ~ N^2.00",
                      "FLOP floor (50 GFLOP/s): ~ N^1.70"]  # fmt: skip
    memory = [t.get_text() for t in seen["memory"].get_legend().get_texts()]
    assert memory == ["ONNX Runtime: ~ N^1.10", "PyTorch fused: ~ N^1.00", "PyTorch literal: ~ N^2.00"]
    for ax in seen.values():
        assert ax.get_xscale() == ax.get_yscale() == "log"


def test_nothing_measured_is_one_line(tmp_path: Path) -> None:
    report = synthetic_report()
    for row in report["rows"]:
        row["results"] = [{"backend": r["backend"], "error": "worker exited -9"} for r in row["results"]]
    with pytest.raises(BadInputError, match="no measurement to plot"):
        plot_scaling(report, tmp_path / "s.png")


def test_cli_scaling_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--scaling --plot draws run_scaling's results (here synthetic: no benchmark runs) beside the JSON."""
    monkeypatch.setattr(scaling, "run_scaling", lambda *args, **kwargs: synthetic_report())
    monkeypatch.setattr(scaling, "format_scaling", lambda report: "table")
    out = run_main("climax-bench", bench_main, ["--scaling", "--plot", "s.png", "--json", "s.json"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "wrote s.png" in out.stdout and json.loads((tmp_path / "s.json").read_text())["rows"]
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plot", "s.png"], "--plot draws the scaling series: expected --scaling with it"),
        (["--scaling", "--plot", "s.svg"], "--plot writes a PNG: expected a FILE.png, got s.svg"),
        (["--scaling", "--plot", "s.png", "--json", "s.png"], "are the same file"),
    ],
)
def test_cli_plot_mistakes_are_one_line_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(scaling, "run_scaling", must_not_run)
    out = run_main("climax-bench", bench_main, argv, tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
