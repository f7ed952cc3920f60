"""What TensorRT's ONNX parser documents it imports, for the ops build-engine hands it, and a checker.

The table is written from onnx-tensorrt's `docs/operators.md` at commit 7c51a63a (the `parsers/onnx`
submodule NVIDIA/TensorRT pins at tag v11.1; the v10.16 pin 6bde6596 has the same rows for every op
below). Each entry cites the row's line in that file. The file's line 5 gives the opset range
("TensorRT 11.1 supports operators in the inclusive range of opset 9 to opset 24"); its line 7 the
data types. An op missing from this table is reported, so a new op in the graph forces a look at
operators.md before it reaches TensorRT.

Model-local functions are expanded first, as the parser does (onnx-tensorrt Changelog, 9.0 EA:
"Added support for ONNX local functions"), so ElevationAttention's and WindScanOrder's bodies are
checked op by op; a node routed to a plugin (`plugin_namespace` attribute) is left whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

OPERATORS_MD = "onnx/onnx-tensorrt docs/operators.md @ 7c51a63a (TensorRT v11.1)"
MIN_OPSET, MAX_OPSET = 9, 24  # operators.md line 5

FP32, FP16, BF16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16
INT32, INT64, BOOL, UINT8 = TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.UINT8
FLOATS = frozenset({FP32, FP16, BF16})
NUMERIC = FLOATS | {INT32, INT64}
ANY = NUMERIC | {BOOL}


@dataclass(frozen=True)
class OpSupport:
    line: int  # the op's row in operators.md
    types: frozenset[int]  # "Supported Types" (data tensors; index and shape operands are ONNX-typed int64)
    restriction: str = ""  # the row's "Restrictions", verbatim where checked
    # Input positions that are index/shape operands, not data (their type is fixed by ONNX, not TensorRT's list).
    operands: tuple[int, ...] = ()
    outputs_checked: bool = True  # False for comparisons: the listed types are the inputs', the output is BOOL
    # Input positions that must be build-time constants (an initializer or a Constant node's output).
    constant_inputs: tuple[int, ...] = field(default=())


_REDUCE = "`axes` must be an initializer"
_AXES = "`axes` must be resolvable to a constant."

SUPPORT: dict[str, OpSupport] = {
    "Abs": OpSupport(19, NUMERIC),
    "Add": OpSupport(22, NUMERIC),
    "Attention": OpSupport(31, FLOATS, "`Q`, `K`, `V` and `attn_mask` must be 4D; past_key, past_value, nonpad_kv_seqlen, "
                           "present_key, present_value, qk_matmul_output, qk_matmul_output_mode and softcap unsupported"),
    "AveragePool": OpSupport(32, FLOATS, "2D or 3D Pooling only. `dilations` must be empty or all ones"),
    "Cast": OpSupport(41, ANY | {UINT8}),
    "CastLike": OpSupport(42, ANY | {UINT8}),
    "Concat": OpSupport(49, ANY),
    "Constant": OpSupport(51, ANY, "`sparse_value`, `value_string`, and `value_strings` attributes are unsupported."),
    "Div": OpSupport(64, NUMERIC),
    "Equal": OpSupport(69, NUMERIC, outputs_checked=False),
    "Erf": OpSupport(70, FLOATS),
    "Exp": OpSupport(71, FLOATS),
    "Expand": OpSupport(72, ANY, operands=(1,)),
    "Gather": OpSupport(76, ANY, operands=(1,)),
    "GatherND": OpSupport(78, ANY, operands=(1,)),
    "Gemm": OpSupport(80, FLOATS),
    "Greater": OpSupport(84, NUMERIC, outputs_checked=False),
    "GreaterOrEqual": OpSupport(85, NUMERIC, outputs_checked=False),
    "Identity": OpSupport(94, ANY),
    "LayerNormalization": OpSupport(101, FLOATS, "Only the first output `Y` is supported."),
    "Less": OpSupport(103, NUMERIC, outputs_checked=False),
    "LessOrEqual": OpSupport(104, NUMERIC, outputs_checked=False),
    "Log": OpSupport(105, FLOATS),
    # Supported with "Scan output length cannot be dynamic": the export's query-block Loops have a
    # batch-dependent trip count, so build-engine unrolls them (export/query_blocks.py) and none may remain.
    "Loop": OpSupport(107, ANY, "Scan output length cannot be dynamic (refused here: build-engine hands TensorRT no Loop)"),
    "MatMul": OpSupport(112, FLOATS),
    "Max": OpSupport(114, NUMERIC),
    "Min": OpSupport(121, NUMERIC),
    "Mul": OpSupport(124, NUMERIC),
    "Neg": OpSupport(126, NUMERIC),
    "Pad": OpSupport(136, NUMERIC, operands=(1, 2, 3)),
    "Range": OpSupport(147, NUMERIC),
    "Reciprocal": OpSupport(148, FLOATS),
    "ReduceMax": OpSupport(153, NUMERIC, _REDUCE, operands=(1,), constant_inputs=(1,)),
    "ReduceMin": OpSupport(155, NUMERIC, _REDUCE, operands=(1,), constant_inputs=(1,)),
    "ReduceSum": OpSupport(157, NUMERIC, _REDUCE, operands=(1,), constant_inputs=(1,)),
    "Reshape": OpSupport(161, ANY, operands=(1,)),
    "Shape": OpSupport(183, ANY),
    "Slice": OpSupport(190, ANY, operands=(1, 2, 3, 4)),
    "Softmax": OpSupport(191, FLOATS),
    "Split": OpSupport(196, ANY, operands=(1,)),
    "Sqrt": OpSupport(198, FLOATS),
    "Squeeze": OpSupport(199, ANY, _AXES, operands=(1,), constant_inputs=(1,)),
    "Sub": OpSupport(203, NUMERIC),
    "Transpose": OpSupport(213, ANY),
    "Unsqueeze": OpSupport(216, ANY, _AXES, operands=(1,), constant_inputs=(1,)),
    "Where": OpSupport(218, ANY, operands=(0,)),
}


def _plugin_function_ids(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(domain, name) of the functions whose calls TensorRT routes to a plugin (left whole)."""
    return sorted({(n.domain, n.op_type) for n in model.graph.node if any(a.name == "plugin_namespace" for a in n.attribute)})


def tensorrt_view(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as TensorRT's parser imports it: model-local functions expanded (plugin calls kept),
    types inferred."""
    import onnx.inliner

    inlined = onnx.inliner.inline_selected_functions(model, _plugin_function_ids(model), exclude=True)
    return onnx.shape_inference.infer_shapes(inlined)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    values = [*g.input, *g.output, *g.value_info]
    types = {v.name: v.type.tensor_type.elem_type for v in values if v.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _constants(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    return {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}


def _attention_problems(node: onnx.NodeProto, ranks: Callable[[str], int | None]) -> list[str]:
    problems = []
    for i, name in enumerate(node.input[:4]):
        if name and ranks(name) != 4:
            problems.append(f"input {i} must be 4D, got rank {ranks(name)}")
    if len([name for name in node.input[4:] if name]):
        problems.append("past_key/past_value/nonpad_kv_seqlen inputs are unsupported")
    if len([name for name in node.output[1:] if name]):
        problems.append("only the first output is supported")
    for attr in node.attribute:
        if attr.name in ("qk_matmul_output_mode", "softcap"):
            problems.append(f"attribute {attr.name} is unsupported")
    return problems


def unsupported(model: onnx.ModelProto, plugins: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """One line per node of `model` (as TensorRT imports it) that operators.md does not support; empty if all are.

    `plugins`: (domain, op) of the custom nodes a registered plugin builds (the plugin mode's ElevationAttention).
    """
    problems = []
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and not MIN_OPSET <= entry.version <= MAX_OPSET:
            problems.append(f"opset {entry.version} outside {MIN_OPSET}..{MAX_OPSET} (operators.md line 5)")
    view = tensorrt_view(model)
    types, constants = _types(view), _constants(view)
    shapes = {v.name: v.type.tensor_type for v in [*view.graph.input, *view.graph.output, *view.graph.value_info]}

    def rank(name: str) -> int | None:
        t = shapes.get(name)
        return len(t.shape.dim) if t is not None and t.HasField("shape") else None

    for node in view.graph.node:
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        if (node.domain, node.op_type) in plugins:
            continue
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r} with no plugin and no function to expand")
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute) or node.op_type == "Loop":
            problems.append(f"{where}: a control-flow node (build-engine hands TensorRT none; operators.md line {SUPPORT['Loop'].line})")
            continue
        support = SUPPORT.get(node.op_type)
        if support is None:
            problems.append(f"{where}: not in the support table written from {OPERATORS_MD}")
            continue
        data = [name for i, name in enumerate(node.input) if name and i not in support.operands]
        if support.outputs_checked:
            data += [name for name in node.output if name]
        for name in data:
            dtype = types.get(name)
            if dtype is None:
                problems.append(f"{where}: type of {name!r} unknown")
            elif dtype not in support.types:
                problems.append(f"{where}: {name!r} is {TensorProto.DataType.Name(dtype)}, operators.md line "
                                f"{support.line} lists {sorted(TensorProto.DataType.Name(t) for t in support.types)}")  # fmt: skip
        for i in support.constant_inputs:
            if i < len(node.input) and node.input[i] and node.input[i] not in constants:
                problems.append(f"{where}: input {i} must be a build-time constant ({support.restriction})")
        if node.op_type == "Constant" and any(a.name in ("sparse_value", "value_string", "value_strings") for a in node.attribute):
            problems.append(f"{where}: {support.restriction}")
        if node.op_type == "LayerNormalization" and len([o for o in node.output[1:] if o]):
            problems.append(f"{where}: {support.restriction}")
        if node.op_type == "AveragePool" and any(a.name == "dilations" and any(d != 1 for d in a.ints) for a in node.attribute):
            problems.append(f"{where}: {support.restriction}")
        if node.op_type == "Attention":
            problems += [f"{where}: {p} (operators.md line {support.line})" for p in _attention_problems(node, rank)]
    return problems


__all__ = ["MAX_OPSET", "MIN_OPSET", "OPERATORS_MD", "OpSupport", "SUPPORT", "tensorrt_view", "unsupported"]
