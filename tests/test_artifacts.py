"""Artifact plumbing: outputs distinct from inputs, writable outputs, file modes, temporaries, one-unit writes."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from climax_deploy.artifacts import (
    ArtifactWriter,
    check_outputs_distinct,
    check_writable,
    write_bytes_atomic,
    write_json_atomic,
)
from climax_deploy.cli import run_cli
from climax_deploy.errors import BadInputError


def test_output_equal_to_an_input_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match="--json m.onnx would overwrite the input"):
        check_outputs_distinct({"model": model}, {"--json": Path("m.onnx")})
    with pytest.raises(BadInputError, match="would overwrite"):  # the input's manifest travels with it
        check_outputs_distinct({"model": model}, {"--json": tmp_path / "m.onnx.manifest.json"})
    os.link(model, tmp_path / "hard.onnx")
    with pytest.raises(BadInputError, match="would overwrite"):  # same inode under another name
        check_outputs_distinct({"model": model}, {"-o": tmp_path / "hard.onnx"})
    with pytest.raises(BadInputError, match="are the same file"):
        check_outputs_distinct({}, {"-o": tmp_path / "a.engine", "--save-onnx": tmp_path / "a.engine"})
    with pytest.raises(BadInputError, match="would replace the input"):
        check_outputs_distinct({"--onnx": tmp_path / "repo" / "c_onnx" / "1" / "m.onnx"}, {}, {"-o": tmp_path / "repo" / "c_onnx"})
    check_outputs_distinct({"model": model, "--checkpoint": None}, {"--json": tmp_path / "r.json", "-o": None})


def test_unwritable_output_is_one_line_before_the_work(tmp_path: Path) -> None:
    """Runs as root here, so permissions do not stop writes: a regular file where a folder is expected does."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(BadInputError, match="is not a folder"):
        check_writable(blocker / "out" / "r.json")
    check_writable(tmp_path / "new" / "dir" / "r.json", None)
    assert not (tmp_path / "new").exists()


def test_os_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("x")

    def main(argv: object) -> int:
        write_json_atomic(blocker / "r.json", {})
        return 0

    assert run_cli("prog", main, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prog: error:"), err


def test_written_files_honour_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        write_bytes_atomic(tmp_path / "config.pbtxt", b"x")
        os.umask(0o077)
        write_bytes_atomic(tmp_path / "private", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "config.pbtxt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


def test_temporaries_are_removed_on_failure_and_when_stale(tmp_path: Path) -> None:
    final = tmp_path / "r.json"
    with pytest.raises(RuntimeError):
        with ArtifactWriter(final) as w:
            w.stage(final).write_text("half")
            raise RuntimeError("killed")
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    stale = tmp_path / ".r.json.abc123.tmp"  # left by a writer killed with -9
    fresh = tmp_path / ".r.json.def456.tmp"  # a concurrent writer's, still working
    other = tmp_path / ".other.json.abc.tmp"
    for p in (stale, fresh, other):
        p.write_text("x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    write_json_atomic(final, {})
    assert not stale.exists() and fresh.exists() and other.exists()


def test_a_group_is_renamed_together_or_not_at_all(tmp_path: Path) -> None:
    model, manifest = tmp_path / "m.onnx", tmp_path / "m.onnx.manifest.json"
    model.write_text("old model")
    manifest.write_text("old manifest")
    with pytest.raises(RuntimeError):
        with ArtifactWriter(model) as w:
            w.stage(model).write_text("new model")
            raise RuntimeError("the manifest cannot be written")
    assert (model.read_text(), manifest.read_text()) == ("old model", "old manifest")
    with ArtifactWriter(model) as w:
        w.stage(model).write_text("new model")
        w.stage(manifest).write_text("new manifest")
    assert (model.read_text(), manifest.read_text()) == ("new model", "new manifest")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.onnx.lock", "m.onnx", "m.onnx.manifest.json"]
