"""The PyTorch reference of the patch-level physics-guided ClimaX."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from climax_deploy.model import ops  # noqa: F401  (registers torch.ops.climax)
from climax_deploy.model.climax import ClimaX
from climax_deploy.model.config import PRESETS, ModelConfig, config_from_hparams, load_config_file, resolve_config
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
    preset_or_config: str | Path | ModelConfig | dict[str, Any] | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    hparams: str | Path | Mapping[str, Any] | None = None,
) -> ClimaX:
    """Build the reference in eval mode: seeded random weights, or a checkpoint's.

    Without a checkpoint: `preset_or_config` (default `full`), with the architecture of `hparams` (the
    author's config layout: `config.model`/`config.data`) applied on top when given.

    With a checkpoint, depth, width, patch size and MLP ratio come from its weights; heads, grid and the
    variable list from hyper-parameters: `hparams` (a file such as the run's hparams.yaml, or a mapping),
    else those stored in the checkpoint, else an hparams.yaml beside it (or in the version folder above
    its `checkpoints/` folder). What they do not state comes from `preset_or_config`. The rule for the
    heads, which no weight shows: when no hyper-parameters give them, they are taken from
    `preset_or_config` only when it is passed explicitly (`build_model("full", checkpoint=...)` assumes
    the full preset's 8 heads); left at its default (None), the checkpoint is refused with a one-line
    BadInputError, never loaded with a silently assumed head count.
    """
    from climax_deploy.model.checkpoint import load_checkpoint, load_state, read_hparams_file

    base = resolve_config(preset_or_config) if preset_or_config is not None else None
    state = None
    if checkpoint is not None:
        config, state = load_checkpoint(checkpoint, base, hparams)
    elif hparams is not None:
        stated = dict(hparams) if isinstance(hparams, Mapping) else read_hparams_file(hparams)
        config = config_from_hparams(
            stated, "the given hparams" if isinstance(hparams, Mapping) else str(hparams), base
        )
    else:
        config = base if base is not None else PRESETS["full"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClimaX(config)
    if state is not None:
        load_state(model, state)
    return model.eval()
