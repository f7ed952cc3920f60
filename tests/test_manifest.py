"""The typed artifact contract: round trips, strict parsing that names the field, checksums, batch specs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.manifest import (
    SCHEMA_VERSION,
    BatchSpec,
    BuildOptions,
    EngineManifest,
    FileRecord,
    GpuRecord,
    ModelRecord,
    OnnxManifest,
    check_embedded,
    embedded_metadata,
    from_json,
    manifest_path,
    read_manifest,
    read_onnx_manifest,
    to_json,
    write_manifest,
)
from climax_deploy.schema import OUTPUTS, VARIABLES, domain_coordinates
from climax_deploy.standardisation import Standardisation


def model_record(**changes: Any) -> ModelRecord:
    fields: dict[str, Any] = dict(
        variables=VARIABLES,
        output_variables=OUTPUTS,
        grid=(32, 64),
        lat=domain_coordinates((32, 64))[0],
        lon=domain_coordinates((32, 64))[1],
        patch_size=2,
        num_patches=512,
        config={"img_size": [32, 64], "embed_dim": 128, "wind_scan": False},
        standardisation=Standardisation.defaults(VARIABLES),
        seed=0,
        preset="small",
    )
    return ModelRecord(**{**fields, **changes})


def onnx_manifest(**changes: Any) -> OnnxManifest:
    fields: dict[str, Any] = dict(
        precision="fp32", batch=BatchSpec.dynamic(), model=model_record(), opset=18, heads_per_chunk=1,
        versions={"climax_deploy": "0.1.0"}, created_utc="2026-11-28T00:00:00+00:00",
    )  # fmt: skip
    return OnnxManifest(**{**fields, **changes})


def engine_manifest() -> EngineManifest:
    return EngineManifest(
        build=BuildOptions(batch=BatchSpec(1, 2, 4), precision="fp16", attention="native", opt_level=3,
                           hardware_compatibility="ampere+", version_compatible=True, exclude_lean_runtime=False,
                           workspace_bytes=1 << 30, timing_cache=None),
        model=model_record(checkpoint=FileRecord("/m.ckpt", "ab" * 32), seed=None),
        source_onnx=FileRecord("m.onnx", "cd" * 32), source_precision="fp16", tensorrt_version="10.13.0",
        gpu=GpuRecord("NVIDIA H100", "9.0", 80 << 30), build_path="strongly typed",
        strongly_typed=True, build_seconds=12.5,
        versions={"tensorrt": "10.13.0"}, created_utc="2026-11-28T00:00:00+00:00",
    )  # fmt: skip


@pytest.mark.parametrize("manifest", [onnx_manifest(), engine_manifest()], ids=["onnx", "engine"])
def test_round_trip_through_json(manifest: OnnxManifest | EngineManifest) -> None:
    text = json.dumps(to_json(manifest))
    assert from_json(json.loads(text)) == manifest


def test_an_engine_states_its_batch_once() -> None:
    data = to_json(engine_manifest())
    assert data["batch"] == {"min": 1, "opt": 2, "max": 4}
    assert not {"max_batch", "profile", "profiles"} & set(data)
    assert data["inputs"][0]["shape"] == ["batch", 15, 32, 64]  # derived for readers


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["model"].pop("grid"), r"required field 'model.grid' is missing"),
        (lambda d: d["model"].__setitem__("grid", [32]), r"field 'model.grid': expected \[H, W\]"),
        (lambda d: d["model"].pop("lat"), r"required field 'model.lat' is missing"),
        (lambda d: d["model"].__setitem__("lon", [72.0] * 64), r"field 'model.lon': expected 64 strictly monotonic"),
        (lambda d: d["batch"].__setitem__("max", "four"), r"field 'batch.max': expected an integer"),
        (lambda d: d["batch"].__setitem__("min", 3), r"field 'batch'.*min <= opt"),
        (lambda d: d.__setitem__("precision", "fp8"), r"field 'precision': expected one of \['fp32', 'fp16'\]"),
        (lambda d: d.__setitem__("kind", "pt"), r"field 'kind'"),
        (lambda d: d["model"]["standardisation"].pop("u"), r"'model.standardisation' lacks variable\(s\) u"),
        (lambda d: d["model"]["standardisation"].__setitem__("u", [0, -1]), r"'u' needs a finite mean and a positive std"),
        (lambda d: d["model"].__setitem__("checkpoint", {"path": 3, "sha256": "x"}), r"'model.checkpoint.path'"),
        (lambda d: d.__setitem__("schema_version", 1), rf"schema_version 1, this toolkit reads {SCHEMA_VERSION}.*re-export"),
        (lambda d: d.__setitem__("format", "climax-deploy/manifest/1"), r"not a climax-deploy manifest"),
    ],
)
def test_strict_parsing_names_the_field(edit: Any, message: str) -> None:
    data = copy.deepcopy(to_json(onnx_manifest()))
    edit(data)
    with pytest.raises(ModelFileError, match=message):
        from_json(data, "m.onnx.manifest.json")


def test_write_and_read_verify_checksums(tmp_path: Path) -> None:
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(b"model bytes")
    written = write_manifest(artifact, onnx_manifest())
    assert written.file == "m.onnx" and len(written.sha256) == 64
    assert manifest_path(artifact) == tmp_path / "m.onnx.manifest.json"
    assert read_onnx_manifest(artifact) == written
    artifact.write_bytes(b"model bytes, changed")
    with pytest.raises(ModelFileError, match="does not match the manifest"):
        read_manifest(artifact)
    assert read_manifest(artifact, verify=False) == written
    with pytest.raises(ModelFileError, match="kind 'onnx', expected 'tensorrt-engine'"):
        read_manifest(artifact, verify=False, kind="tensorrt-engine")


def test_embedded_copy_must_agree(tmp_path: Path) -> None:
    manifest = onnx_manifest()
    metadata = embedded_metadata(manifest)
    check_embedded(metadata, manifest, "m.onnx")
    with pytest.raises(ModelFileError, match="model.grid=.*disagrees"):
        check_embedded(metadata, onnx_manifest(model=model_record(grid=(64, 128))), "m.onnx")
    with pytest.raises(ModelFileError, match="batch=.*disagrees"):
        check_embedded(metadata, onnx_manifest(batch=BatchSpec.fixed(2)), "m.onnx")
    with pytest.raises(ModelFileError, match="not a climax-deploy model"):
        check_embedded({}, manifest, "m.onnx")


@pytest.mark.parametrize(
    ("text", "spec", "shown"),
    [("dynamic", BatchSpec(1, 1, None), "dynamic"), ("4", BatchSpec(4, 4, 4), "4"), ("1,2,8", BatchSpec(1, 2, 8), "1,2,8")],
)
def test_batch_spec_parse(text: str, spec: BatchSpec, shown: str) -> None:
    assert BatchSpec.parse(text) == spec and str(spec) == shown


@pytest.mark.parametrize("text", ["0", "two", "1,2", "4,2,8", "-1"])
def test_batch_spec_refuses(text: str) -> None:
    with pytest.raises(BadInputError):
        BatchSpec.parse(text)


def test_batch_spec_checks() -> None:
    BatchSpec.fixed(2).check(2)
    with pytest.raises(BadInputError, match="exported for batch 2, got batch 3"):
        BatchSpec.fixed(2).check(3)
    with pytest.raises(BadInputError, match="exceeds this model's maximum batch 4"):
        BatchSpec(1, 2, 4).check(5)
    with pytest.raises(BadInputError, match="below this model's minimum batch 2"):
        BatchSpec(2, 2, 4).check(1)
    BatchSpec(1, 2, 4).within(BatchSpec.dynamic())
    BatchSpec.fixed(2).within(BatchSpec.fixed(2))
    with pytest.raises(BadInputError, match="exported for batch 2; use --batch 2"):
        BatchSpec(1, 2, 4).within(BatchSpec.fixed(2))
    with pytest.raises(BadInputError, match="outside what the model takes"):
        BatchSpec.dynamic().within(BatchSpec.dynamic())  # an engine profile needs a maximum


def test_an_edited_manifest_is_caught_by_its_content_checksum(tmp_path: Path) -> None:
    from climax_deploy.manifest import write_artifact

    artifact = tmp_path / "m.onnx"
    write_artifact(artifact, b"model bytes", onnx_manifest())
    read_onnx_manifest(artifact)
    obj = json.loads(manifest_path(artifact).read_text())
    variable = obj["model"]["variables"][0]
    obj["model"]["standardisation"][variable] = [0.0, 1.0]
    manifest_path(artifact).write_text(json.dumps(obj))
    with pytest.raises(ModelFileError, match="manifest was edited after export"):
        read_manifest(artifact)
    del obj["content_sha256"]
    manifest_path(artifact).write_text(json.dumps(obj))
    with pytest.raises(ModelFileError, match="no content_sha256"):
        read_manifest(artifact)


def test_model_and_manifest_are_written_as_one_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import climax_deploy.manifest as manifest_module
    from climax_deploy.manifest import write_artifact

    artifact = tmp_path / "m.onnx"
    first = write_artifact(artifact, b"first", onnx_manifest())

    def broken(*args: Any) -> bytes:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manifest_module, "manifest_bytes", broken)
    with pytest.raises(OSError):
        write_artifact(artifact, b"second", onnx_manifest())
    monkeypatch.undo()
    assert artifact.read_bytes() == b"first" and read_onnx_manifest(artifact) == first
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_racing_writers_leave_a_matching_pair(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from climax_deploy.manifest import write_artifact

    artifact = tmp_path / "m.onnx"

    def write(i: int) -> None:
        write_artifact(artifact, f"weights of writer {i}".encode() * 1000, onnx_manifest(created_utc=str(i)))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(24)))
    manifest = read_onnx_manifest(artifact)  # checksums of model and manifest verified
    assert artifact.read_bytes().startswith(f"weights of writer {manifest.created_utc}".encode())


def test_written_manifest_verifies_and_sha_comes_from_the_staged_file(tmp_path: Path) -> None:
    from climax_deploy.artifacts import sha256_file
    from climax_deploy.manifest import write_artifact

    artifact = tmp_path / "m.onnx"
    written = write_artifact(artifact, b"abc", onnx_manifest())
    assert written.sha256 == sha256_file(artifact)
    assert read_onnx_manifest(artifact) == written


def test_build_options_are_one_record_shared_by_build_engine_and_the_manifest() -> None:
    """Each BuildOptions field is a build-engine flag (its dest) and an engine-manifest key, read back as is."""
    from dataclasses import fields

    from climax_deploy.export.build_engine_cli import build_parser

    names = {f.name for f in fields(BuildOptions)}
    assert names <= {action.dest for action in build_parser()._actions}
    manifest = engine_manifest()
    data = to_json(manifest)
    assert names <= set(data)
    assert from_json(json.loads(json.dumps(data))).build == manifest.build
    data["opt_level"] = 9
    with pytest.raises(ModelFileError, match="opt-level must be 0..5"):
        from_json(data)
