"""Parity data in Polygraphy's own JSON formats, so NVIDIA's tool can check an engine without our code.

`check-parity --save-polygraphy DIR` writes
- DIR/inputs.json: a list of feed dicts {"x": [B, V, H, W] float32, "lead_times": [B] float32},
  Polygraphy's `--load-inputs` format (polygraphy.json.save_json of List[Dict[str, ndarray]]);
- DIR/reference_outputs.json: a RunResults with the fp32 PyTorch reference's outputs {"y": ...},
  Polygraphy's `--load-outputs` format;
- DIR/README.txt: the `polygraphy run` command lines for the engine (--trt) and the ONNX (--onnxrt).
Tolerances are Polygraphy's element-wise ones (pass where |diff| <= atol or |diff| / |ref| <= rtol),
chosen per precision from the measured errors (see POLYGRAPHY_TOLERANCES).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from climax_deploy.errors import MissingBackendError
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

REFERENCE_RUNNER = "climax-deploy-pytorch-reference"
INPUTS_FILE = "inputs.json"
OUTPUTS_FILE = "reference_outputs.json"
# (atol, rtol) element-wise. fp32: measured max |diff| ~3e-6 on outputs of order 1. fp16 on ONNX
# Runtime CPU: max |diff| 6e-4; TensorRT's fp16 kernels accumulate differently, so 1e-2 leaves room
# while still failing a broken physics path (terrain signal ~1e-2, errors of a wrong mask ~1e-1).
POLYGRAPHY_TOLERANCES: dict[str, tuple[float, float]] = {"fp32": (1e-4, 1e-3), "fp16": (1e-2, 1e-2)}


@dataclass(frozen=True)
class PolygraphyFiles:
    inputs: Path
    outputs: Path

    def command(self, model: str | Path, backend: str, precision: str) -> list[str]:
        """`polygraphy run MODEL --trt|--onnxrt --load-inputs ... --load-outputs ...` with our tolerances."""
        atol, rtol = POLYGRAPHY_TOLERANCES[precision]
        flag = {"trt": "--trt", "tensorrt": "--trt", "onnxrt": "--onnxrt", "onnxruntime": "--onnxrt"}[backend]
        cmd = ["polygraphy", "run", str(model), flag]
        if flag == "--trt" and str(model).endswith(".engine"):
            cmd += ["--model-type", "engine"]
        cmd += ["--load-inputs", str(self.inputs), "--load-outputs", str(self.outputs),
                "--atol", str(atol), "--rtol", str(rtol)]  # fmt: skip
        return cmd


def _polygraphy() -> tuple[object, object]:
    try:
        from polygraphy.comparator import RunResults
        from polygraphy.json import save_json
    except ImportError as exc:
        raise MissingBackendError("--save-polygraphy needs Polygraphy: pip install polygraphy==0.53.6") from exc
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
        raise ValueError(f"{len(feeds)} feeds but {len(reference_outputs)} reference outputs")
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
