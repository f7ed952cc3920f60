"""FP16 graph with FP32 islands: the precision TensorRT 11 builds (strongly typed networks only).

The heavy compute (MatMul, Gemm, Conv, element-wise ops, GELU) runs in float16. These stay float32,
because float16 breaks physics or stability there:
- the wind-following scan: the u and v fields it averages per region, and its function body (its
  order turns on the last bit of a float32 angle);
- the elevation path: the elevation channel's 2x2 averaging and the per-sample min-max normalisation
  (every node feeding ElevationAttention's `elevation` input). A 5,000 m plateau with centimetre
  relief is ~2.05 +- 5e-6 in the data loader's standardised units; float16's spacing at 2.05 is 2e-3,
  so in float16 the relief vanishes (the plateau turns "flat") or the range rounds to a tiny
  non-zero value and the normalisation amplifies rounding noise.
- the bias and softmax inside ElevationAttention, and the softmax of any other model-local function
  (`float32_softmax`: scores cast up, bias added and softmax taken in float32, only the probabilities
  go back to float16 for the value matmul);
- LayerNormalization, Softmax and reductions;
- the output head (everything after the last LayerNormalization, see `output_head`).
Inputs and outputs stay float32 unless `keep_io_types=False`.

The pass is explicit about every cast, so ONNX Runtime, TensorRT's strongly typed mode and any
other runtime execute the same precisions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from climax_deploy.errors import ExportError
from climax_deploy.export.passes import GraphPass, PassResult, elevation_functions, elevation_nodes
from climax_deploy.export.wind_scan_function import is_wind_scan_node

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)

# Ops that always compute in float32 (numerically sensitive: normalisation, exponentials, reductions).
FP32_ISLAND_OPS: frozenset[str] = frozenset({
    "LayerNormalization", "Softmax", "LogSoftmax",
    "ReduceSum", "ReduceMean", "ReduceMin", "ReduceMax", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
})  # fmt: skip
# Ops that move data without arithmetic: their float outputs take the dtype of their float inputs.
FOLLOW_OPS: frozenset[str] = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split", "Gather", "GatherND",
    "GatherElements", "Concat", "Expand", "Identity", "Flatten", "Tile", "Where", "Pad",
})  # fmt: skip
# Ops whose float handling is explicit already; the pass leaves their inputs alone.
EXPLICIT_OPS: frozenset[str] = frozenset({"Cast", "CastLike", "Shape", "Size", "Constant"})
# ElevationAttention inputs: q, k, v in float16; normalised elevation and beta in float32.
ELEVATION_INPUT_DTYPES: tuple[int, ...] = (FLOAT16, FLOAT16, FLOAT16, FLOAT, FLOAT)
ISLAND_METADATA_KEY = "climax_deploy.fp16_islands"


def _dtype_name(dtype: int) -> str:
    return "float16" if dtype == FLOAT16 else "float32"


def float_tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every float tensor of the main graph (inputs, initializers, node outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
                elif attr.name in ("value_float", "value_floats"):
                    types[node.output[0]] = FLOAT
    return {name: t for name, t in types.items() if t in (FLOAT, FLOAT16)}


def output_head(model: onnx.ModelProto) -> set[int]:
    """Indices of the nodes after the last LayerNormalization: the output head and unpatchify.

    The outputs are standardised fields whose terrain-driven part is a small anomaly on a larger
    value; rounding the head's result to float16 (relative step 2^-11) buries that anomaly, while
    the head itself ([tokens, D] x [D, V p^2]) costs a few per cent of one MLP.
    """
    nodes = model.graph.node
    norms = [i for i, node in enumerate(nodes) if node.op_type == "LayerNormalization"]
    if not norms:
        return set()
    head: set[int] = set()
    live = set(nodes[norms[-1]].output)
    for i in range(norms[-1] + 1, len(nodes)):
        if live.intersection(nodes[i].input):
            head.add(i)
            live.update(nodes[i].output)
    return head


def elevation_island(model: onnx.ModelProto) -> set[int]:
    """Indices of the nodes that compute ElevationAttention's elevation and beta inputs."""
    return _producers(model, [name for node in elevation_nodes(model) for name in node.input[3:5]])


def wind_scan_island(model: onnx.ModelProto) -> set[int]:
    """Indices of the WindScanOrder node and of the nodes that compute its wind inputs: the order is
    decided by the last bit of a float32 angle, so the wind it averages stays float32."""
    scan = {i for i, node in enumerate(model.graph.node) if is_wind_scan_node(node)}
    return scan | _producers(model, [name for i in scan for name in model.graph.node[i].input])


def _producers(model: onnx.ModelProto, names: list[str]) -> set[int]:
    """Indices of the nodes that `names` depend on (transitively)."""
    producer = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    island: set[int] = set()
    stack = list(names)
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in island:
            continue
        island.add(i)
        stack.extend(model.graph.node[i].input)
    return island


@dataclass
class _Plan:
    """Per-tensor dtype decisions of one pass run."""

    dtype: dict[str, int] = field(default_factory=dict)  # current dtype of each float tensor
    casts: dict[tuple[str, int], str] = field(default_factory=dict)  # (tensor, dtype) -> cast output
    new_initializers: list[onnx.TensorProto] = field(default_factory=list)


class ConvertToFp16(GraphPass):
    """Cast the graph's heavy compute to float16, keeping the FP32 islands described above.

    In place: the model passed in is rewritten (its initializers are converted where they stand, so a
    large model is not held twice); run it through run_passes(..., keep_input=True) to keep the original.
    """

    in_place = True

    def __init__(self, keep_io_types: bool = True, extra_fp32_ops: frozenset[str] = frozenset()) -> None:
        self.keep_io_types = keep_io_types
        self.fp32_ops = FP32_ISLAND_OPS | extra_fp32_ops

    def requires(self, model: onnx.ModelProto) -> None:
        if len(elevation_nodes(model)) != 1 or len(elevation_functions(model)) != 1:
            raise ExportError("ConvertToFp16 expects one ElevationAttention node and its function; run it after export")
        float16 = [v.name for v in model.graph.input if v.type.tensor_type.elem_type == FLOAT16]
        float16 += [t.name for t in model.graph.initializer if t.data_type == FLOAT16]
        if float16:
            raise ExportError(f"model is already float16 ({float16[:3]} ...); expected a float32 export")

    def call(self, model: onnx.ModelProto) -> PassResult:
        types = float_tensor_types(model)
        graph = model.graph
        island = elevation_island(model) | wind_scan_island(model) | output_head(model)
        wants = self._consumer_wants(model, types, island)
        plan = _Plan()
        io_dtype = FLOAT if self.keep_io_types else FLOAT16

        for value in graph.input:
            if value.name in types:
                value.type.tensor_type.elem_type = io_dtype
                plan.dtype[value.name] = io_dtype
        self._convert_initializers(model, types, wants, plan)

        new_nodes: list[onnx.NodeProto] = []
        for index, node in enumerate(graph.node):
            required = self._required_dtypes(node, index in island, types, plan)
            for slot, name in enumerate(node.input):
                want = required.get(slot)
                if want is None or plan.dtype.get(name) == want:
                    continue
                node.input[slot] = self._cast(name, want, plan, new_nodes)
            implicit = {name: plan.dtype.get(name, types[name]) for name in outer_inputs(node) if name in types}
            if any(dtype != FLOAT16 for dtype in implicit.values()) or (implicit and index in island):
                raise ExportError(f"{node.op_type} node {node.name!r} reads float32 tensors from its subgraph "
                                  f"({sorted(implicit)[:3]}); only float16 compute bodies are supported")  # fmt: skip
            out_dtype = FLOAT16 if implicit else self._output_dtype(node, index in island, required, plan)
            for out in node.output:
                if out in types:
                    plan.dtype[out] = out_dtype if out_dtype is not None else types[out]
            new_nodes.append(node)

        for value in graph.output:
            if value.name in types and plan.dtype.get(value.name) != io_dtype:
                self._cast_graph_output(value.name, io_dtype, new_nodes)
            if value.name in types:
                value.type.tensor_type.elem_type = io_dtype
        del graph.node[:]
        graph.node.extend(new_nodes)
        graph.initializer.extend(plan.new_initializers)
        del graph.value_info[:]  # stale float32 annotations; shape inference rebuilds them
        mixed_precision_bodies(model)
        model.metadata_props.add(key=ISLAND_METADATA_KEY, value=", ".join(island_description()))
        return PassResult(model, modified=True)

    def ensures(self, model: onnx.ModelProto) -> None:
        types = float_tensor_types(model)
        for index in elevation_island(model) | wind_scan_island(model):
            for out in model.graph.node[index].output:
                if types.get(out, FLOAT) != FLOAT:
                    raise ExportError(f"elevation or wind-scan path tensor {out!r} is float16; it must stay float32")
        for node in model.graph.node:
            if node.op_type in FP32_ISLAND_OPS and any(types.get(o, FLOAT) != FLOAT for o in node.output):
                raise ExportError(f"{node.op_type} node {node.name!r} computes in float16; it must stay float32")
        if not any(t == FLOAT16 for t in types.values()):
            raise ExportError("ConvertToFp16 left no float16 tensor in the graph")

    # -- decisions -------------------------------------------------------------------------------

    def _consumer_wants(self, model: onnx.ModelProto, types: dict[str, int], island: set[int]) -> dict[str, set[int]]:
        """Dtypes each float tensor's consumers will ask for (looking through data-movement ops)."""
        wants: dict[str, set[int]] = defaultdict(set)
        io_dtype = FLOAT if self.keep_io_types else FLOAT16
        for value in model.graph.output:
            wants[value.name].add(io_dtype)
        for index in reversed(range(len(model.graph.node))):
            node = model.graph.node[index]
            for name in outer_inputs(node):
                if name in types:
                    wants[name].add(FLOAT16)  # a query-block Loop's body computes in its outer tensors' dtype
            for slot, name in enumerate(node.input):
                if name not in types:
                    continue
                if index in island or node.op_type in self.fp32_ops:
                    wants[name].add(FLOAT)
                elif _is_elevation_node(node):
                    wants[name].add(ELEVATION_INPUT_DTYPES[slot])
                elif node.op_type in FOLLOW_OPS:
                    for out in node.output:
                        wants[name].update(wants.get(out, set()))
                elif node.op_type not in EXPLICIT_OPS:
                    wants[name].add(FLOAT16)
        return wants

    def _convert_initializers(
        self, model: onnx.ModelProto, types: dict[str, int], wants: dict[str, set[int]], plan: _Plan
    ) -> None:
        """Store float16-only weights as float16; give mixed-use weights a float16 twin."""
        for init in model.graph.initializer:
            if init.name not in types or types[init.name] != FLOAT:
                continue
            want = wants.get(init.name, set())
            plan.dtype[init.name] = FLOAT
            if FLOAT16 not in want:
                continue
            half = _to_float16(init)
            if want == {FLOAT16}:
                init.CopyFrom(half)
                plan.dtype[init.name] = FLOAT16
            else:
                half.name = f"{init.name}__fp16"
                plan.new_initializers.append(half)
                plan.casts[(init.name, FLOAT16)] = half.name
                plan.dtype[half.name] = FLOAT16

    def _required_dtypes(self, node: onnx.NodeProto, in_island: bool, types: dict[str, int], plan: _Plan) -> dict[int, int]:
        """Slot -> dtype this node needs for each of its float inputs."""
        slots = [s for s, name in enumerate(node.input) if name in types]
        if not slots or node.op_type in EXPLICIT_OPS:
            return {}
        if in_island or node.op_type in self.fp32_ops:
            return {s: FLOAT for s in slots}
        if _is_elevation_node(node):
            return {s: ELEVATION_INPUT_DTYPES[s] for s in slots}
        if node.op_type in FOLLOW_OPS:
            first = plan.dtype.get(node.input[slots[0]], types[node.input[slots[0]]])
            return {s: first for s in slots}
        return {s: FLOAT16 for s in slots}

    def _output_dtype(self, node: onnx.NodeProto, in_island: bool, required: dict[int, int], plan: _Plan) -> int | None:
        if node.op_type in EXPLICIT_OPS:
            if node.op_type == "CastLike" and node.input[1] in plan.dtype:
                return plan.dtype[node.input[1]]
            return None  # Cast's `to`, Constant's value: unchanged
        if in_island or node.op_type in self.fp32_ops:
            return FLOAT
        if _is_elevation_node(node):
            return FLOAT16
        if required:
            return next(iter(required.values()))
        return None

    # -- rewriting -------------------------------------------------------------------------------

    @staticmethod
    def _cast(name: str, dtype: int, plan: _Plan, new_nodes: list[onnx.NodeProto]) -> str:
        key = (name, dtype)
        if key not in plan.casts:
            out = f"{name}__to_{_dtype_name(dtype)}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=dtype, name=f"cast_{out}"))
            plan.casts[key] = out
            plan.dtype[out] = dtype
        return plan.casts[key]

    @staticmethod
    def _cast_graph_output(name: str, dtype: int, new_nodes: list[onnx.NodeProto]) -> None:
        inner = f"{name}__{'fp16' if dtype == FLOAT else 'fp32'}"
        for node in new_nodes:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        new_nodes.append(helper.make_node("Cast", [inner], [name], to=dtype, name=f"cast_{name}_boundary"))


def _is_elevation_node(node: onnx.NodeProto) -> bool:
    from climax_deploy.schema import CUSTOM_DOMAIN, CUSTOM_OP

    return node.domain == CUSTOM_DOMAIN and node.op_type == CUSTOM_OP


def _to_float16(init: onnx.TensorProto) -> onnx.TensorProto:
    values = numpy_helper.to_array(init)
    peak = float(np.abs(values).max()) if values.size else 0.0
    if peak > FP16_MAX:
        raise ExportError(
            f"weight {init.name!r} holds {peak:.3g}, beyond float16's range ({FP16_MAX:.0f}); export with --precision fp32"
        )
    return numpy_helper.from_array(values.astype(np.float16), init.name)


def float32_softmax(nodes: list[onnx.NodeProto], tag: str = "") -> list[onnx.NodeProto]:
    """Nodes of a function body (or subgraph) with every Softmax, and the Add feeding it, in float32.

    - Softmax(s)                 ->  CastLike(Softmax(Cast(s, FLOAT)), s)
    - Softmax(Add(a, b))         ->  CastLike(Softmax(Add(Cast(a, FLOAT), Cast(b, FLOAT))), a)
    - an Add input made by CastLike(x, like) (a bias cast down to the scores' dtype) is read as x
      itself, so the bias is never rounded to float16: ElevationAttention's bias stays float32;
    - ONNX Attention nodes get softmax_precision = FLOAT.
    With float32 inputs every added cast is a no-op, so the body stays right at any precision.
    Works on any body shape, including Loop/Scan/If subgraphs (head-by-head bodies).
    """
    producer = {out: n for n in nodes for out in n.output}
    uses: dict[str, int] = defaultdict(int)
    for n in nodes:
        for name in n.input:
            uses[name] += 1
    feeding_add = {
        id(producer[s.input[0]])
        for s in nodes
        if s.op_type == "Softmax" and s.input[0] in producer and producer[s.input[0]].op_type == "Add"
        and uses[s.input[0]] == 1
    }
    rebuilt: list[onnx.NodeProto] = []
    add_like: dict[int, str] = {}
    count = 0

    def up(name: str) -> str:
        nonlocal count
        count += 1
        source = producer.get(name)
        if source is not None and source.op_type == "CastLike":
            name = source.input[0]  # skip the cast down; cast the original up instead
        out = f"{name}__f32_{tag}{count}"
        rebuilt.append(helper.make_node("Cast", [name], [out], to=FLOAT))
        return out

    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                body = float32_softmax(list(attr.g.node), f"{tag}{node.op_type}{count}_")
                del attr.g.node[:]
                attr.g.node.extend(body)
        if node.op_type == "Attention":
            kept = [a for a in node.attribute if a.name != "softmax_precision"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("softmax_precision", FLOAT)])
        if id(node) in feeding_add:
            add_like[id(node)] = node.input[0]  # the scores: the probabilities go back to their dtype
            node.input[:] = [up(node.input[0]), up(node.input[1])]
            rebuilt.append(node)
            continue
        if node.op_type == "Softmax":
            source = producer.get(node.input[0])
            if source is not None and id(source) in add_like:
                like = add_like[id(source)]
                softmax_in = node.input[0]
            else:
                like = node.input[0]
                softmax_in = up(node.input[0])
            probs = node.output[0]
            node.input[0] = softmax_in
            node.output[0] = f"{probs}__f32_{tag}"
            rebuilt.append(node)
            rebuilt.append(helper.make_node("CastLike", [node.output[0], like], [probs]))
            continue
        rebuilt.append(node)
    return rebuilt


def mixed_precision_bodies(model: onnx.ModelProto) -> None:
    """Apply `float32_softmax` to every model-local function (ElevationAttention and any other) and to
    the subgraphs of the main graph (the query-block Loops of plain attention)."""
    for function in model.functions:
        body = float32_softmax(list(function.node))
        del function.node[:]
        function.node.extend(body)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                body = float32_softmax(list(attr.g.node), f"{node.name or node.op_type}_")
                del attr.g.node[:]
                attr.g.node.extend(body)


def outer_inputs(node: onnx.NodeProto) -> list[str]:
    """Names `node`'s subgraphs read from the enclosing graph (a Loop body's implicit inputs), in order."""
    found: list[str] = []
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            local = {v.name for v in graph.input} | {t.name for t in graph.initializer}
            for inner in graph.node:
                for name in [*inner.input, *outer_inputs(inner)]:
                    if name and name not in local and name not in found:
                        found.append(name)
                local.update(inner.output)
    return found


def island_description() -> list[str]:
    """Human-readable list of what stays float32 (recorded in the model's metadata)."""
    return [
        "elevation averaging and min-max normalisation",
        "wind-following scan (region mean wind, angle, order)",
        "ElevationAttention bias and softmax",
        "output head (after the last LayerNormalization)",
        *sorted(FP32_ISLAND_OPS),
        "graph inputs and outputs (unless float16 I/O was asked for)",
    ]


def node_precisions(model: onnx.ModelProto) -> dict[str, int]:
    """Count of nodes by output precision, for logs and tests: {"float16": n, "float32": m}."""
    types = float_tensor_types(model)
    counts = {"float16": 0, "float32": 0}
    for node in model.graph.node:
        dtypes = {types[o] for o in node.output if o in types}
        if node.op_type != "Cast" and dtypes:
            counts[_dtype_name(FLOAT16 if FLOAT16 in dtypes else FLOAT)] += 1
    return counts


__all__ = [
    "ConvertToFp16",
    "FP32_ISLAND_OPS",
    "elevation_island",
    "float_tensor_types",
    "float32_softmax",
    "mixed_precision_bodies",
    "node_precisions",
    "output_head",
]
