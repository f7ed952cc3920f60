"""The TensorRT copy of an fp32 export: its query-block Loops unrolled into one fused attention chain.

An fp32 export (the ONNX Runtime layout, export/attention_layout.py) computes attention in query
blocks inside an ONNX `Loop` whose trip count ceil(N / rows), rows = clip(budget // (B chunk N), 1, N),
follows the dynamic batch. TensorRT's ONNX parser documents for Loop: "Scan output length cannot be
dynamic" (onnx-tensorrt docs/operators.md, the `Loop` row, at the parser TensorRT v11.1 pins:
parsers/onnx -> onnx/onnx-tensorrt 7c51a63a). So build-engine never hands TensorRT those Loops:

- `rows` becomes N (the node writing `{p}rows` turns into Identity of `{p}tokens`), so the padding
  is zero and the Loop runs exactly once, for every batch;
- the Loop is replaced by its body inlined once (`iter` = 0, `cond` passed through) and its scan
  output by the body's output unsqueezed on axis 0: what a one-trip Loop returns.

The result computes the same function with all queries at once (the fused form fp16 exports have);
tests/test_tensorrt_graph.py checks it against the export on ONNX Runtime. Only the Loops this
project writes (named `{p}query_blocks`, with `{p}rows` and `{p}tokens` beside them) are unrolled;
any other Loop is refused, since nothing says TensorRT could import it.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from climax_deploy.errors import EngineBuildError
from climax_deploy.export.passes import GraphPass, PassResult, all_nodes

LOOP_SUFFIX = "query_blocks"


def _unroll_in(nodes: list[onnx.NodeProto], where: str) -> tuple[list[onnx.NodeProto], int]:
    """`nodes` with each query-block Loop unrolled; the number unrolled."""
    producers = {out: node for node in nodes for out in node.output}
    rebuilt: list[onnx.NodeProto] = []
    count = 0
    for node in nodes:
        if node.op_type != "Loop" or node.domain not in ("", "ai.onnx"):
            rebuilt.append(node)
            continue
        if not node.name.endswith(LOOP_SUFFIX):
            raise EngineBuildError(
                f"expected only the export's query-block Loops in {where}, got Loop {node.name!r}; TensorRT's parser "
                "cannot import a Loop whose scan length is dynamic: export the model again with export-onnx"
            )
        prefix = node.name[: -len(LOOP_SUFFIX)]
        rows, tokens = producers.get(f"{prefix}rows"), producers.get(f"{prefix}tokens")
        if rows is None or tokens is None or len(node.output) != 1:
            raise EngineBuildError(
                f"expected the query-block Loop {node.name!r} in {where} to have {prefix}rows and {prefix}tokens "
                "beside it and one scan output; export the model again with export-onnx"
            )
        # rows := N. The Min node that wrote rows is rewritten in place (it precedes the Loop in `rebuilt`).
        rows.op_type, rows.domain = "Identity", ""
        del rows.input[:]
        rows.input.append(f"{prefix}tokens")
        del rows.attribute[:]
        body = next(a.g for a in node.attribute if a.name == "body")
        if len(body.input) != 2 or len(body.output) != 2 or body.initializer:
            raise EngineBuildError(f"expected the query-block Loop {node.name!r} to carry no state; export the model again")
        iteration, cond = body.input[0].name, body.input[1].name
        rebuilt += [
            helper.make_node("Constant", [], [iteration], value=helper.make_tensor(iteration, TensorProto.INT64, [], [0])),
            helper.make_node("Identity", [node.input[1]], [cond]),
            *body.node,
            helper.make_node(
                "Constant", [], [f"{prefix}scan_axis"], value=helper.make_tensor(f"{prefix}scan_axis", TensorProto.INT64, [1], [0])
            ),
            helper.make_node("Unsqueeze", [body.output[1].name, f"{prefix}scan_axis"], [node.output[0]]),
        ]
        count += 1
    return rebuilt, count


class UnrollQueryBlocks(GraphPass):
    """Unroll the export's query-block Loops (main graph and model-local functions) into one trip each."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        nodes, total = _unroll_in(list(model.graph.node), "the main graph")
        if total:
            del model.graph.node[:]
            model.graph.node.extend(nodes)
        for function in model.functions:
            nodes, count = _unroll_in(list(function.node), f"function {function.domain}::{function.name}")
            if count:
                del function.node[:]
                function.node.extend(nodes)
            total += count
        return PassResult(model, modified=total > 0)

    def ensures(self, model: onnx.ModelProto) -> None:
        graphs = [model.graph] + [helper.make_graph(list(f.node), f.name, [], []) for f in model.functions]
        left = [n.name for g in graphs for n in all_nodes(g) if n.op_type == "Loop"]
        if left:
            raise EngineBuildError(f"expected no Loop in the TensorRT copy, got {left}")


__all__ = ["UnrollQueryBlocks"]
