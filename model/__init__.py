"""The PyTorch reference of the patch-level physics-guided ClimaX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from climax_deploy.model import ops  # noqa: F401  (registers torch.ops.climax)
from climax_deploy.model.climax import ClimaX
from climax_deploy.model.config import PRESETS, ModelConfig, load_config_file, resolve_config
from climax_deploy.model.physics_attention import (
    ATTENTION_IMPLS,
    ElevationAttention,
    elevation_attention,
    elevation_bias,
    fused_elevation_attention,
    literal_elevation_attention,
    normalise_elevations,
    patch_elevations,
)

__all__ = [
    "ATTENTION_IMPLS",
    "ClimaX",
    "ElevationAttention",
    "ModelConfig",
    "PRESETS",
    "build_model",
    "elevation_attention",
    "elevation_bias",
    "fused_elevation_attention",
    "literal_elevation_attention",
    "load_config_file",
    "normalise_elevations",
    "patch_elevations",
    "resolve_config",
]


def build_model(
    preset_or_config: str | Path | ModelConfig | dict[str, Any] = "full",
    seed: int = 0,
    checkpoint: str | Path | None = None,
) -> ClimaX:
    """Build the reference in eval mode: seeded random weights, or a checkpoint's.

    With a checkpoint, depth, width and patch size come from the file (heads and grid from its
    hyper-parameters when stored, else from the preset/config).
    """
    from climax_deploy.model.checkpoint import infer_config, load_state, read_checkpoint, to_parallel_patch_embed

    config = resolve_config(preset_or_config)
    state = None
    if checkpoint is not None:
        raw, hparams = read_checkpoint(checkpoint)
        state = to_parallel_patch_embed(raw)
        config = infer_config(state, hparams, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClimaX(config)
    if state is not None:
        load_state(model, state)
    return model.eval()
