"""The model-local ONNX function that defines climax::ElevationAttention with standard ops.

Inputs q, k, v [B, H, N, Dh], normalised elevation [B, N] and beta (0-d); output [B, H, N, Dh]:
    softmax(q k^T / sqrt(Dh) + max(-softplus(beta * (e_j - e_i)), ln 1e-6)) @ v
This is the exact bias form of the seed's mask-and-renormalise attention (see
climax_deploy.model.physics_attention). ONNX Runtime inlines it; TensorRT's parser inlines it too,
unless a plugin of the same name is registered and the node carries a plugin_namespace.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto, helper

from climax_deploy.errors import ExportError
from climax_deploy.export.attention_layout import AttentionLayout, attention_nodes
from climax_deploy.export.passes import GraphPass, PassResult, elevation_functions, elevation_nodes, opset_version
from climax_deploy.schema import CUSTOM_DOMAIN, CUSTOM_OP, CUSTOM_OP_VERSION, MASK_FLOOR

FUNCTION_INPUTS = ("q", "k", "v", "elevation", "beta")
FUNCTION_OUTPUTS = ("out",)
MIN_OPSET = 15  # Shape(start=...) and CastLike


def _const_ints(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value_ints=values)


def _const_float(name: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value_float=value)


def elevation_attention_function(opset: int, layout: AttentionLayout | None = None) -> onnx.FunctionProto:
    """Build the FunctionProto for the model's default-domain opset `opset`.

    Without a layout (or a fused one) the body is generic in heads and head size; a chunked layout
    splits the heads into fixed groups, so that body is specific to the model's head count.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"ElevationAttention's body needs opset >= {MIN_OPSET}, got {opset}")
    n = helper.make_node
    # bias[b, i, j] = max(-softplus(beta * (e_j - e_i)), ln 1e-6), in elevation's dtype
    bias_nodes = [
        _const_ints("axis_1", [1]),
        _const_ints("axis_2", [2]),
        n("Unsqueeze", ["elevation", "axis_1"], ["e_key"]),  # [B, 1, N]: e_j
        n("Unsqueeze", ["elevation", "axis_2"], ["e_query"]),  # [B, N, 1]: e_i
        n("Sub", ["e_key", "e_query"], ["rise"]),  # [B, N, N]
        n("CastLike", ["beta", "rise"], ["beta_like"]),
        n("Mul", ["beta_like", "rise"], ["barrier"]),
        n("Softplus", ["barrier"], ["softplus"]),
        n("Neg", ["softplus"], ["log_mask"]),
        _const_float("log_floor_f", math.log(MASK_FLOOR)),
        n("CastLike", ["log_floor_f", "log_mask"], ["log_floor"]),
        n("Max", ["log_mask", "log_floor"], ["bias3"]),
        n("Unsqueeze", ["bias3", "axis_1"], ["bias4"]),  # [B, 1, N, N]
        n("CastLike", ["bias4", "q"], ["bias"]),
    ]
    if layout is None or layout.chunks == 1:
        # Generic in heads and head size: scale from q's shape, all heads in one chain.
        attention = [
            n("Shape", ["q"], ["head_dim_i"], start=-1),
            n("Cast", ["head_dim_i"], ["head_dim_f"], to=TensorProto.FLOAT),
            n("Sqrt", ["head_dim_f"], ["sqrt_dim"]),
            n("Reciprocal", ["sqrt_dim"], ["inv_sqrt_dim_f"]),
            n("CastLike", ["inv_sqrt_dim_f", "q"], ["inv_sqrt_dim"]),
            n("Mul", ["q", "inv_sqrt_dim"], ["q_scaled"]),  # scale N x Dh queries, not N x N scores
            n("Transpose", ["k"], ["k_t"], perm=[0, 1, 3, 2]),
            n("MatMul", ["q_scaled", "k_t"], ["scaled"]),
            n("Add", ["scaled", "bias"], ["logits"]),
            n("Softmax", ["logits"], ["probs"], axis=-1),
            n("MatMul", ["probs", "v"], ["out"]),
        ]
    else:
        attention = attention_nodes("", "q", "k", "v", "out", layout, bias="bias")
    return helper.make_function(
        CUSTOM_DOMAIN,
        CUSTOM_OP,
        list(FUNCTION_INPUTS),
        list(FUNCTION_OUTPUTS),
        bias_nodes + attention,
        opset_imports=[helper.make_opsetid("", opset)],
        doc_string="Physics-guided attention: softmax(q k^T / sqrt(d) + max(-softplus(beta (e_j - e_i)), ln 1e-6)) v",
    )


class AttachElevationFunction(GraphPass):
    """Give the model exactly one climax::ElevationAttention function matching its opset."""

    def __init__(self, layout: AttentionLayout | None = None) -> None:
        self.layout = layout

    def requires(self, model: onnx.ModelProto) -> None:
        nodes = elevation_nodes(model)
        if len(nodes) != 1:
            raise ExportError(f"expected exactly one {CUSTOM_DOMAIN}::{CUSTOM_OP} node, found {len(nodes)}")
        if len(nodes[0].input) != len(FUNCTION_INPUTS):
            raise ExportError(f"{CUSTOM_OP} node has {len(nodes[0].input)} inputs, expected {len(FUNCTION_INPUTS)}")

    def call(self, model: onnx.ModelProto) -> PassResult:
        existing = elevation_functions(model)
        for fn in existing:
            model.functions.remove(fn)
        model.functions.append(elevation_attention_function(opset_version(model), self.layout))
        if not any(e.domain == CUSTOM_DOMAIN for e in model.opset_import):
            model.opset_import.append(helper.make_opsetid(CUSTOM_DOMAIN, CUSTOM_OP_VERSION))
        return PassResult(model, modified=True)

    def ensures(self, model: onnx.ModelProto) -> None:
        if len(elevation_functions(model)) != 1:
            raise ExportError(f"expected one {CUSTOM_OP} function after attaching it")
        if opset_version(model, CUSTOM_DOMAIN) != CUSTOM_OP_VERSION:
            raise ExportError(f"model must import {CUSTOM_DOMAIN} version {CUSTOM_OP_VERSION}")
