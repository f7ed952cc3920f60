"""The CPU fast paths are exact: folded variable aggregation and the head-chunked attention layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from climax_deploy.export import ExportOptions, export_onnx
from climax_deploy.export.attention_layout import AttentionLayout, ExpandSelfAttention, attention_nodes
from climax_deploy.export.passes import all_nodes, elevation_functions, elevation_nodes
from climax_deploy.manifest import read_onnx_manifest
from climax_deploy.model import build_model
from climax_deploy.model.layers import folded_embed_aggregate


def test_folded_aggregation_is_exact_in_float64() -> None:
    model = build_model("small", seed=3).double()
    torch.nn.init.normal_(model.var_query)  # a non-trivial query, unlike the zero init
    x = torch.randn(2, 15, 32, 64, dtype=torch.float64)
    with torch.no_grad():
        literal = model.var_agg(model.var_query, model.token_embeds(x) + model.var_embed.unsqueeze(2))
        folded = folded_embed_aggregate(x, model.token_embeds, model.var_embed, model.var_query, model.var_agg)
    assert (folded - literal).abs().max().item() < 1e-12 * literal.abs().max().item() + 1e-14


def test_fused_mode_uses_the_fold_and_matches_literal(small_model) -> None:
    x, lt = torch.randn(2, 15, 32, 64), torch.tensor([6.0, 96.0])
    with torch.no_grad():
        assert torch.allclose(small_model(x, lt, attention="fused"), small_model(x, lt, attention="literal"), atol=2e-6)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_chunked_attention_equals_all_heads(chunk: int) -> None:
    layout, fused = AttentionLayout(4, 16, chunk), AttentionLayout(4, 16, None)
    t = onnx.TensorProto.FLOAT

    def run(lay: AttentionLayout, bias: bool) -> np.ndarray:
        names = ["q", "k", "v"] + (["b"] if bias else [])
        graph = onnx.helper.make_graph(
            attention_nodes("a/", "q", "k", "v", "o", lay, bias="b" if bias else None), "g",
            [onnx.helper.make_tensor_value_info(n, t, [None] * 4) for n in names],
            [onnx.helper.make_tensor_value_info("o", t, [None] * 4)],
        )  # fmt: skip
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
        onnx.checker.check_model(model, full_check=True)
        rng = np.random.default_rng(0)
        feeds = {n: rng.standard_normal((2, 4, 33, 16), dtype=np.float32) for n in "qkv"}
        if bias:
            feeds["b"] = -rng.random((2, 1, 33, 33), dtype=np.float32)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)[0]

    for bias in (False, True):
        np.testing.assert_allclose(run(layout, bias), run(fused, bias), atol=1e-6, rtol=0)
    assert layout.chunks == 4 // chunk


def nested_nodes(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The nodes of `node`'s subgraphs (a Loop body), recursively."""
    return [n for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for n in all_nodes(a.g)]


def test_default_export_is_head_chunked_and_keeps_one_elevation_node(small_onnx: Path) -> None:
    model = onnx.load(small_onnx)
    assert not [n for n in model.graph.node if n.op_type == "SelfAttention"]
    assert len(elevation_nodes(model)) == 1
    body = [n.op_type for node in elevation_functions(model)[0].node for n in [node, *nested_nodes(node)]]
    assert body.count("Softmax") == 4  # small preset: 4 heads, one at a time (inside the query-block Loop)
    main_softmax = [n for n in all_nodes(model.graph) if n.op_type == "Softmax"]
    assert len(main_softmax) == 1 + 4  # variable aggregation + block 1's four heads
    assert read_onnx_manifest(small_onnx).heads_per_chunk == 1  # 4 heads in 4 chunks


def test_fused_layout_export_parity(tmp_path: Path, small_model, small_inputs) -> None:
    """All-heads layout (TensorRT's preference) computes the same as the default chunked file."""
    path = tmp_path / "fused.onnx"
    export_onnx(small_model, path, ExportOptions(heads_per_chunk=None))
    model = onnx.load(path)
    body = [n.op_type for node in elevation_functions(model)[0].node for n in [node, *nested_nodes(node)]]
    assert body.count("Softmax") == 1
    x, lt = small_inputs
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x, "lead_times": lt})
    with torch.no_grad():
        ref = small_model(torch.from_numpy(x), torch.from_numpy(lt), attention="literal").numpy()
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5


def test_expand_pass_leaves_no_custom_self_attention(small_onnx: Path) -> None:
    model = onnx.load(small_onnx)
    assert ExpandSelfAttention(AttentionLayout(4, 32, 1))(model).modified is False  # already expanded
