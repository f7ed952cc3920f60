"""Parity of a deployed model on mountain and flat terrain, graded against float64 truth.

Every output is compared with the float64 PyTorch reference (the truth); the backend passes where its
error is within a stated factor (plus a floor) of PyTorch's own error in the backend's precision
(climax_deploy.validate.reference, climax_deploy.validate.metrics.TOLERANCES). Same for the terrain
signal y(terrain) - y(flat).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from climax_deploy.artifacts import sha256_file
from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.manifest import Manifest, read_manifest
from climax_deploy.optional import TRITON
from climax_deploy.progress import Progress
from climax_deploy.runner import Runner
from climax_deploy.synthetic import synthetic_sample
from climax_deploy.validate.metrics import (
    ErrorMetrics,
    Tolerance,
    error_metrics,
    signal_fidelity,
    tolerance,
    tolerances,
)
from climax_deploy.validate.terrain import resolve_terrain

if TYPE_CHECKING:  # torch and the backends are imported only when a parity run needs them
    from climax_deploy.model.climax import ClimaX
    from climax_deploy.runtime.onnxruntime_backend import OnnxRuntimeOptions
    from climax_deploy.runtime.openvino_backend import OpenVinoOptions
    from climax_deploy.runtime.tensorrt_runner import TensorRTOptions

# Typed runtime options, or a mapping of their fields (as `runtime.load` takes keyword overrides).
LoadOptions = Union["OnnxRuntimeOptions", "OpenVinoOptions", "TensorRTOptions", Mapping[str, Any], None]

BASELINE_TERRAIN = "flat"
MIXED_BATCH_MAX_PATCHES = 2048  # above this the mixed batch is opt-in (full size: ~6 GB per sample in ORT)


@dataclass(frozen=True)
class ParityRow:
    """One output variable of one case: the backend and PyTorch in its precision, both against the truth."""

    case: str  # e.g. "mountain", "flat", "mountain in mountain+flat (batch 2)"
    variable: str
    metrics: ErrorMetrics  # the backend vs the float64 truth
    torch_rel_l2: float  # PyTorch in the backend's precision vs the truth
    bound: float  # the backend's relative L2 must be <= bound (Tolerance.rel_l2_bound)
    passed: bool

    @property
    def ratio(self) -> float:
        """Backend error / PyTorch error: about 1 means as accurate as PyTorch in this precision."""
        return self.metrics.rel_l2 / self.torch_rel_l2 if self.torch_rel_l2 > 0 else float("inf")


@dataclass(frozen=True)
class SignalRow:
    """How well the artifact keeps one terrain's signal on one output variable, against the truth's."""

    terrain: str  # delta = y(terrain) - y(flat)
    variable: str
    mean_abs_delta: float  # size of the truth's terrain signal
    fidelity: float  # the backend: |delta - delta_truth| / |delta_truth|
    torch_fidelity: float  # PyTorch in the backend's precision, the same measure
    bound: float  # fidelity must be <= bound (Tolerance.fidelity_bound)
    passed: bool

    @property
    def ratio(self) -> float:
        return self.fidelity / self.torch_fidelity if self.torch_fidelity > 0 else float("inf")


@dataclass(frozen=True)
class ParityFields:
    """The fields behind the parity maps: per case label, its terrain and the truth's and backend's outputs."""

    lat: tuple[float, ...]  # the model's rows, degrees_north (manifest model.lat)
    lon: tuple[float, ...]  # its columns, degrees_east (manifest model.lon)
    variables: tuple[str, ...]  # the output variables, in output order
    elevation: dict[str, np.ndarray]  # label -> [H, W] metres
    truth: dict[str, np.ndarray]  # label -> [O, H, W] float64 PyTorch
    outputs: dict[str, np.ndarray]  # label -> [O, H, W] the backend's, as float64

    def signal(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        """The terrain signal y(label) - y(flat) [O, H, W]: the truth's and the backend's."""
        return (self.truth[label] - self.truth[BASELINE_TERRAIN],
                self.outputs[label] - self.outputs[BASELINE_TERRAIN])  # fmt: skip

    @property
    def signal_terrains(self) -> list[str]:
        """The case labels that have a terrain signal (all but the flat baseline)."""
        return [label for label in self.truth if label != BASELINE_TERRAIN]


@dataclass
class ParityReport:
    """Everything check-parity prints and writes as JSON (and, in `fields`, what its maps draw)."""

    backend: dict[str, Any]
    precision: str
    tolerances: dict[str, Tolerance]  # per output variable, "" the default
    truth: str = ""
    same_precision: str = ""
    rows: list[ParityRow] = field(default_factory=list)
    signal: list[SignalRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    fields: ParityFields | None = field(default=None, repr=False, compare=False)  # not in the JSON

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows) and all(s.passed for s in self.signal)

    @property
    def tolerance(self) -> Tolerance:
        """The default tolerance (the "" entry)."""
        return self.tolerances[""]

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "backend": self.backend,
            "precision": self.precision,
            "truth": self.truth,
            "same_precision_reference": self.same_precision,
            "tolerances": {v: t.as_dict() for v, t in self.tolerances.items()},
            "rows": [{"case": r.case, "variable": r.variable, **r.metrics.as_dict(), "torch_rel_l2": r.torch_rel_l2,
                      "ratio": _json_number(r.ratio), "bound": _json_number(r.bound), "passed": r.passed}
                     for r in self.rows],  # fmt: skip
            "terrain_signal": [
                {"terrain": s.terrain, "variable": s.variable, "mean_abs_delta": s.mean_abs_delta,
                 "fidelity": s.fidelity, "torch_fidelity": s.torch_fidelity, "ratio": _json_number(s.ratio),
                 "bound": _json_number(s.bound),
                 "passed": s.passed}
                for s in self.signal
            ],  # fmt: skip
            "seconds": self.seconds,
        }


def _json_number(value: float) -> float | None:
    """JSON has no infinity: an unbounded ratio or bound (a zero yardstick error, no signal) is null."""
    return value if math.isfinite(value) else None


def confine_checkpoint(manifest: Manifest, model_path: Path) -> None:
    """A checkpoint the manifest names is read only inside the artifact's folder: the manifest may come
    from anyone, so a path elsewhere (however it got there) needs the user's own --checkpoint."""
    record = manifest.model.checkpoint
    if record is None:
        return
    folder = model_path.resolve().parent
    path = Path(record.path)
    if not path.is_absolute():
        path = folder / path
    if not path.resolve().is_relative_to(folder):
        raise BadInputError(
            f"{model_path}'s manifest names checkpoint {record.path}, outside the artifact's folder {folder}; "
            "expected it beside the model, or pass --checkpoint PATH to read it from there"
        )


def reference_from_manifest(manifest: Manifest, checkpoint: str | Path | None = None) -> ClimaX:
    """Rebuild the fp32 PyTorch reference the artifact came from: its config, and its seed or checkpoint.

    checkpoint: weights to use instead of the checkpoint the manifest records (which must be unchanged).
    """
    from climax_deploy.model import build_model

    record = manifest.model
    if checkpoint is None and record.checkpoint is not None:
        checkpoint = Path(record.checkpoint.path)
        if not checkpoint.is_file():
            raise BadInputError(
                f"the model was exported from checkpoint {checkpoint}, which is gone; pass --checkpoint"
            )
        actual = sha256_file(checkpoint)
        if actual != record.checkpoint.sha256:
            raise BadInputError(
                f"checkpoint {checkpoint} changed since export: sha256 {actual[:12]}..., the manifest records "
                f"{record.checkpoint.sha256[:12]}...; pass --checkpoint"
            )
    seed = record.seed if record.seed is not None else 0
    return build_model(dict(record.config), seed=seed, checkpoint=checkpoint)


def plugin_registrar() -> Callable[[], object] | None:
    """The ElevationAttention plugin's registration for plugin engines, where the kernels package imports."""
    if not TRITON.available():
        return None
    from climax_deploy.kernels.trt_plugin import register_elevation_attention_plugin

    return register_elevation_attention_plugin


def load_artifact(model_path: str | Path, options: LoadOptions = None, backend: str | None = None) -> Runner:
    """`runtime.load` with typed options (or keyword overrides) and its `backend` (None: by suffix);
    engines get the plugin registration."""
    from climax_deploy.runtime import load

    path = Path(model_path)
    overrides: dict[str, Any] = {}
    if isinstance(options, Mapping):
        overrides, options = dict(options), None
    if path.suffix == ".engine":
        from climax_deploy.runtime.tensorrt_runner import TensorRTOptions

        engine_options = options if isinstance(options, TensorRTOptions) else None
        if (engine_options is None or engine_options.register_plugins is None) and "register_plugins" not in overrides:
            overrides["register_plugins"] = plugin_registrar()
    return load(path, options, backend=backend, **overrides)


def run_parity(
    model_path: str | Path,
    terrains: Sequence[str] = ("mountain", "flat"),
    *,
    seed: int = 0,
    lead_time: float = 24.0,
    mixed_batch: bool | None = None,
    checkpoint: str | Path | None = None,
    load_options: LoadOptions = None,
    progress: Progress | None = None,
    backend_name: str = "auto",
    precision: str | None = None,
    save_polygraphy: str | Path | None = None,
    winds: str = "synthetic",
    reference_device: str = "cpu",
    reference_cache: dict[Any, Any] | None = None,
) -> ParityReport:
    """Grade the artifact (run by the runtime) against the float64 PyTorch truth.

    Each output variable passes where the backend's error against the truth is within the tolerance's
    factor (plus floor) of PyTorch's own error in `precision` (default: the artifact's); the terrain
    signal y(terrain) - y(flat) likewise. backend_name: 'auto' (by suffix), 'onnxruntime' (.onnx),
    'openvino' (.onnx, run in `precision`: fp32 or bf16), 'tensorrt' (.engine) or 'torch' (the PyTorch
    model rebuilt from the manifest, run eagerly in `precision`). mixed_batch: also run every terrain as one batch, split at the artifact's batch limit
    (default: on up to MIXED_BATCH_MAX_PATCHES patches). load_options: OnnxRuntimeOptions or
    TensorRTOptions, or a mapping of their fields. save_polygraphy: a directory for Polygraphy's
    --load-inputs/--load-outputs (the outputs are the truth, rounded to float32). winds: the wind
    fields of every case (climax_deploy.synthetic.WIND_KINDS: the wind-following scan's edge cases).
    reference_device: where the PyTorch references run ('cuda' on a GPU machine). reference_cache: a
    dict the caller keeps for one model (same weights, preset and checkpoint): references already
    computed there for the same cases and precision are reused (climax-gpu-check's attention modes).
    """
    from climax_deploy.validate.reference import SAME_PRECISION, TRUTH

    progress = progress or Progress("check-parity", enabled=False)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelFileError(f"model file {model_path} does not exist")
    check_backend(model_path, backend_name)
    manifest = read_manifest(model_path)
    if checkpoint is None:
        confine_checkpoint(manifest, model_path)
    precision = precision or manifest.precision
    table = tolerances(precision)
    if backend_name == "openvino":
        load_options = openvino_options(load_options, precision, manifest.precision)
    record = manifest.model
    elevations = parity_terrains(manifest, terrains, seed)
    cases = parity_inputs(manifest, terrains, seed, winds, elevations)
    lead = np.full(1, lead_time, dtype=np.float32)
    if mixed_batch is None:
        mixed_batch = record.num_patches <= MIXED_BATCH_MAX_PATCHES

    with progress.stage(f"running the PyTorch reference (float64 truth, then {precision})"):
        key = (precision, tuple(terrains), seed, lead_time, winds, str(checkpoint))
        if reference_cache is not None and key in reference_cache:
            truth, same = reference_cache[key]
        else:
            truth, same = reference_outputs(manifest, cases, lead, precision, checkpoint, device=reference_device)
            if reference_cache is not None:
                reference_cache[key] = (truth, same)
    if save_polygraphy is not None:
        from climax_deploy.validate.polygraphy_io import save_polygraphy_data

        save_polygraphy_data(save_polygraphy, [(x, lead) for x in cases.values()], list(truth.values()),
                             model=model_path, precision=precision, manifest=manifest)  # fmt: skip
    with progress.stage(f"loading {model_path.name}"):
        if backend_name == "torch":
            runner = torch_runner(manifest, checkpoint, precision)
        else:
            runner = load_artifact(model_path, load_options, None if backend_name == "auto" else backend_name)
    with runner:
        outs: dict[str, np.ndarray] = {}
        with progress.stage(f"running {runner.backend}"):
            for label, x in cases.items():
                outs[label] = runner.predict_batched(x, lead)
        mixed: dict[str, np.ndarray] = {}
        if mixed_batch and len(cases) > 1:
            with progress.stage(f"running {runner.backend} on one mixed batch of {len(cases)}"):
                y = runner.predict_batched(np.concatenate(list(cases.values())), np.repeat(lead, len(cases)))
                mixed = {label: y[i : i + 1] for i, label in enumerate(cases)}
        report = ParityReport(
            backend=runner.describe(), precision=precision, tolerances=dict(table), truth=TRUTH,
            same_precision=SAME_PRECISION[precision], seconds=progress.timings,
        )  # fmt: skip

    report.fields = ParityFields(
        record.lat, record.lon, tuple(record.output_variables), elevations,
        {label: y[0] for label, y in truth.items()}, {label: y[0].astype(np.float64) for label, y in outs.items()},
    )  # fmt: skip
    batch_label = "+".join(cases) + f" (batch {len(cases)})"
    for case_label, results in [*((lbl, {lbl: outs[lbl]}) for lbl in cases), (batch_label, mixed)]:
        for label, y in results.items():
            for v, name in enumerate(record.output_variables):
                tol = tolerance(precision, name)
                m = error_metrics(y[0, v], truth[label][0, v])
                torch_err = error_metrics(same[label][0, v], truth[label][0, v]).rel_l2
                bound = tol.rel_l2_bound(torch_err)
                row_case = case_label if case_label != batch_label else f"{label} in {batch_label}"
                report.rows.append(ParityRow(row_case, name, m, torch_err, bound, m.rel_l2 <= bound))
    for label in cases:
        if label == BASELINE_TERRAIN:
            continue
        d_truth = truth[label] - truth[BASELINE_TERRAIN]
        d_out = outs[label].astype(np.float64) - outs[BASELINE_TERRAIN]
        d_same = same[label] - same[BASELINE_TERRAIN]
        for v, name in enumerate(record.output_variables):
            tol = tolerance(precision, name)
            fid = signal_fidelity(d_out[0, v], d_truth[0, v])
            torch_fid = signal_fidelity(d_same[0, v], d_truth[0, v])
            d_norm = float(np.linalg.norm(d_truth[0, v]))
            output_per_signal = float(np.linalg.norm(truth[label][0, v])) / d_norm if d_norm > 0 else float("inf")
            bound = tol.fidelity_bound(torch_fid, output_per_signal)
            report.signal.append(
                SignalRow(label, name, float(np.abs(d_truth[0, v]).mean()), fid, torch_fid, bound, fid <= bound)
            )
    return report


def parity_terrains(manifest: Manifest, terrains: Sequence[str], seed: int = 0) -> dict[str, np.ndarray]:
    """label -> terrain [H, W] in metres for each terrain spec, plus the flat baseline."""
    grid = manifest.model.grid
    specs = [*terrains, *([] if BASELINE_TERRAIN in terrains else [BASELINE_TERRAIN])]
    return dict(resolve_terrain(spec, grid, seed) for spec in specs)


def parity_inputs(
    manifest: Manifest,
    terrains: Sequence[str],
    seed: int = 0,
    winds: str = "synthetic",
    elevations: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One standardised sample [1, V, H, W] per terrain, plus the flat baseline: the same seeded weather
    (winds of kind `winds`) on every terrain, standardised with the artifact's statistics.
    elevations: parity_terrains' result, where the caller already has it."""
    record = manifest.model
    if elevations is None:
        elevations = parity_terrains(manifest, terrains, seed)
    return {label: synthetic_sample(record.variables, metres, seed, record.standardisation, winds)[None]
            for label, metres in elevations.items()}  # fmt: skip


def reference_outputs(
    manifest: Manifest,
    cases: Mapping[str, np.ndarray],
    lead: np.ndarray,
    precision: str,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(float64 truth, PyTorch in `precision`) on each case, float64 arrays; the weights are freed after."""
    from climax_deploy.validate.reference import run_reference

    model = reference_from_manifest(manifest, checkpoint)
    same = run_reference(model, cases, lead, precision, device)
    truth = run_reference(model, cases, lead, "fp64", device)
    del model
    gc.collect()  # at full size the reference holds gigabytes the artifact's runner needs next
    return truth, same


def tensorrt_route_problem(backend: dict[str, Any], options: Any) -> str | None:
    """Why a passing report would not vouch for the ONNX Runtime TensorRT route, or None.

    The gate for serving through ONNX Runtime's TensorRT provider: check-parity --providers tensorrt must pass
    with the options serving uses, the provider must have run, and the options it ran with must be the
    ones asked for (trt_fp16 with its LayerNorm exclusion, the cache folder).
    """
    from climax_deploy.runtime.onnxruntime_backend import TENSORRT_PROVIDER, tensorrt_provider_options

    providers = getattr(options, "providers", None)  # OnnxRuntimeOptions only (OpenVINO's are a mapping)
    if providers is None or TENSORRT_PROVIDER not in choose_requested(providers):
        return None
    if TENSORRT_PROVIDER not in backend.get("providers_used", []):
        return f"{TENSORRT_PROVIDER} was asked for but the session used {backend.get('providers_used')}"
    ran = (backend.get("provider_options") or {}).get(TENSORRT_PROVIDER)
    wanted = tensorrt_provider_options(options)
    if ran != wanted:
        return f"{TENSORRT_PROVIDER} ran with {ran}, expected {wanted}"
    return None


def choose_requested(providers: Any) -> list[str]:
    """The provider names asked for ('tensorrt' -> TensorrtExecutionProvider), without checking availability."""
    from climax_deploy.runtime.onnxruntime_backend import PROVIDER_ALIASES

    names = [providers] if isinstance(providers, str) else list(providers)
    return [PROVIDER_ALIASES.get(n.lower(), n) for n in names]


BACKENDS: dict[str, str | None] = {
    "auto": None, "onnxruntime": ".onnx", "openvino": ".onnx", "tensorrt": ".engine", "torch": ".onnx",
}  # fmt: skip


def openvino_options(options: LoadOptions, precision: str, artifact_precision: str) -> LoadOptions:
    """OpenVINO runs an fp32 export in the graded precision (fp32, or bf16 through its precision hint)."""
    from climax_deploy.runtime.openvino_backend import PRECISIONS, OpenVinoOptions

    if artifact_precision != "fp32" or precision not in PRECISIONS:
        raise BadInputError(f"--backend openvino runs fp32 exports in {' or '.join(PRECISIONS)}; got a "
                            f"{artifact_precision} export graded in {precision}")  # fmt: skip
    if isinstance(options, OpenVinoOptions):
        return replace(options, precision=precision)
    if options is not None and not isinstance(options, Mapping):
        raise BadInputError(f"--backend openvino takes OpenVinoOptions, got {type(options).__name__}")
    return {**(options or {}), "precision": precision}


def check_backend(model_path: Path, backend: str) -> None:
    """The artifact must suit the backend: .onnx for ONNX Runtime and torch, .engine for TensorRT."""
    if backend not in BACKENDS:
        raise BadInputError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    suffix = BACKENDS[backend]
    if suffix is not None and model_path.suffix != suffix:
        raise BadInputError(f"--backend {backend} runs {suffix} files, got {model_path.name}")


def torch_runner(manifest: Manifest, checkpoint: str | Path | None, precision: str) -> Runner:
    """The PyTorch model rebuilt from the manifest, eager, fused attention, in `precision`'s recipe."""
    from climax_deploy.validate.reference import SamePrecisionRunner

    model = reference_from_manifest(manifest, checkpoint)
    return SamePrecisionRunner(model, attention="fused", precision=precision, manifest=manifest)


def format_report(report: ParityReport) -> str:
    """The parity table as text: per variable the backend's error and PyTorch's in the same precision,
    both against the float64 truth, their ratio, and the bound the backend must meet."""
    from climax_deploy.validate.metrics import describe_tolerances

    lines = [
        f"backend: {report.backend.get('backend')}  precision: {report.precision}",
        f"truth: {report.truth}; yardstick: {report.same_precision}",
        f"pass where error vs truth {describe_tolerances(report.precision)}",
    ]
    if "providers_used" in report.backend:
        lines.append(f"providers: used {report.backend['providers_used']}, available {report.backend['providers_available']}")
    for name, opts in (report.backend.get("provider_options") or {}).items():
        lines.append(f"{name} options: " + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())))
    p = report.precision
    w = max([34, *(len(r.case) for r in report.rows)])
    header = (f"{'case':<{w}} {'var':<5} {'max abs':>9} {'rel L2':>9} {'torch ' + p:>10} {'ratio':>6} "
              f"{'bound':>9} {'cosine':>10}  ok")  # fmt: skip
    lines += ["", "output vs float64 truth (relative L2)", header, "-" * len(header)]
    for r in report.rows:
        m = r.metrics
        lines.append(
            f"{r.case:<{w}} {r.variable:<5} {m.max_abs:9.2e} {m.rel_l2:9.2e} {r.torch_rel_l2:10.2e} {r.ratio:6.2f} "
            f"{r.bound:9.2e} {m.cosine:10.7f}  {'yes' if r.passed else 'NO'}"
        )
    if report.signal:
        header = (f"{'terrain signal: y(t) - y(flat)':<{w}} {'var':<5} {'mean |delta|':>12} {'fidelity':>9} "
                  f"{'torch ' + p:>10} {'ratio':>6} {'bound':>9}  ok")  # fmt: skip
        lines += ["", "terrain signal vs the truth's (fidelity |delta - delta_truth| / |delta_truth|)", header,
                  "-" * len(header)]  # fmt: skip
        for s in report.signal:
            lines.append(f"{s.terrain:<{w}} {s.variable:<5} {s.mean_abs_delta:12.4e} {s.fidelity:9.2e} "
                         f"{s.torch_fidelity:10.2e} {s.ratio:6.2f} {s.bound:9.2e}  {'yes' if s.passed else 'NO'}")  # fmt: skip
    worst = max((r.metrics.rel_l2 / r.bound for r in report.rows), default=0.0)
    worst_fid = max((s.fidelity / s.bound for s in report.signal), default=0.0)
    lines += ["", f"{'PASS' if report.passed else 'FAIL'}: worst error / bound {worst:.2f} (outputs), "
                  f"{worst_fid:.2f} (terrain signal)"]  # fmt: skip
    return "\n".join(lines)
