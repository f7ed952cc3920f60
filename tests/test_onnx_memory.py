"""Exported attention runs in query blocks on ONNX Runtime: memory linear in N, numerics unchanged.

Tolerances: blocked vs unblocked bodies compute the same float32 ops on the same rows (only the
MatMul tiling can differ), atol 1e-6 on O(1) outputs; whole-model parity as in test_export (1e-5 relative).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import climax_deploy.export.onnx_export as onnx_export
from climax_deploy.errors import ExportError
from climax_deploy.export import ExportOptions, export_onnx
from climax_deploy.export.attention_layout import AttentionLayout, ExpandSelfAttention, attention_nodes
from climax_deploy.export.elevation_function import elevation_attention_function
from climax_deploy.export.fp16 import ConvertToFp16, float32_softmax
from climax_deploy.export.passes import all_nodes, elevation_functions, run_passes
from climax_deploy.schema import CUSTOM_DOMAIN, CUSTOM_OP

FLOAT = TensorProto.FLOAT


def function_model(layout: AttentionLayout | None, dtype: int = FLOAT) -> onnx.ModelProto:
    """One ElevationAttention node with its function: inputs q, k, v, e, beta; output o."""
    node = helper.make_node(CUSTOM_OP, ["q", "k", "v", "e", "beta"], ["o"], domain=CUSTOM_DOMAIN)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(x, dtype, [None] * 4) for x in "qkv"]
        + [helper.make_tensor_value_info("e", FLOAT, [None, None]), helper.make_tensor_value_info("beta", FLOAT, [])],
        [helper.make_tensor_value_info("o", dtype, [None] * 4)],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(CUSTOM_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=[elevation_attention_function(18, layout)])
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def feeds_for(b: int, h: int, n: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {x: rng.standard_normal((b, h, n, d), dtype=np.float32) for x in "qkv"}
    feeds["e"] = rng.random((b, n), dtype=np.float32)
    feeds["beta"] = np.array(5.0, np.float32)
    return feeds


def body_ops(function: onnx.FunctionProto) -> tuple[list[str], list[str]]:
    """(op types at the body's top level, op types inside its subgraphs)."""
    top = [n.op_type for n in function.node]
    inner = [n.op_type for node in function.node for sub in node.attribute if sub.type == onnx.AttributeProto.GRAPH
             for n in all_nodes(sub.g)]  # fmt: skip
    return top, inner


@pytest.mark.parametrize("n", [1, 7, 65, 129])
@pytest.mark.parametrize("heads_per_chunk", [None, 1, 2])
def test_blocked_function_equals_unblocked(n: int, heads_per_chunk: int | None) -> None:
    """Any N (a tail block, one row per block, one block for all) gives the unblocked result."""
    feeds = feeds_for(2, 4, n, 16)
    reference = run(function_model(None), feeds)
    for budget in (1, 2 * heads_per_chunk_or(4, heads_per_chunk) * 3 * n, 10**9):
        layout = AttentionLayout(4, 16, heads_per_chunk, budget)
        np.testing.assert_allclose(run(function_model(layout), feeds), reference, atol=1e-6, rtol=0)


def heads_per_chunk_or(heads: int, chunk: int | None) -> int:
    return heads if chunk is None else chunk


@pytest.mark.parametrize("n", [1, 65])
def test_blocked_function_runs_alike_in_onnx_reference(n: int) -> None:
    """onnx.reference concatenates a Loop's scan outputs where ONNX Runtime stacks them (onnx/onnx#3122):
    with several blocks and a tail (n 65: 5 blocks of 16 rows) and with one, both give the same result."""
    from onnx.reference import ReferenceEvaluator

    model = function_model(AttentionLayout(4, 8, 2, 2 * 2 * 65 * 16))
    feeds = feeds_for(2, 4, n, 8)
    (got,) = ReferenceEvaluator(model).run(None, feeds)
    np.testing.assert_allclose(got, run(model, feeds), atol=1e-6, rtol=0)


def test_blocked_plain_attention_equals_unblocked() -> None:
    def model(layout: AttentionLayout) -> onnx.ModelProto:
        graph = helper.make_graph(
            attention_nodes("a/", "q", "k", "v", "o", layout), "g",
            [helper.make_tensor_value_info(x, FLOAT, [None] * 4) for x in "qkv"],
            [helper.make_tensor_value_info("o", FLOAT, [None] * 4)],
        )  # fmt: skip
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        onnx.checker.check_model(proto, full_check=True)
        return proto

    feeds = {x: a for x, a in feeds_for(3, 4, 65, 8).items() if x in "qkv"}
    reference = run(model(AttentionLayout(4, 8)), feeds)
    np.testing.assert_allclose(run(model(AttentionLayout(4, 8, 2, 500)), feeds), reference, atol=1e-6, rtol=0)


def test_blocked_layout_refuses_a_whole_bias_tensor() -> None:
    with pytest.raises(ExportError, match="QueryBias"):
        attention_nodes("a/", "q", "k", "v", "o", AttentionLayout(4, 8, None, 100), bias="b")


def test_default_fp32_export_is_blocked_and_fp16_is_not(small_onnx: Path) -> None:
    """fp32 (ONNX Runtime): both attentions in query-block Loops, nothing N x N outside them; fp16
    (TensorRT): one MatMul/Softmax chain, no Loop."""
    model = onnx.load(small_onnx)
    top, inner = body_ops(elevation_functions(model)[0])
    assert top.count("Loop") == 1 and "Softmax" not in top and "Log" not in top
    assert inner.count("Softmax") == 4 and inner.count("Log") == 1  # the bias once per block, four heads
    loops = [n for n in model.graph.node if n.op_type == "Loop"]
    assert len(loops) == 1  # block 1's plain attention
    assert [n.op_type for n in all_nodes(loops[0].attribute[0].g)].count("Softmax") == 4
    layout = onnx_export.attention_layout(_small_model(), ExportOptions(precision="fp16"))
    assert not layout.blocked and "Loop" not in body_ops(elevation_attention_function(18, layout))[0]


def _small_model():  # type: ignore[no-untyped-def]
    from climax_deploy.model import build_model

    return build_model("small", seed=0)


def test_many_blocks_with_a_tail_match_the_reference(
    tmp_path: Path, small_model, small_inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small preset (512 patches) with 48-row blocks at batch 2 (10 blocks and a 32-row tail)."""
    monkeypatch.setattr(onnx_export, "DEFAULT_BLOCK_ELEMENTS", 2 * 512 * 48)
    path = tmp_path / "blocked.onnx"
    export_onnx(small_model, path, ExportOptions())
    x, lt = small_inputs
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x, "lead_times": lt})
    with torch.no_grad():
        ref = small_model(torch.from_numpy(x), torch.from_numpy(lt), attention="literal").numpy()
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5


def test_fp16_bodies_keep_bias_and_softmax_in_float32_inside_blocks() -> None:
    """float32_softmax reaches into the Loop body: a blocked fp16 function matches fp32 to fp16 rounding."""
    layout = AttentionLayout(4, 16, 1, 4 * 33)
    half = function_model(layout, TensorProto.FLOAT16)
    body = float32_softmax(list(half.functions[0].node))
    del half.functions[0].node[:]
    half.functions[0].node.extend(body)
    inner = [n for node in half.functions[0].node if node.op_type == "Loop" for n in all_nodes(node.attribute[0].g)]
    softmax = [n for n in inner if n.op_type == "Softmax"]
    producers = {o: n for n in inner for o in n.output}
    assert softmax and all(producers[producers[s.input[0]].input[1]].op_type == "Cast" for s in softmax)
    feeds = feeds_for(1, 4, 33, 16, seed=1)
    reference = run(function_model(None), feeds)
    out = run(half, {k: v.astype(np.float16) if k in "qkv" else v for k, v in feeds.items()})
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), reference, atol=4e-3, rtol=4e-3)


def test_fp16_conversion_of_a_blocked_export_keeps_softmax_float32(small_onnx: Path, small_inputs) -> None:
    """ConvertToFp16 on the blocked fp32 export (ONNX Runtime CUDA in fp16): the plain attention's Loop
    body computes in float16 with its softmax in float32; the result is the fp32 one to fp16 rounding
    (rel L2 1e-3, test_fp16's bound for ONNX Runtime CPU)."""
    fp32 = onnx.load(small_onnx)
    half = run_passes(fp32, [ConvertToFp16()], keep_input=True).model
    loop = next(n for n in half.graph.node if n.op_type == "Loop")
    inner = list(all_nodes(loop.attribute[0].g))
    producers = {o: n for n in inner for o in n.output}
    softmax = [n for n in inner if n.op_type == "Softmax"]
    assert len(softmax) == 4 and all(producers[s.input[0]].op_type == "Cast" for s in softmax)
    x, lt = small_inputs
    (y16,) = run_model(half, {"x": x, "lead_times": lt})
    (y32,) = run_model(fp32, {"x": x, "lead_times": lt})
    assert np.linalg.norm(y16 - y32) / np.linalg.norm(y32) < 1e-3


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_expand_pass_blocks_plain_attention() -> None:
    node = helper.make_node("SelfAttention", ["q", "k", "v"], ["o"], domain=CUSTOM_DOMAIN)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(x, FLOAT, [None] * 4) for x in "qkv"],
                              [helper.make_tensor_value_info("o", FLOAT, [None] * 4)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(CUSTOM_DOMAIN, 1)])
    assert ExpandSelfAttention(AttentionLayout(4, 8, 1, 64))(model).modified
    assert [n.op_type for n in model.graph.node].count("Loop") == 1


MEASURE = """
import json, resource, sys
import numpy as np, onnxruntime as ort
sys.path.insert(0, {tests!r})
from test_onnx_memory import feeds_for, function_model, _small_model
import climax_deploy.export.onnx_export as onnx_export
from climax_deploy.export import ExportOptions
n = int(sys.argv[1])
layout = onnx_export.attention_layout(_small_model(), ExportOptions())  # what export-onnx writes (fp32)
so = ort.SessionOptions(); so.intra_op_num_threads = 1
sess = ort.InferenceSession(function_model(layout).SerializeToString(), so, providers=["CPUExecutionProvider"])
feeds = feeds_for(1, 4, n, 8)  # the body is generic in head size; small heads keep the matmuls cheap
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sess.run(None, feeds)
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024))
"""


def peak_growth_mib(n: int) -> float:
    """Peak RSS growth (MiB) of one ElevationAttention call at N = n (4 heads of 8), in a fresh process."""
    code = MEASURE.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def test_attention_memory_grows_linearly_not_quadratically() -> None:
    """4x the patches: an N x N form needs 16x (at N = 8192 one fp32 score matrix alone is 256 MiB);
    blocked, the working set is the block budget plus O(N) inputs and outputs (measured 68 -> 122 MiB)."""
    small, large = peak_growth_mib(2048), peak_growth_mib(8192)
    assert large < 200, f"peak grew by {large:.0f} MiB at N = 8192; one N x N fp32 matrix is 256 MiB"
    assert large < 4 * max(small, 16) + 32, f"N 2048 -> 8192 grew the peak {small:.0f} -> {large:.0f} MiB"
