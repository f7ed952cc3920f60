"""Hand-written kernels: fused physics (elevation) attention with O(N) memory.

`elevation_attention(q, k, v, elevation, beta)` runs the Triton kernel on CUDA tensors, and on CPU
tensors under Triton's interpreter (TRITON_INTERPRET=1), which is how CI tests the kernel itself.
torch and Triton are imported on first use (climax_deploy.optional), with an install hint when absent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from climax_deploy.optional import TORCH, TRITON

if TYPE_CHECKING:
    import torch

__all__ = ["elevation_attention"]


def elevation_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, elevation: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """Fused physics attention: q, k, v [B, H, N, D], normalised elevation [B, N], beta [] -> [B, H, N, D]."""
    TORCH.load()
    TRITON.load()
    from climax_deploy.kernels import triton_attention

    return triton_attention.elevation_attention(q, k, v, elevation, beta)
