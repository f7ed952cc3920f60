"""How attention is laid out in exported graphs: all heads at once, or a few heads at a time.

Both layouts compute the same function. `heads_per_chunk = H` ("fused") gives one MatMul/Softmax
chain over [B, H, N, N] scores, the form TensorRT fuses into one attention kernel. Smaller chunks
hold only [B, chunk, N, N] scores at a time: at 8192 patches each head's fp32 scores take 256 MiB
instead of 2 GiB for all eight, which is what keeps ONNX Runtime on a CPU within a few GB.

The plain attention of blocks 1.. is exported as `climax::SelfAttention` nodes and expanded here
into standard ops; ElevationAttention keeps its single node and gets the chunked layout in its body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import helper

from climax_deploy.errors import ExportError
from climax_deploy.export.passes import GraphPass, PassResult, opset_version
from climax_deploy.schema import CUSTOM_DOMAIN, SELF_ATTENTION_OP


@dataclass(frozen=True)
class AttentionLayout:
    """`heads_per_chunk` None or >= num_heads: all heads at once."""

    num_heads: int
    head_dim: int
    heads_per_chunk: int | None = None

    def __post_init__(self) -> None:
        c = self.heads_per_chunk
        if c is not None and (c < 1 or self.num_heads % c):
            raise ExportError(f"heads per chunk must divide the {self.num_heads} heads, got {c}")

    @property
    def chunks(self) -> int:
        c = self.heads_per_chunk
        return 1 if c is None or c >= self.num_heads else self.num_heads // c


def attention_nodes(
    prefix: str, q: str, k: str, v: str, out: str, layout: AttentionLayout, bias: str | None = None
) -> list[onnx.NodeProto]:
    """softmax(q k^T / sqrt(Dh) [+ bias]) v over [B, H, N, Dh] tensors, chunked over heads.

    `bias` (optional) must broadcast against [B, chunk, N, N] and have q's dtype.
    """
    n = helper.make_node
    p = prefix
    nodes = [
        n("Constant", [], [f"{p}scale"], value_float=1.0 / math.sqrt(layout.head_dim)),
        n("CastLike", [f"{p}scale", q], [f"{p}scale_like"]),
        n("Mul", [q, f"{p}scale_like"], [f"{p}q_scaled"]),  # scale the N x Dh queries, not the N x N scores
        n("Transpose", [k], [f"{p}k_t"], perm=[0, 1, 3, 2]),
    ]
    chunks = layout.chunks
    if chunks == 1:
        qs, ks, vs, outs = [f"{p}q_scaled"], [f"{p}k_t"], [v], [out]
    else:
        sizes = f"{p}chunk_sizes"
        nodes.append(n("Constant", [], [sizes], value_ints=[layout.num_heads // chunks] * chunks))
        qs = [f"{p}q{i}" for i in range(chunks)]
        ks = [f"{p}k{i}" for i in range(chunks)]
        vs = [f"{p}v{i}" for i in range(chunks)]
        outs = [f"{p}o{i}" for i in range(chunks)]
        nodes += [
            n("Split", [f"{p}q_scaled", sizes], qs, axis=1),
            n("Split", [f"{p}k_t", sizes], ks, axis=1),
            n("Split", [v, sizes], vs, axis=1),
        ]
    for i, (qi, ki, vi, oi) in enumerate(zip(qs, ks, vs, outs)):
        scores = f"{p}scores{i}"
        nodes.append(n("MatMul", [qi, ki], [scores]))
        if bias is not None:
            nodes.append(n("Add", [scores, bias], [f"{p}logits{i}"]))
            scores = f"{p}logits{i}"
        nodes.append(n("Softmax", [scores], [f"{p}probs{i}"], axis=-1))
        nodes.append(n("MatMul", [f"{p}probs{i}", vi], [oi]))
    if chunks > 1:
        nodes.append(n("Concat", outs, [out], axis=1))
    return nodes


class ExpandSelfAttention(GraphPass):
    """Replace every climax::SelfAttention node by standard ops in the given layout."""

    def __init__(self, layout: AttentionLayout) -> None:
        self.layout = layout

    def call(self, model: onnx.ModelProto) -> PassResult:
        rebuilt: list[onnx.NodeProto] = []
        count = 0
        for node in model.graph.node:
            if node.domain == CUSTOM_DOMAIN and node.op_type == SELF_ATTENTION_OP:
                q, k, v = node.input
                rebuilt += attention_nodes(f"self_attn{count}/", q, k, v, node.output[0], self.layout)
                count += 1
            else:
                rebuilt.append(node)
        del model.graph.node[:]
        model.graph.node.extend(rebuilt)
        return PassResult(model, modified=count > 0)

    def ensures(self, model: onnx.ModelProto) -> None:
        left = [n for n in model.graph.node if n.op_type == SELF_ATTENTION_OP and n.domain == CUSTOM_DOMAIN]
        if left:
            raise ExportError(f"{len(left)} SelfAttention nodes were not expanded")
        if opset_version(model) < 13:
            raise ExportError("attention layout needs opset >= 13 (Split with sizes input)")


