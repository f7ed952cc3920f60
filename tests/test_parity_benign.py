"""check-parity must pass benign terrain and weights: built-in terrains and eight DEMs of other shapes
(ill-conditioned ones included), beta 0, 3 and 150, fp32 and fp16, every terrain also in one mixed
batch (a batch smaller than the mixed batch: tests/test_parity.py). Full size: tests/test_full_size.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from parity_cases import BETA_NAME, export_small, write_dems  # tests/ is on sys.path under pytest

from climax_deploy.export import Provenance
from climax_deploy.export.onnx_export import file_record
from climax_deploy.model import ClimaX, build_model
from climax_deploy.validate import format_report, run_parity
from climax_deploy.validate.terrain import BUILTIN_TERRAINS

BETAS = (0.0, 3.0, 150.0)  # 3 is the initial value; a trained model may reach 0 or beyond 100 (the extremes)


@pytest.fixture(scope="module")
def terrains(tmp_path_factory: pytest.TempPathFactory, small_model: ClimaX) -> list[str]:
    dems = write_dems(tmp_path_factory.mktemp("dems"), small_model.config.img_size)
    return [*BUILTIN_TERRAINS, *dems]


def benign_artifact(beta: float, precision: str, directory: Path) -> Path:
    """The small preset with `beta` in block 0, saved as a checkpoint and exported from it."""
    state = {k: v.clone() for k, v in build_model("small", seed=0).state_dict().items()}
    state[BETA_NAME] = torch.tensor(beta)
    checkpoint = directory / f"beta{beta:g}.pt"
    torch.save(state, checkpoint)
    model = build_model("small", checkpoint=checkpoint)
    provenance = Provenance(preset="small", checkpoint=file_record(checkpoint))
    return export_small(directory / f"beta{beta:g}_{precision}.onnx", precision, "unmutated", model, provenance)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("beta", BETAS)
def test_benign_terrain_and_beta_pass(beta: float, precision: str, terrains: list[str], tmp_path: Path) -> None:
    path = benign_artifact(beta, precision, tmp_path)
    report = run_parity(path, terrains, load_options={"providers": "cpu"})
    failed = sorted({r.case for r in report.rows if not r.passed} | {s.terrain for s in report.signal if not s.passed})
    assert not failed, f"false alarm at beta {beta:g}, {precision} on {failed}\n{format_report(report)}"
    assert len(report.rows) == 2 * len(terrains) * 6  # each terrain alone and in the mixed batch
    assert len(report.signal) == (len(terrains) - 1) * 6
