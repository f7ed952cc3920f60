"""Loading the author's checkpoints: Lightning .ckpt, plain state dicts, both patch-embedding layouts."""

from __future__ import annotations

import pytest
import torch

from climax_deploy.errors import ModelFileError
from climax_deploy.model import build_model


def _author_state(model: torch.nn.Module, per_variable: bool) -> dict[str, torch.Tensor]:
    """The model's weights renamed the way the author's Lightning module stores them."""
    state = {}
    for key, value in model.state_dict().items():
        if per_variable and key == "token_embeds.proj_weights":
            for i, w in enumerate(value):
                state[f"model.climax.token_embeds.{i}.proj.weight"] = w.clone()
            continue
        if per_variable and key == "token_embeds.proj_biases":
            for i, b in enumerate(value):
                state[f"model.climax.token_embeds.{i}.proj.bias"] = b.clone()
            continue
        state[f"model.climax.{key}"] = value.clone()
    state["model.target_indices"] = torch.tensor([12, 5, 6, 7, 8, 9])
    state["china_mask"] = torch.ones(32, 64)
    return state


@pytest.mark.parametrize("per_variable", [False, True])
def test_lightning_checkpoint_round_trip(tmp_path, per_variable: bool) -> None:
    source = build_model("small", seed=7)
    with torch.no_grad():
        source.blocks[0].attn.elevation_barrier_strength.fill_(4.5)
    ckpt = tmp_path / "author.ckpt"
    torch.save({"state_dict": _author_state(source, per_variable), "hyper_parameters": {"net": {"num_heads": 4}},
                "epoch": 3}, ckpt)  # fmt: skip
    loaded = build_model("small", seed=0, checkpoint=ckpt)
    x, lt = torch.randn(1, 15, 32, 64), torch.tensor([24.0])
    with torch.no_grad():
        assert torch.equal(loaded(x, lt), source(x, lt))
    assert loaded.blocks[0].attn.elevation_barrier_strength.item() == 4.5


def test_plain_state_dict_infers_depth_and_width(tmp_path) -> None:
    source = build_model({"img_size": [32, 64], "embed_dim": 64, "depth": 3, "num_heads": 4})
    path = tmp_path / "plain.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model("small", checkpoint=path)  # small says width 128, depth 2: the file wins
    assert len(loaded.blocks) == 3 and loaded.config.embed_dim == 64


def test_mismatch_names_missing_and_unexpected_keys(tmp_path) -> None:
    state = build_model("small").state_dict()
    del state["head.weight"]
    state["blocks.0.attn.extra"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=r"missing keys \[head.weight\].*unexpected keys \[blocks.0.attn.extra\]"):
        build_model("small", checkpoint=path)


def test_not_a_checkpoint(tmp_path) -> None:
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="cannot read"):
        build_model("small", checkpoint=path)
