"""`export-onnx --standard-ops`: the same model with every model-local function inlined.

The default export keeps `climax::ElevationAttention` (and `climax::WindScanOrder`, the `climax.shapes`
reduction wrappers) as nodes with model-local functions: ONNX Runtime runs them as they are and TensorRT
can swap the attention node for a plugin. Readers without function support (OpenVINO's ONNX frontend,
onnx2torch) refuse those nodes; for them this pass inlines every function with
`onnx.inliner.inline_local_functions` and drops the opset imports of the custom domains, leaving standard
ONNX ops only. The file computes the same function; its manifest records `custom_op: null`.
"""

from __future__ import annotations

import onnx
import onnx.inliner

from climax_deploy.errors import ExportError
from climax_deploy.export.passes import GraphPass, PassResult, all_nodes

STANDARD_DOMAINS = ("", "ai.onnx")


def nonstandard_domains(model: onnx.ModelProto) -> set[str]:
    """Domains of the nodes (subgraphs included), functions and opset imports outside the standard ONNX ops."""
    used = {n.domain for n in all_nodes(model.graph)} | {f.domain for f in model.functions}
    used |= {e.domain for e in model.opset_import}
    return used - set(STANDARD_DOMAINS)


class InlineStandardOps(GraphPass):
    """Inline every model-local function and drop the custom opset imports: standard ONNX ops only."""

    in_place = False

    def call(self, model: onnx.ModelProto) -> PassResult:
        if not model.functions and not nonstandard_domains(model):
            return PassResult(model, modified=False)
        inlined = onnx.inliner.inline_local_functions(model)
        kept = [e for e in inlined.opset_import if e.domain in STANDARD_DOMAINS]
        del inlined.opset_import[:]
        inlined.opset_import.extend(kept)
        return PassResult(inlined, modified=True)

    def ensures(self, model: onnx.ModelProto) -> None:
        left = nonstandard_domains(model)
        if left or model.functions:
            raise ExportError(f"--standard-ops left custom domains {sorted(left)} or {len(model.functions)} functions")
