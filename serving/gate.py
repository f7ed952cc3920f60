"""The model clients call: each request is checked on its own before it may join a batch.

pytriton 0.7 answers a failing inference callable by failing every request of the batch, with
INTERNAL and a Python traceback; one client's NaN lead time would fail the other clients' requests
merged with it. So `climax-serve` puts this Triton Python-backend model (it runs inside Triton's
Python stub, torch-free: numpy and this package's core) in front of the runner model that pytriton
binds: a request that fails `check_model_inputs` gets its own INVALID_ARGUMENT response with the
check's one-line message; the good requests of the batch go on together, as one request, to the
runner model, and each gets its slice of the output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.inputs import check_model_inputs
from climax_deploy.manifest import BatchSpec
from climax_deploy.runner import ModelSpec
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

GATE_FILE = "gate.json"
# Triton's Python backend imports `model.py` from the model's version folder; ours only points here.
MODEL_PY = "from climax_deploy.serving.gate import TritonPythonModel  # noqa: F401\n"
RUNNER_FAILED = "the model failed on the server (its log has the details); the request itself passed the checks"


@dataclass(frozen=True)
class GateSpec:
    """What the gate needs to know: the runner model it feeds and the checks' model description."""

    runner_model: str
    variables: tuple[str, ...]
    output_variables: tuple[str, ...]
    grid: tuple[int, int]

    def model_spec(self) -> ModelSpec:
        # batch: a request's batch is checked by Triton against max_batch_size, before the gate
        return ModelSpec(self.variables, self.output_variables, self.grid, BatchSpec.dynamic())

    @classmethod
    def read(cls, path: Path) -> GateSpec:
        raw = json.loads(path.read_text())
        return cls(raw["runner_model"], tuple(raw["variables"]), tuple(raw["output_variables"]), tuple(raw["grid"]))  # type: ignore[arg-type]


def check_request(spec: ModelSpec, x: np.ndarray, lead_times: np.ndarray) -> str | None:
    """None when the request may join a batch, else the one-line reason it may not."""
    try:
        check_model_inputs(spec, x, np.asarray(lead_times).reshape(-1))  # lead_times [B, 1] -> [B]
    except BadInputError as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def write_gate_model(repository: Path, name: str, gate: GateSpec, max_batch: int, instances: int,
                     max_queue_delay_us: int, preferred: list[int]) -> Path:  # fmt: skip
    """The gate's model folder in `repository`: config.pbtxt, 1/model.py and 1/gate.json."""
    folder = repository / name
    (folder / "1").mkdir(parents=True)
    v, (h, w), o = len(gate.variables), gate.grid, len(gate.output_variables)
    (folder / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
        f'input [\n  {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ {v}, {h}, {w} ] }},\n'
        f'  {{ name: "{LEAD_TIMES_NAME}" data_type: TYPE_FP32 dims: [ 1 ] }}\n]\n'
        f'output [\n  {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ {o}, {h}, {w} ] }}\n]\n'
        f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
    )
    (folder / "1" / "model.py").write_text(MODEL_PY)
    (folder / "1" / GATE_FILE).write_text(json.dumps(asdict(gate)))
    return folder


class TritonPythonModel:
    """Triton's Python-backend entry points; `execute` gets the batch Triton's dynamic batcher formed."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        gate = GateSpec.read(Path(args["model_repository"]) / args["model_version"] / GATE_FILE)
        self.runner_model = gate.runner_model
        self.spec = gate.model_spec()

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        responses: list[Any] = [None] * len(requests)
        good: list[tuple[int, np.ndarray, np.ndarray]] = []
        for i, request in enumerate(requests):
            x = pb.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()  # [b, V, H, W]
            lead = pb.get_input_tensor_by_name(request, LEAD_TIMES_NAME).as_numpy()  # [b, 1]
            reason = check_request(self.spec, x, lead)
            if reason is None:
                good.append((i, x, lead))
            else:
                responses[i] = pb.InferenceResponse(error=pb.TritonError(reason, pb.TritonError.INVALID_ARG))
        if good:
            for i, y in zip((g[0] for g in good), self._run(good)):
                responses[i] = y
        return responses

    def _run(self, good: list[tuple[int, np.ndarray, np.ndarray]]) -> list[Any]:
        """One request to the runner model for all good requests; each gets its rows of y."""
        pb = self.pb
        x = np.concatenate([g[1] for g in good])
        lead = np.concatenate([g[2] for g in good])
        result = pb.InferenceRequest(
            model_name=self.runner_model,
            requested_output_names=[OUTPUT_NAME],
            inputs=[pb.Tensor(INPUT_NAME, x), pb.Tensor(LEAD_TIMES_NAME, lead)],
        ).exec()
        if result.has_error():
            pb.Logger.log_warn(f"runner model {self.runner_model} failed: {result.error().message()}")
            error = pb.TritonError(RUNNER_FAILED, pb.TritonError.INTERNAL)
            return [pb.InferenceResponse(error=error) for _ in good]
        y = pb.get_output_tensor_by_name(result, OUTPUT_NAME).as_numpy()  # [sum b, O, H, W]
        bounds = np.cumsum([0] + [len(g[1]) for g in good])
        return [
            pb.InferenceResponse(output_tensors=[pb.Tensor(OUTPUT_NAME, y[a:b])])
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
