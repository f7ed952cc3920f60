"""The model-local ONNX function that defines climax::WindScanOrder with standard float32 ops.

Inputs u, v [B, H, W] (standardised wind); output order [B, L] (int64): token i of the scanned
sequence is row-major token order[b, i]. The body is what model/wind_scan.py states, in float32 only
(TensorRT has no float64):
- magnitude-weighted mean wind per 32 x 32 region (ReduceSum over each region's pixel block);
- its angle as the C library's atan2f computes it (z = atan(|v| / |u|); pi - (z - pi_lo) for u < 0;
  sign of v; exact axes and 0 for calm regions);
- the region's order from the breakpoint table (`ScanTable`): count of breakpoints <= angle, Gather.
ONNX Runtime and TensorRT's parser inline the function.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from climax_deploy.errors import ExportError
from climax_deploy.export.passes import GraphPass, PassResult, all_nodes, opset_version
from climax_deploy.model.wind_scan import REGIONS, ScanTable, WindScan
from climax_deploy.schema import CUSTOM_DOMAIN, CUSTOM_OP_VERSION, WIND_SCAN_OP

FUNCTION_INPUTS = ("u", "v")
FUNCTION_OUTPUTS = ("order",)
PI = np.float32(np.pi)
PI_LO = np.float32(np.pi - float(PI))  # pi - float32(pi): atan2f's correction for u < 0


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def wind_scan_nodes(image: tuple[int, int], grid: tuple[int, int], table: ScanTable) -> list[onnx.NodeProto]:
    """The function body for an H x W image and a rows x cols patch grid."""
    n = helper.make_node
    H, W = image
    bh, bw = H // REGIONS, W // REGIONS
    rows, cols = grid
    ppr = (rows // REGIONS) * (cols // REGIONS)
    f32 = np.float32
    offsets = (np.arange(REGIONS * REGIONS, dtype=np.int64) * ppr).reshape(REGIONS, REGIONS, 1)
    nodes = [
        _const("starts", np.array([0, 0], dtype=np.int64)),
        _const("ends", np.array([REGIONS * bh, REGIONS * bw], dtype=np.int64)),
        _const("hw_axes", np.array([1, 2], dtype=np.int64)),
        _const("blocks", np.array([-1, REGIONS, bh, REGIONS, bw], dtype=np.int64)),
        _const("block_axes", np.array([2, 4], dtype=np.int64)),
        _const("last_axis", np.array([-1], dtype=np.int64)),
        _const("zero", f32(0.0)),
        _const("pi", PI),
        _const("pi_lo", PI_LO),
        _const("breakpoints", table.breakpoints.astype(f32)),
        _const("orders", table.orders.astype(np.int64)),
        _const("offsets", offsets),
        _const("flat", np.array([-1, rows * cols], dtype=np.int64)),
        # regions: the author's blocks cover rows [0, 32 bh) and columns [0, 32 bw)
        n("Slice", ["u", "starts", "ends", "hw_axes"], ["u_crop"]),
        n("Slice", ["v", "starts", "ends", "hw_axes"], ["v_crop"]),
        n("Reshape", ["u_crop", "blocks"], ["u5"]),  # [B, 32, bh, 32, bw]
        n("Reshape", ["v_crop", "blocks"], ["v5"]),
        n("Mul", ["u5", "u5"], ["uu"]),
        n("Mul", ["v5", "v5"], ["vv"]),
        n("Add", ["uu", "vv"], ["speed2"]),
        n("Sqrt", ["speed2"], ["speed"]),
        n("ReduceSum", ["speed", "block_axes"], ["total"], keepdims=0),  # [B, 32, 32]
        n("Mul", ["u5", "speed"], ["u_weighted"]),
        n("Mul", ["v5", "speed"], ["v_weighted"]),
        n("ReduceSum", ["u_weighted", "block_axes"], ["u_sum"], keepdims=0),
        n("ReduceSum", ["v_weighted", "block_axes"], ["v_sum"], keepdims=0),
        n("Div", ["u_sum", "total"], ["mean_u"]),
        n("Div", ["v_sum", "total"], ["mean_v"]),
        # atan2f(mean_v, mean_u)
        n("Abs", ["mean_u"], ["abs_u"]),
        n("Abs", ["mean_v"], ["abs_v"]),
        n("Div", ["abs_v", "abs_u"], ["ratio"]),
        n("Atan", ["ratio"], ["z"]),  # [0, pi/2]; u = 0 gives atan(inf) = pi/2
        n("Sub", ["z", "pi_lo"], ["z_lo"]),
        n("Sub", ["pi", "z_lo"], ["z_west"]),
        n("GreaterOrEqual", ["mean_u", "zero"], ["east"]),
        n("Where", ["east", "z", "z_west"], ["a_abs"]),
        n("Neg", ["a_abs"], ["a_neg"]),
        n("Less", ["mean_v", "zero"], ["south"]),
        n("Where", ["south", "a_neg", "a_abs"], ["a_any"]),
        n("Less", ["mean_u", "zero"], ["west"]),
        n("Where", ["west", "pi", "zero"], ["a_axis"]),  # v = 0: pi for u < 0, else 0
        n("Equal", ["mean_v", "zero"], ["zonal"]),
        n("Where", ["zonal", "a_axis", "a_any"], ["a_wind"]),
        n("Greater", ["total", "zero"], ["blowing"]),
        n("Where", ["blowing", "a_wind", "zero"], ["angle"]),  # calm: 0
        # order: the table row of the angle
        n("Unsqueeze", ["angle", "last_axis"], ["angle_1"]),  # [B, 32, 32, 1]
        n("GreaterOrEqual", ["angle_1", "breakpoints"], ["passed"]),  # [B, 32, 32, K]
        n("Cast", ["passed"], ["passed_f"], to=TensorProto.FLOAT),
        n("ReduceSum", ["passed_f", "last_axis"], ["count_f"], keepdims=0),  # exact: K < 2^24
        n("Cast", ["count_f"], ["row"], to=TensorProto.INT64),
        n("Gather", ["orders", "row"], ["local"], axis=0),  # [B, 32, 32, ppr]
        n("Add", ["local", "offsets"], ["global"]),
        n("Reshape", ["global", "flat"], ["order"]),  # [B, L]
    ]
    return nodes


def wind_scan_function(scan: WindScan, image: tuple[int, int], opset: int) -> onnx.FunctionProto:
    return helper.make_function(
        CUSTOM_DOMAIN,
        WIND_SCAN_OP,
        list(FUNCTION_INPUTS),
        list(FUNCTION_OUTPUTS),
        wind_scan_nodes(image, scan.grid, scan.table()),
        opset_imports=[helper.make_opsetid("", opset)],
        doc_string="The author's wind-following patch scan: token order [B, L] from standardised u, v [B, H, W]",
    )


def wind_scan_nodes_of(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in all_nodes(model.graph) if n.domain == CUSTOM_DOMAIN and n.op_type == WIND_SCAN_OP]


def wind_scan_functions(model: onnx.ModelProto) -> list[onnx.FunctionProto]:
    return [f for f in model.functions if f.domain == CUSTOM_DOMAIN and f.name == WIND_SCAN_OP]


class AttachWindScanFunction(GraphPass):
    """Give a model with a climax::WindScanOrder node the function that defines it (nothing otherwise)."""

    def __init__(self, scan: WindScan | None, image: tuple[int, int]) -> None:
        self.scan = scan
        self.image = image

    def requires(self, model: onnx.ModelProto) -> None:
        nodes = wind_scan_nodes_of(model)
        expected = 0 if self.scan is None else 1
        if len(nodes) != expected:
            raise ExportError(f"expected {expected} {CUSTOM_DOMAIN}::{WIND_SCAN_OP} node(s), found {len(nodes)}")

    def call(self, model: onnx.ModelProto) -> PassResult:
        if self.scan is None:
            return PassResult(model, modified=False)
        for fn in wind_scan_functions(model):
            model.functions.remove(fn)
        model.functions.append(wind_scan_function(self.scan, self.image, opset_version(model)))
        if not any(e.domain == CUSTOM_DOMAIN for e in model.opset_import):
            model.opset_import.append(helper.make_opsetid(CUSTOM_DOMAIN, CUSTOM_OP_VERSION))
        return PassResult(model, modified=True)

    def ensures(self, model: onnx.ModelProto) -> None:
        if len(wind_scan_functions(model)) != (0 if self.scan is None else 1):
            raise ExportError(f"expected one {WIND_SCAN_OP} function after attaching it")
