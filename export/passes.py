"""Graph passes over ONNX models, in the spirit of onnx_ir's passes.

A pass checks its precondition (`requires`), transforms the model (`call`) and checks its
postcondition (`ensures`); calling it returns a PassResult saying whether anything changed.
Each pass is testable alone; `export-onnx` and `build-engine` compose them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import onnx

from climax_deploy.errors import ExportError
from climax_deploy.schema import CUSTOM_DOMAIN, CUSTOM_OP

DEFAULT_OPSET = 18  # default-domain opset of exported models


@dataclass
class PassResult:
    model: onnx.ModelProto
    modified: bool


class GraphPass(abc.ABC):
    """Base class: subclasses implement `call`, and optionally `requires` / `ensures`."""

    def requires(self, model: onnx.ModelProto) -> None:
        """Raise ExportError when the model does not meet the pass's precondition."""

    def ensures(self, model: onnx.ModelProto) -> None:
        """Raise ExportError when the result breaks the pass's postcondition."""

    @abc.abstractmethod
    def call(self, model: onnx.ModelProto) -> PassResult:
        """Transform the model; say whether anything changed."""

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        self.requires(model)
        result = self.call(model)
        self.ensures(result.model)
        return result


def run_passes(model: onnx.ModelProto, passes: Sequence[GraphPass]) -> PassResult:
    modified = False
    for graph_pass in passes:
        result = graph_pass(model)
        model, modified = result.model, modified or result.modified
    return PassResult(model, modified)


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    for entry in model.opset_import:
        if entry.domain == domain:
            return int(entry.version)
    raise ExportError(f"model imports no opset for domain {domain!r}")


def elevation_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The climax::ElevationAttention nodes of the main graph."""
    return [n for n in model.graph.node if n.domain == CUSTOM_DOMAIN and n.op_type == CUSTOM_OP]


def elevation_functions(model: onnx.ModelProto) -> list[onnx.FunctionProto]:
    return [f for f in model.functions if f.domain == CUSTOM_DOMAIN and f.name == CUSTOM_OP]


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those in subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            for sub in attr.graphs:
                yield from all_nodes(sub)
