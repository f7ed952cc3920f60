"""Graph passes over ONNX models, in the spirit of onnx_ir's passes.

A pass checks its precondition (`requires`), transforms the model (`call`) and checks its
postcondition (`ensures`); calling it returns a PassResult saying whether anything changed.
Each pass declares how it treats its input, as onnx_ir's PassBase does:
- `in_place = True`: `call` changes the model it is given and returns that same object;
- `in_place = False`: `call` leaves its input untouched and returns a new model (or the input
  itself when nothing changed);
- `changes_input`: whether the input can be modified, True for in-place passes unless they only read.
`run_passes` honours this: with `keep_input=True` it copies the model before the first pass that
would change the caller's object. Each pass is testable alone; `export-onnx` and `build-engine`
compose them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import onnx

from climax_deploy.errors import ExportError
from climax_deploy.schema import CUSTOM_DOMAIN, CUSTOM_OP

DEFAULT_OPSET = 18  # default-domain opset of exported models


@dataclass(frozen=True)
class PassResult:
    model: onnx.ModelProto
    modified: bool  # whether `model` differs from the pass's input


class GraphPass(abc.ABC):
    """Base class: subclasses implement `call`, and optionally `requires` / `ensures`."""

    in_place: ClassVar[bool] = True  # call() mutates and returns its input (False: returns a new model)

    @property
    def changes_input(self) -> bool:
        """Whether calling the pass can modify the model passed in (in-place passes that only read: False)."""
        return self.in_place

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
        if self.in_place and result.model is not model:
            raise ExportError(f"{type(self).__name__} is declared in place but returned a new model")
        self.ensures(result.model)
        return result


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of `model` (protobuf CopyFrom)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def run_passes(model: onnx.ModelProto, passes: Sequence[GraphPass], *, keep_input: bool = False) -> PassResult:
    """Run `passes` in order; `modified` is true when any of them changed the model.

    Without `keep_input` the caller's model may be changed by in-place passes (cheapest: no copy of a
    large model). With it, the model is copied before the first pass that would change the caller's object.
    """
    modified = False
    owned = not keep_input  # whether `model` is ours to change
    for graph_pass in passes:
        if graph_pass.changes_input and not owned:
            model, owned = copy_model(model), True
        result = graph_pass(model)
        owned = owned or result.model is not model  # a new model from a functional pass is ours
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
