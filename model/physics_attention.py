"""Patch-level physics-guided attention: the literal form of the author's code beside an exact fused form.

Semantics (docs/model.md): for per-patch elevations e normalised to [0, 1] per sample,
    mask[b, i, j] = clamp(sigmoid(-beta * (e[b, j] - e[b, i])), 1e-6, 1)      (i query, j key)
    out = renorm(softmax(q k^T / sqrt(d)) * mask) @ v,   renorm(a) = a / (a.sum(-1) + 1e-8)
Since softmax(S) * M renormalised == softmax(S + log M) and log sigmoid(-x) == -softplus(x), the same
function is standard attention with an additive bias built from one scalar per token:
    bias[b, i, j] = max(-softplus(beta * (e[b, j] - e[b, i])), ln 1e-6)
The two differ only by the +1e-8 of the renormalisation (relative effect <= 1e-8 / sigmoid(-beta)).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from climax_deploy.schema import (
    CUSTOM_DOMAIN,
    CUSTOM_OP,
    CUSTOM_OP_VERSION,
    FLAT_RANGE,
    MASK_FLOOR,
    RENORM_EPS,
    SELF_ATTENTION_OP,
)

AttentionImpl = Literal["literal", "fused", "onnx"]
ATTENTION_IMPLS: tuple[str, ...] = ("literal", "fused", "onnx")
LOG_MASK_FLOOR = math.log(MASK_FLOOR)


def patch_elevations(field: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Mean elevation of each patch above the sample's lowest pixel: field [B, H, W] -> [B, N], row-major.

    The per-sample minimum is subtracted before the averaging. Min-max normalisation ignores any
    offset, so in exact arithmetic `e` is unchanged; in floating point it keeps the digits of a small
    relief on a high base: pixels near the minimum subtract exactly (Sterbenz), so a 0.3 m relief
    on a 5,000 m plateau is averaged as 0..0.3 m, not as 5,000.0..5,000.3 m rounded to the
    precision's step at 5,000 m.
    """
    if field.dim() != 3:
        raise ValueError(f"patch_elevations expects a [B, H, W] field, got shape {tuple(field.shape)}")
    lowest = field.amin(dim=(1, 2), keepdim=True)  # [B, 1, 1]
    pooled = F.avg_pool2d((field - lowest).unsqueeze(1), kernel_size=patch_size, stride=patch_size)  # [B, 1, h, w]
    return pooled.flatten(1)


def normalise_elevations(elevations: torch.Tensor) -> torch.Tensor:
    """Min-max normalise [B, N] per sample to [0, 1]; a range <= 1e-6 counts as 1 (flat -> zeros)."""
    lo = elevations.amin(dim=-1, keepdim=True)
    span = elevations.amax(dim=-1, keepdim=True) - lo
    span = torch.where(span <= FLAT_RANGE, torch.ones_like(span), span)
    return (elevations - lo) / span


def elevation_bias(elevation: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Additive attention bias [B, N, N] (query i, key j) from normalised elevations [B, N]."""
    rise = elevation.unsqueeze(1) - elevation.unsqueeze(2)  # [B, N, N]: e_j - e_i
    return torch.clamp_min(-F.softplus(beta * rise), LOG_MASK_FLOOR)


def literal_elevation_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, elevation: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """The author's code's formulation, materialising the [B, N, N] mask and [B, H, N, N] attention."""
    scale = q.shape[-1] ** -0.5
    rise = elevation.unsqueeze(1) - elevation.unsqueeze(2)  # [B, N, N]
    mask = torch.clamp(torch.sigmoid(-beta * rise), MASK_FLOOR, 1.0)
    attn = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)  # [B, H, N, N]
    attn = attn * mask.unsqueeze(1)
    attn = attn / (attn.sum(dim=-1, keepdim=True) + RENORM_EPS)
    return attn @ v  # [B, H, N, Dh]


def fused_elevation_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, elevation: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """The exact bias form in O(N) memory: torch.ops.climax.elevation_attention (Triton on CUDA)."""
    return torch.ops.climax.elevation_attention(q, k, v, elevation, beta)  # [B, H, N, Dh]


def onnx_elevation_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, elevation: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """One `climax::ElevationAttention` node for torch.onnx.export; its body is attached afterwards."""
    return torch.onnx.ops.symbolic(
        f"{CUSTOM_DOMAIN}::{CUSTOM_OP}",
        (q, k, v, elevation, beta),
        dtype=q.dtype,
        shape=q.shape,
        version=CUSTOM_OP_VERSION,
    )


def onnx_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One `climax::SelfAttention` node (plain attention of blocks 1..) for torch.onnx.export.

    A node of our own, like ElevationAttention, so export passes can choose its body per target:
    head by head for ONNX Runtime on CPU, one fused attention for TensorRT.
    """
    return torch.onnx.ops.symbolic(
        f"{CUSTOM_DOMAIN}::{SELF_ATTENTION_OP}", (q, k, v), dtype=q.dtype, shape=q.shape, version=CUSTOM_OP_VERSION
    )


_IMPLS = {
    "literal": literal_elevation_attention,
    "fused": fused_elevation_attention,
    "onnx": onnx_elevation_attention,
}


def elevation_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    elevation: torch.Tensor,
    beta: torch.Tensor,
    impl: AttentionImpl = "fused",
) -> torch.Tensor:
    """Physics attention on q, k, v [B, H, N, Dh] and normalised elevations [B, N] -> [B, H, N, Dh]."""
    try:
        fn = _IMPLS[impl]
    except KeyError:
        raise ValueError(f"unknown attention implementation {impl!r}; expected one of {ATTENTION_IMPLS}") from None
    return fn(q, k, v, elevation, beta)


class ElevationAttention(nn.Module):
    """Multi-head self-attention whose scores are damped from valleys towards higher keys."""

    def __init__(self, dim: int, num_heads: int, beta_init: float = 3.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.elevation_barrier_strength = nn.Parameter(torch.tensor(float(beta_init)))

    def forward(
        self, x: torch.Tensor, elevation_patches: torch.Tensor, attention: AttentionImpl = "fused"
    ) -> torch.Tensor:
        """x [B, N, C], normalised elevations [B, N] -> [B, N, C]."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, H, N, Dh]
        out = elevation_attention(q, k, v, elevation_patches, self.elevation_barrier_strength, attention)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))
