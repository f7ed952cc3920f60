"""Input checks shared by the Triton launcher and the PyTorch op (torch only, no Triton)."""

from __future__ import annotations

import torch

from climax_deploy.errors import BadInputError

# q/k/v dtypes the kernel handles, with Triton's names for them.
TORCH_DTYPES: dict[torch.dtype, str] = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def check_attention_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, elevation: torch.Tensor, beta: torch.Tensor) -> None:
    """Raise BadInputError unless q/k/v [B, H, N, D] agree, elevation is [B, N] and beta one number."""
    if q.dim() != 4:
        raise BadInputError(f"q must be [B, H, N, D], got shape {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise BadInputError(f"{name} must have q's shape {tuple(q.shape)}, got {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise BadInputError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
    if not q.is_floating_point():
        raise BadInputError(f"q/k/v must be floating tensors, got {q.dtype}")
    B, _, N, _ = q.shape
    if tuple(elevation.shape) != (B, N):
        raise BadInputError(f"elevation must be [B, N] = {(B, N)}, got {tuple(elevation.shape)}")
    if beta.numel() != 1:
        raise BadInputError(f"beta must be a single number (0-d tensor), got shape {tuple(beta.shape)}")
    for name, t in (("elevation", elevation), ("beta", beta)):
        if not t.is_floating_point():
            raise BadInputError(f"{name} must be a floating tensor, got {t.dtype}")
    devices = {t.device for t in (q, k, v, elevation, beta)}
    if len(devices) != 1:
        raise BadInputError(f"all inputs must be on one device, got {sorted(map(str, devices))}")
