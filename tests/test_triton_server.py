"""A real Triton Inference Server on loopback (nvidia-pytriton's bundled tritonserver) serving an
exported model from a torch-free Python >= 3.12 environment, queried with tritonclient.

The environment is built once into .venv-triton/ (tests/triton_env.py, ~40 s) and reused. Skipped,
with the reason, only where no Python >= 3.12 exists; an install or server failure fails the tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from triton_env import ensure_env, find_python  # tests/ is on sys.path under pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (test extra) is not installed")

from climax_deploy.runtime import load
from climax_deploy.serving.launch import ServerProcess, _live_members
from climax_deploy.serving.load import run_load

pytestmark = pytest.mark.triton_server
MAX_BATCH = 4


@pytest.fixture(scope="module")
def triton_python() -> Path:
    python = find_python()
    if python is None:
        pytest.skip("needs a Python >= 3.12 for pytriton's Python backend (set CLIMAX_TRITON_PYTHON); none found")
    return ensure_env(python)


@pytest.fixture(scope="module")
def server(triton_python: Path, small_onnx: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(small_onnx, python=triton_python, max_batch=MAX_BATCH, threads=2, startup_timeout_s=120)
    with proc:  # the finalizer: stop the server (and tritonserver's process group) whatever happens
        yield proc


def infer(url: str, x: np.ndarray, lead: np.ndarray) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        ix = grpcclient.InferInput("x", list(x.shape), "FP32")
        ix.set_data_from_numpy(x)
        il = grpcclient.InferInput("lead_times", [len(lead), 1], "FP32")
        il.set_data_from_numpy(lead.reshape(-1, 1).astype(np.float32))
        result = client.infer("climax", [ix, il], outputs=[grpcclient.InferRequestedOutput("y")], client_timeout=120)
        return np.asarray(result.as_numpy("y"))


def test_server_environment_is_torch_free(triton_python: Path) -> None:
    code = (
        "import importlib.util, sys; import climax_deploy.runtime, climax_deploy.serving.server, pytriton; "
        "assert sys.version_info >= (3, 12); assert importlib.util.find_spec('torch') is None, 'torch installed'"
    )
    out = subprocess.run([str(triton_python), "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_outputs_equal_predict(server: ServerProcess, small_onnx: Path, small_inputs: tuple) -> None:
    x, lead = small_inputs
    served = infer(server.grpc_url, x, lead)
    with load(small_onnx, threads=2) as runner:
        local = runner.predict(x, lead)
    assert served.shape == local.shape == (2, 6, 32, 64)
    # the same ONNX Runtime build on the same file and threads: equal up to summation order
    np.testing.assert_allclose(served, local, rtol=0, atol=1e-5)
    assert not np.allclose(served[0], served[1])  # the two samples are really different


def test_model_config_on_the_server(server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        cfg = client.get_model_config("climax").config
    assert cfg.max_batch_size == MAX_BATCH and list(cfg.dynamic_batching.preferred_batch_size) == [1, 2, 4]
    assert [i.name for i in cfg.input] == ["x", "lead_times"] and list(cfg.input[0].dims) == [15, 32, 64]


def test_concurrent_clients_bounded_load(server: ServerProcess) -> None:
    result = run_load(server.grpc_url, concurrency=3, requests=12, duration_s=60, batch=1)
    summary = result.summary()
    assert result.errors == 0, result.first_error
    assert result.requests == summary["completed"] == len(result.latencies_ms) == 12
    wall_ms = result.wall_s * 1e3
    # every latency is one request inside the run, and the three clients overlapped: their request
    # times add up to more than the run's wall time (one client at a time would not)
    assert 0 < summary["p50_ms"] and summary["p99_ms"] <= wall_ms < sum(result.latencies_ms)
    assert summary["throughput_rps"] == pytest.approx(12 / result.wall_s)


def test_server_stops_with_its_children(triton_python: Path, small_onnx: Path) -> None:
    proc = ServerProcess(small_onnx, python=triton_python, max_batch=2, threads=1)
    with proc:
        pgid = proc.proc.pid if proc.proc else -1
        assert proc.ready_info["ready"] and infer(proc.grpc_url, *_one_sample()).shape == (1, 6, 32, 64)
    assert proc.proc is None and not _live_members(pgid)


def test_server_stops_when_its_launcher_is_killed(triton_python: Path, small_onnx: Path) -> None:
    """A launcher killed outright (SIGKILL: no finalizer runs) still leaves no server behind."""
    script = (
        "import sys; from climax_deploy.serving.launch import ServerProcess\n"
        f"p = ServerProcess({str(small_onnx)!r}, python={str(triton_python)!r}, max_batch=1, threads=1).start()\n"
        "print(p.proc.pid, p.log_path.parent, flush=True); sys.stdin.read()\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None
        pid, workdir = launcher.stdout.readline().split(maxsplit=1)
        pgid = int(pid)
        assert _live_members(pgid)
    finally:
        launcher.kill()
        launcher.wait(timeout=30)
    shutil.rmtree(workdir.strip(), ignore_errors=True)  # the launcher's log and ready file, orphaned by SIGKILL
    deadline = time.monotonic() + 60
    while _live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = _live_members(pgid)
    if alive:
        os.killpg(pgid, signal.SIGKILL)
    assert not alive, "climax-serve outlived its launcher"


def test_bad_clients_never_fail_good_requests(server: ServerProcess) -> None:
    """8 clients x 20 requests, 2 of the clients sending NaN lead times, through the dynamic batcher
    (max batch 4): every good request answered, every bad one refused alone with one clean line.
    Before the gate: 84 of 120 good requests failed with the bad ones' batches, INTERNAL + traceback."""
    result = run_load(server.grpc_url, concurrency=8, requests=20, duration_s=300, per_client=True, bad_clients=2)
    assert result.requests == 160 and result.errors == 0, result.first_error
    assert len(result.latencies_ms) == 120 and result.refused == 40 and result.bad_accepted == 0, result.first_bad_accepted
    assert result.first_refusal == "[StatusCode.INVALID_ARGUMENT] lead_times contain NaN or Inf: [nan]"


def test_bad_request_in_a_batch_of_good_ones(server: ServerProcess, small_onnx: Path) -> None:
    """Requests sent together so the batcher merges them: the bad ones fail alone, the good ones
    get the outputs they would get alone."""
    x, lead = _one_sample()
    x_bad = x.copy()
    x_bad[0, 2, 5, :7] = np.inf
    cases = [(x, lead), (x, np.array([np.nan], np.float32)), (x_bad, lead), (x, lead * 2), (x[:, :3], lead)]
    outcomes: list[object] = [None] * len(cases)

    def send(i: int) -> None:
        try:
            outcomes[i] = infer(server.grpc_url, *cases[i])
        except Exception as exc:  # InferenceServerException
            outcomes[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    with load(small_onnx, threads=2) as runner:
        for i in (0, 3):
            np.testing.assert_allclose(outcomes[i], runner.predict(*cases[i]), rtol=0, atol=1e-5)
    expected = {1: "lead_times contain NaN or Inf: [nan]", 2: "x contains NaN or Inf in", 4: "unexpected shape for input 'x'"}
    for i, text in expected.items():
        exc = outcomes[i]
        assert isinstance(exc, Exception) and exc.status() == "StatusCode.INVALID_ARGUMENT", exc  # type: ignore[attr-defined]
        assert text in str(exc) and "\n" not in str(exc) and "Traceback" not in str(exc) and ".py" not in str(exc)


def test_stop_under_load_drains_requests_in_flight(triton_python: Path, small_onnx: Path) -> None:
    """stop() (SIGTERM) while twelve batch-4 requests run one at a time on one thread: every request is
    answered (some were still queued when the stop came), then no process of the server's group is left
    and its work folder is gone."""
    root = Path(tempfile.mkdtemp(prefix="cs-"))  # short: pytriton's Unix sockets live below it
    proc = ServerProcess(small_onnx, python=triton_python, max_batch=4, threads=1, extra_args=["--work-root", str(root)])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 15, 32, 64)).astype(np.float32)
    lead = np.full(4, 24.0, np.float32)
    requests = 12
    outcomes: list[object] = [None] * requests

    def send(i: int) -> None:
        try:
            outcomes[i] = infer(proc.grpc_url, x, lead)
        except Exception as exc:
            outcomes[i] = exc

    with proc:
        pgid = proc.proc.pid if proc.proc else -1
        work = Path(proc.ready_info["work_folder"])
        assert work.parent == root and work.is_dir()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(requests)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # all received; one runs, the rest wait in the queue
        in_flight = sum(o is None for o in outcomes)
        assert in_flight >= 2, f"only {in_flight} of {requests} requests still in flight when the stop comes"
        proc.stop()
    for t in threads:
        t.join(timeout=60)
    assert all(isinstance(o, np.ndarray) and o.shape == (4, 6, 32, 64) for o in outcomes), [
        o.shape if isinstance(o, np.ndarray) else f"{o!s}"[:300] for o in outcomes
    ]
    assert not _live_members(pgid) and not work.exists()
    root.rmdir()


def test_unusable_host_exits_within_seconds(triton_python: Path, small_onnx: Path) -> None:
    """The real command in the server's environment: 203.0.113.7 (TEST-NET-3) is no address of this
    machine. Before the checks, tritonserver failed to bind and pytriton waited 122 s, then a traceback."""
    began = time.monotonic()
    out = subprocess.run(
        [str(triton_python), "-m", "climax_deploy.serving.server", str(small_onnx), "--host", "203.0.113.7"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    took = time.monotonic() - began
    assert out.returncode == 2 and took < 10, (out.returncode, took, out.stderr[-500:])
    assert out.stderr.count("\n") == 1 and "203.0.113.7" in out.stderr and "Traceback" not in out.stderr


def _one_sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((1, 15, 32, 64)).astype(np.float32), np.array([24.0], dtype=np.float32)
