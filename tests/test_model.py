"""The PyTorch reference: physics attention semantics, both implementations, ClimaX structure."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from climax_deploy.errors import BadInputError
from climax_deploy.model import (
    ElevationAttention,
    ModelConfig,
    build_model,
    elevation_bias,
    fused_elevation_attention,
    literal_elevation_attention,
    normalise_elevations,
    patch_elevations,
    resolve_config,
)
from climax_deploy.model.layers import VariableAggregation

# Literal and fused differ by the author's code's +1e-8 in the renormalisation (<= 1e-8 / sigmoid(-beta)
# relative, 2e-7 at beta = 3) plus fp32 summation order: 2e-6 absolute on unit-scale values.
FP32_ATOL = 2e-6


def _qkv(batch: int, heads: int, n: int, dh: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, n, dh, generator=g) for _ in range(3))


@pytest.mark.parametrize("terrain", ["random", "ridge"])
def test_literal_and_fused_agree_to_fp32_rounding(terrain: str) -> None:
    q, k, v = _qkv(2, 4, 96, 32)
    if terrain == "random":
        e = torch.rand(2, 96)
    else:  # a sharp ridge: half the keys sit far uphill of the other half
        e = torch.zeros(2, 96)
        e[:, 40:56] = 1.0
    beta = torch.tensor(3.0)
    lit = literal_elevation_attention(q, k, v, e, beta)
    fused = fused_elevation_attention(q, k, v, e, beta)
    assert torch.allclose(lit, fused, atol=FP32_ATOL, rtol=0)


def test_mask_semantics_match_the_seed() -> None:
    """Query i in a valley, key j uphill: mask = sigmoid(-beta * (e_j - e_i)), clamped at 1e-6."""
    e = torch.tensor([[0.0, 1.0]])
    beta = torch.tensor(3.0)
    bias = elevation_bias(e, beta)[0]
    assert bias[0, 1].item() == pytest.approx(math.log(torch.sigmoid(torch.tensor(-3.0)).item()), rel=1e-6)
    assert bias[1, 0].item() == pytest.approx(math.log(torch.sigmoid(torch.tensor(3.0)).item()), rel=1e-6)
    assert bias[0, 1] < bias[1, 0]  # uphill transport damped, downhill kept
    strong = elevation_bias(e, torch.tensor(50.0))[0]
    assert strong[0, 1].item() == pytest.approx(math.log(1e-6))  # clamp active


def test_flat_terrain_is_standard_attention() -> None:
    """Flat terrain: every mask entry is 0.5, so the physics block equals plain attention."""
    q, k, v = _qkv(1, 2, 64, 16)
    flat = normalise_elevations(patch_elevations(torch.full((1, 16, 16), 4500.0), 2))
    assert torch.equal(flat, torch.zeros_like(flat))
    plain = F.scaled_dot_product_attention(q, k, v)
    lit = literal_elevation_attention(q, k, v, flat, torch.tensor(3.0))
    assert torch.allclose(lit, plain, atol=FP32_ATOL, rtol=0)


def test_physics_changes_attention_on_terrain() -> None:
    q, k, v = _qkv(1, 2, 64, 16)
    e = torch.linspace(0, 1, 64)[None]
    plain = F.scaled_dot_product_attention(q, k, v)
    assert (literal_elevation_attention(q, k, v, e, torch.tensor(3.0)) - plain).abs().max() > 1e-2


def test_patch_elevations_and_normalisation() -> None:
    field = torch.arange(16.0).reshape(1, 4, 4)
    means = patch_elevations(field, 2)
    assert means.tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert normalise_elevations(means)[0].tolist() == pytest.approx([0.0, 0.2, 0.8, 1.0])
    # A 5,000 m plateau with centimetre relief is not flat: it spans [0, 1].
    plateau = 5000.0 + 0.01 * torch.rand(1, 8, 8)
    norm = normalise_elevations(patch_elevations(plateau, 2))
    assert norm.min() == 0 and norm.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        patch_elevations(torch.zeros(4, 4), 2)


def _ill_conditioned_elevations(grid: tuple[int, int]) -> torch.Tensor:
    """Standardised elevation [3, H, W] as float32 inputs: 0.3 m of relief on 5,000 m, 0.3 m at -400 m,
    and 1 cm on 5,000 m (the digits a naive float32 average loses)."""
    from climax_deploy.schema import STANDARDISATION, STANDARDISATION_EPS

    mean, std = STANDARDISATION["elevation"]
    g = torch.Generator().manual_seed(0)
    relief = torch.rand(3, *grid, generator=g, dtype=torch.float64)
    metres = torch.stack([5000.0 + 0.3 * relief[0], -400.0 + 0.3 * relief[1], 5000.0 + 0.01 * relief[2]])
    return ((metres - mean) / (std + STANDARDISATION_EPS)).float()


def test_elevation_normalisation_is_well_conditioned() -> None:
    """float32 normalised elevations equal float64's (of the same float32 input) to 1e-6 of the [0, 1]
    scale, where averaging before subtracting an offset is off by up to 2.4e-3 (0.3 m on 5,000 m)."""
    field = _ill_conditioned_elevations((32, 64))
    truth = normalise_elevations(patch_elevations(field.double(), 2))
    got = normalise_elevations(patch_elevations(field, 2)).double()
    assert truth.amin(-1).eq(0).all() and truth.amax(-1).sub(1).abs().max() < 1e-12  # each spans [0, 1]
    assert (got - truth).abs().max() < 1e-6
    # The offset is exact algebra: in float64 the result equals the plain average's min-max.
    plain = normalise_elevations(F.avg_pool2d(field.double().unsqueeze(1), 2, 2).flatten(1))
    assert (plain - truth).abs().max() < 1e-9


def test_exported_graph_normalises_elevations_as_the_model(small_onnx: Path) -> None:
    """The ElevationAttention node's elevation input, read out of the ONNX with ONNX Runtime, is the
    model's normalised elevation: the same function, on ill-conditioned terrain too."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from climax_deploy.export.passes import elevation_nodes

    model = build_model("small", seed=0)
    cfg = model.config
    x = torch.randn(3, len(cfg.variables), *cfg.img_size, generator=torch.Generator().manual_seed(1))
    x[:, cfg.elevation_index] = _ill_conditioned_elevations(cfg.img_size)
    proto = onnx.load(str(small_onnx))
    name = elevation_nodes(proto)[0].input[3]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    _, got = session.run(None, {"x": x.numpy(), "lead_times": np.full(3, 24.0, dtype=np.float32)})
    expected = model.elevation_patches(x).numpy()
    truth = model.elevation_patches(x.double()).numpy()
    assert np.abs(got - expected).max() < 1e-6
    assert np.abs(got - truth).max() < 1e-6


def test_attention_module_contract() -> None:
    attn = ElevationAttention(64, 4)
    assert attn.num_heads == 4 and attn.elevation_barrier_strength.item() == 3.0
    assert isinstance(attn.qkv, torch.nn.Linear) and isinstance(attn.proj, torch.nn.Linear)
    x, e = torch.randn(2, 10, 64), torch.rand(2, 10)
    with torch.no_grad():
        a, b = attn(x, e, attention="literal"), attn(x, e, attention="fused")
    assert a.shape == (2, 10, 64)
    assert torch.allclose(a, b, atol=FP32_ATOL)
    with pytest.raises(ValueError, match="unknown attention"):
        attn(x, e, attention="flash")


def test_variable_aggregation_equals_multihead_attention() -> None:
    torch.manual_seed(0)
    agg = VariableAggregation(32, 4)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    mha.load_state_dict(agg.state_dict())
    tokens, query = torch.randn(2, 15, 6, 32), torch.randn(1, 1, 32)
    flat = tokens.permute(0, 2, 1, 3).reshape(12, 15, 32)
    expected, _ = mha(query.expand(12, 1, 32), flat, flat)
    with torch.no_grad():
        got = agg(query, tokens)
    assert torch.allclose(got, expected.reshape(2, 6, 32), atol=1e-6)


def test_model_switch_is_chosen_at_call_time(small_model: torch.nn.Module) -> None:
    x, lt = torch.randn(2, 15, 32, 64), torch.tensor([12.0, 96.0])
    with torch.no_grad():
        lit = small_model(x, lt, attention="literal")
        fused = small_model(x, lt, attention="fused")
    assert lit.shape == (2, 6, 32, 64)
    assert torch.allclose(lit, fused, atol=FP32_ATOL)


def test_full_preset_matches_the_seed() -> None:
    cfg = resolve_config("full")
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads) == ((128, 256), 2, 768, 8, 8)
    assert cfg.num_patches == 8192 and cfg.head_dim == 96 and cfg.elevation_index == 13
    assert cfg.outputs == ("pm25", "pm10", "so2", "no2", "co", "o3")


def test_seeded_init_is_reproducible() -> None:
    a, b, c = build_model("small", seed=1), build_model("small", seed=1), build_model("small", seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.head.weight, c.head.weight)


def test_config_files(tmp_path) -> None:
    (tmp_path / "d6.json").write_text(json.dumps({"depth": 6, "img_size": [16, 32], "embed_dim": 64, "num_heads": 4, "wind_scan": False}))
    (tmp_path / "d6.yaml").write_text("model:\n  depth: 6\n  img_size: [16, 32]\n  embed_dim: 64\n  num_heads: 4\n  wind_scan: false\n")
    for name in ("d6.json", "d6.yaml"):
        model = build_model(tmp_path / name)
        assert len(model.blocks) == 6 and model.patch_size == 2
    (tmp_path / "bad.json").write_text(json.dumps({"depht": 6}))
    with pytest.raises(BadInputError, match="depht"):
        build_model(tmp_path / "bad.json")
    with pytest.raises(BadInputError, match="divisible"):
        ModelConfig(img_size=(33, 64))
    with pytest.raises(BadInputError, match="unknown preset"):
        build_model("huge")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"depth": "two"}, r"depth: expected an integer >= 1, got 'two'"),
        ({"depth": 2.5}, r"depth: expected an integer >= 1, got 2.5"),
        ({"num_heads": 0}, r"num_heads: expected an integer >= 1, got 0"),
        ({"img_size": [32]}, r"img_size: expected \[height, width\].*got \[32\]"),
        ({"img_size": 32}, r"img_size: expected \[height, width\].*got 32"),
        ({"mlp_ratio": -1}, r"mlp_ratio: expected a number > 0, got -1"),
        ({"patch_size": True}, r"patch_size: expected an integer >= 1, got True"),
        ({"variables": "u,v"}, r"variables: expected a list of variable names, got 'u,v'"),
    ],
)
def test_bad_config_values_name_the_field(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInputError, match=message) as info:
        resolve_config(settings)
    assert "\n" not in str(info.value)


def test_invalid_yaml_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("model:\n  depth: [1,\n  num_heads: 4\n")
    with pytest.raises(BadInputError, match=r"bad.yaml is not valid YAML.*line") as info:
        resolve_config(tmp_path / "bad.yaml")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("bad.yaml", "model:\n  depth: [1,\n", "not valid YAML"),
        ("two.json", json.dumps({"depth": "two"}), "depth: expected an integer >= 1, got 'two'"),
        ("heads.yaml", "num_heads: 0\n", "num_heads: expected an integer >= 1, got 0"),
        ("grid.json", json.dumps({"img_size": [32]}), "img_size: expected [height, width]"),
        ("mlp.yaml", "mlp_ratio: -4\n", "mlp_ratio: expected a number > 0, got -4"),
    ],
)
def test_cli_config_mistakes_are_one_line(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    (tmp_path / name).write_text(text)
    from cli_run import run_main  # tests/ is on sys.path under pytest

    from climax_deploy.export.cli import main

    out = run_main("export-onnx", main, ["--config", name, "-q", "-o", "m.onnx"], tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and fragment in out.stderr, out.stderr
