"""export-onnx: one custom node with its function, metadata, manifest, atomic writes, batch modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from climax_deploy.artifacts import read_manifest, sha256_file
from climax_deploy.errors import BadInputError, ExportError
from climax_deploy.export import ExportOptions, export_onnx
from climax_deploy.export.elevation_function import AttachElevationFunction, elevation_attention_function
from climax_deploy.export.passes import elevation_functions, elevation_nodes
from climax_deploy.model import build_model, fused_elevation_attention


def test_one_custom_node_and_its_function(small_onnx: Path) -> None:
    model = onnx.load(small_onnx)
    nodes, functions = elevation_nodes(model), elevation_functions(model)
    assert len(nodes) == 1 and len(functions) == 1
    assert [n for n in model.graph.node if n.domain == "climax"] == nodes
    assert list(nodes[0].input)[3:] != []  # q, k, v, elevation, beta
    assert len(nodes[0].input) == 5
    assert {(o.domain, o.version) for o in model.opset_import} >= {("climax", 1), ("", 18)}
    assert all(n.domain == "" for n in functions[0].node)  # body uses standard ops only
    onnx.checker.check_model(model, full_check=True)


def test_metadata_and_manifest(small_onnx: Path) -> None:
    model = onnx.load(small_onnx)
    meta = {p.key: p.value for p in model.metadata_props}
    embedded = json.loads(meta["climax_deploy.manifest"])
    manifest = read_manifest(small_onnx)
    assert manifest["sha256"] == sha256_file(small_onnx)
    for key in ("variables", "output_variables", "grid", "patch_size", "custom_op", "precision", "versions"):
        assert embedded[key] == manifest[key]
    assert manifest["variables"][13] == "elevation" and manifest["grid"] == [32, 64]
    assert manifest["custom_op"] == {"domain": "climax", "name": "ElevationAttention", "version": 1}
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxscript"}
    assert manifest["batch"] == "dynamic" and manifest["seed"] == 0


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
    manifest = export_onnx(small_model, path, ExportOptions(batch=2, opset=20))
    model = onnx.load(path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 15, 32, 64] and manifest["batch"] == 2
    assert {(o.domain, o.version) for o in model.opset_import} >= {("", 20)}
    assert elevation_functions(model)[0].opset_import[0].version == 20


def test_external_data_beyond_threshold(tmp_path: Path, small_model, small_inputs) -> None:
    path = tmp_path / "ext.onnx"
    manifest = export_onnx(small_model, path, ExportOptions(external_data_threshold=1 << 20))
    data = tmp_path / "ext.onnx.data"
    assert data.is_file() and path.stat().st_size < (1 << 20)
    assert manifest["external_data"] == {"ext.onnx.data": sha256_file(data)}
    read_manifest(path)  # checksums of both files verify
    x, lt = small_inputs
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x, "lead_times": lt})
    assert y.shape == (2, 6, 32, 64)


def test_failed_export_keeps_the_previous_artifact(tmp_path: Path, small_model, monkeypatch) -> None:
    path = tmp_path / "model.onnx"
    export_onnx(small_model, path)
    before = path.read_bytes()

    def broken(self, model):  # the exporter dies after tracing
        raise ExportError("simulated failure")

    monkeypatch.setattr(AttachElevationFunction, "call", broken)
    with pytest.raises(ExportError):
        export_onnx(small_model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.manifest.json"]


def test_bad_output_name(tmp_path: Path, small_model) -> None:
    with pytest.raises(BadInputError, match=r"\.onnx"):
        export_onnx(small_model, tmp_path / "model.bin")


def test_depth_six_config_exports(tmp_path: Path) -> None:
    model = build_model({"img_size": [16, 32], "embed_dim": 64, "depth": 6, "num_heads": 4})
    export_onnx(model, tmp_path / "d6.onnx")
    assert len(elevation_nodes(onnx.load(tmp_path / "d6.onnx"))) == 1
