"""export-onnx: one custom node with its function, metadata, manifest, atomic writes, batch modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from climax_deploy.artifacts import sha256_file
from climax_deploy.errors import BadInputError, ExportError
from climax_deploy.export import ExportOptions, export_model, export_onnx
from climax_deploy.export.elevation_function import AttachElevationFunction, elevation_attention_function
from climax_deploy.export.passes import elevation_functions, elevation_nodes
from climax_deploy.manifest import METADATA_KEY, BatchSpec, check_embedded, from_json, read_onnx_manifest
from climax_deploy.model import build_model, fused_elevation_attention
from climax_deploy.schema import STANDARDISATION


def test_one_custom_node_and_its_function(small_onnx: Path) -> None:
    model = onnx.load(small_onnx)
    nodes, functions = elevation_nodes(model), elevation_functions(model)
    assert len(nodes) == 1 and len(functions) == 1
    assert [n for n in model.graph.node if n.domain == "climax"] == nodes
    assert len(nodes[0].input) == 5  # q, k, v, elevation, beta
    assert {(o.domain, o.version) for o in model.opset_import} >= {("climax", 1), ("", 18)}
    assert all(n.domain == "" for n in functions[0].node)  # body uses standard ops only
    onnx.checker.check_model(model, full_check=True)


def test_metadata_and_manifest(small_onnx: Path) -> None:
    model = onnx.load(small_onnx)
    meta = {p.key: p.value for p in model.metadata_props}
    manifest = read_onnx_manifest(small_onnx)
    embedded = from_json(json.loads(meta[METADATA_KEY]), "embedded")
    check_embedded(meta, manifest, str(small_onnx))
    assert manifest.sha256 == sha256_file(small_onnx) and manifest.file == "small.onnx"
    assert embedded.model == manifest.model and embedded.custom_op == manifest.custom_op
    assert embedded.sha256 == ""  # the copy inside the file cannot hold the file's own checksum
    assert meta["climax_deploy.variables"].split(",") == list(manifest.model.variables)
    assert manifest.model.variables[13] == "elevation" and manifest.model.grid == (32, 64)
    assert manifest.custom_op == ("climax", "ElevationAttention", 1)
    assert set(manifest.versions) >= {"torch", "onnx", "onnxscript"}
    assert manifest.batch == BatchSpec.dynamic() and manifest.model.seed == 0 and manifest.model.preset == "small"
    assert manifest.model.checkpoint is None and manifest.heads_per_chunk == 1 and manifest.opset == 18
    assert manifest.model.standardisation.stats["pm25"] == STANDARDISATION["pm25"]


def test_function_body_matches_torch() -> None:
    """The ONNX function alone, run by ONNX Runtime, equals the PyTorch fused form."""
    fn = elevation_attention_function(18)
    q, k, v = (torch.randn(2, 3, 40, 16) for _ in range(3))
    e, beta = torch.rand(2, 40), torch.tensor(7.0)
    t = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("ElevationAttention", ["q", "k", "v", "e", "beta"], ["o"], domain="climax")],
        "g",
        [onnx.helper.make_tensor_value_info(n, t, None) for n in ("q", "k", "v", "e", "beta")],
        [onnx.helper.make_tensor_value_info("o", t, None)],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18),
                                                         onnx.helper.make_opsetid("climax", 1)],
                                   functions=[fn])  # fmt: skip
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "e": e.numpy(), "beta": beta.numpy()})
    expected = fused_elevation_attention(q, k, v, e, beta).numpy()
    np.testing.assert_allclose(out, expected, atol=2e-6, rtol=0)


def test_dynamic_batch_runs_any_batch(small_onnx: Path, small_inputs) -> None:
    sess = ort.InferenceSession(str(small_onnx), providers=["CPUExecutionProvider"])
    x, lt = small_inputs
    for batch in (1, 3):
        xb, lb = np.concatenate([x] * 2)[:batch], np.concatenate([lt] * 2)[:batch]
        (y,) = sess.run(None, {"x": xb, "lead_times": lb})
        assert y.shape == (batch, 6, 32, 64)


def test_fixed_batch_and_opset(tmp_path: Path, small_model) -> None:
    path = tmp_path / "fixed.onnx"
    manifest = export_onnx(small_model, path, ExportOptions(batch=BatchSpec.fixed(2), opset=20))
    model = onnx.load(path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 15, 32, 64] and manifest.batch.size == 2 and manifest.opset == 20
    assert {(o.domain, o.version) for o in model.opset_import} >= {("", 20)}
    assert elevation_functions(model)[0].opset_import[0].version == 20


def test_external_data_beyond_threshold(tmp_path: Path, small_model, small_inputs) -> None:
    path = tmp_path / "ext.onnx"
    manifest = export_onnx(small_model, path, ExportOptions(external_data_threshold=1 << 20))
    data = tmp_path / "ext.onnx.data"
    assert data.is_file() and path.stat().st_size < (1 << 20)
    assert manifest.external_data == {"ext.onnx.data": sha256_file(data)}
    assert read_onnx_manifest(path) == manifest  # checksums of both files verify
    x, lt = small_inputs
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x, "lead_times": lt})
    assert y.shape == (2, 6, 32, 64)


def _previous_pair(small_onnx: Path, path: Path) -> None:
    """An earlier export at `path`: the session's small export and its manifest, copied."""
    shutil.copy(small_onnx, path)
    shutil.copy(f"{small_onnx}.manifest.json", f"{path}.manifest.json")


def test_failed_export_keeps_the_previous_artifact(tmp_path: Path, small_model, small_onnx: Path, monkeypatch) -> None:
    path = tmp_path / "model.onnx"
    _previous_pair(small_onnx, path)
    before = path.read_bytes()

    def broken(self, model):  # the exporter dies after tracing
        raise ExportError("simulated failure")

    monkeypatch.setattr(AttachElevationFunction, "call", broken)
    with pytest.raises(ExportError):
        export_onnx(small_model, path)
    assert path.read_bytes() == before
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != ".model.onnx.lock")  # the lock may stay
    assert left == ["model.onnx", "model.onnx.manifest.json"]  # no temporaries


def test_bad_output_name_and_batch(tmp_path: Path, small_model) -> None:
    with pytest.raises(BadInputError, match=r"\.onnx"):
        export_onnx(small_model, tmp_path / "model.bin")
    with pytest.raises(BadInputError, match="'dynamic' or a fixed size N, got 1,2,4"):
        export_onnx(small_model, tmp_path / "model.onnx", ExportOptions(batch=BatchSpec(1, 2, 4)))


def test_export_model_records_config_and_stats_files(tmp_path: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"img_size": [16, 32], "embed_dim": 64, "depth": 1, "num_heads": 4, "wind_scan": False}))
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"pm25": [40.0, 30.0]}))
    manifest = export_model(config, tmp_path / "tiny.onnx", seed=3, stats_file=stats)
    record = manifest.model
    assert record.config_file is not None and record.config_file.sha256 == sha256_file(config)
    assert record.stats_file is not None and record.stats_file.path == str(stats.resolve())
    assert record.preset is None and record.seed == 3 and record.checkpoint is None
    assert record.standardisation.stats["pm25"] == (40.0, 30.0) and record.grid == (16, 32)
    assert read_onnx_manifest(tmp_path / "tiny.onnx").model == record


def test_export_model_checks_inputs_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import climax_deploy.model

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before the inputs were checked")

    monkeypatch.setattr(climax_deploy.model, "build_model", no_build)
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"not_a_variable": [1.0, 2.0]}))
    with pytest.raises(BadInputError, match="unknown variable.*not_a_variable"):
        export_model("small", tmp_path / "m.onnx", stats_file=stats)
    with pytest.raises(BadInputError, match="does not exist"):
        export_model("small", tmp_path / "m.onnx", stats_file=tmp_path / "absent.json")
    with pytest.raises(BadInputError, match="checkpoint .* does not exist"):
        export_model("small", tmp_path / "m.onnx", checkpoint=tmp_path / "absent.ckpt")
    with pytest.raises(BadInputError, match="unknown preset"):
        export_model("medium", tmp_path / "m.onnx")
    with pytest.raises(BadInputError, match=r"\.onnx"):
        export_model("small", tmp_path / "m.bin")


def test_depth_six_config_exports(tmp_path: Path) -> None:
    model = build_model({"img_size": [16, 32], "embed_dim": 64, "depth": 6, "num_heads": 4, "wind_scan": False})
    export_onnx(model, tmp_path / "d6.onnx")
    assert len(elevation_nodes(onnx.load(tmp_path / "d6.onnx"))) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "1,2,4"], "'dynamic' or a fixed size N"),
        (["--batch", "x"], "expected 'dynamic' or a positive integer"),
        (["--stats", "absent.json"], "stats file absent.json does not exist"),
        (["--preset", "medium"], "unknown preset 'medium'"),
        (["-o", "m.bin"], "must end in .onnx"),
    ],
)
def test_cli_mistakes_are_one_line_before_the_build(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from climax_deploy.cli import run_cli
    from climax_deploy.export.cli import main

    monkeypatch.chdir(tmp_path)
    assert run_cli("export-onnx", main, ["--preset", "small", "-q", "-o", "m.onnx", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir())


def test_export_whose_manifest_cannot_be_written_keeps_the_previous_pair(
    tmp_path: Path, small_model, small_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import climax_deploy.manifest as manifest_module

    path = tmp_path / "model.onnx"
    _previous_pair(small_onnx, path)
    first = read_onnx_manifest(path)
    before = path.read_bytes()
    real_to_json = manifest_module.to_json

    def no_space(manifest):  # the embedded copy (no checksum yet) is fine; the sidecar cannot be written
        if manifest.sha256:
            raise OSError(28, "No space left on device")
        return real_to_json(manifest)

    monkeypatch.setattr(manifest_module, "to_json", no_space)
    with pytest.raises(OSError):
        export_onnx(small_model, path, ExportOptions(batch=BatchSpec.fixed(2)))
    monkeypatch.undo()
    assert path.read_bytes() == before and read_onnx_manifest(path) == first
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("opset", [5, 17, 99])
def test_cli_refuses_unsupported_opsets_in_one_line(
    opset: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from climax_deploy.cli import run_cli
    from climax_deploy.export.cli import main
    from climax_deploy.export.onnx_export import MAX_OPSET, MIN_OPSET

    monkeypatch.chdir(tmp_path)
    assert run_cli("export-onnx", main, ["--preset", "small", "-q", "-o", "m.onnx", "--opset", str(opset)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"opset {MIN_OPSET}..{MAX_OPSET}" in err and f"got {opset}" in err, err
    assert not any(tmp_path.iterdir())


def test_every_supported_opset_is_honoured(tmp_path: Path, small_model) -> None:
    from climax_deploy.export.onnx_export import MAX_OPSET, MIN_OPSET

    for opset in (MIN_OPSET, MAX_OPSET):
        path = tmp_path / f"m{opset}.onnx"
        manifest = export_onnx(small_model, path, ExportOptions(opset=opset))
        versions = {o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")}
        assert versions == {opset} and manifest.opset == opset


def test_cli_refuses_an_output_that_is_an_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from climax_deploy.cli import run_cli
    from climax_deploy.export.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.onnx").write_bytes(b"a checkpoint with an odd name")
    assert run_cli("export-onnx", main, ["--preset", "small", "-q", "--checkpoint", "weights.onnx",
                                         "-o", str(tmp_path / "weights.onnx")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would overwrite the input" in err, err
    assert (tmp_path / "weights.onnx").read_bytes() == b"a checkpoint with an odd name"


def test_cli_unwritable_output_is_one_line_before_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tests run as root, which ignores folder permissions: a regular file where the output's folder
    should be fails for root too (as a read-only mount would)."""
    from climax_deploy.cli import run_cli
    from climax_deploy.export.cli import main

    (tmp_path / "build").write_text("a file, not a folder")
    built: list[str] = []
    monkeypatch.setattr("climax_deploy.model.build_model", lambda *a, **k: built.append("built"))
    assert run_cli("export-onnx", main, ["--preset", "small", "-q", "-o", str(tmp_path / "build" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err, err
    assert not built


def test_grid_file_coordinates_are_recorded(tmp_path: Path) -> None:
    """export-onnx --grid records the training grid (JSON or NetCDF); forecasts are checked against it."""
    import xarray as xr

    from climax_deploy.export import export_model

    lat = np.linspace(40.0, 20.0, 32)  # a regional grid, north to south
    lon = np.linspace(100.0, 125.0, 64)
    (tmp_path / "grid.json").write_text(json.dumps({"lat": lat.tolist(), "lon": lon.tolist()}))
    coords = {"lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"})}
    xr.Dataset(coords=coords).to_netcdf(tmp_path / "grid.nc")
    for name in ("grid.json", "grid.nc"):
        manifest = export_model("small", tmp_path / f"{name}.onnx", grid_file=tmp_path / name)
        np.testing.assert_allclose(manifest.model.lat, lat)
        np.testing.assert_allclose(manifest.model.lon, lon)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"lat": [1.0, 2.0], "lon": list(range(64))}, "grid lat has 2 values, the model's grid needs 32"),
        ({"lat": [0.0] * 32, "lon": list(range(64))}, "grid lat must be finite and strictly monotonic"),
        ({"lat": list(range(32)), "lon": "east"}, 'expected JSON {"lat"'),
    ],
)
def test_cli_bad_grid_file_is_one_line(
    tmp_path: Path, grid: dict, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from climax_deploy.cli import run_cli
    from climax_deploy.export.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    assert run_cli("export-onnx", main, ["--preset", "small", "-q", "--grid", "grid.json", "-o", "m.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "m.onnx").exists()
