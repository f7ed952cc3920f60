"""check-parity must pass benign terrain, weights and winds: built-in terrains and eight DEMs of other
shapes (ill-conditioned ones included), beta 0, 3 and 150, fp32 and fp16, every terrain also in one
mixed batch (a batch smaller than the mixed batch: tests/test_parity.py); and on small-wind (the
wind-following scan on) every wind of climax_deploy.synthetic.WIND_KINDS, the scan's edge cases:
calm, exactly zonal, meridional, masked to the mean. Full size: tests/test_full_size.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from parity_cases import BETA_NAME, REFERENCES, build, export_small, provenance, write_dems  # tests/ is on sys.path

from climax_deploy.export import Provenance
from climax_deploy.export.onnx_export import file_record
from climax_deploy.model import ClimaX, build_model
from climax_deploy.synthetic import WIND_KINDS
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
    source = Provenance(preset="small", checkpoint=file_record(checkpoint))
    return export_small(directory / f"beta{beta:g}_{precision}.onnx", precision, "small", model, source)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("beta", BETAS)
def test_benign_terrain_and_beta_pass(beta: float, precision: str, terrains: list[str], tmp_path: Path) -> None:
    path = benign_artifact(beta, precision, tmp_path)
    with REFERENCES.active():  # fp32 and fp16 of one beta share the truth
        report = run_parity(path, terrains, load_options={"providers": "cpu"})
    failed = sorted({r.case for r in report.rows if not r.passed} | {s.terrain for s in report.signal if not s.passed})
    assert not failed, f"false alarm at beta {beta:g}, {precision} on {failed}\n{format_report(report)}"
    assert len(report.rows) == 2 * len(terrains) * 6  # each terrain alone and in the mixed batch
    assert len(report.signal) == (len(terrains) - 1) * 6


_WIND_ARTIFACTS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def wind_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("winds")


def wind_artifact(precision: str, directory: Path) -> Path:
    """small-wind (seed 0) exported once per precision, shared by every wind."""
    if precision not in _WIND_ARTIFACTS:
        path = directory / f"small-wind_{precision}.onnx"
        model = build("small-wind")
        _WIND_ARTIFACTS[precision] = export_small(path, precision, "small-wind", model, provenance("small-wind"))
    return _WIND_ARTIFACTS[precision]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("winds", WIND_KINDS)
def test_benign_winds_pass(winds: str, precision: str, wind_dir: Path) -> None:
    path = wind_artifact(precision, wind_dir)
    with REFERENCES.active():
        report = run_parity(path, ("mountain", "flat"), load_options={"providers": "cpu"}, winds=winds)
    failed = sorted({f"{r.case} {r.variable}" for r in report.rows if not r.passed}
                    | {f"signal {s.terrain} {s.variable}" for s in report.signal if not s.passed})  # fmt: skip
    assert not failed, f"false alarm with {winds} winds, {precision} on {failed}\n{format_report(report)}"
    assert len(report.rows) == 2 * 6 and len(report.signal) == 6  # 4096 patches: no mixed batch by default
