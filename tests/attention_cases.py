"""Inputs and the float64 reference shared by the kernel and CPU-op tests of the physics attention."""

from __future__ import annotations

import math

import torch

from climax_deploy.model.physics_attention import elevation_bias, normalise_elevations


def terrain(kind: str, batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Normalised elevations [B, N]: random, with ties, flat, or one terrain per sample ("mixed")."""
    if kind == "flat":
        return torch.zeros(batch, n)
    e = torch.rand(batch, n, generator=gen)
    if kind == "ties":
        e = torch.round(e * 3) / 3  # four levels: many equal elevations
    if kind == "mixed" and batch > 1:
        e[1] = 0.0  # sample 0 mountainous, sample 1 flat
        e[0] = torch.linspace(0, 1, n)[torch.randperm(n, generator=gen)]
    return normalise_elevations(e)


def inputs(
    b: int, h: int, n: int, d: int, dtype: torch.dtype = torch.float32, kind: str = "random", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, H, N, D] ~ N(0, 1) in `dtype` and normalised elevations [B, N], all seeded."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=gen).to(dtype) for _ in range(3))
    return q, k, v, terrain(kind, b, n, gen)


def exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, beta: float) -> torch.Tensor:
    """The bias form in float64: softmax(q k^T / sqrt(D) + max(-softplus(beta (e_j - e_i)), ln 1e-6)) v."""
    qd, kd, vd, ed = (t.double() for t in (q, k, v, e))
    scores = qd @ kd.transpose(-2, -1) / math.sqrt(q.shape[-1])
    bias = elevation_bias(ed, torch.tensor(beta, dtype=torch.float64)).unsqueeze(1)
    return torch.softmax(scores + bias, dim=-1) @ vd
