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
PI_LO = np.float32(-8.7422776573e-08)  # pi - float32(pi): atan2f's correction for u < 0
# fdlibm's atanf (what the C library computes, to the bit, with plain float32 operations): argument
# reduction about 0.5, 1, 1.5 and infinity, then an 11-term odd polynomial.
ATAN_HI = np.float32([4.6364760399e-01, 7.8539812565e-01, 9.8279368877e-01, 1.5707962513e00])
ATAN_LO = np.float32([5.0121582440e-09, 3.7748947079e-08, 3.4473217170e-08, 7.5497894159e-08])
ATAN_T = np.float32([
    3.3333334327e-01, -2.0000000298e-01, 1.4285714924e-01, -1.1111110449e-01, 9.0908870101e-02, -7.6918758452e-02,
    6.6610731184e-02, -5.8335702866e-02, 4.9768779427e-02, -3.6531571299e-02, 1.6285819933e-02,
])  # fmt: skip
ATAN_BOUNDS = np.float32([0.4375, 0.6875, 1.1875, 2.4375])  # the reduction intervals' upper ends


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def atanf_nodes(x: str, out: str) -> list[onnx.NodeProto]:
    """`out` = atanf(`x`) for x >= 0, as fdlibm's float32 code computes it (no fused multiply-adds).

    ONNX's Atan is implementation-defined in its last bit (ONNX Runtime's differs from the C library's
    in ~40 % of float32 inputs); a wind angle one bit off can land on the other side of a breakpoint.
    """
    n = helper.make_node
    f32 = np.float32
    nodes = [
        _const("at_one", f32(1.0)), _const("at_two", f32(2.0)), _const("at_1_5", f32(1.5)), _const("at_m1", f32(-1.0)),
        _const("at_huge", f32(2.0**26)), _const("at_tiny", f32(2.0**-29)),
        _const("at_limit", f32(ATAN_HI[3] + ATAN_LO[3])),
        # reductions: (2x - 1) / (2 + x), (x - 1) / (x + 1), (x - 1.5) / (1 + 1.5x), -1 / x
        n("Mul", ["at_two", x], ["at_2x"]), n("Sub", ["at_2x", "at_one"], ["at_n0"]),
        n("Add", ["at_two", x], ["at_d0"]), n("Div", ["at_n0", "at_d0"], ["at_r0"]),
        n("Sub", [x, "at_one"], ["at_n1"]), n("Add", [x, "at_one"], ["at_d1"]), n("Div", ["at_n1", "at_d1"], ["at_r1"]),
        n("Sub", [x, "at_1_5"], ["at_n2"]), n("Mul", ["at_1_5", x], ["at_15x"]),
        n("Add", ["at_one", "at_15x"], ["at_d2"]), n("Div", ["at_n2", "at_d2"], ["at_r2"]),
        n("Div", ["at_m1", x], ["at_r3"]),
    ]  # fmt: skip
    for i, bound in enumerate(ATAN_BOUNDS):
        nodes += [_const(f"at_b{i}", bound), n("Less", [x, f"at_b{i}"], [f"at_lt{i}"])]
    for i in range(4):
        nodes += [_const(f"at_hi{i}", ATAN_HI[i]), _const(f"at_lo{i}", ATAN_LO[i])]
    # interval 3 unless below bound 3, 2, 1 (r2, r1, r0); below bound 0, x itself
    nodes += [
        n("Where", ["at_lt3", "at_r2", "at_r3"], ["at_xa"]), n("Where", ["at_lt2", "at_r1", "at_xa"], ["at_xb"]),
        n("Where", ["at_lt1", "at_r0", "at_xb"], ["at_xc"]), n("Where", ["at_lt0", x, "at_xc"], ["at_xr"]),
    ]  # fmt: skip
    for part in ("hi", "lo"):
        nodes += [
            n("Where", ["at_lt3", f"at_{part}2", f"at_{part}3"], [f"at_{part}a"]),
            n("Where", ["at_lt2", f"at_{part}1", f"at_{part}a"], [f"at_{part}b"]),
            n("Where", ["at_lt1", f"at_{part}0", f"at_{part}b"], [f"at_{part}"]),
        ]
    nodes += [n("Mul", ["at_xr", "at_xr"], ["at_z"]), n("Mul", ["at_z", "at_z"], ["at_w"])]
    # s1 = z (T0 + w (T2 + w (T4 + w (T6 + w (T8 + w T10))))), s2 = w (T1 + w (T3 + w (T5 + w (T7 + w T9))))
    for name, terms, first in (("s1", [0, 2, 4, 6, 8, 10], "at_z"), ("s2", [1, 3, 5, 7, 9], "at_w")):
        acc = f"at_T{terms[-1]}"
        nodes.append(_const(acc, ATAN_T[terms[-1]]))
        for t in reversed(terms[:-1]):
            nodes += [
                _const(f"at_T{t}", ATAN_T[t]),
                n("Mul", ["at_w", acc], [f"at_{name}_m{t}"]),
                n("Add", [f"at_T{t}", f"at_{name}_m{t}"], [f"at_{name}_a{t}"]),
            ]
            acc = f"at_{name}_a{t}"
        nodes.append(n("Mul", [first, acc], [f"at_{name}"]))
    nodes += [
        n("Add", ["at_s1", "at_s2"], ["at_s"]), n("Mul", ["at_xr", "at_s"], ["at_xs"]),
        n("Sub", ["at_xr", "at_xs"], ["at_small"]),  # |x| < 0.4375: x - x (s1 + s2)
        n("Sub", ["at_xs", "at_lo"], ["at_xs_lo"]), n("Sub", ["at_xs_lo", "at_xr"], ["at_err"]),
        n("Sub", ["at_hi", "at_err"], ["at_big"]),  # hi - ((x (s1 + s2) - lo) - x)
        n("Where", ["at_lt0", "at_small", "at_big"], ["at_poly"]),
        n("GreaterOrEqual", [x, "at_huge"], ["at_is_huge"]), n("Where", ["at_is_huge", "at_limit", "at_poly"], ["at_c"]),
        n("Less", [x, "at_tiny"], ["at_is_tiny"]), n("Where", ["at_is_tiny", x, "at_c"], [out]),
    ]  # fmt: skip
    return nodes


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
        _const("blocks", np.array([0, REGIONS, bh, REGIONS, bw], dtype=np.int64)),  # 0: keep the batch
        _const("region_rows", np.array([0, REGIONS, REGIONS, bh * bw], dtype=np.int64)),
        _const("last_axis", np.array([-1], dtype=np.int64)),
        _const("zero", f32(0.0)),
        _const("pi", PI),
        _const("pi_lo", PI_LO),
        _const("breakpoints", table.breakpoints.astype(f32)),
        _const("orders", table.orders.astype(np.int64)),
        _const("offsets", offsets),
        _const("flat", np.array([0, rows * cols], dtype=np.int64)),
        # regions: the author's blocks cover rows [0, 32 bh) and columns [0, 32 bw)
        n("Slice", ["u", "starts", "ends", "hw_axes"], ["u_crop"]),
        n("Slice", ["v", "starts", "ends", "hw_axes"], ["v_crop"]),
        # each region's block as one contiguous row-major run [B, 32, 32, bh bw]: sums add in the author's order
        n("Reshape", ["u_crop", "blocks"], ["u_blocks"]),  # [B, 32, bh, 32, bw]
        n("Reshape", ["v_crop", "blocks"], ["v_blocks"]),
        n("Transpose", ["u_blocks"], ["u_regions"], perm=[0, 1, 3, 2, 4]),
        n("Transpose", ["v_blocks"], ["v_regions"], perm=[0, 1, 3, 2, 4]),
        n("Reshape", ["u_regions", "region_rows"], ["u5"]),
        n("Reshape", ["v_regions", "region_rows"], ["v5"]),
        n("Mul", ["u5", "u5"], ["uu"]),
        n("Mul", ["v5", "v5"], ["vv"]),
        n("Add", ["uu", "vv"], ["speed2"]),
        n("Sqrt", ["speed2"], ["speed"]),
        n("ReduceSum", ["speed", "last_axis"], ["total"], keepdims=0),  # [B, 32, 32]
        n("Mul", ["u5", "speed"], ["u_weighted"]),
        n("Mul", ["v5", "speed"], ["v_weighted"]),
        n("ReduceSum", ["u_weighted", "last_axis"], ["u_sum"], keepdims=0),
        n("ReduceSum", ["v_weighted", "last_axis"], ["v_sum"], keepdims=0),
        n("Div", ["u_sum", "total"], ["mean_u"]),
        n("Div", ["v_sum", "total"], ["mean_v"]),
        # atan2f(mean_v, mean_u)
        n("Abs", ["mean_u"], ["abs_u"]),
        n("Abs", ["mean_v"], ["abs_v"]),
        n("Div", ["abs_v", "abs_u"], ["ratio"]),
        *atanf_nodes("ratio", "z"),  # [0, pi/2]; u = 0 gives atan(inf) = pi/2
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


def is_wind_scan_node(node: onnx.NodeProto) -> bool:
    return node.domain == CUSTOM_DOMAIN and node.op_type == WIND_SCAN_OP


def wind_scan_nodes_of(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in all_nodes(model.graph) if is_wind_scan_node(n)]


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


def wind_scan_model(scan: WindScan, image: tuple[int, int], opset: int = 18) -> onnx.ModelProto:
    """A model of the scan alone: u, v [B, H, W] -> order [B, L], for checks and measurements."""
    H, W = image
    rows, cols = scan.grid
    node = helper.make_node(WIND_SCAN_OP, list(FUNCTION_INPUTS), list(FUNCTION_OUTPUTS), domain=CUSTOM_DOMAIN)
    graph = helper.make_graph(
        [node],
        "wind_scan",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", H, W]) for name in FUNCTION_INPUTS],
        [helper.make_tensor_value_info("order", TensorProto.INT64, ["B", rows * cols])],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(CUSTOM_DOMAIN, CUSTOM_OP_VERSION)],
        functions=[wind_scan_function(scan, image, opset)],
    )
