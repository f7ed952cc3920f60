"""The FLOP floor of an exported model: matmul FLOPs counted from the ONNX graph over a measured matmul rate.

`count_flops` inlines the model-local functions (ElevationAttention, SelfAttention), fixes the batch,
runs ONNX shape inference and counts 2 x multiply-adds of every MatMul, Gemm, Conv and Attention node
(inside Loop and Scan bodies too, times their trip counts). Everything else (softmax, element-wise,
LayerNorm) is left out, so `flops / rate` is a floor: no implementation of the graph on this machine can
beat it. A node whose shapes inference cannot resolve is listed in `unresolved`, never guessed.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

MATMUL_OPS = ("MatMul", "Gemm", "Conv", "Attention")


@dataclass
class FlopCount:
    """Matmul FLOPs of one graph by operator type, and the nodes whose shapes could not be resolved."""

    total: int = 0
    by_op: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unresolved: list[str] = field(default_factory=list)

    def add(self, op: str, flops: int) -> None:
        self.total += flops
        self.by_op[op] += flops

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_op": dict(self.by_op), "unresolved": list(self.unresolved)}


def matmul_flops(op: str, inputs: list[tuple[int, ...] | None], output: tuple[int, ...] | None,
                 attrs: dict[str, Any]) -> int | None:  # fmt: skip
    """2 x multiply-adds of one MatMul/Gemm/Conv/Attention node from its shapes; None if a shape is unknown."""
    if op == "MatMul":
        a = inputs[0]
        if a is None or output is None:
            return None
        return 2 * math.prod(output) * a[-1]
    if op == "Gemm":
        a, b = inputs[0], inputs[1]
        if a is None or b is None:
            return None
        m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
        n = b[0] if attrs.get("transB") else b[1]
        return 2 * m * k * n
    if op == "Conv":
        w = inputs[1]
        if w is None or output is None:
            return None
        # Each output element: C_in / group x kernel multiply-adds; w is [C_out, C_in / group, *kernel].
        return 2 * math.prod(output) * math.prod(w[1:])
    if op == "Attention":  # ONNX Attention-23 on 4-D q [B, Hq, Nq, Dh], k [B, Hkv, Nkv, Dh], v [B, Hkv, Nkv, Dv]
        q, k, v = inputs[0], inputs[1], inputs[2]
        if q is None or k is None or v is None or len(q) != 4 or len(k) != 4 or len(v) != 4:
            return None
        batch, heads, nq, dh = q
        return 2 * batch * heads * nq * k[2] * (dh + v[3])
    raise ValueError(f"expected one of {MATMUL_OPS}, got {op!r}")


# --- Resolving shapes: the batch fixed, shape arithmetic folded to constants, Loop bodies specialised ---

SMALL = 1024  # tensors folded to constants have at most this many elements (shape arithmetic, not data)
Types = dict[str, tuple[int, tuple[int, ...] | None]]  # name -> (ONNX elem type, static shape or None)


def _types(graph: onnx.GraphProto) -> Types:
    types: Types = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        shape = None
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            shape = None if any(d is None for d in dims) else tuple(int(d) for d in dims)  # type: ignore[misc]
        types[vi.name] = (t.elem_type, shape)
    for init in graph.initializer:
        types[init.name] = (init.data_type, tuple(init.dims))
    return types


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            values[node.output[0]] = _constant_value(node)
    return values


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    from onnx import helper, numpy_helper

    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    if attr.name == "value":
        return numpy_helper.to_array(value)
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}.get(attr.name)  # fmt: skip
    return np.array(value, dtype=dtype)


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return (np.abs(a) // np.abs(b)) * np.sign(a) * np.sign(b)  # ONNX Div on integers truncates
    return a / b


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _int_div, "Equal": np.equal,
           "Less": np.less, "Greater": np.greater, "Mod": np.mod}  # fmt: skip
_VARIADIC = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add}


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], types: Types) -> list[np.ndarray] | None:
    """The outputs of one shape-arithmetic node whose inputs are known, else None."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op in ("Shape", "Size"):
        shape = types.get(node.input[0], (0, None))[1]
        if shape is None:
            return None
        if op == "Size":
            return [np.array(math.prod(shape), dtype=np.int64)]
        rank = len(shape)
        start, end = attrs.get("start", 0), attrs.get("end", rank)
        return [np.array(shape[slice(start, end)], dtype=np.int64)]
    if not all(name in values for name in node.input if name) or not node.input:
        return None
    ins = [values[name] if name else None for name in node.input]
    if any(x is not None and x.size > SMALL for x in ins):
        return None
    x = ins[0]
    if op in _BINARY:
        out = _BINARY[op](ins[0], ins[1])
    elif op in _VARIADIC:
        out = ins[0]
        for other in ins[1:]:
            out = _VARIADIC[op](out, other)
    elif op == "Neg":
        out = -x
    elif op == "Identity":
        out = x
    elif op == "Cast":
        out = x.astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    elif op == "Concat":
        out = np.concatenate(ins, axis=attrs["axis"])
    elif op == "Squeeze":
        axes = tuple(ins[1].tolist()) if len(ins) > 1 and ins[1] is not None else attrs.get("axes")
        out = np.squeeze(x, axis=tuple(axes) if axes is not None else None)
    elif op == "Unsqueeze":
        out = x
        for axis in sorted(int(a) if a >= 0 else int(a) + x.ndim + len(ins[1]) for a in ins[1]):
            out = np.expand_dims(out, axis)
    elif op == "Gather":
        out = np.take(x, ins[1], axis=attrs.get("axis", 0))
    elif op == "Slice":
        starts, ends = ins[1], ins[2]
        axes = ins[3] if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
        steps = ins[4] if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), dtype=np.int64)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            index[int(a)] = slice(int(s), int(e), int(st))
        out = x[tuple(index)]
    elif op == "Range":
        out = np.arange(ins[0], ins[1], ins[2])
    else:
        return None
    out = np.asarray(out)
    return [out] if out.size <= SMALL else None


FOLDABLE = ("Shape", "Size", "Neg", "Identity", "Cast", "Concat", "Squeeze", "Unsqueeze", "Gather", "Slice",
            "Range", *_BINARY, *_VARIADIC)  # fmt: skip


def _resolve(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference, shape arithmetic folded into Constant nodes, and the output shapes of Loops with a
    known trip count taken from their bodies, until nothing more resolves (a chain of Loops resolves one
    Loop per round: each one's trip count depends on the shapes out of the one before)."""
    import onnx
    from onnx import helper, numpy_helper

    forced: dict[str, onnx.ValueInfoProto] = {}  # Loop outputs, which ONNX's inference leaves unshaped
    rounds = 8 + 2 * sum(node.op_type == "Loop" for node in model.graph.node)
    for _ in range(rounds):
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
        types, values = _types(model.graph), _constants(model.graph)
        nodes, changed = [], False
        for node in model.graph.node:
            outs = _evaluate(node, values, types) if node.op_type in FOLDABLE else None
            if outs is None:
                nodes.append(node)
                if node.op_type == "Loop" and not all(o in forced for o in node.output):
                    shaped = _loop_output_shapes(node, types, values, model.opset_import)
                    forced.update(shaped)
                    changed |= bool(shaped)
                continue
            changed = True
            for name, out in zip(node.output, outs, strict=False):
                values[name] = out
                nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(out, name)))
        if not changed:
            return model
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        del model.graph.value_info[:]
        model.graph.value_info.extend(forced.values())
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def _loop_output_shapes(node: onnx.NodeProto, types: Types, values: dict[str, np.ndarray],
                        opsets: Iterable[onnx.OperatorSetIdProto]) -> dict[str, onnx.ValueInfoProto]:  # fmt: skip
    """A Loop's outputs typed from its body at iteration 0: carried values as the body's, scan outputs with
    the trip count in front; {} while the trip count or a body shape is unknown."""
    from onnx import helper

    trips = values.get(node.input[0]) if node.input and node.input[0] else None
    if trips is None:
        return {}
    body = next(a.g for a in node.attribute if a.name == "body")
    body_types = _types(_resolve(_standalone(body, node, 0, types, values, opsets)).graph)
    carried = len(node.input) - 2
    shaped = {}
    for i, (outer, inner) in enumerate(zip(node.output, body.output[1:], strict=False)):
        elem, shape = body_types.get(inner.name, (0, None))
        if shape is None or not elem:
            return {}
        full = shape if i < carried else (int(np.asarray(trips).reshape(())), *shape)
        shaped[outer] = helper.make_tensor_value_info(outer, elem, full)
    return shaped


def _outer_names(graph: onnx.GraphProto) -> list[str]:
    """Names `graph` (and its subgraphs) read but neither declares as input nor produces."""
    from onnx import helper

    local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    needed: list[str] = []
    for node in graph.node:
        for name in node.input:
            if name and name not in local and name not in needed:
                needed.append(name)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                sub = helper.get_attribute_value(attr)
                needed += [n for n in _outer_names(sub) if n not in local and n not in needed]
        local.update(node.output)
    return needed


def _standalone(body: onnx.GraphProto, loop: onnx.NodeProto, iteration: int, types: Types,
                values: dict[str, np.ndarray], opsets: Iterable[onnx.OperatorSetIdProto]) -> onnx.ModelProto:  # fmt: skip
    """A Loop's body as a model of its own at one iteration: outer tensors as typed inputs (small known
    ones as constants), the iteration number and condition as constants."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Constant", [], [body.input[0].name],
                              value=numpy_helper.from_array(np.array(iteration, dtype=np.int64))),
             helper.make_node("Constant", [], [body.input[1].name],
                              value=numpy_helper.from_array(np.array(True)))]  # fmt: skip
    inputs = []
    for carried, initial in zip(body.input[2:], loop.input[2:], strict=False):
        elem, shape = types.get(initial, (TensorProto.FLOAT, None))
        inputs.append(helper.make_tensor_value_info(carried.name, elem, shape))
    for name in _outer_names(body):
        if name in values and values[name].size <= SMALL:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(values[name], name)))
        elif name in types:
            elem, shape = types[name]
            inputs.append(helper.make_tensor_value_info(name, elem, shape))
    graph = helper.make_graph(nodes + list(body.node), body.name or "body", inputs,
                              [helper.make_empty_tensor_value_info(o.name) for o in body.output])  # fmt: skip
    return helper.make_model(graph, opset_imports=list(opsets))


MAX_UNROLL = 4096  # Loops whose iterations differ in cost are counted one by one up to this many


def _count(model: onnx.ModelProto, repeat: int, count: FlopCount) -> None:
    from onnx import helper

    model = _resolve(model)
    graph = model.graph
    types, values = _types(graph), _constants(graph)
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        label = f"{node.op_type} {node.name or node.output[0]}"
        if node.op_type in MATMUL_OPS:
            ins = [types.get(name, (0, None))[1] for name in node.input]
            flops = matmul_flops(node.op_type, ins, types.get(node.output[0], (0, None))[1], attrs)
            if flops is None:
                count.unresolved.append(label)
            else:
                count.add(node.op_type, flops * repeat)
        elif node.op_type == "Loop":
            trips = values.get(node.input[0]) if node.input and node.input[0] else None
            if trips is None:
                if _has_matmul(attrs["body"]):
                    count.unresolved.append(f"{label} (trip count unknown)")
                continue
            _count_loop(node, attrs["body"], int(np.asarray(trips).reshape(())), types, values, model, repeat, count)
        elif node.op_type == "If":
            # One branch runs: count the costlier one.
            branches = []
            for key in ("then_branch", "else_branch"):
                sub = FlopCount()
                _count(_standalone_branch(attrs[key], types, values, model.opset_import), repeat, sub)
                branches.append(sub)
            big = max(branches, key=lambda c: c.total)
            for op, flops in big.by_op.items():
                count.add(op, flops)
            count.unresolved += big.unresolved
        elif node.op_type == "Scan" and _has_matmul(attrs["body"]):
            count.unresolved.append(f"{label} (Scan bodies are not counted)")


def _count_loop(node: onnx.NodeProto, body: onnx.GraphProto, trips: int, types: Types, values: dict[str, np.ndarray],
                model: onnx.ModelProto, repeat: int, count: FlopCount) -> None:  # fmt: skip
    """A Loop's FLOPs: its first iteration's times the trip count when the last costs the same, else each one."""
    if trips <= 0:
        return
    first, last = FlopCount(), FlopCount()
    _count(_standalone(body, node, 0, types, values, model.opset_import), 1, first)
    _count(_standalone(body, node, trips - 1, types, values, model.opset_import), 1, last)
    if first.total == last.total and first.unresolved == last.unresolved:
        iterations = [(first, trips)]
    elif trips <= MAX_UNROLL:
        iterations = []
        for i in range(trips):
            sub = FlopCount()
            _count(_standalone(body, node, i, types, values, model.opset_import), 1, sub)
            iterations.append((sub, 1))
    else:
        count.unresolved.append(f"Loop {node.name or node.output[0]} ({trips} iterations of different cost)")
        return
    for sub, times in iterations:
        for op, flops in sub.by_op.items():
            count.add(op, flops * times * repeat)
        count.unresolved += sub.unresolved


def _standalone_branch(branch: onnx.GraphProto, types: Types, values: dict[str, np.ndarray],
                       opsets: Iterable[onnx.OperatorSetIdProto]) -> onnx.ModelProto:  # fmt: skip
    from onnx import helper, numpy_helper

    nodes, inputs = [], []
    for name in _outer_names(branch):
        if name in values and values[name].size <= SMALL:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(values[name], name)))
        elif name in types:
            inputs.append(helper.make_tensor_value_info(name, *types[name]))
    graph = helper.make_graph(nodes + list(branch.node), branch.name or "branch", inputs,
                              [helper.make_empty_tensor_value_info(o.name) for o in branch.output])  # fmt: skip
    return helper.make_model(graph, opset_imports=list(opsets))


def _has_matmul(graph: onnx.GraphProto) -> bool:
    from onnx import helper

    for node in graph.node:
        if node.op_type in MATMUL_OPS:
            return True
        for attr in node.attribute:
            if attr.type == attr.GRAPH and _has_matmul(helper.get_attribute_value(attr)):
                return True
    return False


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy of `model` with its functions inlined, every symbolic input dimension set to `batch`, and its
    large initializers turned into typed inputs (only their shapes matter to a count)."""
    from onnx import helper, inliner

    model = inliner.inline_local_functions(model)
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = batch
    large = [init for init in model.graph.initializer if math.prod(init.dims) > SMALL]
    for init in large:
        model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        model.graph.initializer.remove(init)
    del model.graph.value_info[:]
    for value in model.graph.output:  # re-inferred with the batch fixed
        value.type.tensor_type.ClearField("shape")
    return model


def count_flops(model: onnx.ModelProto | str | Path, batch: int = 1) -> FlopCount:
    """Matmul FLOPs of one forward pass over `batch` samples (see the module docstring)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    count = FlopCount()
    _count(with_batch(model, batch), 1, count)
    return count


def measure_matmul_rate(threads: int | None = None, size: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """This machine's fp32 matmul rate (FLOP/s): best of `repeats` size^3 products, numpy and torch, the faster.

    torch is measured where it is installed (it is the library ONNX Runtime's MLAS competes with); its
    thread count is set to `threads` when given. Returns {"flops_per_s", "library", "size", "by_library"}.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2 * size**3
    rates: dict[str, float] = {"numpy": _best_rate(lambda: a @ b, flops, repeats)}
    try:
        import torch
    except ImportError:
        pass
    else:
        if threads:
            torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        with torch.inference_mode():
            rates["torch"] = _best_rate(lambda: ta @ tb, flops, repeats)
    library = max(rates, key=lambda k: rates[k])
    return {"flops_per_s": rates[library], "library": library, "size": size, "by_library": rates}


def _best_rate(fn: Any, flops: int, repeats: int) -> float:
    fn()  # warm-up: thread pools, page faults
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return flops / best
