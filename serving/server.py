"""`climax-serve`: an exported model behind Triton Inference Server (via nvidia-pytriton).

Triton takes the HTTP/gRPC traffic and batches requests dynamically; each model instance is one
`climax_deploy.runtime` runner (ONNX Runtime or TensorRT) in a torch-free Python process.
pytriton's Python backend needs Python >= 3.12 (see docs/operations.md); the model's inputs and
outputs are those of `Runner.predict`: x [B, V, H, W] and lead_times [B, 1] (hours) in,
y [B, O, H, W] out, all float32 and standardised.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import numpy as np

from climax_deploy.artifacts import write_json_atomic
from climax_deploy.cli import EXIT_OK, ArgParser, run_cli
from climax_deploy.errors import BadInputError, ClimaxDeployError, MissingBackendError
from climax_deploy.optional import PYTRITON, TRITONCLIENT_GRPC
from climax_deploy.runner import Runner
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME
from climax_deploy.serving.addresses import check_ports
from climax_deploy.serving.gate import GateSpec, write_gate_model
from climax_deploy.serving.workspace import WorkFolder, default_root, folder_name_length

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "climax"
DEFAULT_HOST = "127.0.0.1"
PYTRITON_MIN_PYTHON = (3, 12)
RUNNER_SUFFIX = "-runner"
MODEL_NAME_MAX = 56  # the runner model's name adds RUNNER_SUFFIX
MODEL_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MODEL_NAME_MAX - 1}}}")
UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL
PYTRITON_WORKSPACE = "pytriton"
MONITOR_PERIOD_S = 1.0
DRAIN_TIMEOUT_S = 30  # tritonserver's exit timeout: how long requests in flight may take after SIGTERM


class ServeError(ClimaxDeployError):
    """The server could not start serving."""


@dataclass(frozen=True)
class ServeOptions:
    """How the model is exposed: name, addresses, instances and the dynamic batcher's limits."""

    model_name: str = DEFAULT_MODEL_NAME
    host: str = DEFAULT_HOST
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int | None = None  # None: metrics endpoint off
    instances: int = 1
    max_batch: int = 4
    max_queue_delay_us: int = 2000
    work_root: Path | None = None  # None: workspace.default_root()


def load_pytriton() -> ModuleType:
    """pytriton, or MissingBackendError: its Python backend needs Python >= 3.12 and the `serve` extra."""
    if sys.version_info < PYTRITON_MIN_PYTHON:
        raise MissingBackendError(
            f"pytriton's Python backend needs Python >= {'.'.join(map(str, PYTRITON_MIN_PYTHON))}, "
            f"this is {sys.version.split()[0]}: {PYTRITON.install}"
        )
    return PYTRITON.load()


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """Powers of two up to the limit, plus the limit: what the dynamic batcher tries to form."""
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= max_batch]
    return sorted(set(sizes + [max_batch]))


def make_infer_function(runner: Runner) -> Callable[..., Any]:
    """A pytriton inference callable for one instance: Triton's batch in, `runner.predict_batched` out
    (which splits at the artifact's batch limit and pads to a fixed batch). The gate has checked
    every request already; a batch that still fails here fails whole."""
    from pytriton.decorators import batch

    @batch  # type: ignore[misc]
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        x = inputs[INPUT_NAME].astype(np.float32, copy=False)  # [B, V, H, W]
        lead = inputs[LEAD_TIMES_NAME].astype(np.float32, copy=False).reshape(-1)  # [B, 1] -> [B]
        return {OUTPUT_NAME: runner.predict_batched(x, lead)}

    return infer  # type: ignore[no-any-return]


def served_max_batch(runner: Runner, requested: int) -> int:
    """The batcher's limit: `requested`, capped at the largest batch the artifact runs in one call."""
    limit = runner.spec.batch.max
    return requested if limit is None else min(requested, limit)


def runner_model_name(model_name: str) -> str:
    """The model pytriton binds the runners to; clients call `model_name`, the gate in front of it."""
    return f"{model_name}{RUNNER_SUFFIX}"


def check_model_name(name: str) -> None:
    if not MODEL_NAME.fullmatch(name):
        raise BadInputError(
            f"--name must be 1-{MODEL_NAME_MAX} letters, digits, '_', '-' or '.', starting with a letter or digit, "
            f"got {name[:80]!r}"
        )


def bind_runners(triton: Any, runners: Sequence[Runner], options: ServeOptions) -> None:
    """Bind the runner model (one instance per runner). Its batches come formed by the gate, so its
    own batcher waits for nothing."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    spec = runners[0].spec
    h, w = spec.grid
    max_batch = served_max_batch(runners[0], options.max_batch)
    triton.bind(
        model_name=runner_model_name(options.model_name),
        infer_func=[make_infer_function(r) for r in runners],
        inputs=[
            Tensor(name=INPUT_NAME, dtype=np.float32, shape=(len(spec.variables), h, w)),
            Tensor(name=LEAD_TIMES_NAME, dtype=np.float32, shape=(1,)),
        ],
        outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(len(spec.output_variables), h, w))],
        config=ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
        strict=True,
    )


def write_gate(repository: Path, runner: Runner, options: ServeOptions) -> None:
    """The gate model clients call (serving/gate.py), with the dynamic batcher's limits."""
    spec = runner.spec
    max_batch = served_max_batch(runner, options.max_batch)
    gate = GateSpec(runner_model_name(options.model_name), spec.variables, spec.output_variables, spec.grid)
    write_gate_model(repository, options.model_name, gate, max_batch, options.instances,
                     options.max_queue_delay_us, preferred_batch_sizes(max_batch))  # fmt: skip


def load_gate(triton: Any, options: ServeOptions) -> None:
    """Load the gate (Triton runs in explicit model control: pytriton loads only what it binds; the
    model-repository API takes pytriton's access token)."""
    from pytriton.client.auth import create_auth_headers

    grpcclient = TRITONCLIENT_GRPC.load()
    headers = create_auth_headers(triton.get_access_token(), "grpc")
    with grpcclient.InferenceServerClient(f"{_loopback_for(options.host)}:{options.grpc_port}") as client:
        client.load_model(options.model_name, headers=headers)
        if not client.is_model_ready(options.model_name):
            raise ServeError(f"the gate model {options.model_name!r} did not become ready; see the server log")


def drain_gate(triton: Any, options: ServeOptions, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Unload the gate first and wait until it is gone: Triton refuses new requests to it and lets
    those queued or running finish while the runner model still serves them. (Triton's own shutdown
    unloads both models at once, which fails the requests the gate still holds.)"""
    from pytriton.client.auth import create_auth_headers

    grpcclient = TRITONCLIENT_GRPC.load()
    headers = create_auth_headers(triton.get_access_token(), "grpc")
    deadline = time.monotonic() + timeout_s
    with grpcclient.InferenceServerClient(f"{_loopback_for(options.host)}:{options.grpc_port}") as client:
        client.unload_model(options.model_name, headers=headers)
        while time.monotonic() < deadline:
            index = client.get_model_repository_index(headers=headers, as_json=True).get("models", [])
            states = {m.get("state") for m in index if m.get("name") == options.model_name}
            if not states & {"READY", "UNLOADING"}:
                return
            time.sleep(0.1)
    log.warning("requests still in flight after %.0f s; stopping anyway", timeout_s)


def _loopback_for(host: str) -> str:
    """Where this process reaches its own server: the bound address, or loopback for a wildcard."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def triton_config(options: ServeOptions, model_repository: Path) -> Any:
    """pytriton's TritonConfig: HTTP and gRPC on `options.host`, metrics only when a port is given;
    the gate's model comes from `model_repository`."""
    from pytriton.triton import TritonConfig

    return TritonConfig(
        model_repository=model_repository,
        http_address=options.host,
        http_port=options.http_port,
        grpc_address=options.host,
        grpc_port=options.grpc_port,
        allow_metrics=options.metrics_port is not None,
        metrics_address=options.host if options.metrics_port is not None else None,
        metrics_port=options.metrics_port,
        allow_sagemaker=False,
        allow_vertex_ai=False,
        exit_on_error=True,
        exit_timeout_secs=DRAIN_TIMEOUT_S,
        log_verbose=0,
    )


def exit_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when the launcher dies (Linux), so a killed test run or load test leaves no server
    behind; the launcher already gone means exit now."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:  # died before prctl took effect (or not Linux and already gone)
        raise SystemExit(f"launcher {parent_pid} is gone")


def expose_libpython() -> None:
    """Triton's Python backend stub links libpython; a shared build outside the loader's path
    (pyenv, conda) is found through LD_LIBRARY_PATH, which the server's children inherit."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])


def check_socket_paths(options: ServeOptions) -> None:
    """pytriton names a Unix socket per runner instance inside the work folder; a longer path than
    the kernel allows fails tritonserver's model load with an EOFError deep in a traceback."""
    root = options.work_root if options.work_root is not None else default_root()
    pytriton = len(str(Path(root).absolute())) + 1 + folder_name_length() + 1 + len(PYTRITON_WORKSPACE)
    longest = pytriton + 1 + len(f"{runner_model_name(options.model_name)}_0_{options.instances - 1}-server.sock")
    if longest > UNIX_SOCKET_PATH_MAX:
        raise BadInputError(
            f"the work folder's sockets would need paths of {longest} characters, the kernel allows "
            f"{UNIX_SOCKET_PATH_MAX}; use a shorter --work-root (now {str(root)[:120]!r}) or --name"
        )


def check_options(options: ServeOptions) -> None:
    """Everything that can be refused before loading a model or starting tritonserver."""
    check_model_name(options.model_name)
    if options.instances < 1 or options.max_batch < 1:
        raise BadInputError(f"instances and max batch must be >= 1, got {options.instances} and {options.max_batch}")
    if options.max_queue_delay_us < 0:
        raise BadInputError(f"max queue delay must be >= 0 us, got {options.max_queue_delay_us}")
    check_socket_paths(options)
    ports = {"--http-port": options.http_port, "--grpc-port": options.grpc_port, "--metrics-port": options.metrics_port}
    check_ports(options.host, ports)


def serve(
    model_path: str,
    options: ServeOptions,
    load_options: dict[str, Any] | None = None,
    ready_file: str | os.PathLike[str] | None = None,
) -> None:
    """Load `options.instances` runners and serve them until SIGINT/SIGTERM.

    When ready, one JSON line goes to stdout (for people) and, atomically, to `ready_file` (for
    launchers: stdout also carries tritonserver's log lines, which can interleave with it).
    SIGTERM stops taking requests, lets those in flight finish (up to DRAIN_TIMEOUT_S) and stops
    tritonserver; the work folder goes with it, or with the next start if this one was killed."""
    check_options(options)  # first: a mistake is one line within seconds, whatever is installed
    load_pytriton()
    from pytriton.triton import Triton

    from climax_deploy.runtime import load

    runners: list[Runner] = []

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    expose_libpython()
    try:
        for _ in range(options.instances):  # inside try: a failed load closes those already loaded
            runners.append(load(model_path, **(load_options or {})))
        with WorkFolder(options.work_root) as work:
            repository = work.path / "models"
            write_gate(repository, runners[0], options)
            with Triton(config=triton_config(options, repository), workspace=work.path / PYTRITON_WORKSPACE) as triton:
                bind_runners(triton, runners, options)
                triton.run()
                load_gate(triton, options)
                ready = {
                    "ready": True, "model": options.model_name, "host": options.host, "http_port": options.http_port,
                    "grpc_port": options.grpc_port, "instances": options.instances, "backend": runners[0].backend,
                    "runner_model": runner_model_name(options.model_name), "work_folder": str(work.path),
                }  # fmt: skip
                if ready_file is not None:
                    write_json_atomic(ready_file, ready)
                print(json.dumps(ready), flush=True)
                # not triton.serve(): it takes SIGINT itself and stops Triton with the gate's queue full
                try:
                    while triton.is_alive():
                        time.sleep(MONITOR_PERIOD_S)
                except KeyboardInterrupt:  # SIGINT or SIGTERM
                    drain_gate(triton, options)
                    raise
                raise ServeError("tritonserver or a model instance stopped unexpectedly; its log is above")
    except KeyboardInterrupt:
        pass
    finally:
        for runner in runners:
            runner.close()


def build_parser() -> ArgParser:
    p = ArgParser(
        prog="climax-serve",
        description=(
            "Serve an exported model (.onnx, or .engine with TensorRT) on Triton Inference Server through "
            "nvidia-pytriton, with dynamic batching. Inputs x [B, V, H, W] and lead_times [B, 1], output y, "
            "float32, standardised. Needs Python >= 3.12 and the 'serve' extra. Binds to 127.0.0.1 unless "
            "--host says otherwise. Prints one JSON line when ready; stops on Ctrl-C or SIGTERM."
        ),
    )
    p.add_argument("model", help="model artifact (.onnx or .engine) with its manifest")
    p.add_argument(
        "--name", default=DEFAULT_MODEL_NAME, help=f"model name on the server (default {DEFAULT_MODEL_NAME})"
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: loopback only)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port (default: off)")
    p.add_argument("--instances", type=int, default=1, help="model instances (one runner each; default 1)")
    p.add_argument("--max-batch", type=int, default=4, help="dynamic batcher's maximum batch (default 4)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, help="batcher's queue delay (default 2000 us)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "openvino"], default="auto",
                   help="auto (default): by suffix; openvino: the .onnx on OpenVINO (CPU, fp32)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime (or OpenVINO) intra-op threads per instance")
    p.add_argument("--providers", default="auto", help="ONNX Runtime providers: auto (default), cpu or cuda")
    p.add_argument(
        "--work-root", type=Path, default=None,
        help="folder for the servers' work folders (default: climax-serve-UID in the temp folder); "
        "those of killed servers are removed at the next start",
    )  # fmt: skip
    p.add_argument("--ready-file", default=None, help="write the ready JSON to this file once serving")
    p.add_argument("--parent-pid", type=int, default=None, help="stop when this process (the launcher) exits")
    p.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"],
        help="log level on stderr, pytriton's included (default warning)",
    )  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = logging.getLogger()
    root.setLevel(args.log_level.upper())
    for handler in root.handlers:  # timestamps: startup and shutdown steps are what one debugs here
        handler.setFormatter(logging.Formatter("climax-serve %(asctime)s %(name)s: %(message)s"))
    if args.parent_pid is not None:
        exit_with_parent(args.parent_pid)
    options = ServeOptions(
        model_name=args.name, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, instances=args.instances, max_batch=args.max_batch,
        max_queue_delay_us=args.max_queue_delay_us, work_root=args.work_root,
    )  # fmt: skip
    load_options: dict[str, Any] = {}
    if args.backend == "openvino":
        if args.providers != "auto":
            raise BadInputError(f"--providers {args.providers} is an ONNX Runtime option; --backend openvino runs on the CPU")
        load_options = {"backend": "openvino", "threads": args.threads}
    elif str(args.model).endswith(".onnx"):
        load_options = {"providers": args.providers, "threads": args.threads}
    serve(args.model, options, load_options, ready_file=args.ready_file)
    return EXIT_OK


def entry() -> None:
    sys.exit(run_cli("climax-serve", main))


if __name__ == "__main__":
    entry()
