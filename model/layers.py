"""The ClimaX building blocks around the physics attention: embeddings, aggregation, blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from climax_deploy.model.physics_attention import AttentionImpl, ElevationAttention, onnx_self_attention


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Fixed sine/cosine features [len(positions), dim] (dim even)."""
    freqs = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D position features [rows * cols, dim], row-major, half the channels per axis."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, r.flatten()), sincos_1d(dim // 2, c.flatten())], dim=1)


class ParallelPatchEmbed(nn.Module):
    """One p x p patch embedding per variable, run as a single grouped convolution.

    Parameters use the author's parallel layout: proj_weights [V, D, 1, p, p], proj_biases [V, D].
    """

    def __init__(self, num_vars: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.num_vars, self.dim, self.patch_size = num_vars, dim, patch_size
        self.proj_weights = nn.Parameter(torch.empty(num_vars, dim, 1, patch_size, patch_size))
        self.proj_biases = nn.Parameter(torch.empty(num_vars, dim))
        fan_in = patch_size * patch_size
        bound = fan_in**-0.5
        nn.init.uniform_(self.proj_weights, -bound, bound)
        nn.init.uniform_(self.proj_biases, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, V, H, W] -> tokens [B, V, L, D]."""
        B, V, _, _ = x.shape
        p = self.patch_size
        weight = self.proj_weights.reshape(V * self.dim, 1, p, p)
        out = F.conv2d(x, weight, self.proj_biases.reshape(-1), stride=p, groups=V)  # [B, V*D, h, w]
        return out.reshape(B, V, self.dim, -1).transpose(2, 3)


class VariableAggregation(nn.Module):
    """Cross-attention from one learnable query to the V variable tokens of each patch.

    Same parameters and names as torch.nn.MultiheadAttention (in_proj_weight [3D, D], in_proj_bias,
    out_proj), written out so the export sees plain matmuls.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """query [1, 1, D], tokens [B, V, L, D] -> [B, L, D]."""
        B, V, L, D = tokens.shape
        H, Dh = self.num_heads, D // self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = F.linear(query.reshape(1, D), w_q, b_q).reshape(H, Dh)
        k = F.linear(tokens, w_k, b_k).reshape(B, V, L, H, Dh)
        v = F.linear(tokens, w_v, b_v).reshape(B, V, L, H, Dh)
        scores = (k * q).sum(-1) * Dh**-0.5  # [B, V, L, H]
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)  # over the V variables
        mixed = (weights * v).sum(dim=1)  # [B, L, H, Dh]
        return self.out_proj(mixed.reshape(B, L, D))


class Attention(nn.Module):
    """Plain multi-head self-attention (timm naming: qkv, proj)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attention: AttentionImpl = "fused") -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, H, N, Dh]
        if attention == "onnx":
            out = onnx_self_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """timm's Mlp naming (fc1, fc2) with GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (blocks 1..depth-1)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, attention: AttentionImpl = "fused") -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attention)
        return x + self.mlp(self.norm2(x))


class PhysicsGuidedBlock(nn.Module):
    """Block 0: the same pre-norm block with elevation attention; mlp is Sequential(fc, GELU, fc)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, beta_init: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ElevationAttention(dim, num_heads, beta_init)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self, x: torch.Tensor, elevation_patches: torch.Tensor, attention: AttentionImpl = "fused"
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), elevation_patches, attention)
        return x + self.mlp(self.norm2(x))


def folded_embed_aggregate(
    x: torch.Tensor,
    embed: ParallelPatchEmbed,
    var_embed: torch.Tensor,
    var_query: torch.Tensor,
    agg: VariableAggregation,
) -> torch.Tensor:
    """Patch embedding + variable aggregation, folded algebraically; equals `agg(var_query, embed(x) + var_embed)`.

    Each variable token is affine in its p*p pixels: t_v = P_v x_v + c_v. The single query means keys
    only enter through u_h = W_k,h^T q_h, so scores are x_v . (P_v^T u_h) + c_v . u_h (the key bias
    is the same for every variable and cancels in the softmax). Softmax weights sum to 1, so values
    mix before projection: out_h = sum_v w_vh (W_v,h P_v x_v + W_v,h c_v) + b_v,h. The [B, V, L, D]
    tokens and the two D x D projections per token never exist. Exact in real arithmetic.
    """
    B, V, _, _ = x.shape
    p, D, H = embed.patch_size, embed.dim, agg.num_heads
    Dh, P = D // H, p * p
    rows, cols = x.shape[2] // p, x.shape[3] // p
    L = rows * cols
    # [B, V, H, W] -> pixels of each patch [V, B*L, P], row-major patches, (row, col) inside a patch
    patches = x.reshape(B, V, rows, p, cols, p).permute(1, 0, 2, 4, 3, 5).reshape(V, B * L, P)
    w_pe = embed.proj_weights.reshape(V, D, P)  # P_v
    c = embed.proj_biases + var_embed.reshape(V, D)  # c_v, [V, D]
    w_q, w_k, w_v = agg.in_proj_weight.chunk(3)
    b_q, _, b_v = agg.in_proj_bias.chunk(3)
    q = F.linear(var_query.reshape(1, D), w_q, b_q).reshape(H, 1, Dh)
    u = (q @ w_k.reshape(H, Dh, D)).reshape(H, D) * Dh**-0.5  # [H, D], scale folded in
    score_w = w_pe.transpose(1, 2) @ u.t()  # [V, P, H]
    score_c = c @ u.t()  # [V, H]
    scores = patches @ score_w + score_c.unsqueeze(1)  # [V, B*L, H]
    weights = torch.softmax(scores, dim=0)  # over variables
    # values: W_v,h P_v -> [V, P, D] and W_v,h c_v -> [V, D]
    value_w = (w_v @ w_pe).transpose(1, 2)  # [V, P, D]
    value_c = c @ w_v.t()  # [V, D]
    # sum_v w_vh (x_v @ value_w[v] + value_c[v]) per head: stack pixels and a ones column, mix over v
    pix = torch.cat([patches, torch.ones_like(patches[..., :1])], dim=-1)  # [V, B*L, P+1]
    mixed_in = (weights.unsqueeze(-1) * pix.unsqueeze(2)).permute(1, 2, 0, 3)  # [B*L, H, V, P+1]
    value_all = torch.cat([value_w, value_c.unsqueeze(1)], dim=1)  # [V, P+1, D]
    value_heads = value_all.reshape(V * (P + 1), H, Dh).permute(1, 0, 2)  # [H, V*(P+1), Dh]
    mixed = mixed_in.reshape(B * L, H, V * (P + 1)).transpose(0, 1) @ value_heads  # [H, B*L, Dh]
    mixed = mixed.transpose(0, 1).reshape(B, L, D) + b_v  # [B, L, D]
    return agg.out_proj(mixed)
