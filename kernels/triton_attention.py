"""The fused elevation-attention kernel (Triton) and its PyTorch launcher.

Flash-style forward with O(N) extra memory: each program owns a tile of queries of one (batch,
head), streams the key/value tiles and keeps an online softmax. The physics mask
    mask[i, j] = max(sigmoid(-beta * (e_j - e_i)), 1e-6)
enters as its logarithm, a bias formed in registers from the per-token elevations (no N x N tensor):
    log2 mask = max(-(max(x, 0) + log2(1 + 2^-|x|)), log2 1e-6),   x = beta * log2(e) * (e_j - e_i)
so the kernel computes softmax(s + log mask), the exact bias form of the author's code's attention without
its +1e-8 (docs/model.md). The running maximum is taken over the biased scores: were it taken over
raw scores with the mask multiplied in afterwards, a row whose best-scoring keys sit on the 1e-6
floor would have every weight underflow when P is rounded to fp16/bf16 for the second matmul.

Argument order is (inputs..., integer scalars..., output) so the same kernel compiles ahead of time
for TensorRT's plugin ABI (see trt_plugin.py).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch
import triton.language as tl

from climax_deploy.errors import BadInputError
from climax_deploy.kernels.checks import TORCH_DTYPES, check_attention_inputs
from climax_deploy.kernels.tiling import LaunchConfig, launch_config
from climax_deploy.schema import MASK_FLOOR

_LOG2E = tl.constexpr(1.4426950408889634)
_LOG2_MASK_FLOOR = tl.constexpr(math.log2(MASK_FLOOR))  # the mask's floor as a base-2 bias

def elevation_attention_fwd(  # type: ignore[no-untyped-def]  # Triton reads annotations; tl.constexpr only
    Q, K, V, E, BETA,  # inputs: q/k/v [B, H, N, D], elevation [B, N], beta [] (any float dtype)
    seq_len, num_heads,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    stride_eb, stride_en,
    OUT,  # output [B, H, N, D], q's dtype
    HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    """One (query tile, batch x head) program; the head dim is tiled as D0 (+ D1) columns.

    UPCAST_DOT feeds tl.dot fp32 copies of 16-bit operands (values unchanged: a product of two
    bf16 numbers is exact in fp32, as on tensor cores). Only the interpreter needs it: Triton 3.9's
    interpreter multiplies bf16 operands' raw bits.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // num_heads).to(tl.int64)
    h = (pid_bh % num_heads).to(tl.int64)
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    o_base = OUT + b * stride_ob + h * stride_oh
    e_base = E + b * stride_eb

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    row_ok = offs_m < seq_len
    offs_d0 = tl.arange(0, D0)
    d0_ok = offs_d0 < HEAD_DIM  # all true unless the head dim is padded
    q0 = tl.load(
        q_base + offs_m[:, None] * stride_qn + offs_d0[None, :], mask=row_ok[:, None] & d0_ok[None, :], other=0.0
    )  # [BLOCK_M, D0]
    if UPCAST_DOT:
        q0 = q0.to(tl.float32)
    acc0 = tl.full([BLOCK_M, D0], 0.0, dtype=tl.float32)
    if D1 > 0:
        offs_d1 = D0 + tl.arange(0, D1)
        q1 = tl.load(q_base + offs_m[:, None] * stride_qn + offs_d1[None, :], mask=row_ok[:, None], other=0.0)
        if UPCAST_DOT:
            q1 = q1.to(tl.float32)
        acc1 = tl.full([BLOCK_M, D1], 0.0, dtype=tl.float32)

    beta_log2 = tl.load(BETA).to(tl.float32) * _LOG2E
    e_q = tl.load(e_base + offs_m * stride_en, mask=row_ok, other=0.0).to(tl.float32)  # [BLOCK_M]

    qk_scale = _LOG2E / tl.sqrt(HEAD_DIM * 1.0)  # scores in base 2
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of biased scores
    l_i = tl.full([BLOCK_M], 0.0, dtype=tl.float32)  # running sum of weights
    for start_n in range(0, seq_len, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        col_ok = offs_n < seq_len
        k0 = tl.load(
            k_base + offs_n[None, :] * stride_kn + offs_d0[:, None], mask=col_ok[None, :] & d0_ok[:, None], other=0.0
        )  # [D0, BLOCK_N]
        if UPCAST_DOT:
            k0 = k0.to(tl.float32)
        s = tl.dot(q0, k0, input_precision=DOT_PRECISION)  # [BLOCK_M, BLOCK_N], fp32
        if D1 > 0:
            k1 = tl.load(k_base + offs_n[None, :] * stride_kn + offs_d1[:, None], mask=col_ok[None, :], other=0.0)
            if UPCAST_DOT:
                k1 = k1.to(tl.float32)
            s += tl.dot(q1, k1, input_precision=DOT_PRECISION)

        # log2 of the mask: -log2(1 + 2^x) (a stable base-2 softplus), floored at log2 1e-6
        e_k = tl.load(e_base + offs_n * stride_en, mask=col_ok, other=0.0).to(tl.float32)  # [BLOCK_N]
        x = beta_log2 * (e_k[None, :] - e_q[:, None])  # [BLOCK_M, BLOCK_N]
        log2_mask = tl.maximum(-(tl.maximum(x, 0.0) + tl.log2(1.0 + tl.exp2(-tl.abs(x)))), _LOG2_MASK_FLOOR)
        s = tl.where(col_ok[None, :], s * qk_scale + log2_mask, float("-inf"))  # biased scores, base 2

        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])  # the row's largest weight is 1: nothing underflows in 16 bits
        l_i = l_i * alpha + tl.sum(p, 1)
        p_in = p.to(V.dtype.element_ty)  # the weights enter the second matmul in v's precision
        if UPCAST_DOT:
            p_in = p_in.to(tl.float32)
        v0 = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_d0[None, :], mask=col_ok[:, None] & d0_ok[None, :], other=0.0
        )  # [BLOCK_N, D0]
        if UPCAST_DOT:
            v0 = v0.to(tl.float32)
        acc0 = acc0 * alpha[:, None] + tl.dot(p_in, v0, input_precision=DOT_PRECISION)
        if D1 > 0:
            v1 = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d1[None, :], mask=col_ok[:, None], other=0.0)
            if UPCAST_DOT:
                v1 = v1.to(tl.float32)
            acc1 = acc1 * alpha[:, None] + tl.dot(p_in, v1, input_precision=DOT_PRECISION)
        m_i = m_new

    inv_l = 1.0 / l_i  # l_i >= 1: the row's largest biased score carries weight exp2(0)
    o_rows = o_base + offs_m[:, None] * stride_on
    tl.store(o_rows + offs_d0[None, :], (acc0 * inv_l[:, None]).to(OUT.dtype.element_ty), mask=row_ok[:, None] & d0_ok[None, :])
    if D1 > 0:
        tl.store(o_rows + offs_d1[None, :], (acc1 * inv_l[:, None]).to(OUT.dtype.element_ty), mask=row_ok[:, None])


def interpreting() -> bool:
    """Whether Triton's interpreter is on (TRITON_INTERPRET=1): kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@functools.cache
def compiled_kernel() -> Any:
    """The kernel as a Triton JITFunction (for CUDA launches and ahead-of-time compilation)."""
    from triton.runtime.jit import JITFunction

    return JITFunction(elevation_attention_fwd)


@functools.cache
def interpreted_kernel() -> Any:
    """The kernel under Triton's interpreter (CPU tensors, numpy semantics)."""
    from triton.runtime.interpreter import InterpretedFunction

    # Triton decides at import whether its own library functions (tl.sum, tl.max) are interpretable.
    if not isinstance(tl.sum, InterpretedFunction):
        raise BadInputError(
            "TRITON_INTERPRET=1 was set after triton was imported; set it before the first import of triton "
            "(e.g. in the environment of the process) to run the kernel on CPU tensors"
        )
    return InterpretedFunction(elevation_attention_fwd)


def elevation_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    elevation: torch.Tensor,
    beta: torch.Tensor,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """Fused physics attention: q, k, v [B, H, N, D], normalised elevation [B, N], beta [] -> [B, H, N, D].

    CUDA tensors run the compiled kernel; CPU tensors run it under Triton's interpreter, which must be
    switched on with TRITON_INTERPRET=1 (for fast CPU inference use torch.ops.climax.elevation_attention).
    """
    check_attention_inputs(q, k, v, elevation, beta)
    if q.dtype not in TORCH_DTYPES:
        raise BadInputError(f"the Triton kernel takes q/k/v of {list(TORCH_DTYPES)}, got {q.dtype}")
    on_cpu = q.device.type == "cpu"
    if on_cpu and not interpreting():
        raise BadInputError(
            "the Triton kernel got CPU tensors but TRITON_INTERPRET is not 1; set TRITON_INTERPRET=1 to run "
            "it under the interpreter, or call torch.ops.climax.elevation_attention for the CPU implementation"
        )
    if not on_cpu and q.device.type != "cuda":
        raise BadInputError(f"the Triton kernel runs on cuda (or cpu under the interpreter), got {q.device}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    B, H, N, D = q.shape
    cfg = launch_config(B, H, N, D, TORCH_DTYPES[q.dtype], interpret=on_cpu, block_m=block_m, block_n=block_n)
    out = torch.empty((B, H, N, D), dtype=q.dtype, device=q.device)  # [B, H, N, D], contiguous
    beta = beta.reshape(())
    if on_cpu:
        _launch(interpreted_kernel(), cfg, q, k, v, elevation, beta, out)
    else:
        with torch.cuda.device(q.device):
            _launch(compiled_kernel(), cfg, q, k, v, elevation, beta, out)
    return out


def _launch(
    kernel: Any,
    cfg: LaunchConfig,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    elevation: torch.Tensor,
    beta: torch.Tensor,
    out: torch.Tensor,
) -> None:
    _, H, N, _ = q.shape
    kernel[cfg.grid](
        q, k, v, elevation, beta,
        N, H,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        elevation.stride(0), elevation.stride(1),
        out,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        **cfg.constexprs(),
    )  # fmt: skip
