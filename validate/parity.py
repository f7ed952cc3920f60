"""Parity of a deployed model with the PyTorch reference on mountain and flat terrain."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.artifacts import read_manifest, sha256_file
from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.progress import Progress
from climax_deploy.runner import Runner
from climax_deploy.synthetic import synthetic_sample
from climax_deploy.validate.metrics import TOLERANCES, ErrorMetrics, Tolerance, error_metrics, signal_fidelity
from climax_deploy.validate.terrain import resolve_terrain

log = logging.getLogger(__name__)

BASELINE_TERRAIN = "flat"
MIXED_BATCH_MAX_PATCHES = 2048  # above this the mixed batch is opt-in (full size: ~6 GB per sample in ORT)


@dataclass(frozen=True)
class ParityRow:
    case: str  # e.g. "mountain", "flat", "mountain+flat (batch 2)"
    variable: str
    metrics: ErrorMetrics
    passed: bool


@dataclass(frozen=True)
class SignalRow:
    terrain: str  # delta = y(terrain) - y(flat)
    variable: str
    mean_abs_delta: float  # size of the reference's terrain signal
    fidelity: float
    passed: bool


@dataclass
class ParityReport:
    backend: dict[str, Any]
    precision: str
    tolerance: Tolerance
    rows: list[ParityRow] = field(default_factory=list)
    signal: list[SignalRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows) and all(s.passed for s in self.signal)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "backend": self.backend,
            "precision": self.precision,
            "tolerance": {"rel_l2": self.tolerance.rel_l2, "fidelity": self.tolerance.fidelity},
            "rows": [{"case": r.case, "variable": r.variable, **r.metrics.as_dict(), "passed": r.passed}
                     for r in self.rows],  # fmt: skip
            "terrain_signal": [
                {"terrain": s.terrain, "variable": s.variable, "mean_abs_delta": s.mean_abs_delta,
                 "fidelity": s.fidelity, "passed": s.passed}
                for s in self.signal
            ],  # fmt: skip
            "seconds": self.seconds,
        }


def reference_from_manifest(manifest: dict[str, Any], checkpoint: str | Path | None = None) -> Any:
    """Rebuild the fp32 PyTorch reference the artifact was exported from (same config, seed or weights)."""
    from climax_deploy.model import build_model

    config = dict(manifest["model_config"])
    recorded = manifest.get("checkpoint")
    if checkpoint is None and recorded:
        checkpoint = recorded["path"]
        if not Path(checkpoint).is_file():
            raise BadInputError(f"the model was exported from checkpoint {checkpoint}, which is gone; pass --checkpoint")
        if sha256_file(checkpoint) != recorded["sha256"]:
            raise BadInputError(f"checkpoint {checkpoint} changed since export (sha256 differs); pass --checkpoint")
    seed = manifest.get("seed")
    return build_model(config, seed=int(seed) if seed is not None else 0, checkpoint=checkpoint)


def run_parity(
    model_path: str | Path,
    terrains: Sequence[str] = ("mountain", "flat"),
    *,
    seed: int = 0,
    lead_time: float = 24.0,
    mixed_batch: bool | None = None,
    checkpoint: str | Path | None = None,
    load_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    backend_name: str = "auto",
    precision: str | None = None,
    save_polygraphy: str | Path | None = None,
) -> ParityReport:
    """Compare the artifact (run by the runtime) with the fp32 `literal` PyTorch reference.

    backend_name: 'auto' (by suffix), 'onnxruntime' (.onnx), 'tensorrt' (.engine) or 'torch' (the PyTorch
    model rebuilt from the manifest, run eagerly in `precision`). precision picks the tolerances
    (default: the artifact's). save_polygraphy: a directory for Polygraphy's --load-inputs/--load-outputs.
    """
    from climax_deploy.model.runner import TorchRunner
    from climax_deploy.runtime import load

    progress = progress or Progress("check-parity", enabled=False)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelFileError(f"model file {model_path} does not exist")
    manifest = read_manifest(model_path)
    check_backend(model_path, backend_name)
    precision = precision or str(manifest.get("precision", "fp32"))
    if precision not in TOLERANCES:
        raise BadInputError(f"precision {precision!r} has no stated tolerance; expected one of {sorted(TOLERANCES)}")
    grid = (int(manifest["grid"][0]), int(manifest["grid"][1]))
    variables = tuple(manifest["variables"])
    outputs = tuple(manifest["output_variables"])

    cases: dict[str, np.ndarray] = {}
    for spec in [*terrains, *([] if BASELINE_TERRAIN in terrains else [BASELINE_TERRAIN])]:
        label, metres = resolve_terrain(spec, grid, seed)
        cases[label] = synthetic_sample(variables, metres, seed)[None]  # [1, V, H, W]
    lead = np.array([lead_time], dtype=np.float32)
    if mixed_batch is None:
        mixed_batch = int(manifest.get("num_patches", 0)) <= MIXED_BATCH_MAX_PATCHES

    with progress.stage("running the PyTorch reference (fp32, literal)"):
        reference_model = reference_from_manifest(manifest, checkpoint)
        reference = TorchRunner(reference_model, attention="literal")
        refs = {label: reference.predict(x, lead) for label, x in cases.items()}
        del reference, reference_model
        gc.collect()
    if save_polygraphy is not None:
        from climax_deploy.validate.polygraphy_io import save_polygraphy_data

        save_polygraphy_data(save_polygraphy, [(x, lead) for x in cases.values()], list(refs.values()),
                             model=model_path, precision=precision)  # fmt: skip
    with progress.stage(f"loading {model_path.name}"):
        if backend_name == "torch":
            backend = _torch_backend(manifest, checkpoint, precision)
        else:
            backend = load(model_path, **(load_options or {}))
    outs: dict[str, np.ndarray] = {}
    with progress.stage(f"running {backend.backend}"):
        for label, x in cases.items():
            outs[label] = _predict(backend, x, lead)
    mixed: dict[str, np.ndarray] = {}
    if mixed_batch and len(cases) > 1 and backend.spec.batch in (None, len(cases)):
        with progress.stage(f"running {backend.backend} on one mixed batch of {len(cases)}"):
            stacked = np.concatenate(list(cases.values()))
            y = backend.predict(stacked, np.full(len(cases), lead_time, np.float32))
            mixed = {label: y[i : i + 1] for i, label in enumerate(cases)}

    tol = TOLERANCES[precision]
    report = ParityReport(backend=backend.describe(), precision=precision, tolerance=tol, seconds=progress.timings)
    backend.close()
    batch_label = "+".join(cases) + f" (batch {len(cases)})"
    for case_label, results in [*((lbl, {lbl: outs[lbl]}) for lbl in cases), (batch_label, mixed)]:
        for label, y in results.items():
            for v, name in enumerate(outputs):
                m = error_metrics(y[0, v], refs[label][0, v])
                row_case = case_label if case_label != batch_label else f"{label} in {batch_label}"
                report.rows.append(ParityRow(row_case, name, m, m.rel_l2 <= tol.rel_l2))
    for label in cases:
        if label == BASELINE_TERRAIN:
            continue
        d_ref = refs[label] - refs[BASELINE_TERRAIN]
        d_out = outs[label] - outs[BASELINE_TERRAIN]
        for v, name in enumerate(outputs):
            fid = signal_fidelity(d_out[0, v], d_ref[0, v])
            report.signal.append(SignalRow(label, name, float(np.abs(d_ref[0, v]).mean()), fid, fid <= tol.fidelity))
    return report


BACKENDS: dict[str, str | None] = {"auto": None, "onnxruntime": ".onnx", "tensorrt": ".engine", "torch": ".onnx"}


def check_backend(model_path: Path, backend: str) -> None:
    """The artifact must suit the backend: .onnx for ONNX Runtime and torch, .engine for TensorRT."""
    if backend not in BACKENDS:
        raise BadInputError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    suffix = BACKENDS[backend]
    if suffix is not None and model_path.suffix != suffix:
        raise BadInputError(f"--backend {backend} runs {suffix} files, got {model_path.name}")


def _torch_backend(manifest: dict[str, Any], checkpoint: str | Path | None, precision: str) -> Runner:
    """The PyTorch model rebuilt from the manifest, eager, fused attention, in `precision`."""
    import torch

    from climax_deploy.model.runner import TorchRunner

    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
    return TorchRunner(reference_from_manifest(manifest, checkpoint), attention="fused", dtype=dtype)


def _predict(backend: Runner, x: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """One sample through a backend, tiling it where the artifact has a fixed batch > 1."""
    fixed = backend.spec.batch
    if fixed is None or fixed == 1:
        return backend.predict(x, lead)
    y = backend.predict(np.repeat(x, fixed, axis=0), np.repeat(lead, fixed))
    return y[:1]


def format_report(report: ParityReport) -> str:
    """The parity table as text."""
    tol = report.tolerance
    lines = [
        f"backend: {report.backend.get('backend')}  precision: {report.precision}  "
        f"tolerance: rel L2 <= {tol.rel_l2:g}, terrain-signal fidelity <= {tol.fidelity:g}",
    ]
    if "providers_used" in report.backend:
        lines.append(f"providers: used {report.backend['providers_used']}, available {report.backend['providers_available']}")
    header = f"{'case':<34} {'var':<5} {'max abs':>9} {'rmse':>9} {'rel L2':>9} {'p99.9 abs':>9} {'cosine':>10}  ok"
    lines += ["", header, "-" * len(header)]
    for r in report.rows:
        m = r.metrics
        lines.append(
            f"{r.case:<34} {r.variable:<5} {m.max_abs:9.2e} {m.rmse:9.2e} {m.rel_l2:9.2e} {m.p999_abs:9.2e} "
            f"{m.cosine:10.7f}  {'yes' if r.passed else 'NO'}"
        )
    if report.signal:
        header = f"{'terrain signal: y(t) - y(flat)':<34} {'var':<5} {'mean |delta|':>12} {'fidelity':>9}  ok"
        lines += ["", header, "-" * len(header)]
        for s in report.signal:
            lines.append(f"{s.terrain:<34} {s.variable:<5} {s.mean_abs_delta:12.4e} {s.fidelity:9.2e}  "
                         f"{'yes' if s.passed else 'NO'}")  # fmt: skip
    worst = max((r.metrics.rel_l2 for r in report.rows), default=0.0)
    worst_fid = max((s.fidelity for s in report.signal), default=0.0)
    lines += ["", f"{'PASS' if report.passed else 'FAIL'}: worst rel L2 {worst:.2e}, worst fidelity {worst_fid:.2e}"]
    return "\n".join(lines)
