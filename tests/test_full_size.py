"""Full size (8192 patches): the full preset's export, and parity at 8192 patches graded against float64.

Parity of the full preset itself is what `make demo` computes (the float64 truth of the 768-wide,
8-block model takes minutes per sample on 2 cores); here parity at full size runs on the full
preset's grid with the scaling series' narrow model (width 128, depth 2, 4 heads): the same 8192
patches, attention query blocks and elevation normalisation, at a fraction of the cost.
Slow, still runs in CI.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from climax_deploy.bench.scaling import narrow_config
from climax_deploy.export import ExportOptions, Provenance, export_onnx
from climax_deploy.export.passes import elevation_functions, elevation_nodes
from climax_deploy.manifest import read_onnx_manifest
from climax_deploy.model import build_model
from climax_deploy.validate import format_report, run_parity


@pytest.mark.slow
def test_full_preset_exports_one_elevation_node_over_8192_patches(tmp_path: Path) -> None:
    path = tmp_path / "climax_full.onnx"
    export_onnx(build_model("full", seed=0), path, ExportOptions(), Provenance(preset="full", seed=0))
    model = onnx.load(path, load_external_data=False)
    assert len(elevation_nodes(model)) == 1 and len(elevation_functions(model)) == 1
    shape = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert shape == ["batch", 15, 128, 256]
    assert read_onnx_manifest(path).model.num_patches == 8192


@pytest.mark.slow
def test_parity_at_8192_patches(tmp_path: Path) -> None:
    config = narrow_config()
    assert config.num_patches == 8192 and tuple(config.img_size) == (128, 256)  # the full preset's grid
    path = tmp_path / "narrow_full_grid.onnx"
    export_onnx(build_model(config, seed=0), path, ExportOptions(), Provenance(seed=0))
    report = run_parity(path, ("mountain", "flat"), load_options={"providers": "cpu"})
    print(format_report(report))
    assert report.passed, format_report(report)
    assert {r.case for r in report.rows} == {"mountain", "flat"}
    # As accurate as PyTorch fp32: both are off the float64 truth by ~1e-6, within 2x of each other.
    assert all(r.torch_rel_l2 < 1e-5 and 0.5 < r.ratio < 2 for r in report.rows), format_report(report)
