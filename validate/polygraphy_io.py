"""Parity data in Polygraphy's own JSON formats, so NVIDIA's tool can check an engine without our code.

`check-parity --save-polygraphy DIR` writes
- DIR/inputs.json: a list of feed dicts {"x": [B, V, H, W] float32, "lead_times": [B] float32},
  Polygraphy's `--load-inputs` format (polygraphy.json.save_json of List[Dict[str, ndarray]]);
- DIR/reference_outputs.json: a RunResults with the fp32 PyTorch reference's outputs {"y": ...},
  Polygraphy's `--load-outputs` format;
- DIR/README.txt: the `polygraphy run` command lines for the engine (--trt) and the ONNX (--onnxrt).
Tolerances are Polygraphy's element-wise ones (pass where |diff| <= atol or |diff| / |ref| <= rtol):
the atol and rtol of climax_deploy.validate.metrics.TOLERANCES for the artifact's precision.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.optional import POLYGRAPHY
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME
from climax_deploy.validate.metrics import TOLERANCES, tolerance

REFERENCE_RUNNER = "climax-deploy-pytorch-reference"
INPUTS_FILE = "inputs.json"
OUTPUTS_FILE = "reference_outputs.json"
# (atol, rtol) per precision, as `polygraphy run` takes them.
POLYGRAPHY_TOLERANCES: dict[str, tuple[float, float]] = {p: (t.atol, t.rtol) for p, t in TOLERANCES.items()}


@dataclass(frozen=True)
class PolygraphyFiles:
    """The files `polygraphy run` loads: --load-inputs and --load-outputs."""

    inputs: Path
    outputs: Path

    def command(self, model: str | Path, backend: str, precision: str) -> list[str]:
        """`polygraphy run MODEL --trt|--onnxrt --load-inputs ... --load-outputs ...` with our tolerances."""
        tol = tolerance(precision)
        flags = {"trt": "--trt", "tensorrt": "--trt", "onnxrt": "--onnxrt", "onnxruntime": "--onnxrt"}
        if backend not in flags:
            raise BadInputError(f"Polygraphy backend must be one of {sorted(flags)}, got {backend!r}")
        flag = flags[backend]
        cmd = ["polygraphy", "run", str(model), flag]
        if flag == "--trt" and str(model).endswith(".engine"):
            cmd += ["--model-type", "engine"]
        cmd += ["--load-inputs", str(self.inputs), "--load-outputs", str(self.outputs),
                "--atol", str(tol.atol), "--rtol", str(tol.rtol)]  # fmt: skip
        return cmd


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
) -> PolygraphyFiles:
    """Write the inputs and reference outputs (one iteration per feed) in Polygraphy's formats."""
    if len(feeds) != len(reference_outputs):
        raise BadInputError(
            f"expected one reference output per feed: {len(feeds)} feeds, got {len(reference_outputs)} outputs"
        )
    save_json, run_results = _polygraphy()
    directory = Path(directory)
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
    lines = ["# Check a model against the fp32 PyTorch reference with NVIDIA's Polygraphy (no climax-deploy needed):"]
    target = str(model) if model is not None else "MODEL"
    engine = target[: -len(".onnx")] + ".engine" if target.endswith(".onnx") else target
    lines.append(" ".join(shlex.quote(p) for p in files.command(engine, "trt", precision)))
    if target.endswith(".onnx"):
        lines.append(" ".join(shlex.quote(p) for p in files.command(target, "onnxrt", precision)))
    (directory / "README.txt").write_text("\n".join(lines) + "\n")
    return files


__all__ = ["POLYGRAPHY_TOLERANCES", "PolygraphyFiles", "REFERENCE_RUNNER", "save_polygraphy_data"]
