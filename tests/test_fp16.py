"""The fp16 graph: where the FP32 islands are, parity on ONNX Runtime CPU, and the plateau case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from climax_deploy.errors import ExportError
from climax_deploy.export.cli import main as export_main
from climax_deploy.export.fp16 import (
    FLOAT,
    FLOAT16,
    FP32_ISLAND_OPS,
    ConvertToFp16,
    elevation_island,
    float32_softmax,
    float_tensor_types,
    node_precisions,
    output_head,
)
from climax_deploy.export.passes import elevation_functions, elevation_nodes
from climax_deploy.export.shape_compat import original_op_type
from climax_deploy.model import ClimaX, normalise_elevations, patch_elevations
from climax_deploy.schema import STANDARDISATION
from climax_deploy.validate.parity import run_parity

# ONNX Runtime CPU measured worst rel L2 2.8e-4 and fidelity 9.2e-3 (small preset, seed 0, mountain
# and flat). The shared fp16 tolerances (5e-3, 2e-2) also cover TensorRT, whose fp16 kernels are
# not measured here; on ONNX Runtime CPU this test holds the tighter bound.
ORT_CPU_FP16_REL_L2 = 1e-3


@pytest.fixture(scope="module")
def fp16_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small preset exported with `export-onnx --precision fp16` (the CLI, in process)."""
    path = tmp_path_factory.mktemp("fp16") / "small16.onnx"
    assert export_main(["--preset", "small", "--precision", "fp16", "-o", str(path), "-q"]) == 0
    return path


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_boundary_stays_float32_and_compute_is_float16(fp16_onnx: Path) -> None:
    model = onnx.load(str(fp16_onnx))
    assert [v.type.tensor_type.elem_type for v in model.graph.input] == [FLOAT, FLOAT]
    assert [v.type.tensor_type.elem_type for v in model.graph.output] == [FLOAT]
    types = float_tensor_types(model)
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    half = [n for n in matmuls if types.get(n.output[0]) == FLOAT16]
    # every matmul but the output head's runs in fp16
    assert len(half) == len(matmuls) - 1, [n.name for n in matmuls if types.get(n.output[0]) != FLOAT16]
    counts = node_precisions(model)
    assert counts["float16"] > counts["float32"] > 0


def test_fp32_islands(fp16_onnx: Path) -> None:
    model = onnx.load(str(fp16_onnx))
    types = float_tensor_types(model)
    island = elevation_island(model)
    # original_op_type: the export wraps reductions in climax.shapes functions (export/shape_compat.py)
    assert {original_op_type(model.graph.node[i]) for i in island} >= {"AveragePool", "ReduceMin", "ReduceMax", "Div"}
    for i in island | output_head(model):
        for out in model.graph.node[i].output:
            assert types.get(out, FLOAT) == FLOAT, (model.graph.node[i].op_type, out)
    for node in model.graph.node:
        if node.op_type in FP32_ISLAND_OPS:
            assert all(types[o] == FLOAT for o in node.output if o in types), node.name
    node = elevation_nodes(model)[0]
    assert [types[i] for i in node.input] == [FLOAT16, FLOAT16, FLOAT16, FLOAT, FLOAT]


def test_function_body_adds_bias_and_takes_softmax_in_float32(fp16_onnx: Path) -> None:
    body = list(elevation_functions(onnx.load(str(fp16_onnx)))[0].node)
    producer = {o: n for n in body for o in n.output}
    softmax = next(n for n in body if n.op_type == "Softmax")
    add = producer[softmax.input[0]]
    ups = [producer[i] for i in add.input]
    assert add.op_type == "Add" and all(u.op_type == "Cast" and u.attribute[0].i == FLOAT for u in ups)
    # the bias is cast up from its float32 source, never from a float16 copy
    assert any(producer[u.input[0]].op_type == "Unsqueeze" for u in ups), [producer[u.input[0]].op_type for u in ups]
    down = next(n for n in body if softmax.output[0] in n.input)
    assert down.op_type == "CastLike" and down.input[1] == ups[0].input[0]  # back to the scores' dtype


def test_float32_softmax_on_any_function_body() -> None:
    """A plain attention body (no bias) and an Attention-23 node get float32 softmax too."""
    from onnx import helper

    body = [
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),
        helper.make_node("Attention", ["q", "k", "v"], ["o2"]),
    ]
    out = float32_softmax(body)
    ops = [n.op_type for n in out]
    assert ops == ["MatMul", "Cast", "Softmax", "CastLike", "MatMul", "Attention"]
    assert out[3].input[1] == "s" and out[3].output[0] == "p"
    attention = out[-1]
    assert {a.name: a.i for a in attention.attribute}["softmax_precision"] == FLOAT


def test_fp16_parity_mountain_and_flat_on_onnxruntime_cpu(fp16_onnx: Path) -> None:
    report = run_parity(fp16_onnx, ("mountain", "flat"), load_options={"providers": "cpu"})
    assert report.precision == "fp16"
    assert report.same_precision.startswith("PyTorch fp16") and report.tolerance.rel_l2_floor == 1e-4
    assert report.passed, [r for r in report.rows if not r.passed] + [s for s in report.signal if not s.passed]
    worst = max(r.metrics.rel_l2 for r in report.rows)
    assert 1e-6 < worst <= ORT_CPU_FP16_REL_L2  # lower bound: the graph really is fp16
    assert all(s.fidelity <= s.bound for s in report.signal)


def _plateau_input(grid: tuple[int, int], relief_m: float) -> np.ndarray:
    """15 standardised channels; elevation a 5,000 m plateau with `relief_m` of ripples."""
    h, w = grid
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 15, h, w)).astype(np.float32)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    metres = 5000.0 + relief_m * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    mean, std = STANDARDISATION["elevation"]
    x[0, 13] = (metres - mean) / std
    return x


def _normalised_elevation(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    name = elevation_nodes(model)[0].input[3]
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, FLOAT, None))
    feed_type = np.float16 if model.graph.input[0].type.tensor_type.elem_type == FLOAT16 else np.float32
    _, elevation = _session(model).run(None, {"x": x.astype(feed_type), "lead_times": np.array([24.0], feed_type)})
    return np.asarray(elevation, dtype=np.float64)


def test_plateau_with_centimetre_relief_keeps_its_relief(small_onnx: Path, small_model: ClimaX) -> None:
    """5,000 m +- 1 cm: float32 keeps the relief (normalised to [0, 1]); float16 would flatten it."""
    x = _plateau_input(small_model.config.img_size, relief_m=0.01)
    expected = normalise_elevations(patch_elevations(torch.from_numpy(x[:, 13]).double(), 2)).numpy()
    assert expected.max() - expected.min() == pytest.approx(1.0)

    fp16 = ConvertToFp16()(onnx.load(str(small_onnx))).model
    got = _normalised_elevation(fp16, x)
    assert got.min() == 0.0 and got.max() == pytest.approx(1.0)  # neither flat nor blown up
    # float32 resolves 2.05 to 2.4e-7 of a 5.2e-6 standardised range: ~5% steps of the [0, 1] scale
    assert np.abs(got - expected).max() < 0.1
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.99

    # The control: with float16 inputs the relief is below float16's spacing at 2.05 and vanishes.
    half_io = ConvertToFp16(keep_io_types=False)(onnx.load(str(small_onnx))).model
    assert np.all(_normalised_elevation(half_io, x) == 0.0)


def test_pass_refuses_a_converted_or_foreign_graph(small_onnx: Path) -> None:
    fp16 = ConvertToFp16()(onnx.load(str(small_onnx))).model
    with pytest.raises(ExportError, match="already"):
        ConvertToFp16()(fp16)
    bare = onnx.load(str(small_onnx))
    del bare.functions[:]
    with pytest.raises(ExportError, match="ElevationAttention"):
        ConvertToFp16()(bare)


def test_weights_beyond_float16_range_are_refused(small_onnx: Path) -> None:
    model = onnx.load(str(small_onnx))
    init = next(t for t in model.graph.initializer if t.name.endswith("qkv.bias"))
    values = onnx.numpy_helper.to_array(init).copy()
    values[0] = 1e6
    init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    with pytest.raises(ExportError, match="float16's range"):
        ConvertToFp16()(model)


def test_export_rejects_unknown_precision(small_model: ClimaX, tmp_path: Path) -> None:
    from climax_deploy.errors import BadInputError
    from climax_deploy.export import ExportOptions, export_onnx

    with pytest.raises(BadInputError, match="precision"):
        export_onnx(small_model, tmp_path / "m.onnx", ExportOptions(precision="int8"))
