"""What climax-serve refuses before it starts anything, what its gate refuses per request, and its
work folders: pure logic, in the project's environment (no pytriton needed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_run import run_main  # tests/ is on sys.path under pytest

from climax_deploy.runner import ModelSpec
from climax_deploy.serving import server
from climax_deploy.serving.gate import check_request
from climax_deploy.serving.workspace import LOCK_NAME, WorkFolder, remove_stale

VARIABLES = tuple(f"v{i}" for i in range(15))


@pytest.fixture
def busy_port() -> tuple[int, socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield int(listener.getsockname()[1]), listener
    listener.close()


def _serve(argv: list[str], tmp_path: Path) -> tuple[int, str, float]:
    model = tmp_path / "absent.onnx"  # never reached: the checks come before loading anything
    began = time.monotonic()
    done = run_main("climax-serve", server.main, [str(model), *argv])
    return done.returncode, done.stderr, time.monotonic() - began


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--http-port", "18123", "--grpc-port", "18123"], "--http-port and --grpc-port are both 18123"),
        (["--grpc-port", "70000"], "--grpc-port must be a TCP port 1..65535, got 70000"),
        (["--host", "203.0.113.7"], "--host 203.0.113.7 (203.0.113.7) is not an address of this machine"),
        (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' does not resolve"),
        (["--host", "300.1.1.1"], "--host '300.1.1.1' does not resolve"),
        (["--name", "../escaped"], "--name must be 1-56 letters, digits"),
        (["--name", 'a" platform: "x'], "--name must be 1-56 letters, digits"),
    ],
    ids=["equal-ports", "port-range", "foreign-address", "unknown-name", "bad-address", "name-path", "name-quote"],
)
def test_start_mistakes_are_one_line_within_seconds(argv: list[str], expected: str, tmp_path: Path) -> None:
    code, err, took = _serve(argv, tmp_path)
    assert code == 2 and took < 10, (code, took, err)
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err, err


def test_work_folder_too_long_for_sockets(tmp_path: Path) -> None:
    code, err, _ = _serve(["--work-root", str(tmp_path / ("w" * 60))], tmp_path)
    assert code == 2 and err.count("\n") == 1 and "the kernel allows 107; use a shorter --work-root" in err, err


def test_busy_port_is_named(busy_port: tuple[int, socket.socket], tmp_path: Path) -> None:
    port, _ = busy_port
    code, err, took = _serve(["--http-port", str(port), "--grpc-port", "18124"], tmp_path)
    assert code == 2 and took < 10 and err.count("\n") == 1, err
    assert f"--http-port {port} is already in use on 127.0.0.1" in err


@pytest.mark.parametrize(
    ("x_fault", "lead", "expected"),
    [
        (None, [[np.nan]], "lead_times contain NaN or Inf: [nan]"),
        (None, [[np.inf]], "lead_times contain NaN or Inf: [inf]"),
        (None, [[-6.0]], "lead_times must be >= 0 hours, got [-6.0]"),
        (np.nan, [[24.0]], "x contains NaN or Inf in v3 (5 values)"),
        (-np.inf, [[24.0]], "x contains NaN or Inf in v3 (5 values)"),
    ],
)
def test_gate_refuses_a_request_with_one_line(x_fault: float | None, lead: list, expected: str) -> None:
    spec = ModelSpec(VARIABLES, ("o",), (4, 8))
    x = np.zeros((1, 15, 4, 8), np.float32)
    if x_fault is not None:
        x[0, 3, 0, :5] = x_fault
    reason = check_request(spec, x, np.array(lead, np.float32))
    assert reason is not None and reason.startswith(expected) and "\n" not in reason
    assert check_request(spec, np.zeros((2, 15, 4, 8), np.float32), np.array([[0.0], [240.0]], np.float32)) is None


def test_gate_config_names_the_batcher_and_the_runner(tmp_path: Path) -> None:
    from climax_deploy.serving.gate import GATE_FILE, GateSpec, write_gate_model

    gate = GateSpec("climax-runner", VARIABLES, ("o1", "o2"), (32, 64))
    folder = write_gate_model(tmp_path, "climax", gate, 4, 2, 2000, [1, 2, 4])
    config = (folder / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "max_batch_size: 4" in config and "count: 2" in config
    assert "dims: [ 15, 32, 64 ]" in config and "dims: [ 2, 32, 64 ]" in config and "[ 1, 2, 4 ]" in config
    assert GateSpec.read(folder / "1" / GATE_FILE) == gate


def test_stale_work_folder_of_a_killed_server_is_removed(tmp_path: Path) -> None:
    """A process holding a work folder is SIGKILLed: its folder stays until the next start."""
    root = tmp_path / "work"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from climax_deploy.serving.workspace import WorkFolder\n"
         f"w = WorkFolder(Path({str(root)!r})).__enter__(); print(w.path, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        held = Path(holder.stdout.readline().strip())
        assert (held / LOCK_NAME).is_file()
        assert remove_stale(root) == [] and held.is_dir()  # a live server's folder stays
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert held.is_dir()  # SIGKILL: no clean-up ran
    with WorkFolder(root) as work:
        assert not held.exists() and work.path.is_dir() and work.path.parent == root
    assert not work.path.exists() and list(root.iterdir()) == []
