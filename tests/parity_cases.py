"""Shared by the parity sensitivity tests: physics mutations, benign DEMs and a trace cache for exports.

A mutation is a bug in the physics that an export can carry while staying self-consistent: the
mutated model is exported as a whole, so the artifact computes the mutated model exactly (checked
against the mutated PyTorch model), and only a comparison with the true model can catch it.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from climax_deploy.model import ClimaX, build_model, normalise_elevations, patch_elevations
from climax_deploy.model.physics_attention import elevation_attention
from climax_deploy.schema import MASK_FLOOR

BETA_NAME = "blocks.0.attn.elevation_barrier_strength"


def _set_beta(model: ClimaX, scale: float) -> None:
    with torch.no_grad():
        model.blocks[0].attn.elevation_barrier_strength.mul_(scale)


def _elevations(model: ClimaX, transform: Callable[[ClimaX, torch.Tensor], torch.Tensor]) -> None:
    model.elevation_patches = types.MethodType(transform, model)  # type: ignore[method-assign]


def _transposed_mask(self: ClimaX, x: torch.Tensor) -> torch.Tensor:
    # bias(e_j - e_i) transposed is bias(e_i - e_j) = bias((1 - e_j) - (1 - e_i)): the mask's query and
    # key swapped (valleys damped towards lower keys), fed to the unchanged attention node.
    return 1.0 - ClimaX.elevation_patches(self, x)


def _other_channel(self: ClimaX, x: torch.Tensor) -> torch.Tensor:
    # off by one: the channel after elevation (population) taken as the elevation
    return normalise_elevations(patch_elevations(x[:, self.config.elevation_index + 1], self.patch_size))


def _column_major(self: ClimaX, x: torch.Tensor) -> torch.Tensor:
    field = x[:, self.config.elevation_index]
    pooled = F.avg_pool2d(field.unsqueeze(1), self.patch_size, self.patch_size)  # [B, 1, h, w]
    return normalise_elevations(pooled.transpose(-2, -1).flatten(1))  # patches listed column by column


def _drop_renormalisation(model: ClimaX) -> None:
    """Block 0 returns (softmax * mask) @ v without dividing by the row sums: the renormalised output
    (the ElevationAttention node) times each row's sum S_i = sum_j softmax_ij mask_ij."""
    attn = model.blocks[0].attn

    def forward(x: torch.Tensor, elevation: torch.Tensor, attention: str = "fused") -> torch.Tensor:
        B, N, C = x.shape
        qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, H, N, Dh]
        beta = attn.elevation_barrier_strength
        out = elevation_attention(q, k, v, elevation, beta, attention)  # type: ignore[arg-type]
        probs = torch.softmax((q @ k.transpose(-2, -1)) * attn.head_dim**-0.5, dim=-1)  # [B, H, N, N]
        mask = torch.clamp(torch.sigmoid(-beta * (elevation.unsqueeze(1) - elevation.unsqueeze(2))), MASK_FLOOR, 1.0)
        out = out * (probs * mask.unsqueeze(1)).sum(-1, keepdim=True)
        return attn.proj(out.transpose(1, 2).reshape(B, N, C))

    attn.forward = forward  # type: ignore[method-assign]


MUTATIONS: dict[str, Callable[[ClimaX], None]] = {
    "beta negated": lambda m: _set_beta(m, -1.0),
    "beta zeroed": lambda m: _set_beta(m, 0.0),
    "beta halved": lambda m: _set_beta(m, 0.5),
    "mask transposed": lambda m: _elevations(m, _transposed_mask),
    "elevation from another channel": lambda m: _elevations(m, _other_channel),
    "patches column-major": lambda m: _elevations(m, _column_major),
    "renormalisation dropped": _drop_renormalisation,
}
# Mutations that change only beta reuse the unmutated trace with beta replaced (beta is one named
# initializer feeding the ElevationAttention node, so this is the graph a fresh trace writes).
BETA_ONLY = {"beta negated", "beta zeroed", "beta halved"}


def mutated_model(name: str, preset: str = "small", seed: int = 0) -> ClimaX:
    model = build_model(preset, seed=seed)
    MUTATIONS[name](model)
    return model.eval()


def benign_dems(grid: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """DEMs in metres the built-in terrains don't cover, ill-conditioned ones included."""
    h, w = grid
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    smooth = np.sin(2 * np.pi * (1.5 * xx + yy)) * np.cos(3 * np.pi * yy)  # [-1, 1]
    cliff = np.where(xx < 0.5, 0.0, 3000.0)
    spike = np.full(grid, 100.0)
    spike[h // 3, w // 4] = 8000.0
    return {
        "near_flat": 50.0 + 2e-4 * rng.standard_normal(grid),  # +-0.2 mm: under the 1e-6 (~2 mm) flat threshold
        "high_plateau": 5000.0 + 20.0 * smooth,  # 5 km, 40 m of undulation
        "tiny_relief": 5000.0 + 0.15 * (smooth + 1.0),  # 5 km with 0.3 m of relief
        "below_sea_level": -430.0 + 600.0 * (xx**2 + (yy - 0.5) ** 2),  # a basin 430 m below sea level
        "cliff": cliff,  # 3 km step between neighbouring columns
        "spike": spike,  # one 8 km pixel on a 100 m plain: min-max set by one patch
        "tilted": 3000.0 * xx,  # a plane rising west to east
        "rough": 2000.0 * rng.random(grid),  # white noise, 0-2 km between neighbours
    }


def write_dems(directory: Path, grid: tuple[int, int]) -> list[str]:
    """The benign DEMs as .npy files; their paths (check-parity's --terrain FILE.npy)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dem in benign_dems(grid).items():
        path = directory / f"{name}.npy"
        np.save(path, dem)
        paths.append(str(path))
    return paths


class TraceCache:
    """Reuses torch.onnx traces across exports: fp16 exports of a traced model, and models that differ
    from a traced one in beta only. `with cache.active(tag): export_onnx(...)`."""

    def __init__(self) -> None:
        self._traces: dict[tuple[str, object, int], bytes] = {}

    @contextlib.contextmanager
    def active(self, tag: str) -> Iterator[None]:
        import climax_deploy.export.onnx_export as onnx_export

        real = onnx_export.trace_to_onnx

        def cached(model: ClimaX, options: onnx_export.ExportOptions) -> onnx.ModelProto:
            key = (tag, options.batch, options.opset)
            if key not in self._traces:
                self._traces[key] = real(model, options).SerializeToString()
            proto = onnx.ModelProto.FromString(self._traces[key])
            beta = float(model.blocks[0].attn.elevation_barrier_strength.detach())
            (init,) = [t for t in proto.graph.initializer if t.name == f"model.{BETA_NAME}"]
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(beta, dtype=np.float32), init.name))
            return proto

        onnx_export.trace_to_onnx = cached  # type: ignore[assignment]
        try:
            yield
        finally:
            onnx_export.trace_to_onnx = real


TRACES = TraceCache()  # one per test session, shared by the test modules that export


def export_small(
    path: Path, precision: str, tag: str, model: ClimaX, provenance: object
) -> Path:
    """export_onnx of `model` (small preset) through the shared trace cache."""
    from climax_deploy.export import ExportOptions, export_onnx

    with TRACES.active(tag):
        export_onnx(model, path, ExportOptions(precision=precision), provenance)  # type: ignore[arg-type]
    return path
