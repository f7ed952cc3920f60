"""How attention is laid out in exported graphs: all heads at once or a few at a time, all queries at
once or a block of queries at a time.

Every layout computes the same function. `heads_per_chunk = H` ("fused") and no query blocks give one
MatMul/Softmax chain over [B, H, N, N] scores, the form TensorRT fuses into one attention kernel.
`block_elements` (the ONNX Runtime layout) runs the queries in blocks inside an ONNX Loop: each
iteration holds the [B, chunk, rows, N] scores (and bias) of `rows` queries only, with `rows` computed
in the graph from B, N and the budget, so attention memory stays at about `block_elements` floats per
live tensor whatever the grid or batch; what grows with N and B is the activations, linearly. ONNX
Runtime runs a Loop's iterations in order and frees each one's intermediates before the next.

The plain attention of blocks 1.. is exported as `climax::SelfAttention` nodes and expanded here
into standard ops; ElevationAttention keeps its single node and gets the same layout in its body.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from climax_deploy.errors import ExportError
from climax_deploy.export.passes import GraphPass, PassResult, all_nodes, opset_version
from climax_deploy.schema import CUSTOM_DOMAIN, SELF_ATTENTION_OP

# Score elements of one query block ([B, chunk, rows, N]): 2^22 floats = 16 MiB per live tensor in fp32.
DEFAULT_BLOCK_ELEMENTS = 2**22

# Builds the bias of a block of query rows: (per-query tensor sliced to the rows, output name, name
# prefix) -> nodes writing `output`, broadcastable to [B, chunk, rows, N] and in q's dtype.
RowBias = Callable[[str, str, str], list[onnx.NodeProto]]


@dataclass(frozen=True)
class AttentionLayout:
    """`heads_per_chunk` None or >= num_heads: all heads at once; `block_elements` None: all queries at once."""

    num_heads: int
    head_dim: int
    heads_per_chunk: int | None = None
    block_elements: int | None = None

    def __post_init__(self) -> None:
        c = self.heads_per_chunk
        if c is not None and (c < 1 or self.num_heads % c):
            raise ExportError(f"heads per chunk must divide the {self.num_heads} heads, got {c}")
        if self.block_elements is not None and self.block_elements < 1:
            raise ExportError(f"block_elements must be a positive number of score elements, got {self.block_elements}")

    @property
    def chunks(self) -> int:
        c = self.heads_per_chunk
        return 1 if c is None or c >= self.num_heads else self.num_heads // c

    @property
    def blocked(self) -> bool:
        return self.block_elements is not None


@dataclass(frozen=True)
class QueryBias:
    """A bias built per query block from a per-query tensor [B, N] (sliced with the queries) by `build`."""

    per_query: str
    build: RowBias


def attention_nodes(
    prefix: str,
    q: str,
    k: str,
    v: str,
    out: str,
    layout: AttentionLayout,
    bias: str | QueryBias | None = None,
) -> list[onnx.NodeProto]:
    """softmax(q k^T / sqrt(Dh) [+ bias]) v over [B, H, N, Dh] tensors in `layout`.

    `bias` (optional) is a tensor broadcasting against [B, chunk, N, N] in q's dtype (unblocked
    layouts only), or a QueryBias that builds it per block of queries (any layout).
    """
    n = helper.make_node
    p = prefix
    nodes = [
        n("Constant", [], [f"{p}scale"], value_float=1.0 / math.sqrt(layout.head_dim)),
        n("CastLike", [f"{p}scale", q], [f"{p}scale_like"]),
        n("Mul", [q, f"{p}scale_like"], [f"{p}q_scaled"]),  # scale the N x Dh queries, not the N x N scores
        n("Transpose", [k], [f"{p}k_t"], perm=[0, 1, 3, 2]),
    ]
    ks, vs = _split_heads(p, f"{p}k_t", "k", layout, nodes), _split_heads(p, v, "v", layout, nodes)
    if not layout.blocked:
        qs = _split_heads(p, f"{p}q_scaled", "q", layout, nodes)
        if isinstance(bias, QueryBias):
            nodes += bias.build(bias.per_query, f"{p}bias", p)
            bias = f"{p}bias"
        nodes += _chunk_attention(p, qs, ks, vs, out, bias)
        return nodes
    if isinstance(bias, str):
        raise ExportError("a blocked attention layout needs its bias as a QueryBias (built per block), not a tensor")
    return nodes + _blocked_attention(p, f"{p}q_scaled", ks, vs, out, layout, bias)


def _split_heads(p: str, tensor: str, tag: str, layout: AttentionLayout, nodes: list[onnx.NodeProto]) -> list[str]:
    """Names of `tensor`'s head chunks (Split on axis 1 appended to `nodes`; the tensor itself for one chunk)."""
    chunks = layout.chunks
    if chunks == 1:
        return [tensor]
    sizes = f"{p}chunk_sizes"
    if not any(sizes in node.output for node in nodes):
        nodes.append(helper.make_node("Constant", [], [sizes], value_ints=[layout.num_heads // chunks] * chunks))
    parts = [f"{p}{tag}{i}" for i in range(chunks)]
    nodes.append(helper.make_node("Split", [tensor, sizes], parts, axis=1))
    return parts


def _chunk_attention(
    p: str, qs: list[str], ks: list[str], vs: list[str], out: str, bias: str | None
) -> list[onnx.NodeProto]:
    """softmax(q_i k_i^T [+ bias]) v_i per head chunk i, concatenated into `out` along heads."""
    n = helper.make_node
    nodes = []
    outs = [out] if len(qs) == 1 else [f"{p}o{i}" for i in range(len(qs))]
    for i, (qi, ki, vi, oi) in enumerate(zip(qs, ks, vs, outs)):
        scores = f"{p}scores{i}"
        nodes.append(n("MatMul", [qi, ki], [scores]))
        if bias is not None:
            nodes.append(n("Add", [scores, bias], [f"{p}logits{i}"]))
            scores = f"{p}logits{i}"
        nodes.append(n("Softmax", [scores], [f"{p}probs{i}"], axis=-1))
        nodes.append(n("MatMul", [f"{p}probs{i}", vi], [oi]))
    if len(qs) > 1:
        nodes.append(n("Concat", outs, [out], axis=1))
    return nodes


def _blocked_attention(
    p: str, q: str, ks: list[str], vs: list[str], out: str, layout: AttentionLayout, bias: QueryBias | None
) -> list[onnx.NodeProto]:
    """Attention over query blocks in one Loop: `rows` = clip(block_elements // (B chunk N), 1, N) queries
    per iteration; the queries (and the per-query bias input) are zero-padded to a whole number of
    blocks, the Loop's scan output is put back in order and the padding cut off.

    Each iteration's scan output is [1, B, H, rows, Dh]: ONNX Runtime stacks the T of them
    into [T, 1, B, H, rows, Dh] as the spec says, onnx.reference concatenates them into [T, B, H, rows,
    Dh] (onnx/onnx#3122). Both hold the blocks in the same order, so one Reshape to [T, B, H, rows, Dh]
    gives every reader the same tensor, with no copy beyond the scan output itself."""
    n = helper.make_node
    i64 = TensorProto.INT64
    heads = layout.num_heads // layout.chunks
    nodes = [
        n("Shape", [q], [f"{p}q_shape"]),  # [B, H, N, Dh]
        n("Constant", [], [f"{p}budget"], value=helper.make_tensor(f"{p}budget", i64, [1], [layout.block_elements])),
        n("Constant", [], [f"{p}zero"], value=helper.make_tensor(f"{p}zero", i64, [1], [0])),
        n("Constant", [], [f"{p}one"], value=helper.make_tensor(f"{p}one", i64, [1], [1])),
        n("Constant", [], [f"{p}heads"], value=helper.make_tensor(f"{p}heads", i64, [1], [heads])),
        n("Slice", [f"{p}q_shape", f"{p}zero", f"{p}one"], [f"{p}batch"]),
        n("Shape", [q], [f"{p}tokens"], start=2, end=3),
        n("Shape", [q], [f"{p}head_dim"], start=3, end=4),
        n("Mul", [f"{p}batch", f"{p}tokens"], [f"{p}bn"]),
        n("Mul", [f"{p}bn", f"{p}heads"], [f"{p}bhn"]),
        n("Div", [f"{p}budget", f"{p}bhn"], [f"{p}rows_floor"]),  # integer division
        n("Max", [f"{p}rows_floor", f"{p}one"], [f"{p}rows_some"]),
        n("Min", [f"{p}rows_some", f"{p}tokens"], [f"{p}rows"]),  # 1 <= rows <= N
        n("Add", [f"{p}tokens", f"{p}rows"], [f"{p}tokens_plus"]),
        n("Sub", [f"{p}tokens_plus", f"{p}one"], [f"{p}tokens_ceil"]),
        n("Div", [f"{p}tokens_ceil", f"{p}rows"], [f"{p}blocks"]),  # ceil(N / rows)
        n("Mul", [f"{p}blocks", f"{p}rows"], [f"{p}padded"]),
        n("Sub", [f"{p}padded", f"{p}tokens"], [f"{p}pad"]),
        n("Squeeze", [f"{p}blocks"], [f"{p}trips"]),  # Loop's trip count is a scalar
        # Zero-pad the queries along N: [0, 0, 0, 0 | 0, 0, pad, 0]
        n("Constant", [], [f"{p}zeros6"], value=helper.make_tensor(f"{p}zeros6", i64, [6], [0] * 6)),
        n("Concat", [f"{p}zeros6", f"{p}pad", f"{p}zero"], [f"{p}q_pads"], axis=0),
        n("Pad", [q, f"{p}q_pads"], [f"{p}q_padded"]),
    ]
    b = f"{p}blk/"  # names inside the loop body
    body = [
        n("Identity", [f"{b}cond_in"], [f"{b}cond_out"]),
        n("Unsqueeze", [f"{b}iter", f"{p}zero"], [f"{b}iter1"]),
        n("Mul", [f"{b}iter1", f"{p}rows"], [f"{b}start"]),
        n("Add", [f"{b}start", f"{p}rows"], [f"{b}end"]),
        n("Constant", [], [f"{b}axis"], value=helper.make_tensor(f"{b}axis", i64, [1], [2])),
        n("Slice", [f"{p}q_padded", f"{b}start", f"{b}end", f"{b}axis"], [f"{b}q"]),  # [B, H, rows, Dh]
    ]
    bias_name = None
    if bias is not None:
        # The per-query input [B, N] padded along N the same way, sliced with the block's queries.
        nodes += [
            n("Concat", [f"{p}zero", f"{p}zero", f"{p}zero", f"{p}pad"], [f"{p}row_pads"], axis=0),
            n("Pad", [bias.per_query, f"{p}row_pads"], [f"{p}per_query_padded"]),
        ]
        body += [
            n("Constant", [], [f"{b}row_axis"], value=helper.make_tensor(f"{b}row_axis", i64, [1], [1])),
            n("Slice", [f"{p}per_query_padded", f"{b}start", f"{b}end", f"{b}row_axis"], [f"{b}per_query"]),
        ]
        body += bias.build(f"{b}per_query", f"{b}bias", b)
        bias_name = f"{b}bias"
    qs = _split_heads(b, f"{b}q", "q", layout, body)
    body += _chunk_attention(b, qs, ks, vs, f"{b}block", bias_name)  # [B, H, rows, Dh]
    body.append(n("Unsqueeze", [f"{b}block", f"{p}zero"], [f"{b}out"]))  # [1, B, H, rows, Dh]
    graph = helper.make_graph(
        body,
        f"{p}query_blocks",
        [helper.make_tensor_value_info(f"{b}iter", i64, []), helper.make_tensor_value_info(f"{b}cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(f"{b}cond_out", TensorProto.BOOL, []),
         helper.make_empty_tensor_value_info(f"{b}out")],  # q's dtype: float32 or float16
    )  # fmt: skip
    nodes += [
        # An explicit `cond` (rather than the optional empty input) keeps shape tools that index inputs working.
        n("Constant", [], [f"{p}always"], value=helper.make_tensor(f"{p}always", TensorProto.BOOL, [], [True])),
        # [T, 1, B, H, rows, Dh] (ONNX Runtime) or [T, B, H, rows, Dh] (onnx.reference): see the docstring
        n("Loop", [f"{p}trips", f"{p}always"], [f"{p}blocks_out"], body=graph, name=f"{p}query_blocks"),
        n("Constant", [], [f"{p}all_heads"], value=helper.make_tensor(f"{p}all_heads", i64, [1], [layout.num_heads])),
        n("Concat", [f"{p}blocks", f"{p}batch", f"{p}all_heads", f"{p}rows", f"{p}head_dim"], [f"{p}blocks_shape"], axis=0),
        n("Reshape", [f"{p}blocks_out", f"{p}blocks_shape"], [f"{p}blocks_stacked"]),  # [T, B, H, rows, Dh]
        n("Transpose", [f"{p}blocks_stacked"], [f"{p}blocks_in_order"], perm=[1, 2, 0, 3, 4]),  # [B, H, T, rows, Dh]
        n("Constant", [], [f"{p}keep2"], value=helper.make_tensor(f"{p}keep2", i64, [3], [0, 0, -1])),
        n("Concat", [f"{p}keep2", f"{p}head_dim"], [f"{p}padded_shape"], axis=0),
        n("Reshape", [f"{p}blocks_in_order", f"{p}padded_shape"], [f"{p}out_padded"]),  # [B, H, T rows, Dh]
        n("Constant", [], [f"{p}token_axis"], value=helper.make_tensor(f"{p}token_axis", i64, [1], [2])),
        n("Slice", [f"{p}out_padded", f"{p}zero", f"{p}tokens", f"{p}token_axis"], [out]),
    ]
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
        left = [n for n in all_nodes(model.graph) if n.op_type == SELF_ATTENTION_OP and n.domain == CUSTOM_DOMAIN]
        if left:
            raise ExportError(f"{len(left)} SelfAttention nodes were not expanded")
        if opset_version(model) < 13:
            raise ExportError("attention layout needs opset >= 13 (Split with sizes input)")
