"""Parity data in Polygraphy's own JSON formats, so NVIDIA's tool can check an engine without our code.

`check-parity --save-polygraphy DIR` writes
- DIR/inputs.json: a list of feed dicts {"x": [B, V, H, W] float32, "lead_times": [B] float32},
  Polygraphy's `--load-inputs` format (polygraphy.json.save_json of List[Dict[str, ndarray]]);
- DIR/reference_outputs.json: a RunResults with the float64 PyTorch truth's outputs {"y": ...} rounded
  to float32, Polygraphy's `--load-outputs` format;
- DIR/README.txt: `polygraphy run` command lines with absolute paths (they run from any directory): for
  an engine, the engine itself (--trt --model-type engine) and the ONNX it was built from (--onnxrt), as
  its manifest records it; for an ONNX, the ONNX with ONNX Runtime (--onnxrt) and with TensorRT (--trt,
  Polygraphy builds its own engine from that ONNX; --strongly-typed for fp16 graphs).
Tolerances are Polygraphy's element-wise ones (pass where |diff| <= atol or |diff| / |ref| <= rtol):
the default atol and rtol of climax_deploy.validate.metrics.TOLERANCES for the artifact's precision.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.manifest import EngineManifest, Manifest
from climax_deploy.optional import POLYGRAPHY
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME
from climax_deploy.validate.metrics import TOLERANCES, tolerance

REFERENCE_RUNNER = "climax-deploy-pytorch-reference"
INPUTS_FILE = "inputs.json"
OUTPUTS_FILE = "reference_outputs.json"
# (atol, rtol) per precision, as `polygraphy run` takes them: the default entries of the one table.
POLYGRAPHY_TOLERANCES: dict[str, tuple[float, float]] = {
    p: (tolerance(p).atol, tolerance(p).rtol) for p in TOLERANCES
}


@dataclass(frozen=True)
class PolygraphyFiles:
    """The files `polygraphy run` loads: --load-inputs and --load-outputs."""

    inputs: Path
    outputs: Path

    def command(self, model: str | Path, backend: str, precision: str) -> list[str]:
        """`polygraphy run MODEL --trt|--onnxrt --load-inputs ... --load-outputs ...` with our tolerances;
        every path absolute, so the command runs from any directory."""
        tol = tolerance(precision)
        flags = {"trt": "--trt", "tensorrt": "--trt", "onnxrt": "--onnxrt", "onnxruntime": "--onnxrt"}
        if backend not in flags:
            raise BadInputError(f"Polygraphy backend must be one of {sorted(flags)}, got {backend!r}")
        flag = flags[backend]
        model = _absolute(model)
        cmd = ["polygraphy", "run", str(model), flag]
        if flag == "--trt" and model.suffix == ".engine":
            cmd += ["--model-type", "engine"]
        elif flag == "--trt" and precision == "fp16":
            cmd += ["--strongly-typed"]  # the fp16 graph states its precisions (fp32 islands)
        cmd += ["--load-inputs", str(_absolute(self.inputs)), "--load-outputs", str(_absolute(self.outputs)),
                "--atol", str(tol.atol), "--rtol", str(tol.rtol)]  # fmt: skip
        return cmd


def _absolute(path: str | Path) -> Path:
    """An absolute, normalised path (no '..'; symbolic links kept as the user named them)."""
    return Path(os.path.abspath(path))


def _polygraphy() -> tuple[object, object]:
    """Polygraphy's save_json and RunResults, or MissingBackendError saying what to install."""
    replace(POLYGRAPHY, purpose="--save-polygraphy").load()
    from polygraphy.comparator import RunResults
    from polygraphy.json import save_json

    return save_json, RunResults


def save_polygraphy_data(
    directory: str | Path,
    feeds: Sequence[tuple[np.ndarray, np.ndarray]],
    reference_outputs: Sequence[np.ndarray],
    model: str | Path | None = None,
    precision: str = "fp32",
    manifest: Manifest | None = None,
) -> PolygraphyFiles:
    """Write the inputs and reference outputs (one iteration per feed) in Polygraphy's formats."""
    if len(feeds) != len(reference_outputs):
        raise BadInputError(
            f"expected one reference output per feed: {len(feeds)} feeds, got {len(reference_outputs)} outputs"
        )
    save_json, run_results = _polygraphy()
    directory = _absolute(directory)
    directory.mkdir(parents=True, exist_ok=True)
    iterations = [
        {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32), LEAD_TIMES_NAME: np.ascontiguousarray(lt, dtype=np.float32)}
        for x, lt in feeds
    ]
    files = PolygraphyFiles(directory / INPUTS_FILE, directory / OUTPUTS_FILE)
    save_json(iterations, str(files.inputs), description="climax-deploy parity inputs")  # type: ignore[operator]
    results = run_results()  # type: ignore[operator]
    results.add([{OUTPUT_NAME: np.asarray(y, dtype=np.float32)} for y in reference_outputs], runner_name=REFERENCE_RUNNER)
    results.save(str(files.outputs))
    lines = ["# Check a model against the float64 PyTorch truth with NVIDIA's Polygraphy (no climax-deploy needed):"]
    lines += [" ".join(shlex.quote(p) for p in files.command(path, backend, precision))
              for path, backend in polygraphy_targets(model, manifest)]  # fmt: skip
    (directory / "README.txt").write_text("\n".join(lines) + "\n")
    return files


def polygraphy_targets(model: str | Path | None, manifest: Manifest | None = None) -> list[tuple[Path, str]]:
    """(model path, Polygraphy backend) pairs to check: the artifact itself, and for an engine the ONNX its
    manifest says it was built from (where that file still exists). No guessed names."""
    if model is None:
        return []
    path = _absolute(model)
    if path.suffix == ".engine":
        targets = [(path, "trt")]
        if isinstance(manifest, EngineManifest) and Path(manifest.source_onnx.path).is_file():
            targets.append((_absolute(manifest.source_onnx.path), "onnxrt"))
        return targets
    return [(path, "onnxrt"), (path, "trt")]


__all__ = ["POLYGRAPHY_TOLERANCES", "PolygraphyFiles", "REFERENCE_RUNNER", "polygraphy_targets", "save_polygraphy_data"]
