"""torch.ops.climax.elevation_attention: the exact blocked CPU path, its registration, and the model.

Tolerances: fp32 vs the float64 bias form atol 2e-5 / rtol 1e-5 (fp32 SDPA over <= 300 keys);
vs the author's code's literal form the same at beta <= 3, where its +1e-8 moves outputs by <= 2e-7 relative.
16-bit inputs are computed in fp32 on CPU, so they are compared with the output rounding only
(fp16 atol/rtol 2e-3, bf16 1.6e-2: about 4 units of roundoff).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from attention_cases import exact, inputs  # tests/ is on sys.path under pytest

import climax_deploy.model  # noqa: F401  (registers torch.ops.climax)
from climax_deploy.errors import BadInputError
from climax_deploy.model import build_model, ops
from climax_deploy.model.physics_attention import (
    literal_elevation_attention,
)

op = torch.ops.climax.elevation_attention


@pytest.mark.parametrize(
    ("b", "h", "n", "d", "beta", "kind"),
    [
        (1, 1, 1, 64, 3.0, "random"),
        (2, 2, 7, 96, 0.0, "ties"),
        (1, 4, 129, 128, 50.0, "random"),
        (2, 8, 300, 96, 3.0, "mixed"),
        (2, 3, 300, 64, 50.0, "ties"),
        (1, 2, 257, 96, 20.0, "flat"),
    ],
)
def test_cpu_op_matches_exact_form(b: int, h: int, n: int, d: int, beta: float, kind: str) -> None:
    q, k, v, e = inputs(b, h, n, d, kind=kind)
    out = op(q, k, v, e, torch.tensor(beta))
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.double(), exact(q, k, v, e, beta), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 3.0])
def test_cpu_op_matches_the_authors_literal_form(beta: float) -> None:
    q, k, v, e = inputs(2, 2, 300, 96, kind="mixed", seed=1)
    b = torch.tensor(beta)
    torch.testing.assert_close(op(q, k, v, e, b), literal_elevation_attention(q, k, v, e, b), atol=2e-5, rtol=1e-5)


def test_cpu_op_literal_gap_at_large_beta_is_the_renorm_epsilon() -> None:
    """beta = 50: the literal form's +1e-8 shifts rows whose keys are all uphill by up to 1e-8 / 1e-6."""
    q, k, v, e = inputs(1, 2, 129, 64, seed=2)
    b = torch.tensor(50.0)
    gap = (op(q, k, v, e, b) - literal_elevation_attention(q, k, v, e, b)).abs().max().item()
    assert gap < 1e-2 * v.abs().max().item()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_cpu_op_16bitinputs(dtype: torch.dtype, tol: float) -> None:
    q, k, v, e = inputs(1, 2, 70, 96, dtype=dtype, seed=3)
    out = op(q, k, v, e, torch.tensor(3.0))
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), exact(q, k, v, e, 3.0), atol=tol, rtol=tol)


def test_cpu_op_memory_is_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tensor of N x N: every attention call sees at most QUERY_BLOCK query rows."""
    seen: list[tuple[int, ...]] = []
    real = F.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(attn_mask.shape))
        return real(q, k, v, attn_mask=attn_mask)

    monkeypatch.setattr(ops.F, "scaled_dot_product_attention", spy)
    q, k, v, e = inputs(1, 2, 600, 64)
    out = op(q, k, v, e, torch.tensor(3.0))
    assert len(seen) == math.ceil(600 / ops.QUERY_BLOCK)
    assert all(s[-2] <= ops.QUERY_BLOCK and s[-1] == 600 for s in seen)
    torch.testing.assert_close(out.double(), exact(q, k, v, e, 3.0), atol=2e-5, rtol=1e-5)


def test_op_registration_fake_and_autograd() -> None:
    """opcheck: schema, fake (meta) implementation, autograd registration, torch.compile-ability."""
    q, k, v, e = inputs(1, 2, 20, 64, seed=4)
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), e.requires_grad_(), torch.tensor(3.0, requires_grad=True))
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_op_backward_matches_autograd_of_exact_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "QUERY_BLOCK", 8)  # several blocks in the recomputing backward
    q, k, v, e = (t.double().requires_grad_() for t in inputs(1, 2, 20, 4, seed=5))
    beta = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (q, k, v, e, beta))


def test_op_rejects_badinputs() -> None:
    q, k, v, e = inputs(1, 1, 8, 64)
    with pytest.raises(BadInputError, match=r"k must have q's shape"):
        op(q, k[:, :, :4], v, e, torch.tensor(3.0))
    with pytest.raises(BadInputError, match="beta must be a single number"):
        op(q, k, v, e, torch.ones(3))


def test_torch_export_sees_the_op() -> None:
    model = build_model("small", seed=0)
    cfg = model.config
    x = torch.randn(1, len(cfg.variables), *cfg.img_size)
    program = torch.export.export(model, (x, torch.tensor([24.0])))
    targets = [str(n.target) for n in program.graph.nodes]
    assert "climax.elevation_attention.default" in targets


def test_model_fused_mode_uses_op_and_matches_literal() -> None:
    """Parity of the reference model: fused (the op) vs the author's code's literal attention."""
    model = build_model("small", seed=0)
    cfg = model.config
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, len(cfg.variables), *cfg.img_size, generator=gen)
    x[1, cfg.elevation_index] = 0.0  # one mountain sample, one flat
    lead = torch.tensor([24.0, 48.0])
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fused = model(x, lead, attention="fused")
    calls = [e.key for e in prof.key_averages() if "climax::elevation_attention" in e.key]
    assert calls, "the fused mode did not call torch.ops.climax.elevation_attention"
    with torch.no_grad():
        literal = model(x, lead, attention="literal")
    torch.testing.assert_close(fused, literal, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_cuda_op_runs_the_triton_kernel() -> None:
    """On CUDA the op is the compiled Triton kernel; run in a fresh process so no interpreter mode leaks in."""
    code = (
        "import torch, climax_deploy.model, math\n"
        "from climax_deploy.model.physics_attention import elevation_bias\n"
        "for dt, tol in ((torch.float32, 2e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)):\n"
        "  for d in (64, 96, 128):\n"
        "    g = torch.Generator(device='cuda').manual_seed(0)\n"
        "    q, k, v = (torch.randn(2, 8, 300, d, device='cuda', generator=g).to(dt) for _ in range(3))\n"
        "    e = torch.rand(2, 300, device='cuda', generator=g); e = (e - e.amin(1, keepdim=True)) / (e.amax(1, keepdim=True) - e.amin(1, keepdim=True))\n"
        "    out = torch.ops.climax.elevation_attention(q, k, v, e, torch.tensor(50.0, device='cuda'))\n"
        "    qd, kd, vd, ed = (t.double() for t in (q, k, v, e))\n"
        "    ref = torch.softmax(qd @ kd.transpose(-2, -1) / math.sqrt(d) + elevation_bias(ed, torch.tensor(50.0, dtype=torch.float64, device='cuda')).unsqueeze(1), -1) @ vd\n"
        "    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-4000:]
