"""check-parity must fail self-consistent mutations of an export, at fp32 and fp16.

Each mutated model is exported as a whole (tests/parity_cases.py): the artifact computes the mutated
model, checked against it in PyTorch, so only check-parity's comparison with the true model (rebuilt
from the manifest: config and seed 0) can catch it. Physics mutations run on the small preset; the
wind-following scan's on small-wind (and one on a widened variant, parity_cases.CONFIGS). The
default run: mountain and flat, check-parity's default synthetic winds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from parity_cases import (  # tests/ is on sys.path under pytest
    MUTATIONS,
    REFERENCES,
    SCAN_MUTATIONS,
    export_small,
    mutated_model,
    provenance,
)

from climax_deploy.manifest import read_manifest
from climax_deploy.runtime import load
from climax_deploy.synthetic import synthetic_sample
from climax_deploy.validate.cli import main as check_parity
from climax_deploy.validate.terrain import make_terrain

_ARTIFACTS: dict[tuple[str, str], Path] = {}


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutations")


def mutated_artifact(name: str, precision: str, directory: Path) -> Path:
    key = (name, precision)
    if key not in _ARTIFACTS:
        mutation = MUTATIONS[name]
        path = directory / f"{name.replace(' ', '_').replace(chr(39), '')}_{precision}.onnx"
        _ARTIFACTS[key] = export_small(
            path, precision, mutation.trace or name, mutated_model(name), provenance(mutation.model)
        )
    return _ARTIFACTS[key]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(MUTATIONS))
def test_check_parity_fails_on_a_physics_mutation(name: str, precision: str, artifact_dir: Path) -> None:
    path = mutated_artifact(name, precision, artifact_dir)
    report_file = artifact_dir / f"{path.stem}.json"
    with REFERENCES.active():
        assert check_parity([str(path), "--json", str(report_file), "-q"]) == 1
    report = json.loads(report_file.read_text())
    assert report["precision"] == precision and not report["passed"]
    worst_signal = max(s["fidelity"] / s["bound"] for s in report["terrain_signal"])
    worst_output = max(r["rel_l2"] / r["bound"] for r in report["rows"])
    if name not in SCAN_MUTATIONS:
        # Caught by a wide margin: the terrain signal is off by far more than the bound allows.
        assert worst_signal > 2, f"{name} at {precision}: worst fidelity / bound only {worst_signal:.2f}"
        return
    # A scan mutation moves tokens: the outputs themselves fail, every variable in every case (the
    # synthetic winds turn region by region, so the order differs almost everywhere).
    worst = max(worst_signal, worst_output)
    assert worst > 2, f"{name} at {precision}: worst error / bound only {worst:.2f}"
    passed = [f"{r['case']} {r['variable']}" for r in report["rows"] if r["passed"]]
    assert not passed, f"{name} at {precision}: rows that pass: {passed}"
    assert {r["variable"] for r in report["rows"]} == set(read_manifest(path).model.output_variables)


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_mutated_export_is_self_consistent(name: str, artifact_dir: Path) -> None:
    """The fp32 artifact computes the mutated model (so the failure above is the mutation, not the export)."""
    model = mutated_model(name)
    cfg = model.config
    x = np.stack([synthetic_sample(cfg.variables, make_terrain(t, cfg.img_size)) for t in ("mountain", "flat")])
    lead = np.full(2, 24.0, dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x), torch.from_numpy(lead), attention="fused").numpy()
    with load(mutated_artifact(name, "fp32", artifact_dir), providers="cpu") as runner:
        got = runner.predict(x, lead)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-5
