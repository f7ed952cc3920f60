"""Outputs: modes from the umask, one line for a full disk, odd or long paths before any work, a lock
that says who holds it and gives up (issue 18, deliverable 4)."""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from climax_deploy import artifacts
from climax_deploy.artifacts import NAME_OVERHEAD, ArtifactWriter, artifact_lock, check_writable
from climax_deploy.errors import BadInputError, LockTimeoutError, WriteError


def test_external_data_honours_the_umask(small_external_onnx: Path) -> None:
    """Exported under umask 002 (the fixture): the weights' file gets 0664 like the model and its manifest."""
    folder = small_external_onnx.parent
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir() if not p.name.startswith(".")}
    assert modes == {"small.onnx": "0o664", "small.onnx.data": "0o664", "small.onnx.manifest.json": "0o664"}


def test_a_full_disk_is_one_line(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes fail as a full disk does (EFBIG; netCDF4 reports only 'HDF error')."""
    xr = pytest.importorskip("xarray", reason="the io extra (xarray) is not installed")
    from climax_deploy.gridded.files import write_dataset

    rng = np.random.default_rng(0)
    ds = xr.Dataset({"pm25": (("lat", "lon"), rng.random((400, 400)).astype(np.float32))})
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, hard))
    try:
        with pytest.raises(WriteError) as caught:
            write_dataset(ds, tmp_path / "f.nc")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    message = str(caught.value)
    assert "cannot write" in message and "MiB free" in message and "\n" not in message
    assert not list(tmp_path.iterdir()) or [p.name for p in tmp_path.iterdir()] == [".f.nc.lock"]


def test_non_utf8_long_and_folder_outputs_are_refused_before_the_work(tmp_path: Path) -> None:
    from cli_run import run_main

    from climax_deploy.forecast.cli import main as forecast_main

    absent = tmp_path / "absent.onnx"  # the model is checked after the outputs: no work can have begun
    cases = {
        os.fsdecode(b"f\xff.nc"): "is not valid UTF-8",
        "x" * (256 - NAME_OVERHEAD) + ".nc": "expected at most",
        "folder.nc": "it is a folder",
    }
    (tmp_path / "folder.nc").mkdir()
    for output, reason in cases.items():
        with pytest.raises(BadInputError, match=reason):
            check_writable(tmp_path / output)
        done = run_main("climax-forecast", forecast_main,
                        ["--model", absent, "--analysis", tmp_path / "a.nc", "-o", tmp_path / output])  # fmt: skip
        assert done.returncode == 2 and reason in done.stderr and done.stderr.count("\n") == 1, done.stderr
    check_writable(tmp_path / "folder.nc", folder_ok=True)  # a zarr store is replaced whole
    check_writable(tmp_path / ("x" * (255 - NAME_OVERHEAD)))


def test_a_held_lock_names_its_holder_and_times_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    final = tmp_path / "m.onnx"
    with artifact_lock(final):
        began = time.monotonic()
        with pytest.raises(LockTimeoutError) as caught, caplog.at_level("WARNING"):
            with artifact_lock(final, timeout=1.5):
                pass
        waited = time.monotonic() - began
    assert 1.5 <= waited < 3.0
    said = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert said and f"pid {os.getpid()}" in said[0], caplog.text  # who holds it, said within 2 s
    assert f"pid {os.getpid()}" in str(caught.value) and "after 1.5 s" in str(caught.value)
    with artifact_lock(final, timeout=0.1):  # free again once the holder is done
        pass


def test_a_writer_waits_for_a_held_lock_up_to_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "LOCK_TIMEOUT_SECONDS", 0.3)
    with artifact_lock(tmp_path / "r.json"):
        with pytest.raises(LockTimeoutError, match=r"\.r\.json\.lock is still held by pid"):
            with ArtifactWriter(tmp_path / "r.json") as writer:
                writer.stage(tmp_path / "r.json").write_text("{}")
    assert not (tmp_path / "r.json").exists()
