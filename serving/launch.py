"""Start `climax-serve` in a child process on loopback, wait until it is ready, always stop it.

Used by `climax-load-test --serve` and the server tests. The child runs in its own session (process
group) so that stopping it also stops the tritonserver and proxy processes pytriton started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from climax_deploy.errors import BadInputError, ClimaxDeployError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class ServerStartError(ClimaxDeployError):
    """The Triton server did not become ready."""


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on loopback right now (all held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [int(s.getsockname()[1]) for s in socks]


class ServerProcess:
    """`with ServerProcess("small.onnx", python=...) as server: server.grpc_url` -> '127.0.0.1:PORT'."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        python: str | os.PathLike[str] = sys.executable,
        model_name: str = "climax",
        instances: int = 1,
        max_batch: int = 4,
        threads: int | None = None,
        startup_timeout_s: float = 180.0,
        stop_timeout_s: float = 30.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.model = Path(model)
        self.python = str(python)
        self.model_name = model_name
        self.instances = instances
        self.max_batch = max_batch
        self.threads = threads
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = list(extra_args or [])
        self.http_port = 0
        self.grpc_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_info: dict[str, Any] = {}
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[str] | None = None
        self.log_path: Path | None = None
        self.ready_path: Path | None = None

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def command(self) -> list[str]:
        cmd = [
            self.python, "-m", "climax_deploy.serving.server", str(self.model), "--host", LOOPBACK,
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), "--name", self.model_name,
            "--instances", str(self.instances), "--max-batch", str(self.max_batch),
        ]  # fmt: skip
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        return cmd + self.extra_args

    def start(self) -> ServerProcess:
        if not self.model.is_file():
            raise BadInputError(f"model file {self.model} does not exist")
        self.http_port, self.grpc_port = free_ports(2)
        self._workdir = tempfile.TemporaryDirectory(prefix="climax-serve-")
        self.log_path = Path(self._workdir.name) / "server.log"
        self.ready_path = Path(self._workdir.name) / "ready.json"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        # stdout goes to the log too: tritonserver's own log lines (relayed by pytriton) share it and
        # can split the server's ready line, so readiness comes through a file written atomically.
        # --parent-pid: the server stops when this process dies (on Linux, when the thread that
        # started it exits: start servers from a thread that outlives them, e.g. the main thread).
        cmd = [*self.command(), "--ready-file", str(self.ready_path), "--parent-pid", str(os.getpid())]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Wait for the server's ready file (its JSON: ports, model name, backend)."""
        assert self.proc is not None and self.ready_path is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.ready_path.is_file():
                self.ready_info = json.loads(self.ready_path.read_text())
                return
            if self.proc.poll() is not None:
                raise ServerStartError(f"climax-serve exited with code {self.proc.returncode}: {self.log_tail()}")
            time.sleep(0.1)
        raise ServerStartError(f"climax-serve not ready after {self.startup_timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self) -> None:
        """SIGTERM to climax-serve, which drains the requests in flight and stops tritonserver; SIGKILL
        to its process group after `stop_timeout_s`, and to any process of the group left behind.
        (SIGTERM to the whole group would also stop Triton's Python stubs under requests in flight.)"""
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                pgid = os.getpgid(proc.pid)
            except ProcessLookupError:
                pgid = None
            if pgid is not None:
                if proc.poll() is None:
                    proc.terminate()
                else:  # the leader is gone already: its group may not be
                    _signal_group(pgid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("climax-serve did not stop in %.0f s; killing it", self.stop_timeout_s)
                    _signal_group(pgid, signal.SIGKILL)
                    proc.wait(timeout=10)
                _wait_group_gone(pgid, self.stop_timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Children (tritonserver, proxies) may outlive the launcher by a moment; kill stragglers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _live_members(pgid):
            return
        time.sleep(0.2)
    _signal_group(pgid, signal.SIGKILL)


def _live_members(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies awaiting their reaper do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
