"""The full-size (8192-patch) model: export and parity on mountain and flat, graded against float64
truth (the float64 reference runs the fused attention: ~1.5 GB peak, ~75 s per sample on 2 cores).
Slow, still runs in CI."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from climax_deploy.export import ExportOptions, Provenance, export_onnx
from climax_deploy.export.passes import elevation_functions, elevation_nodes
from climax_deploy.model import build_model
from climax_deploy.validate import format_report, run_parity


@pytest.mark.slow
def test_full_preset_export_and_parity(tmp_path: Path) -> None:
    path = tmp_path / "climax_full.onnx"
    export_onnx(build_model("full", seed=0), path, ExportOptions(), Provenance(preset="full", seed=0))
    model = onnx.load(path, load_external_data=False)
    assert len(elevation_nodes(model)) == 1 and len(elevation_functions(model)) == 1
    shape = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert shape == ["batch", 15, 128, 256]
    del model
    report = run_parity(path, ("mountain", "flat"), load_options={"providers": "cpu"})
    print(format_report(report))
    assert report.passed, format_report(report)
    assert {r.case for r in report.rows} == {"mountain", "flat"}
    # As accurate as PyTorch fp32: both are off the float64 truth by ~1e-6, within 2x of each other.
    assert all(r.torch_rel_l2 < 1e-5 and 0.5 < r.ratio < 2 for r in report.rows), format_report(report)
