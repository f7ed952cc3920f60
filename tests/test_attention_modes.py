"""The `--attention` passes: each rewritten model is valid ONNX and still passes check-parity on ONNX Runtime."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx
import pytest

from climax_deploy.errors import BadInputError, ExportError
from climax_deploy.export.attention_modes import (
    ATTENTION_OPSET,
    PLUGIN_NAMESPACE,
    KeepInlineAttention,
    MarkForPlugin,
    RewriteToAttention23,
    attention_mode_of,
    attention_pass,
    upgrade_opset,
)
from climax_deploy.export.fp16 import ConvertToFp16
from climax_deploy.export.passes import (
    GraphPass,
    PassResult,
    copy_model,
    elevation_functions,
    elevation_nodes,
    opset_version,
    run_passes,
)
from climax_deploy.manifest import OnnxManifest, embedded_metadata, read_onnx_manifest, write_manifest
from climax_deploy.validate.parity import run_parity


def _save_like(model: onnx.ModelProto, source: Path, path: Path) -> Path:
    """Write a rewritten model with the source's manifest (new checksum), as build-engine's --save-onnx would."""
    onnx.save(model, str(path))
    write_manifest(path, read_onnx_manifest(source))
    return path


def _embed(model: onnx.ModelProto, manifest: OnnxManifest) -> None:
    """Replace the model's embedded manifest, keeping its other metadata."""
    entries = embedded_metadata(manifest)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        model.metadata_props.add(key=key, value=value)


@pytest.fixture(scope="module")
def fp16_source(tmp_path_factory: pytest.TempPathFactory, small_onnx: Path) -> Path:
    """The small fp16 graph, built by the pass from the shared fp32 export (same metadata, fp16)."""
    model = ConvertToFp16()(onnx.load(str(small_onnx))).model
    manifest = replace(read_onnx_manifest(small_onnx), precision="fp16")
    _embed(model, manifest)
    path = tmp_path_factory.mktemp("modes") / "small16.onnx"
    onnx.save(model, str(path))
    write_manifest(path, manifest)
    return path


@pytest.mark.parametrize("mode", ["inline", "native", "plugin"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_rewritten_model_passes_check_parity_on_onnxruntime(
    mode: str, precision: str, small_onnx: Path, fp16_source: Path, tmp_path: Path
) -> None:
    source = small_onnx if precision == "fp32" else fp16_source
    model = attention_pass(mode)(onnx.load(str(source))).model
    onnx.checker.check_model(model, full_check=True)
    assert attention_mode_of(model) == mode
    path = _save_like(model, source, tmp_path / f"small.{mode}.onnx")
    report = run_parity(path, ("mountain", "flat"), load_options={"providers": "cpu"})
    assert report.precision == precision
    assert report.passed, [r for r in report.rows if not r.passed] + [s for s in report.signal if not s.passed]


def test_native_body_is_one_attention23_with_prescaled_query(small_onnx: Path, fp16_source: Path) -> None:
    model = RewriteToAttention23()(onnx.load(str(small_onnx))).model
    assert opset_version(model) == ATTENTION_OPSET
    body = list(elevation_functions(model)[0].node)
    attention = [n for n in body if n.op_type == "Attention"]
    assert len(attention) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in attention[0].attribute}
    assert attrs["scale"] == 1.0 and "softmax_precision" not in attrs
    assert attention[0].input[0] == "q_scaled" and attention[0].input[3] == "mask"
    assert {e.version for f in model.functions for e in f.opset_import if e.domain == ""} == {ATTENTION_OPSET}
    # fp16 graphs ask for a float32 softmax
    half = RewriteToAttention23()(onnx.load(str(fp16_source))).model
    node = next(n for n in elevation_functions(half)[0].node if n.op_type == "Attention")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["softmax_precision"] == onnx.TensorProto.FLOAT


def test_upgrade_keeps_functions_and_metadata(small_onnx: Path) -> None:
    model = onnx.load(str(small_onnx))
    meta = {p.key: p.value for p in model.metadata_props}
    upgraded = upgrade_opset(model, ATTENTION_OPSET)
    assert len(elevation_functions(upgraded)) == 1
    assert {p.key: p.value for p in upgraded.metadata_props} == meta
    assert len(upgraded.graph.node) == len(model.graph.node)


def test_plugin_pass_tags_the_node_and_declares_the_attributes(small_onnx: Path) -> None:
    result = MarkForPlugin()(onnx.load(str(small_onnx)))
    assert result.modified
    node = elevation_nodes(result.model)[0]
    attrs = {a.name: a.s.decode() for a in node.attribute}
    assert attrs == {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": "1"}
    assert set(elevation_functions(result.model)[0].attribute) >= {"plugin_namespace", "plugin_version"}
    again = MarkForPlugin()(result.model)  # idempotent: no duplicate attributes, nothing changed
    assert len(elevation_nodes(again.model)[0].attribute) == 2 and not again.modified


def test_inline_changes_nothing_and_refuses_a_plugin_tagged_node(small_onnx: Path) -> None:
    model = onnx.load(str(small_onnx))
    before = model.graph.SerializeToString()
    result = KeepInlineAttention()(model)
    assert not result.modified and result.model.graph.SerializeToString() == before
    assert attention_mode_of(result.model) == "inline"
    tagged = MarkForPlugin()(onnx.load(str(small_onnx))).model
    with pytest.raises(ExportError, match="plugin"):
        KeepInlineAttention()(tagged)


def test_passes_refuse_a_model_without_the_custom_op(small_onnx: Path) -> None:
    model = onnx.load(str(small_onnx))
    del model.functions[:]
    for mode in ("inline", "native", "plugin"):
        with pytest.raises(ExportError, match="export-onnx"):
            attention_pass(mode)(model)
    with pytest.raises(BadInputError, match="inline, native, plugin"):
        attention_pass("flash")


@pytest.mark.parametrize("make", [KeepInlineAttention, RewriteToAttention23, MarkForPlugin, ConvertToFp16])
def test_passes_declare_how_they_treat_their_input(make: type[GraphPass], small_onnx: Path) -> None:
    """in_place / changes_input say what happens to the model passed in; `modified` says whether the result differs."""
    graph_pass = make()
    model = onnx.load(str(small_onnx))
    before = model.SerializeToString()
    result = graph_pass(model)
    assert (result.model is model) == graph_pass.in_place
    assert (model.SerializeToString() != before) == graph_pass.changes_input
    assert result.modified == (result.model.SerializeToString() != before)


def test_run_passes_keeps_the_input_when_asked(small_onnx: Path) -> None:
    model = onnx.load(str(small_onnx))
    before = model.SerializeToString()
    kept = run_passes(model, [KeepInlineAttention(), MarkForPlugin()], keep_input=True)
    assert kept.modified and kept.model is not model and model.SerializeToString() == before
    assert run_passes(model, [KeepInlineAttention()], keep_input=True).model is model  # a check needs no copy
    changed = run_passes(model, [MarkForPlugin()])  # the default: in-place passes change the caller's model
    assert changed.model is model and model.SerializeToString() != before


def test_a_pass_declared_in_place_must_return_its_input(small_onnx: Path) -> None:
    class Copies(GraphPass):
        def call(self, model: onnx.ModelProto) -> PassResult:
            return PassResult(copy_model(model), modified=False)

    with pytest.raises(ExportError, match="declared in place"):
        Copies()(onnx.load(str(small_onnx)))
