"""check-parity: metrics, terrains, the parity run on mountain and flat, CLI exit codes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from climax_deploy.errors import BadInputError
from climax_deploy.manifest import BatchSpec, read_onnx_manifest
from climax_deploy.standardisation import Standardisation
from climax_deploy.synthetic import physical_fields
from climax_deploy.validate import (
    TOLERANCES,
    error_metrics,
    format_report,
    load_terrain_file,
    make_terrain,
    run_parity,
    signal_fidelity,
)
from climax_deploy.validate.cli import main as check_parity
from climax_deploy.validate.parity import parity_inputs


def test_metrics_on_known_values() -> None:
    ref = np.array([3.0, 4.0])
    m = error_metrics(np.array([3.0, 4.5]), ref)
    assert m.max_abs == 0.5 and m.rel_l2 == pytest.approx(0.1) and m.rmse == pytest.approx(np.sqrt(0.125))
    assert error_metrics(ref, ref).cosine == pytest.approx(1.0)
    assert signal_fidelity(np.array([1.1, 0.0]), np.array([1.0, 0.0])) == pytest.approx(0.1)


def test_terrains() -> None:
    mountain = make_terrain("mountain", (128, 256))
    assert mountain.max() > 4000 and mountain.min() < 1000  # peaks above 4 km, low valleys and plains
    assert np.ptp(make_terrain("flat", (8, 8))) == 0 and make_terrain("plateau", (8, 8)).min() == 4500
    with pytest.raises(BadInputError, match="unknown terrain"):
        make_terrain("alps", (8, 8))


def test_terrain_file_checks(tmp_path: Path) -> None:
    good = tmp_path / "dem.npy"
    np.save(good, np.ones((32, 64)))
    assert load_terrain_file(good, (32, 64)).shape == (32, 64)
    with pytest.raises(BadInputError, match=r"shape \(32, 64\), expected \(16, 16\)"):
        load_terrain_file(good, (16, 16))
    bad = tmp_path / "nan.npy"
    np.save(bad, np.full((32, 64), np.nan))
    with pytest.raises(BadInputError, match="2048 NaN"):
        load_terrain_file(bad, (32, 64))


def test_parity_passes_on_mountain_and_flat(small_onnx: Path) -> None:
    report = run_parity(small_onnx)
    assert report.passed, report.as_dict()
    cases = {r.case for r in report.rows}
    assert {"mountain", "flat", "mountain in mountain+flat (batch 2)", "flat in mountain+flat (batch 2)"} == cases
    assert len(report.rows) == 4 * 6 and len(report.signal) == 6
    assert max(r.metrics.rel_l2 for r in report.rows) < 1e-5
    # The terrain signal is real: mountain vs flat moves every output, and the backend keeps it.
    assert min(s.mean_abs_delta for s in report.signal) > 1e-3
    assert max(s.fidelity for s in report.signal) < 1e-4
    # Graded against float64 truth: ONNX Runtime is about as accurate as PyTorch fp32 (both ~3e-7 off).
    assert "float64" in report.truth and report.same_precision.startswith("PyTorch fp32")
    assert all(1e-8 < r.torch_rel_l2 < 1e-5 and 0.25 < r.ratio < 4 for r in report.rows)
    assert all(0.25 < s.ratio < 4 and s.fidelity <= s.bound for s in report.signal)
    text = format_report(report)
    assert "torch fp32" in text and "ratio" in text and "PASS" in text


def test_torch_backend_is_the_yardstick(small_onnx: Path) -> None:
    """--backend torch runs PyTorch in the precision's recipe: its errors are the yardstick's, ratio 1."""
    report = run_parity(small_onnx, backend_name="torch", precision="fp16", mixed_batch=False)
    assert report.passed and report.backend["backend"] == "torch"
    assert all(0.8 < r.ratio < 1.25 for r in report.rows)  # the same recipe (batched differently)
    assert 1e-5 < min(r.metrics.rel_l2 for r in report.rows)  # really fp16, not the fp32 model


def test_tolerances_per_variable_with_a_default(small_onnx: Path, monkeypatch) -> None:
    """A variable's own entry overrides the "" default: an impossible pm25 bound fails pm25 only."""
    from climax_deploy.validate import metrics

    default = metrics.TOLERANCES["fp32"][""]
    strict = replace(default, factor=0.0, rel_l2_floor=1e-12, fidelity_floor=1e-12)
    monkeypatch.setitem(metrics.TOLERANCES, "fp32", {"": default, "pm25": strict})
    report = run_parity(small_onnx, mixed_batch=False)
    assert {r.variable for r in report.rows if not r.passed} == {"pm25"}
    assert {s.variable for s in report.signal if not s.passed} == {"pm25"}
    assert report.as_dict()["tolerances"]["pm25"]["factor"] == 0.0


def test_tolerance_numbers_are_stated_once(monkeypatch) -> None:
    """Help text and Polygraphy's atol/rtol are read from metrics.TOLERANCES, not restated."""
    from climax_deploy.validate import metrics
    from climax_deploy.validate.cli import build_parser

    monkeypatch.setitem(metrics.TOLERANCES, "fp32", {"": replace(metrics.TOLERANCES["fp32"][""], factor=7.5)})
    assert "7.5 x PyTorch fp32" in " ".join(build_parser().format_help().split())
    from climax_deploy.validate.polygraphy_io import PolygraphyFiles

    cmd = PolygraphyFiles(Path("i.json"), Path("o.json")).command("m.onnx", "onnxrt", "fp16")
    t = metrics.tolerance("fp16")
    assert cmd[-4:] == ["--atol", str(t.atol), "--rtol", str(t.rtol)]


def test_mixed_batch_splits_at_the_artifacts_batch(small_model, tmp_path: Path) -> None:
    """Three terrains on a fixed batch-2 artifact: the mixed batch runs as 2 + 1 (padded to 2) and passes."""
    from climax_deploy.export import ExportOptions, Provenance, export_onnx

    path = tmp_path / "small_b2.onnx"
    export_onnx(small_model, path, ExportOptions(batch=BatchSpec.fixed(2)), Provenance(preset="small", seed=0))
    report = run_parity(path, ("mountain", "plateau", "flat"), load_options={"providers": "cpu"})
    assert report.passed, format_report(report)
    assert "plateau in mountain+plateau+flat (batch 3)" in {r.case for r in report.rows}
    assert len(report.rows) == 2 * 3 * 6


def test_inputs_are_standardised_with_the_artifacts_statistics(small_onnx: Path) -> None:
    manifest = read_onnx_manifest(small_onnx)
    record = manifest.model
    stats = {**record.standardisation.stats, "temp": (0.0, 1.0)}
    custom = replace(manifest, model=replace(record, standardisation=Standardisation(stats)))
    x, x_custom = parity_inputs(manifest, ["flat"])["flat"], parity_inputs(custom, ["flat"])["flat"]
    t = record.variables.index("temp")
    kelvin = physical_fields(record.variables, make_terrain("flat", record.grid))["temp"]
    np.testing.assert_allclose(x_custom[0, t], kelvin, rtol=1e-6)
    assert not np.allclose(x[0, t], x_custom[0, t])
    np.testing.assert_array_equal(np.delete(x, t, axis=1), np.delete(x_custom, t, axis=1))


def test_parity_fails_when_the_physics_differs(small_onnx: Path, small_model, tmp_path: Path) -> None:
    """Same weights but beta 3 -> 6 in the reference: check-parity must say FAIL and exit 1."""
    state = {k: v.clone() for k, v in small_model.state_dict().items()}
    state["blocks.0.attn.elevation_barrier_strength"] = torch.tensor(6.0)
    ckpt = tmp_path / "beta6.pt"
    torch.save(state, ckpt)
    out = tmp_path / "report.json"
    code = check_parity([str(small_onnx), "--checkpoint", str(ckpt), "--json", str(out), "-q"])
    assert code == 1
    report = json.loads(out.read_text())
    assert report["passed"] is False
    assert max(s["fidelity"] for s in report["terrain_signal"]) > 1e-2


def test_cli_pass_and_json(small_onnx: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report.json"
    code = check_parity([str(small_onnx), "--terrain", "plateau", "--terrain", "mountain", "--json", str(out), "-q"])
    text = capsys.readouterr().out
    assert code == 0 and "PASS" in text and "terrain signal" in text
    report = json.loads(out.read_text())
    assert {s["terrain"] for s in report["terrain_signal"]} == {"plateau", "mountain"}
    assert report["tolerances"] == {"": TOLERANCES["fp32"][""].as_dict()}
    assert all(r["rel_l2"] <= r["bound"] and r["torch_rel_l2"] > 0 for r in report["rows"])


def test_cli_user_dem_and_bad_terrain(small_onnx: Path, tmp_path: Path, capsys) -> None:
    dem = tmp_path / "ridge.npy"
    np.save(dem, np.linspace(0, 3000, 64)[None].repeat(32, 0))
    assert check_parity([str(small_onnx), "--terrain", str(dem), "--no-mixed-batch", "-q"]) == 0
    bad = tmp_path / "hole.npy"
    arr = np.zeros((32, 64))
    arr[3, 4] = np.nan
    np.save(bad, arr)
    from climax_deploy.cli import run_cli

    assert run_cli("check-parity", check_parity, [str(small_onnx), "--terrain", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 NaN" in err


def test_cli_refuses_to_overwrite_its_model(small_onnx: Path, tmp_path: Path, capsys) -> None:
    import shutil

    from climax_deploy.cli import run_cli

    model = tmp_path / "m.onnx"
    shutil.copy(small_onnx, model)
    shutil.copy(str(small_onnx) + ".manifest.json", str(model) + ".manifest.json")
    before = model.read_bytes()
    for out in (model, Path(str(model) + ".manifest.json")):
        assert run_cli("check-parity", check_parity, [str(model), "--json", str(out), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "would overwrite the input" in err, err
    assert model.read_bytes() == before
    assert run_cli("check-parity", check_parity, [str(model), "--save-polygraphy", str(model), "-q"]) == 2


def test_cli_unwritable_json_is_one_line_before_the_run(small_onnx: Path, tmp_path: Path, capsys) -> None:
    """Root ignores permissions, so a regular file stands where the report's folder should be."""
    from climax_deploy.cli import run_cli

    (tmp_path / "reports").write_text("a file")
    code = run_cli("check-parity", check_parity, [str(small_onnx), "--json", str(tmp_path / "reports" / "r.json"), "-q"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and "cannot write" in captured.err, captured.err
    assert "PASS" not in captured.out
