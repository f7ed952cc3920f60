"""The author's wind-following patch scan: exact reference, breakpoint table, exported function, config rules.

The author's token orders in tests/data/author_wind_orders.npz were computed by running the author's
training code (CachedWindScanning.apply_regional_wind_reordering_32x32_optimized, the definition
Python binds) on the wind fields of tests/wind_cases.py; see that file's docstring for the fields.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from wind_cases import stack_cases, wind_cases  # tests/ is on sys.path under pytest

from climax_deploy.errors import BadInputError
from climax_deploy.export.wind_scan_function import atanf_nodes, wind_scan_model
from climax_deploy.model import ModelConfig, build_model
from climax_deploy.model.config import PRESETS, config_from_hparams
from climax_deploy.model.wind_scan import (
    REGIONS,
    WindScan,
    build_table,
    local_coordinates,
    order_for_angle,
    scan_grid_problem,
)

AUTHOR_ORDERS = Path(__file__).parent / "data" / "author_wind_orders.npz"
FULL_IMAGE = (128, 256)


def _x(u: np.ndarray, v: np.ndarray) -> torch.Tensor:
    x = torch.zeros(len(u), 2, *u.shape[1:])
    x[:, 0], x[:, 1] = torch.from_numpy(u), torch.from_numpy(v)
    return x


def _regions(order: np.ndarray, ppr: int) -> np.ndarray:
    return order.reshape(len(order), REGIONS * REGIONS, ppr)


def _f32_neighbours(value: float, steps: int) -> list[float]:
    out = [np.float32(value)]
    for direction in (-np.inf, np.inf):
        v = np.float32(value)
        for _ in range(steps):
            v = np.nextafter(v, np.float32(direction))
            out.append(v)
    return [float(v) for v in out]


# --- the order of one region -------------------------------------------------------------------------


def test_edge_orders_follow_the_float64_projection() -> None:
    """Full grid (2 x 4 patches per region), local index i = (i // 4, i % 4)."""
    coords = tuple(local_coordinates((64, 128)))

    def f32(a: float) -> float:  # the float32 angle, widened as the author's .item()
        return float(np.float32(a))

    assert order_for_angle(0.0, coords) == (0, 4, 1, 5, 2, 6, 3, 7)  # calm: ties keep local order, by column
    assert order_for_angle(f32(math.pi), coords) == (3, 7, 2, 6, 1, 5, 0, 4)  # easterly: sin(pi_f32) < 0
    assert order_for_angle(f32(-math.pi), coords) == (7, 3, 6, 2, 5, 1, 4, 0)
    assert order_for_angle(f32(math.pi / 2), coords) == (7, 6, 5, 4, 3, 2, 1, 0)  # cos(pi/2 in f32) < 0
    assert order_for_angle(f32(-math.pi / 2), coords) == (3, 2, 1, 0, 7, 6, 5, 4)
    assert order_for_angle(1e-13, coords) == (4, 0, 5, 1, 6, 2, 7, 3)  # just past calm: rows swap


@pytest.mark.parametrize("grid", [(64, 128), (64, 64), (32, 64), (96, 64)])
def test_table_equals_the_float64_projection_at_every_float32_angle_that_matters(grid: tuple[int, int]) -> None:
    coords = tuple(local_coordinates(grid))
    table = build_table(coords)
    rng = np.random.default_rng(0)
    angles = [float(a) for a in rng.uniform(-math.pi, math.pi, 3000).astype(np.float32)]
    for b in table.breakpoints:  # both sides of every breakpoint
        angles += _f32_neighbours(float(b), 4)
    for special in (0.0, math.pi, -math.pi, math.pi / 2, -math.pi / 2, math.pi / 4, 3 * math.pi / 4):
        angles += _f32_neighbours(special, 4)
    # near 0, float64 rounding decides ties: float32 angles from 2^-60 to 2^-40 by their bit patterns
    bits = rng.integers(np.float32(2.0**-60).view(np.int32), np.float32(2.0**-40).view(np.int32), 3000)
    tiny = bits.astype(np.int32).view(np.float32)
    angles += [float(a) for a in tiny] + [-float(a) for a in tiny]
    got = table.lookup(np.asarray(angles, dtype=np.float32))
    expected = np.array([order_for_angle(a, coords) for a in angles])
    wrong = np.nonzero((got != expected).any(1))[0]
    assert wrong.size == 0, f"{wrong.size} angles, e.g. {angles[wrong[0]]!r}"


def test_the_near_calm_range_is_covered_densely() -> None:
    """Every float32 angle of a stretch where the order flips back and forth, against the projection."""
    coords = tuple(local_coordinates((64, 128)))
    table = build_table(coords)
    start = np.float32(2.0**-54).view(np.int32)
    angles = np.arange(start, start + 40000, dtype=np.int32).view(np.float32)[::7]
    got = table.lookup(angles)
    expected = np.array([order_for_angle(float(a), coords) for a in angles])
    assert (got == expected).all()
    assert len({tuple(o) for o in expected}) == 2  # the stretch really does flip


# --- whole token orders: reference, author, ONNX ---------------------------------------------------------


@pytest.fixture(scope="module")
def author_orders() -> dict[str, np.ndarray]:
    with np.load(AUTHOR_ORDERS) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def full_cases() -> tuple[list[str], np.ndarray, np.ndarray]:
    return stack_cases(wind_cases(FULL_IMAGE, seed=0))


def test_reference_reproduces_the_authors_orders_token_for_token(author_orders, full_cases) -> None:
    names, u, v = full_cases
    assert list(author_orders["names"]) == names, "tests/wind_cases.py changed: regenerate the author's orders"
    scan = WindScan((64, 128))
    x = _x(u, v)
    assert np.array_equal(scan.angles(x), author_orders["angles"])  # float32, to the bit
    np.testing.assert_array_equal(scan.token_order(x).numpy(), author_orders["orders"])


@pytest.mark.parametrize("image", [FULL_IMAGE, (128, 128), (64, 128)])
def test_exported_function_computes_the_reference_order(image: tuple[int, int]) -> None:
    scan = WindScan((image[0] // 2, image[1] // 2))
    names, u, v = stack_cases(wind_cases(image, seed=1))
    model = wind_scan_model(scan, image)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"u": u, "v": v})[0]
    expected = scan.token_order(_x(u, v)).numpy()
    differ = (_regions(got, scan.patches_per_region) != _regions(expected, scan.patches_per_region)).any(-1)
    bad = [names[i] for i in np.nonzero(differ.any(1))[0]]
    assert not bad, f"ONNX Runtime's order differs in {differ.sum()} regions of {bad}"
    assert (expected != np.arange(expected.shape[1])).any()  # the scan does move tokens


def test_exported_function_runs_in_onnx_reference() -> None:
    from onnx.reference import ReferenceEvaluator

    scan = WindScan((64, 64))
    _, u, v = stack_cases(wind_cases((128, 128), seed=2))
    got = ReferenceEvaluator(wind_scan_model(scan, (128, 128))).run(None, {"u": u[:6], "v": v[:6]})[0]
    np.testing.assert_array_equal(got, scan.token_order(_x(u[:6], v[:6])).numpy())


def test_graph_atan_is_the_c_librarys_atanf_to_the_bit() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        atanf_nodes("x", "y"), "atan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal(200000) / rng.standard_normal(200000)).astype(np.float32)
    x = np.concatenate([x, np.float32([0, 1, 0.4375, 0.6875, 1.1875, 2.4375, 2.0**26, 2.0**-29, 1e30, np.inf])])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.arctan(x))  # numpy float32 calls atanf


# --- the model ----------------------------------------------------------------------------------------


def test_literal_and_fused_attention_both_see_the_scan() -> None:
    model = build_model("small-wind", seed=0)
    _, u, v = stack_cases(wind_cases((128, 128), seed=0))
    x = torch.randn(2, 15, 128, 128)
    x[:, 0], x[:, 1] = torch.from_numpy(u[:2]), torch.from_numpy(v[:2])
    lead = torch.tensor([12.0, 48.0])
    with torch.inference_mode():
        fused, literal = model(x, lead, attention="fused"), model(x, lead, attention="literal")
        scan, model.wind_scan = model.wind_scan, None
        unscanned = model(x, lead, attention="fused")
        model.wind_scan = scan
    assert torch.allclose(fused, literal, atol=1e-5, rtol=1e-4)
    assert ((fused - unscanned).norm() / fused.norm()) > 1e-2


def test_presets_say_whether_they_scan() -> None:
    assert PRESETS["full"].wind_scan and PRESETS["small-wind"].wind_scan
    assert not PRESETS["small"].wind_scan  # 16 x 32 patches: the author's scan has no defined output there
    assert scan_grid_problem(PRESETS["small"].grid) is not None


@pytest.mark.parametrize("img_size", [(32, 64), (128, 200), (96, 256)])
def test_grids_the_author_leaves_uninitialised_are_refused_in_one_line(img_size: tuple[int, int]) -> None:
    with pytest.raises(BadInputError) as info:
        ModelConfig(img_size=img_size, embed_dim=64, num_heads=4, wind_scan=True)
    message = str(info.value)
    assert "\n" not in message and "multiples of 32" in message and "uninitialised" in message
    assert ModelConfig(img_size=img_size, embed_dim=64, num_heads=4, wind_scan=False).wind_scan is False


def _author_config(parallel: object, variables: list[str] | None = None) -> dict:
    model = {"img_size": [128, 256], "patch_size": 2, "embed_dim": 64, "depth": 2, "num_heads": 4}
    if parallel is not None:
        model["parallel_patch_embed"] = parallel
    data = {"variables": variables or list(PRESETS["full"].variables), "target_variables": ["pm25"]}
    return {"config": {"model": model, "data": data}}


@pytest.mark.parametrize(
    ("parallel", "variables", "scans"),
    [
        (True, None, True),
        ("true", None, True),
        (False, None, False),
        (None, None, False),  # the author's ClimaX defaults to parallel_patch_embed=False
        (True, ["temp", "v", "elevation", "pm25"], False),  # no u: the author's scan stays off
    ],
)
def test_the_scan_is_on_exactly_when_the_authors_code_turns_it_on(parallel, variables, scans) -> None:
    assert config_from_hparams(_author_config(parallel, variables), "hparams").wind_scan is scans


def test_author_layout_checkpoint_round_trip_keeps_the_scan(tmp_path: Path) -> None:
    source = build_model({**PRESETS["small-wind"].to_dict(), "name": "x"}, seed=4)
    hparams = _author_config(True)
    hparams["config"]["model"].update(img_size=[128, 128], embed_dim=64, depth=2, num_heads=4)
    hparams["config"]["data"]["target_variables"] = list(source.config.outputs)
    state = {f"model.climax.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "epoch=1.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    loaded = build_model(checkpoint=path)
    assert loaded.config.wind_scan
    x, lead = torch.randn(1, 15, 128, 128), torch.tensor([24.0])
    with torch.inference_mode():
        assert torch.equal(loaded(x, lead), source(x, lead))


# --- exports -----------------------------------------------------------------------------------------


def _wind_batch(n: int, seed: int = 0) -> np.ndarray:
    names, u, v = stack_cases(wind_cases((128, 128), seed))
    x = np.random.default_rng(seed).standard_normal((n, 15, 128, 128)).astype(np.float32)
    pick = [names.index(k) for k in ("synthetic synthetic", "synthetic zonal", "calm regions", "easterly", "random")][:n]
    x[:, 0], x[:, 1] = u[pick], v[pick]
    return x


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_exports_carry_the_scan_and_compute_the_reference(precision: str, small_wind_exports) -> None:
    import onnx

    from climax_deploy.export.wind_scan_function import wind_scan_functions, wind_scan_nodes_of
    from climax_deploy.runtime import load

    proto = onnx.load(str(small_wind_exports[precision]))
    assert len(wind_scan_nodes_of(proto)) == 1 and len(wind_scan_functions(proto)) == 1
    model = build_model("small-wind", seed=0)
    for batch in (1, 3):  # dynamic batch
        x = _wind_batch(batch, seed=batch)
        lead = np.full(batch, 24.0, dtype=np.float32)
        with torch.inference_mode():
            expected = model(torch.from_numpy(x), torch.from_numpy(lead)).numpy()
            model.wind_scan, scan = None, model.wind_scan
            unscanned = model(torch.from_numpy(x), torch.from_numpy(lead)).numpy()
            model.wind_scan = scan
        with load(small_wind_exports[precision], providers="cpu") as runner:
            got = runner.predict(x, lead)
        error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        assert error < (1e-5 if precision == "fp32" else 3e-3), error
        assert np.linalg.norm(got - unscanned) / np.linalg.norm(unscanned) > 30 * error  # the scan is what matches


def test_fp16_export_keeps_the_scan_in_float32(small_wind_exports) -> None:
    import onnx

    from climax_deploy.export.fp16 import float_tensor_types, wind_scan_island

    proto = onnx.load(str(small_wind_exports["fp16"]))
    island = wind_scan_island(proto)
    types = float_tensor_types(proto)
    assert len(island) > 1
    for index in island:
        for out in proto.graph.node[index].output:
            assert types.get(out, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT, out


def test_symbolic_shape_infer_shapes_the_scan(small_wind_exports, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime's TensorRT provider route runs symbolic_shape_infer on fp16 exports: the scan keeps
    the batch symbolic through its function (Reshape with 0 copies the batch dimension)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    monkeypatch.chdir(tmp_path)  # it may leave temporary files in the working folder
    shaped = SymbolicShapeInference.infer_shapes(onnx.load(str(small_wind_exports["fp16"])), auto_merge=False)
    (out,) = shaped.graph.output
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 6, 128, 128]


@pytest.mark.parametrize("mode", ["inline", "native", "plugin"])
def test_every_tensorrt_attention_mode_keeps_the_scan(mode: str, small_wind_exports) -> None:
    """What build-engine hands TensorRT still holds the scan's function (TensorRT's parser inlines it:
    standard float32 ops, int64 Gather), and checks as ONNX."""
    import onnx

    from climax_deploy.export.attention_modes import attention_pass
    from climax_deploy.export.wind_scan_function import wind_scan_functions, wind_scan_nodes_of

    proto = attention_pass(mode)(onnx.load(str(small_wind_exports["fp16"]))).model
    onnx.checker.check_model(proto, full_check=True)
    assert len(wind_scan_nodes_of(proto)) == 1 and len(wind_scan_functions(proto)) == 1
    ops = {n.op_type for f in wind_scan_functions(proto) for n in f.node}
    assert not ops & {"Atan", "Cos", "Sin", "TopK"}  # plain float32 arithmetic: no implementation-defined last bit
    body_types = {a.t.data_type for f in wind_scan_functions(proto) for n in f.node for a in n.attribute if a.name == "value"}
    assert onnx.TensorProto.DOUBLE not in body_types
