"""What build-engine hands TensorRT, checked node by node against TensorRT's documented ONNX support.

The support table (export/tensorrt_support.py) is written from onnx-tensorrt's docs/operators.md at
7c51a63a, the parser NVIDIA/TensorRT v11.1 pins (parsers/onnx); each row cites its line there. Model-local
functions (ElevationAttention, WindScanOrder, the shape helpers) are expanded first, as the parser does.
No TensorRT here: these are the documented rules, not a TensorRT run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from climax_deploy.errors import EngineBuildError
from climax_deploy.export.passes import all_nodes
from climax_deploy.export.tensorrt_build import prepare_onnx
from climax_deploy.export.tensorrt_support import SUPPORT, unsupported

PLUGIN = frozenset({("climax", "ElevationAttention")})


def _ops_inside_functions(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for f in model.functions for n in f.node}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("mode", ["inline", "native", "plugin"])
def test_every_node_handed_to_tensorrt_is_documented_as_supported(
    mode: str, precision: str, small_wind_exports: dict[str, Path]
) -> None:
    model = prepare_onnx(small_wind_exports[precision], mode)
    # The wind-following scan's body is among what is checked (the parser inlines it).
    assert any(f.name == "WindScanOrder" for f in model.functions)
    assert {"Gather", "ReduceSum", "Where", "Sqrt", "GreaterOrEqual"} <= _ops_inside_functions(model)
    assert unsupported(model, PLUGIN if mode == "plugin" else frozenset()) == []
    every = [n for g in [model.graph, *(helper.make_graph(list(f.node), f.name, [], []) for f in model.functions)]
             for n in all_nodes(g)]  # fmt: skip
    assert not [n.name for n in every if n.op_type in ("Loop", "Scan", "If")]


def test_the_export_itself_would_hand_tensorrt_batch_dependent_loops(small_wind_exports: dict[str, Path]) -> None:
    problems = unsupported(onnx.load(str(small_wind_exports["fp32"])))
    assert problems and all("control-flow" in p and f"line {SUPPORT['Loop'].line}" in p for p in problems)


def test_unrolled_copy_computes_what_the_export_computes(small_wind_exports: dict[str, Path]) -> None:
    """Batch 3 on 4096 patches: the export runs 13 query blocks (the last padded); the copy one chain."""
    source = small_wind_exports["fp32"]
    copy = prepare_onnx(source, "inline")
    assert [n.op_type for n in all_nodes(onnx.load(str(source)).graph)].count("Loop") == 1  # SelfAttention's
    assert not [n for f in copy.functions for n in f.node if n.op_type == "Loop"]
    assert not [n for n in all_nodes(copy.graph) if n.op_type == "Loop"]
    x = np.random.default_rng(0).standard_normal((3, 15, 128, 128)).astype(np.float32)
    feeds = {"x": x, "lead_times": np.array([6.0, 24.0, 72.0], np.float32)}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    (want,) = ort.InferenceSession(str(source), options, providers=cpu).run(None, feeds)
    (got,) = ort.InferenceSession(copy.SerializeToString(), options, providers=cpu).run(None, feeds)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], output: onnx.ValueInfoProto) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_the_checker_reports_what_operators_md_excludes() -> None:
    f32 = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])]
    # ReduceSum whose axes are computed, not an initializer (operators.md line 157).
    shape = helper.make_node("Shape", ["x"], ["s"], start=0, end=1)
    computed = _model([shape, helper.make_node("ReduceSum", ["x", "s"], ["y"])], f32,
                      helper.make_tensor_value_info("y", TensorProto.FLOAT, None))  # fmt: skip
    assert any("build-time constant" in p for p in unsupported(computed))
    # A double tensor into Sqrt (line 198 lists FP32, FP16, BF16).
    f64 = [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2])]
    double = _model([helper.make_node("Sqrt", ["x"], ["y"])], f64, helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2]))
    assert any("DOUBLE" in p and "line 198" in p for p in unsupported(double))
    # An op nobody looked up, and a custom node with no plugin and no function.
    assert any("not in the support table" in p for p in unsupported(
        _model([helper.make_node("Hardmax", ["x"], ["y"])], f32, helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]))))  # fmt: skip
    custom = _model([helper.make_node("Thing", ["x"], ["y"], domain="climax")], f32,
                    helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]))  # fmt: skip
    custom.opset_import.append(helper.make_opsetid("climax", 1))
    assert any("custom domain" in p for p in unsupported(custom))
    # Attention on 3D operands (line 31: Q, K, V and attn_mask must be 4D).
    q3 = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8]) for n in "qkv"]
    attention = _model([helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=1, kv_num_heads=1)], q3,
                       helper.make_tensor_value_info("y", TensorProto.FLOAT, None))  # fmt: skip
    attention.opset_import[0].version = 23
    assert any("must be 4D" in p for p in unsupported(attention))


def test_a_loop_the_export_did_not_write_is_refused(small_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(small_onnx))
    loop = next(n for n in all_nodes(model.graph) if n.op_type == "Loop")
    loop.name = "someone_elses_loop"
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EngineBuildError, match="expected only the export's query-block Loops") as info:
        prepare_onnx(path, "inline")
    assert "\n" not in str(info.value)
