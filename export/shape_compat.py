"""Keep exports readable by ONNX Runtime's symbolic shape inference (onnxruntime.tools.symbolic_shape_infer).

ONNX Runtime's TensorRT execution provider asks users to run

    python -m onnxruntime.tools.symbolic_shape_infer --input m.onnx --output m.shaped.onnx

on models with dynamic shapes. That tool infers each node alone: it hands ONNX's shape inference a
one-node graph whose inputs carry shapes but no values (it forwards constant values for Unsqueeze
only), and has its own rules for ReduceSum and ReduceMean only. From opset 18 every reduction takes
its `axes` as an input, so ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
ReduceLogSumExp and ReduceSumSquare come back without any shape, and the first element-wise node
after one crashes the tool (TypeError in `_infer_impl`: "object of type 'NoneType' has no len()";
ONNX Runtime 1.32, onnxruntime/tools/symbolic_shape_infer.py). Every export had one: the per-sample
min-max normalisation of the elevations. Once past those, the tool's Constant rule reads the `value`
attribute only and crashes (AttributeError) on the `value_float` / `value_ints` forms of Constant.

Two passes, run last in the export pipeline: `ConstantAttributesAsTensors` rewrites main-graph
Constant nodes to the equivalent `value` tensor (the spec defines value_float as a 0-d float tensor,
value_ints as a 1-d int64 tensor, ...). `WrapConstantAxesReductions` puts each such reduction whose axes are a constant into a model-local
function whose body holds the axes as a Constant node. ONNX's shape inference infers a function call
from its body, Constant included, so the tool gets the shape; ONNX Runtime and TensorRT's ONNX parser
inline model-local functions (as they do ElevationAttention), so the ops executed and their results
are unchanged. The functions are named after op, axes and attributes
(`climax.shapes::ReduceMax_axes_1_keepdims_1`), never after an ONNX op: TensorRT's parser looks a
node's op_type up among its built-in importers before the model's functions, whatever the domain
(onnx-tensorrt ModelImporter.cpp, parseNode), so a function named `ReduceMax` would be imported as
a built-in ReduceMax without its axes.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from climax_deploy.errors import ExportError
from climax_deploy.export.passes import GraphPass, PassResult, opset_version

log = logging.getLogger(__name__)

SHAPES_DOMAIN = "climax.shapes"
SHAPES_DOMAIN_VERSION = 1
# Opset-18+ reductions symbolic_shape_infer cannot shape when `axes` is an input (it has full rules
# for ReduceSum and ReduceMean only; its ReduceProd rule computes values, not shapes).
SHAPELESS_REDUCTIONS: frozenset[str] = frozenset({
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceSumSquare",
})  # fmt: skip
AXES_AS_INPUT_OPSET = 18  # the opset from which every reduction takes `axes` as an input


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the graph's constants: initializers that are not graph inputs, and Constant nodes' tensors."""
    inputs = {v.name for v in graph.input}
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name not in inputs}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name == "value_ints":
                    values[node.output[0]] = np.asarray(attr.ints, dtype=np.int64)
    return values


def _is_shapeless_reduction(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in SHAPELESS_REDUCTIONS and len(node.input) > 1 and bool(node.input[1])


def _function_name(node: onnx.NodeProto, axes: np.ndarray) -> str:
    """`ReduceMax_axes_1_keepdims_1`: the op, its axes (m for minus) and its attributes, sorted."""
    parts = [node.op_type, "axes", *(str(int(a)).replace("-", "m") for a in axes.reshape(-1))]
    for attr in sorted(node.attribute, key=lambda a: a.name):
        parts += [attr.name, str(helper.get_attribute_value(attr))]
    return "_".join(parts)


def reduction_function(node: onnx.NodeProto, axes: np.ndarray, name: str, opset: int) -> onnx.FunctionProto:
    """A function computing `node`'s reduction of its one input over the constant `axes`."""
    body = [
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(axes.astype(np.int64), "axes")),
        helper.make_node(node.op_type, ["data", "axes"], ["reduced"]),
    ]
    body[1].attribute.extend(node.attribute)
    return helper.make_function(
        SHAPES_DOMAIN, name, ["data"], ["reduced"], body,
        opset_imports=[helper.make_opsetid("", opset)],
        doc_string=f"{node.op_type} over the constant axes {axes.tolist()}, as a function so that per-node shape "
                   "inference sees the axes (see climax_deploy.export.shape_compat)",
    )  # fmt: skip


# Constant's scalar/list attributes and the tensor each one denotes (ONNX Constant-13+): dtype, rank.
CONSTANT_ATTRIBUTES: dict[str, tuple[type, int]] = {
    "value_float": (np.float32, 0), "value_floats": (np.float32, 1),
    "value_int": (np.int64, 0), "value_ints": (np.int64, 1),
}  # fmt: skip


class ConstantAttributesAsTensors(GraphPass):
    """Main-graph Constant nodes with value_float(s)/value_int(s) -> the same constant as a `value` tensor."""

    in_place = True

    def call(self, model: onnx.ModelProto) -> PassResult:
        modified = False
        for node in model.graph.node:
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
                continue
            attr = node.attribute[0]
            if attr.name not in CONSTANT_ATTRIBUTES:
                continue
            dtype, rank = CONSTANT_ATTRIBUTES[attr.name]
            value: np.ndarray = np.asarray(helper.get_attribute_value(attr), dtype=dtype)
            if value.ndim != rank:
                raise ExportError(f"Constant {node.output[0]!r}: {attr.name} must be rank {rank}, got shape {value.shape}")
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value, node.output[0])))
            modified = True
        return PassResult(model, modified)

    def ensures(self, model: onnx.ModelProto) -> None:
        left = [n.output[0] for n in model.graph.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")
                and any(a.name in CONSTANT_ATTRIBUTES for a in n.attribute)]  # fmt: skip
        if left:
            raise ExportError(f"Constant nodes still use scalar/list attributes: {left[:5]}; expected `value` tensors")


class WrapConstantAxesReductions(GraphPass):
    """Wrap every opset-18+ reduction with constant axes that symbolic_shape_infer cannot shape in a function.

    Main graph only (exports have no control flow). A reduction with computed axes is left as it is,
    with a warning: no graph rewrite can give that tool its shape.
    """

    in_place = True

    def call(self, model: onnx.ModelProto) -> PassResult:
        opset = opset_version(model)
        if opset < AXES_AS_INPUT_OPSET:
            return PassResult(model, modified=False)
        graph = model.graph
        constants = constant_values(graph)
        existing = {(f.domain, f.name) for f in model.functions}
        modified = False
        for node in graph.node:
            if not _is_shapeless_reduction(node) or node.input[1] not in constants:
                continue
            axes = constants[node.input[1]]
            name = _function_name(node, axes)
            if (SHAPES_DOMAIN, name) not in existing:
                model.functions.append(reduction_function(node, axes, name, opset))
                existing.add((SHAPES_DOMAIN, name))
            del node.input[1:]
            del node.attribute[:]
            node.op_type, node.domain = name, SHAPES_DOMAIN
            modified = True
        if modified:
            _drop_unused_initializers(graph)
            if not any(e.domain == SHAPES_DOMAIN for e in model.opset_import):
                model.opset_import.append(helper.make_opsetid(SHAPES_DOMAIN, SHAPES_DOMAIN_VERSION))
        return PassResult(model, modified)

    def ensures(self, model: onnx.ModelProto) -> None:
        constants = constant_values(model.graph)
        left = [n.name or n.op_type for n in model.graph.node if _is_shapeless_reduction(n) and n.input[1] in constants]
        if left:
            raise ExportError(f"reductions with constant axes left unwrapped: {left[:5]}; expected none")
        computed = [n.name or n.op_type for n in model.graph.node if _is_shapeless_reduction(n)]
        if computed:
            log.warning("reductions with computed axes %s: symbolic_shape_infer cannot shape them", computed[:5])
        called = {(n.domain, n.op_type) for n in model.graph.node}
        missing = [name for domain, name in called if domain == SHAPES_DOMAIN and not _has_function(model, name)]
        if missing:
            raise ExportError(f"nodes call {SHAPES_DOMAIN} functions the model lacks: {sorted(missing)}")


def original_op_type(node: onnx.NodeProto) -> str:
    """The ONNX op a node computes: the reduction inside a climax.shapes function, else its op_type."""
    if node.domain == SHAPES_DOMAIN and "_axes_" in node.op_type:
        return node.op_type.split("_axes_", 1)[0]
    return node.op_type


def _has_function(model: onnx.ModelProto, name: str) -> bool:
    return any(f.domain == SHAPES_DOMAIN and f.name == name for f in model.functions)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove initializers no node, subgraph or graph output reads any more (the moved axes)."""
    used = {name for node in graph.node for name in node.input} | {v.name for v in graph.output}
    for node in graph.node:  # subgraphs read outer values implicitly
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                used |= {name for n in sub.node for name in n.input}
    inputs = {v.name for v in graph.input}
    unused = [t for t in graph.initializer if t.name not in used and t.name not in inputs]
    for tensor in unused:
        graph.initializer.remove(tensor)


def shape_compat_passes() -> list[GraphPass]:
    """The passes that keep an export readable by symbolic_shape_infer, in order (run them last)."""
    return [ConstantAttributesAsTensors(), WrapConstantAxesReductions()]


__all__ = [
    "ConstantAttributesAsTensors",
    "SHAPELESS_REDUCTIONS",
    "shape_compat_passes",     "SHAPES_DOMAIN",
    "WrapConstantAxesReductions",
    "constant_values",
    "original_op_type",
    "reduction_function",
]
