"""`torch.ops.climax.elevation_attention`: the physics attention as one PyTorch operator.

CUDA runs the fused Triton kernel (climax_deploy.kernels); every other device runs an exact
implementation that walks over query blocks, so extra memory is O(block x N), never O(N^2). A fake
implementation lets torch.export and the ONNX exporter trace through the op, and a recomputing
backward makes it differentiable. Registered when `climax_deploy.model` is imported.

Semantics (docs/model.md): softmax(q k^T / sqrt(D) + max(-softplus(beta (e_j - e_i)), ln 1e-6)) v,
the exact bias form of the author's code's mask-and-renormalise attention.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from climax_deploy.errors import ClimaxDeployError
from climax_deploy.kernels.checks import TORCH_DTYPES, check_attention_inputs
from climax_deploy.schema import MASK_FLOOR

logger = logging.getLogger(__name__)

OP_NAME = "climax::elevation_attention"
# Query rows per block on the blocked path: the bias block is B x 256 x N fp32 (8 MiB at N = 8192).
QUERY_BLOCK = 256
_LOG_MASK_FLOOR = math.log(MASK_FLOOR)
_warned_fallback = False


def _bias_rows(elevation: torch.Tensor, rows: slice, beta: torch.Tensor) -> torch.Tensor:
    """Bias rows [B, 1, rows, N] (query i in `rows`, key j): max(-softplus(beta (e_j - e_i)), ln 1e-6)."""
    rise = elevation.unsqueeze(1) - elevation[:, rows].unsqueeze(2)  # [B, rows, N]: e_j - e_i
    return torch.clamp_min(-F.softplus(beta * rise), _LOG_MASK_FLOOR).unsqueeze(1)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """16-bit inputs are computed in fp32 off-GPU (no fast 16-bit math there, and it is exact)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def blocked_elevation_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    elevation: torch.Tensor,
    beta: torch.Tensor,
    block: int = QUERY_BLOCK,
) -> torch.Tensor:
    """Exact physics attention over query blocks with torch SDPA: O(block x N) extra memory."""
    check_attention_inputs(q, k, v, elevation, beta)
    ct = _compute_dtype(q.dtype)
    q, k, v = q.to(ct), k.to(ct), v.to(ct)
    e = elevation.to(ct)
    b = beta.reshape(()).to(ct)
    N = q.shape[2]
    out = torch.empty(q.shape, dtype=ct, device=q.device)  # [B, H, N, D]
    for start in range(0, N, block):
        rows = slice(start, min(start + block, N))
        bias = _bias_rows(e, rows, b)  # [B, 1, rows, N]
        out[:, :, rows] = F.scaled_dot_product_attention(q[:, :, rows], k, v, attn_mask=bias)
    return out


def _fused_or_blocked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, elevation: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """CUDA: the Triton kernel when Triton is installed and the dtype fits, else the blocked path."""
    global _warned_fallback
    if q.dtype in TORCH_DTYPES:
        try:
            from climax_deploy.kernels import triton_attention
        except ImportError as exc:
            if not _warned_fallback:
                logger.warning("Triton unavailable (%s): fused attention falls back to the blocked PyTorch path", exc)
                _warned_fallback = True
        else:
            return triton_attention.elevation_attention(q, k, v, elevation, beta)
    return blocked_elevation_attention(q, k, v, elevation, beta).to(q.dtype)


@torch.library.custom_op(OP_NAME, mutates_args=())
def elevation_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, elevation: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """Physics attention: q, k, v [B, H, N, D], normalised elevation [B, N], beta [] -> [B, H, N, D] in q's dtype."""
    return blocked_elevation_attention(q, k, v, elevation, beta).to(q.dtype)


elevation_attention.register_kernel("cuda")(_fused_or_blocked)


@elevation_attention.register_fake
def _fake(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, elevation: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ClimaxDeployError(f"{OP_NAME}: q, k, v must share one [B, H, N, D] shape, got {q.shape}, {k.shape}, {v.shape}")
    return q.new_empty(q.shape)  # contiguous, q's dtype


def _setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """Recompute each query block with autograd and accumulate: memory stays O(block x N)."""
    q, k, v, elevation, beta = ctx.saved_tensors
    needs = ctx.needs_input_grad
    ct = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    kk, vv, ee, bb = (t.detach().to(ct).requires_grad_() for t in (k, v, elevation, beta.reshape(())))
    grad_q = torch.zeros(q.shape, dtype=ct, device=q.device)
    grads = [torch.zeros_like(t) for t in (kk, vv, ee, bb)]
    scale = q.shape[-1] ** -0.5
    N = q.shape[2]
    for start in range(0, N, QUERY_BLOCK):
        rows = slice(start, min(start + QUERY_BLOCK, N))
        with torch.enable_grad():
            qb = q[:, :, rows].detach().to(ct).requires_grad_()
            logits = (qb @ kk.transpose(-2, -1)) * scale + _bias_rows(ee, rows, bb)  # [B, H, rows, N]
            out_b = torch.softmax(logits, dim=-1) @ vv
            got = torch.autograd.grad(out_b, (qb, kk, vv, ee, bb), grad_out[:, :, rows].to(ct))
        grad_q[:, :, rows] = got[0]
        for acc, g in zip(grads, got[1:]):
            acc += g
    result = (grad_q, *grads)
    originals = (q, k, v, elevation, beta)
    return tuple(
        g.to(t.dtype).reshape(t.shape) if need else None for g, t, need in zip(result, originals, needs)
    )


elevation_attention.register_autograd(_backward, setup_context=_setup_context)
