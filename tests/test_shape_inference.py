"""Exports stay readable by ONNX Runtime's symbolic shape inference.

`python -m onnxruntime.tools.symbolic_shape_infer`, which ONNX Runtime's TensorRT execution provider
asks users to run on dynamic-shape models, cannot shape opset-18 ReduceMax/ReduceMin with axes as an
input, nor Constant nodes with `value_float`/`value_ints`: export/shape_compat.py writes neither;
these tests run the tool itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

from climax_deploy.export import ExportOptions, Provenance, export_onnx
from climax_deploy.export.passes import run_passes
from climax_deploy.export.shape_compat import (
    SHAPELESS_REDUCTIONS,
    SHAPES_DOMAIN,
    ConstantAttributesAsTensors,
    WrapConstantAxesReductions,
    shape_compat_passes,
)
from climax_deploy.model import ClimaX
from climax_deploy.schema import OUTPUT_NAME


@pytest.fixture(scope="module")
def small_fp16_onnx(tmp_path_factory: pytest.TempPathFactory, small_model: ClimaX) -> Path:
    path = tmp_path_factory.mktemp("small_fp16") / "small_fp16.onnx"
    export_onnx(small_model, path, ExportOptions(precision="fp16"), Provenance(preset="small", seed=0))
    return path


def output_shape(model: onnx.ModelProto) -> list[int | str]:
    (out,) = [o for o in model.graph.output if o.name == OUTPUT_NAME]
    return [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]


def test_symbolic_shape_infer_cli_on_fp16_export(small_fp16_onnx: Path, tmp_path: Path) -> None:
    """The exact command the TensorRT provider's users run, on the graph they run it on (fp16): it
    completes and writes the output's shape, batch kept symbolic; the reductions got theirs too."""
    shaped = tmp_path / "shaped.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "onnxruntime.tools.symbolic_shape_infer", "--input", str(small_fp16_onnx),
         "--output", str(shaped)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    model = onnx.load(str(shaped))
    assert output_shape(model) == ["batch", 6, 32, 64]
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    wrapped = [n for n in model.graph.node if n.domain == SHAPES_DOMAIN]
    assert wrapped, "the elevation min-max normalisation's reductions should be wrapped"
    for node in wrapped:
        assert shapes[node.output[0]][0] == "batch", f"{node.op_type} got {shapes[node.output[0]]}"


def test_symbolic_shape_infer_on_fp32_export(small_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on the fp32 export (ONNX Runtime's CPU graph), in process.

    Known gap: fp32 exports run the queries in blocks inside Loop nodes (export/attention_layout.py);
    symbolic_shape_infer (ONNX Runtime 1.32) cannot shape a Loop inside a model-local function, nor
    one whose optional `cond` input is empty (KeyError '' in _infer_Loop with --auto_merge). While the
    export has such a Loop this test is an expected failure; without one it must pass.
    """
    monkeypatch.chdir(tmp_path)  # on failure the tool saves sym_shape_infer_temp.onnx (+ .data) in the working folder
    model = onnx.load(str(small_onnx))
    loops = [n.name for n in model.graph.node if n.op_type == "Loop"]
    loops += [f"{f.name}/{n.name}" for f in model.functions for n in f.node if n.op_type == "Loop"]
    try:
        shaped = SymbolicShapeInference.infer_shapes(model, auto_merge=False)
    except Exception as exc:
        if loops:
            pytest.xfail(f"symbolic_shape_infer cannot shape the query-block Loops {loops}: {exc}")
        raise
    assert output_shape(shaped) == ["batch", 6, 32, 64]


def tiny_reduction_model(op: str, axes: list[int], keepdims: int, as_constant_node: bool = False) -> onnx.ModelProto:
    """x [b, 3, 4] -> op(x, axes) -> y = x - op(...) (an element-wise consumer, where the tool crashed)."""
    nodes = [helper.make_node(op, ["x", "axes"], ["r"], keepdims=keepdims)]
    initializers = [numpy_helper.from_array(np.array(axes, np.int64), "axes")]
    if as_constant_node:
        nodes.insert(0, helper.make_node("Constant", [], ["axes"], value=initializers[0]))
        initializers = []
    nodes.append(helper.make_node("Sub", ["x", "r"], ["y"]))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3, 4])], initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


@pytest.mark.parametrize("op", sorted(SHAPELESS_REDUCTIONS))
@pytest.mark.parametrize(("axes", "keepdims", "as_constant_node"), [([1], 1, False), ([-1], 1, True), ([1, 2], 1, False)])
def test_wrapped_reductions_are_shaped_and_exact(op: str, axes: list[int], keepdims: int, as_constant_node: bool) -> None:
    """Before: the tool crashes (the bug, for every one of these ops). After: shaped, and the same numbers."""
    model = tiny_reduction_model(op, axes, keepdims, as_constant_node)
    with pytest.raises(TypeError):
        SymbolicShapeInference.infer_shapes(model)
    wrapped = run_passes(model, shape_compat_passes(), keep_input=True).model
    onnx.checker.check_model(wrapped, full_check=True)
    assert not [n for n in wrapped.graph.node if n.op_type == op], "the reduction should be inside a function"
    shaped = SymbolicShapeInference.infer_shapes(wrapped)
    reduced = next(v for v in shaped.graph.value_info if v.name == "r")
    expected = ["b", 3, 4]
    for a in axes:
        expected[a] = 1
    assert [d.dim_param or d.dim_value for d in reduced.type.tensor_type.shape.dim] == expected
    x = np.random.default_rng(0).uniform(0.5, 2.0, (2, 3, 4)).astype(np.float32)  # positive: ReduceLogSum's domain
    np.testing.assert_array_equal(run(wrapped, x), run(model, x))


def test_inlining_restores_the_original_reduction() -> None:
    """What ONNX Runtime and TensorRT's parser execute after inlining is the reduction itself, axes constant."""
    wrapped = run_passes(tiny_reduction_model("ReduceMax", [1], 0), shape_compat_passes()).model
    inlined = onnx.inliner.inline_local_functions(wrapped)
    ops = [n.op_type for n in inlined.graph.node]
    assert ops == ["Constant", "ReduceMax", "Sub"]
    reduce = inlined.graph.node[1]
    assert helper.get_attribute_value(reduce.attribute[0]) == 0  # keepdims kept


def test_function_names_are_not_onnx_ops() -> None:
    """TensorRT's parser looks op_type up among its built-in importers first, ignoring the domain."""
    model = tiny_reduction_model("ReduceMin", [1], 1)
    model.graph.node.insert(1, helper.make_node("ReduceMax", ["x", "axes"], ["r2"], keepdims=1))  # shares the axes
    model.graph.output.append(helper.make_tensor_value_info("r2", TensorProto.FLOAT, ["b", 1, 4]))
    wrapped = run_passes(model, [WrapConstantAxesReductions()]).model
    names = sorted(f.name for f in wrapped.functions)
    assert names == ["ReduceMax_axes_1_keepdims_1", "ReduceMin_axes_1_keepdims_1"]
    assert not any(onnx.defs.has(name) for name in names)
    assert not wrapped.graph.initializer  # the shared axes moved into the functions


def test_computed_axes_are_left_alone() -> None:
    model = tiny_reduction_model("ReduceMax", [1], 1)
    model.graph.input.append(helper.make_tensor_value_info("axes", TensorProto.INT64, [1]))  # now an input
    result = WrapConstantAxesReductions()(model)
    assert not result.modified


def test_constant_attributes_become_tensors() -> None:
    nodes = [
        helper.make_node("Constant", [], ["s"], value_float=0.5),
        helper.make_node("Constant", [], ["i"], value_ints=[2, 3]),
        helper.make_node("Mul", ["x", "s"], ["y"]),
        helper.make_node("Reshape", ["y", "i"], ["z"]),
    ]
    graph = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(AttributeError):  # the tool's Constant rule reads `value` only
        SymbolicShapeInference.infer_shapes(model)
    fixed = run_passes(model, [ConstantAttributesAsTensors()], keep_input=True).model
    values = [numpy_helper.to_array(n.attribute[0].t) for n in fixed.graph.node[:2]]
    assert values[0].dtype == np.float32 and values[0].shape == () and values[0] == 0.5
    assert values[1].dtype == np.int64 and values[1].tolist() == [2, 3]
    shaped = SymbolicShapeInference.infer_shapes(fixed)
    assert [d.dim_value for d in shaped.graph.output[0].type.tensor_type.shape.dim] == [2, 3]
    x = np.arange(6, dtype=np.float32)
    session = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], (x * 0.5).reshape(2, 3))
