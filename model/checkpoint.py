"""Load the author's checkpoints (Lightning .ckpt or plain state dicts) into the reference model."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.model.config import ModelConfig

LIGHTNING_PREFIXES = ("model.climax.", "climax.", "net.", "model.")
IGNORED_KEYS = ("model.target_indices", "china_mask", "target_indices")
_PER_VAR_EMBED = re.compile(r"^token_embeds\.(\d+)\.proj\.(weight|bias)$")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state dict with the `model.climax.` prefix removed, hyper-parameters if stored)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot read as a PyTorch checkpoint ({exc})") from exc
    if not isinstance(raw, Mapping):
        raise ModelFileError(f"{path}: expected a state dict or Lightning checkpoint, got {type(raw).__name__}")
    hparams = dict(raw.get("hyper_parameters") or {})
    state = raw.get("state_dict", raw)
    return strip_prefixes(state), hparams


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Drop the wrapper prefix (`model.climax.` in the author's Lightning module) and unrelated buffers."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k not in IGNORED_KEYS}
    for prefix in LIGHTNING_PREFIXES:
        if any(k.startswith(prefix + "pos_embed") for k in tensors):
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def to_parallel_patch_embed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert per-variable `token_embeds.{i}.proj.*` keys to the parallel `proj_weights/biases` layout."""
    per_var: dict[int, dict[str, torch.Tensor]] = {}
    rest = {}
    for key, value in state.items():
        m = _PER_VAR_EMBED.match(key)
        if m:
            per_var.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            rest[key] = value
    if not per_var:
        return rest
    indices = sorted(per_var)
    if indices != list(range(len(indices))) or any(len(per_var[i]) != 2 for i in indices):
        raise ModelFileError(f"per-variable patch embeddings are incomplete: found indices {indices}")
    rest["token_embeds.proj_weights"] = torch.stack([per_var[i]["weight"] for i in indices])
    rest["token_embeds.proj_biases"] = torch.stack([per_var[i]["bias"] for i in indices])
    return rest


def infer_config(state: Mapping[str, torch.Tensor], hparams: Mapping[str, Any], base: ModelConfig) -> ModelConfig:
    """Depth, width, patch size and heads where the file shows them; everything else from `base`."""
    updates: dict[str, Any] = {}
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    if blocks:
        updates["depth"] = max(blocks) + 1
    if "pos_embed" in state:
        updates["embed_dim"] = int(state["pos_embed"].shape[-1])
    if "token_embeds.proj_weights" in state:
        updates["patch_size"] = int(state["token_embeds.proj_weights"].shape[-1])
    # Heads and grid shape are not visible in the weights; take them from stored hyper-parameters.
    net = hparams.get("net", hparams)
    if isinstance(net, Mapping):
        for key in ("num_heads", "img_size", "mlp_ratio"):
            if key in net:
                updates[key] = tuple(net[key]) if key == "img_size" else net[key]
    config = dataclasses.replace(base, **updates)
    if "pos_embed" in state and state["pos_embed"].shape[1] != config.num_patches:
        raise ModelFileError(
            f"checkpoint has {state['pos_embed'].shape[1]} patches but the config's grid "
            f"{config.img_size} with patch {config.patch_size} gives {config.num_patches}; pass a matching --config"
        )
    return config


def load_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Strict load with an error that names missing and unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches {_few(mismatched)}")
        raise ModelFileError("checkpoint does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _few(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items)} in all)' if len(items) > limit else ''}]"
