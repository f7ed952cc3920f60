"""Artifacts from elsewhere: every file a manifest names stays in the artifact's folder; hostile JSON,
Triton names and config strings are refused or escaped with one line (issue 18, deliverable 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_run import run_main  # tests/ is on sys.path under pytest

from climax_deploy.artifacts import parse_json
from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.export.triton_cli import main as triton_main
from climax_deploy.export.triton_repo import TritonRepoOptions, pbtxt_string
from climax_deploy.manifest import CONTENT_KEY, content_sha256, read_manifest
from climax_deploy.runtime import load


@pytest.fixture
def external_onnx(small_external_onnx: Path) -> Path:
    return small_external_onnx


def _copy(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".data", ".manifest.json"):
        shutil.copy(str(src) + suffix, str(folder / src.name) + suffix)
    return folder / src.name


def _restamp(path: Path, edit: dict[str, object]) -> None:
    """Edit the sidecar and re-stamp its content checksum, as an attacker would."""
    sidecar = Path(str(path) + ".manifest.json")
    obj = json.loads(sidecar.read_text())
    obj.update(edit)
    obj[CONTENT_KEY] = content_sha256(obj)
    sidecar.write_text(json.dumps(obj))


@pytest.mark.parametrize("name", ["../../payload.sh", "/tmp/payload.sh", "sub/../../payload.sh"])
def test_external_data_outside_the_folder_is_refused(external_onnx: Path, tmp_path: Path, name: str) -> None:
    path = _copy(external_onnx, tmp_path / "a" / "b")
    payload = tmp_path / "payload.sh"
    payload.write_bytes(b"#!/bin/sh\necho pwned\n")
    _restamp(path, {"external_data": {name: "0" * 64}})
    for verify in (True, False):
        with pytest.raises(ModelFileError, match="inside the artifact's folder.*" + name.replace(".", r"\.")):
            read_manifest(path, verify=verify)
    out = tmp_path / "repo"
    done = run_main("export-triton-repo", triton_main, ["--onnx", path, "-o", out])
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "inside the artifact's folder" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "payload.sh"]  # nothing written beside the payload


def test_external_data_symlinked_out_of_the_folder_is_refused(external_onnx: Path, tmp_path: Path) -> None:
    """Same name, same bytes (the checksum matches), but the file lives outside: refused by load() too."""
    path = _copy(external_onnx, tmp_path / "model")
    data = Path(str(path) + ".data")
    outside = tmp_path / "elsewhere.data"
    data.rename(outside)
    data.symlink_to(outside)
    with pytest.raises(ModelFileError, match="outside the artifact's folder"):
        load(path, providers="cpu")
    done = run_main("export-triton-repo", triton_main, ["--onnx", path, "-o", tmp_path / "repo"])
    assert done.returncode == 2 and "symlink leading out" in done.stderr


def test_verify_false_still_checks_the_external_weights(external_onnx: Path, tmp_path: Path) -> None:
    """verify=False skips the model file's and the manifest's own checksums only, never the weights'."""
    path = _copy(external_onnx, tmp_path)
    data = Path(str(path) + ".data")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="sha256 does not match"):
        load(path, providers="cpu", verify=False)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 64"),
        ('{"a": ' + "7" * 5000 + "}", "integer of 5000 digits"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('{"a": 1e999}', "overflows a float"),
        ('{"a": NaN}', "NaN"),
    ],
)
def test_hostile_manifest_json_is_one_line(external_onnx: Path, tmp_path: Path, text: str, reason: str) -> None:
    path = _copy(external_onnx, tmp_path)
    Path(str(path) + ".manifest.json").write_text(text)
    with pytest.raises(ModelFileError) as caught:
        read_manifest(path)
    message = str(caught.value)
    assert reason in message and "\n" not in message and len(message) < 300


def test_hostile_json_in_a_stats_file_is_one_line(tmp_path: Path) -> None:
    from climax_deploy.standardisation import read_json_stats

    stats = tmp_path / "stats.json"
    stats.write_text('{"temp": [273.15, 30.0], "temp": [0.0, 1.0]}')
    with pytest.raises(BadInputError, match="duplicate key 'temp'"):
        read_json_stats(stats)


@pytest.mark.parametrize("name", ["../../escaped", "a\" platform: \"x", "", ".hidden", "a/b", "x" * 201])
def test_triton_model_names_follow_the_rules(external_onnx: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(BadInputError, match="--name must be"):
        TritonRepoOptions(name=name)
    out = tmp_path / "repo" / "inner"
    done = run_main("export-triton-repo", triton_main, ["--onnx", external_onnx, "-o", out, "--name", name])
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "--name must be" in done.stderr
    assert not (tmp_path / "repo").exists() and not (tmp_path / "escaped").exists()
    TritonRepoOptions(name="climax-v2.1_eu")  # what Triton accepts still passes


def test_pbtxt_strings_are_escaped() -> None:
    assert pbtxt_string('a" platform: "x') == r'"a\" platform: \"x"'
    assert pbtxt_string("back\\slash\nnew") == r'"back\\slash\nnew"'
    assert pbtxt_string("bell\x07") == r'"bell\007"'


def test_parse_json_keeps_ordinary_json() -> None:
    assert parse_json(b'{"a": [1, -2.5e3, "[{"], "b": {"c": null}}', "f") == {"a": [1, -2500.0, "[{"], "b": {"c": None}}
    with pytest.raises(BadInputError, match="f: not valid JSON"):
        parse_json(b"\xff\xfe", "f")


def test_check_parity_reads_a_recorded_checkpoint_only_inside_the_folder(small_model, tmp_path: Path) -> None:
    """The manifest records where the weights came from; check-parity follows that path only inside the
    artifact's folder, anywhere else only when the user names it (--checkpoint)."""
    import torch

    from climax_deploy.export import ExportOptions, Provenance, export_onnx
    from climax_deploy.export.onnx_export import file_record
    from climax_deploy.validate.cli import main as check_parity

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checkpoint = elsewhere / "weights.pt"
    torch.save(small_model.state_dict(), checkpoint)
    model = tmp_path / "artifact" / "small.onnx"
    model.parent.mkdir()
    export_onnx(small_model, model, ExportOptions(), Provenance(preset="small", checkpoint=file_record(checkpoint)))
    done = run_main("check-parity", check_parity, [model, "-q"])
    assert done.returncode == 2 and "outside the artifact's folder" in done.stderr and "--checkpoint" in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    done = run_main("check-parity", check_parity, [model, "-q", "--checkpoint", checkpoint])
    assert done.returncode == 0, done.stderr
