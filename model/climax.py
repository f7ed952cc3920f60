"""The patch-level physics-guided ClimaX: [B, 15, H, W] + lead times -> [B, 6, H, W]."""

from __future__ import annotations

import torch
from torch import nn

from climax_deploy.model.config import ModelConfig
from climax_deploy.model.layers import (
    Block,
    ParallelPatchEmbed,
    PhysicsGuidedBlock,
    VariableAggregation,
    folded_embed_aggregate,
    sincos_1d,
    sincos_2d,
)
from climax_deploy.model.physics_attention import AttentionImpl, normalise_elevations, patch_elevations
from climax_deploy.model.wind_scan import WindScan


class ClimaX(nn.Module):
    """The author's ClimaX, with physics-guided attention in the first block only.

    The implementation is chosen per call, never stored at construction time, so one module serves
    as reference, fast path and export source: `literal` computes the author's code's formulas as written;
    `fused` uses the bias-form physics attention and folds the patch embedding into the variable
    aggregation (exact algebra, ~0.29 TFLOP less at full size); `onnx` is `fused` with the attention
    of every block and the wind-following scan's token order emitted as climax custom nodes for
    torch.onnx.export.

    With `config.wind_scan`, the tokens are reordered by the wind right after the embedding and never
    put back: position embedding, the physics attention's row-major elevations and the head all see
    the reordered tokens, as in the author's training code (model/wind_scan.py).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        V, D, L = len(c.variables), c.embed_dim, c.num_patches
        self.patch_size = c.patch_size
        self.token_embeds = ParallelPatchEmbed(V, D, c.patch_size)
        self.var_embed = nn.Parameter(sincos_1d(D, torch.arange(V)).unsqueeze(0))  # [1, V, D]
        self.var_query = nn.Parameter(torch.zeros(1, 1, D))
        self.var_agg = VariableAggregation(D, c.num_heads)
        self.pos_embed = nn.Parameter(sincos_2d(D, *c.grid).unsqueeze(0))  # [1, L, D]
        self.lead_time_embed = nn.Linear(1, D)
        # Lead times arrive in hours (up to ~100): torch's default init (weights ~ U(-1, 1) for one input)
        # would make the lead-time vector dwarf every field, so random-weight models would barely react
        # to terrain. A small init keeps the terrain signal measurable in parity checks.
        nn.init.normal_(self.lead_time_embed.weight, std=0.01)
        nn.init.zeros_(self.lead_time_embed.bias)
        self.blocks = nn.ModuleList(
            [PhysicsGuidedBlock(D, c.num_heads, c.mlp_ratio, c.beta_init)]
            + [Block(D, c.num_heads, c.mlp_ratio) for _ in range(c.depth - 1)]
        )
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, V * c.patch_size**2)
        self.register_buffer("target_indices", torch.tensor(c.output_indices), persistent=False)
        self.wind_scan = WindScan(c.grid) if c.wind_scan else None
        assert self.pos_embed.shape[1] == L

    def elevation_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised per-patch elevations [B, N] from the elevation channel of x [B, V, H, W]."""
        return normalise_elevations(patch_elevations(x[:, self.config.elevation_index], self.patch_size))

    def forward(self, x: torch.Tensor, lead_times: torch.Tensor, attention: AttentionImpl = "fused") -> torch.Tensor:
        """x [B, V, H, W] standardised fields, lead_times [B] in hours -> [B, len(outputs), H, W]."""
        elevation = self.elevation_patches(x)  # [B, N]
        if attention == "literal":  # the author's computation, step by step
            tokens = self.token_embeds(x) + self.var_embed.unsqueeze(2)  # [B, V, L, D]
            h = self.var_agg(self.var_query, tokens)  # [B, L, D]
        else:  # the same function with the embedding folded into the aggregation
            h = folded_embed_aggregate(x, self.token_embeds, self.var_embed, self.var_query, self.var_agg)
        if self.wind_scan is not None:  # per-token embedding and aggregation commute with the reordering
            h = self.wind_scan(h, x, onnx=attention == "onnx")
        h = h + self.pos_embed
        h = h + self.lead_time_embed(lead_times.to(h.dtype).unsqueeze(-1)).unsqueeze(1)
        h = self.blocks[0](h, elevation, attention)
        for block in self.blocks[1:]:
            h = block(h, attention)
        h = self.head(self.norm(h))  # [B, L, V*p*p]
        return self.unpatchify(h)[:, self.target_indices]

    def unpatchify(self, h: torch.Tensor) -> torch.Tensor:
        """[B, L, V*p*p] -> [B, V, H, W]."""
        B = h.shape[0]
        p = self.patch_size
        rows, cols = self.config.grid
        V = len(self.config.variables)
        h = h.reshape(B, rows, cols, p, p, V)
        return h.permute(0, 5, 1, 3, 2, 4).reshape(B, V, rows * p, cols * p)
