"""How TensorRT runs the physics attention: three ONNX shapes of the one ElevationAttention node.

- `inline`: no rewrite. TensorRT's parser expands the model-local function into MatMul/Softmax
  layers (TensorRT may still fuse them).
- `native`: the function body becomes ONNX Attention-23 with the elevation bias as a float mask,
  which TensorRT >= 10.14 imports as its fused IAttention layer (in fp16 graphs on float32 casts, so
  its softmax and mask are float32). The model's default opset is raised to 23 (Attention's first version).
- `plugin`: the node gains `plugin_namespace`/`plugin_version` attributes, so TensorRT's parser
  builds the registered `climax::ElevationAttention` plugin (the fused Triton kernel) instead of
  expanding the function. ONNX Runtime still runs the function body, so parity stays checkable.

Each mode is a GraphPass; every rewritten model still runs on ONNX Runtime. `inline` only checks
(it changes nothing), `native` returns a new model, `plugin` tags the model it is given in place.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, helper, version_converter

from climax_deploy.errors import BadInputError, ExportError
from climax_deploy.export.elevation_function import elevation_bias_nodes, scaled_query_nodes
from climax_deploy.export.passes import (
    GraphPass,
    PassResult,
    copy_model,
    elevation_functions,
    elevation_nodes,
    opset_version,
)
from climax_deploy.manifest import ATTENTION_MODES
from climax_deploy.schema import CUSTOM_DOMAIN, CUSTOM_OP

ATTENTION_OPSET = 23  # ONNX Attention's first version
# The plugin climax_deploy.kernels.trt_plugin registers with TensorRT: op type CUSTOM_OP in this namespace.
PLUGIN_NAMESPACE = CUSTOM_DOMAIN
PLUGIN_VERSION = "1"
PLUGIN_ATTRIBUTES = ("plugin_namespace", "plugin_version")
MODE_METADATA_KEY = "climax_deploy.attention_mode"


def _require_one_elevation_op(model: onnx.ModelProto, pass_name: str) -> None:
    nodes, functions = elevation_nodes(model), elevation_functions(model)
    if len(nodes) != 1 or len(functions) != 1:
        raise ExportError(
            f"{pass_name} expects one {CUSTOM_DOMAIN}::{CUSTOM_OP} node and its function, "
            f"got {len(nodes)} nodes and {len(functions)} functions; export the model with export-onnx"
        )


def _set_metadata(model: onnx.ModelProto, key: str, value: str) -> bool:
    """Set a metadata entry; return whether the model changed."""
    for entry in model.metadata_props:
        if entry.key == key:
            changed = entry.value != value
            entry.value = value
            return changed
    model.metadata_props.add(key=key, value=value)
    return True


def attention_mode_of(model: onnx.ModelProto) -> str:
    """The attention mode recorded in the model ('inline' when none was applied)."""
    for entry in model.metadata_props:
        if entry.key == MODE_METADATA_KEY:
            return entry.value
    return "inline"


class KeepInlineAttention(GraphPass):
    """`inline`: leave the function for the parser to expand; only check there is one to expand.

    A check, not a rewrite: the model is returned as given (no metadata either; a model without an
    attention-mode entry is inline, see attention_mode_of).
    """

    in_place = True

    @property
    def changes_input(self) -> bool:
        return False

    def requires(self, model: onnx.ModelProto) -> None:
        _require_one_elevation_op(model, "inline attention")
        node = elevation_nodes(model)[0]
        stale = [a.name for a in node.attribute if a.name in PLUGIN_ATTRIBUTES]
        if stale:
            raise ExportError(f"the ElevationAttention node carries {stale}; TensorRT would pick the plugin, not inline")

    def call(self, model: onnx.ModelProto) -> PassResult:
        return PassResult(model, modified=False)


def upgrade_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """A new model with the default-domain opset raised to `target`, keeping model-local functions and metadata.

    onnx's version converter rewrites the main graph but drops `model.functions`; they are put
    back with their own opset import raised to match. A model already at `target` or above is copied
    as is; `model` itself is never changed.
    """
    current = opset_version(model)
    if current >= target:
        return copy_model(model)
    functions = [onnx.FunctionProto.FromString(f.SerializeToString()) for f in model.functions]
    metadata = [(p.key, p.value) for p in model.metadata_props]
    bare = onnx.ModelProto.FromString(model.SerializeToString())
    del bare.functions[:]
    try:
        upgraded = version_converter.convert_version(bare, target)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise ExportError(f"could not convert the model from opset {current} to {target}: {exc}") from exc
    for function in functions:
        for entry in function.opset_import:
            if entry.domain == "":
                entry.version = target
    upgraded.functions.extend(functions)
    del upgraded.metadata_props[:]
    for key, value in metadata:
        upgraded.metadata_props.add(key=key, value=value)
    return upgraded


def attention23_function(opset: int, softmax_in_float32: bool) -> onnx.FunctionProto:
    """ElevationAttention with the same inputs/outputs, its body one ONNX Attention-23 node.

    q is pre-scaled by 1/sqrt(Dh) and Attention's own scale is 1 (TensorRT asks for the scale to be
    applied before its fused attention, for fp16 range). The bias
    max(-softplus(beta (e_j - e_i)), ln 1e-6) is computed in the elevation's dtype (float32 in fp16
    graphs) and passed as a float mask in the Attention's dtype, the form TensorRT's IAttention accepts.

    `softmax_in_float32` (fp16 graphs): Attention runs on float32 casts of q, k, v and its output is
    cast back. TensorRT's IAttention has no softmax-precision setting and takes its mask in BMM1's
    type (NvInfer.h, v11.1), so its ONNX importer cannot honour `softmax_precision`: only float32
    operands make TensorRT's softmax float32 and keep the mask off fp16's 2^-7 grid near ln 1e-6.
    The attribute stays for runtimes that honour it (ONNX Runtime).
    """
    if opset < ATTENTION_OPSET:
        raise ExportError(f"Attention needs opset >= {ATTENTION_OPSET}, got {opset}")
    n = helper.make_node
    attention_attrs: dict[str, Any] = {"scale": 1.0}
    if softmax_in_float32:
        attention_attrs["softmax_precision"] = TensorProto.FLOAT
        to_float = [n("Cast", [x], [f"{x}_f32"], to=TensorProto.FLOAT) for x in ("q_scaled", "k", "v")]
        nodes = [
            *scaled_query_nodes(),
            *to_float,
            *elevation_bias_nodes("mask", like="q_scaled_f32"),
            n("Attention", ["q_scaled_f32", "k_f32", "v_f32", "mask"], ["out_f32"], **attention_attrs),
            n("CastLike", ["out_f32", "q"], ["out"]),
        ]
    else:
        nodes = [
            *scaled_query_nodes(),
            *elevation_bias_nodes("mask", like="q"),
            n("Attention", ["q_scaled", "k", "v", "mask"], ["out"], **attention_attrs),
        ]
    return helper.make_function(
        CUSTOM_DOMAIN,
        CUSTOM_OP,
        ["q", "k", "v", "elevation", "beta"],
        ["out"],
        nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        doc_string="Physics attention as ONNX Attention-23 with the elevation bias as a float mask",
    )


def _is_float16_graph(model: onnx.ModelProto) -> bool:
    """Whether ElevationAttention's q is float16 (an fp16 export)."""
    q = elevation_nodes(model)[0].input[0]
    inferred = onnx.shape_inference.infer_shapes(model)
    for value in inferred.graph.value_info:
        if value.name == q:
            return value.type.tensor_type.elem_type == TensorProto.FLOAT16
    return False


class RewriteToAttention23(GraphPass):
    """`native`: the ElevationAttention body becomes Attention-23 (TensorRT's fused attention).

    Not in place: the opset upgrade makes a new model, and the input is left as it was.
    """

    in_place = False

    def requires(self, model: onnx.ModelProto) -> None:
        _require_one_elevation_op(model, "native attention")

    def call(self, model: onnx.ModelProto) -> PassResult:
        float16 = _is_float16_graph(model)
        before = (opset_version(model), elevation_functions(model)[0].SerializeToString())
        model = upgrade_opset(model, ATTENTION_OPSET)
        for function in elevation_functions(model):
            model.functions.remove(function)
        body = attention23_function(opset_version(model), softmax_in_float32=float16)
        model.functions.append(body)
        marked = _set_metadata(model, MODE_METADATA_KEY, "native")
        return PassResult(model, modified=marked or before != (opset_version(model), body.SerializeToString()))

    def ensures(self, model: onnx.ModelProto) -> None:
        body = elevation_functions(model)[0].node
        if [n.op_type for n in body].count("Attention") != 1:
            raise ExportError("native attention: the function body must hold exactly one Attention node")
        if opset_version(model) < ATTENTION_OPSET:
            raise ExportError(f"native attention: the model must import opset >= {ATTENTION_OPSET}")


class MarkForPlugin(GraphPass):
    """`plugin`: tag the node so TensorRT's parser builds the registered plugin instead of the body."""

    def __init__(self, namespace: str = PLUGIN_NAMESPACE, version: str = PLUGIN_VERSION) -> None:
        if not namespace:
            raise BadInputError("plugin namespace must be a non-empty string")
        self.namespace = namespace
        self.version = version

    def requires(self, model: onnx.ModelProto) -> None:
        _require_one_elevation_op(model, "plugin attention")

    def call(self, model: onnx.ModelProto) -> PassResult:
        node, function = elevation_nodes(model)[0], elevation_functions(model)[0]
        before = node.SerializeToString(), function.SerializeToString()
        kept = [a for a in node.attribute if a.name not in PLUGIN_ATTRIBUTES]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.extend([
            helper.make_attribute("plugin_namespace", self.namespace),
            helper.make_attribute("plugin_version", self.version),
        ])  # fmt: skip
        # Declare the attributes on the function too, so checkers and ONNX Runtime accept the call.
        for name in PLUGIN_ATTRIBUTES:
            if name not in function.attribute:
                function.attribute.append(name)
        marked = _set_metadata(model, MODE_METADATA_KEY, "plugin")
        return PassResult(model, modified=marked or before != (node.SerializeToString(), function.SerializeToString()))

    def ensures(self, model: onnx.ModelProto) -> None:
        attrs = {a.name: a.s.decode() for a in elevation_nodes(model)[0].attribute}
        if attrs.get("plugin_namespace") != self.namespace:
            raise ExportError(f"plugin attention: plugin_namespace should be {self.namespace!r}")


def attention_pass(mode: str) -> GraphPass:
    """The pass for an `--attention` mode."""
    if mode == "inline":
        return KeepInlineAttention()
    if mode == "native":
        return RewriteToAttention23()
    if mode == "plugin":
        return MarkForPlugin()
    raise BadInputError(f"--attention must be one of {', '.join(ATTENTION_MODES)}, got {mode!r}")


__all__ = [
    "KeepInlineAttention",
    "MarkForPlugin",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "RewriteToAttention23",
    "attention23_function",
    "attention_mode_of",
    "attention_pass",
    "upgrade_opset",
]
