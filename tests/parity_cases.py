"""Shared by the parity sensitivity tests: physics and scan mutations, benign DEMs, and caches for
exports (torch.onnx traces) and for check-parity's PyTorch reference runs.

A mutation is a bug in the physics that an export can carry while staying self-consistent: the
mutated model is exported as a whole, so the artifact computes the mutated model exactly (checked
against the mutated PyTorch model), and only a comparison with the true model can catch it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from climax_deploy.artifacts import sha256_file
from climax_deploy.model import ClimaX, build_model, normalise_elevations, patch_elevations
from climax_deploy.model.config import PRESETS
from climax_deploy.model.physics_attention import elevation_attention
from climax_deploy.model.wind_scan import ScanTable, WindScan, local_coordinates
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


# The scan's mutations. Each keeps config.wind_scan (the truth check-parity rebuilds from the manifest
# scans) and changes what the model, and so its export, computes.
def _drop_scan(model: ClimaX) -> None:
    model.wind_scan = None  # tokens stay row-major; the export has no WindScanOrder node


class _ReversedScan(WindScan):
    """Every region's order reversed: in the exact path and in the table the export embeds."""

    def region_orders(self, angles: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(super().region_orders(angles)[..., ::-1])

    def table(self) -> ScanTable:
        table = super().table()
        return ScanTable(table.breakpoints, np.ascontiguousarray(table.orders[:, ::-1]))


class _RegionNormScan(WindScan):
    """The projection over the region's own sizes, not the whole grid's (table and exact path alike)."""

    def coordinates(self) -> tuple[tuple[float, float], ...]:
        return tuple(local_coordinates(self.grid, norm=self.region_shape))


def _rescan(cls: type[WindScan]) -> Callable[[ClimaX], None]:
    def apply(model: ClimaX) -> None:
        assert model.wind_scan is not None
        model.wind_scan = cls(model.wind_scan.grid, model.wind_scan.wind_channels)

    return apply


def _swap_winds(model: ClimaX) -> None:
    assert model.wind_scan is not None
    model.wind_scan = WindScan(model.wind_scan.grid, (1, 0))  # u read as v and v as u


# The models mutations run on: presets, and one test config. On a square patch grid with square
# regions (small-wind: 64 x 64 patches, 2 x 2 per region) the projection over the region's sizes
# scales both axes alike and gives the whole grid's orders at every float32 angle but for float64
# rounding (0 of 20000 random angles differ), so that mutation runs where the two normalisations differ
# as on the author's grid (128 x 256 patches, 4 x 8 per region): small-wind widened to 64 x 96 patches
# (2 x 3 per region; 17 % of angles give another order), and made narrower and shallower (width 32,
# 2 heads, one block) so that its 6144 patches cost less than small-wind's 4096.
CONFIGS: dict[str, Any] = {
    "small": "small",
    "small-wind": "small-wind",
    "small-wind-wide": {**PRESETS["small-wind"].to_dict(), "img_size": [128, 192], "embed_dim": 32, "depth": 1,
                        "num_heads": 2, "name": "small-wind-wide"},
}


@dataclass(frozen=True)
class Mutation:
    """A bug applied to a freshly built model of CONFIGS[model] (seed 0)."""

    apply: Callable[[ClimaX], None]
    model: str = "small"  # a key of CONFIGS
    trace: str | None = None  # the TraceCache tag of an unmutated model whose trace it shares, or its own


MUTATIONS: dict[str, Mutation] = {
    # Beta is one named initializer feeding the ElevationAttention node: these reuse the unmutated
    # trace with beta replaced (the graph a fresh trace writes).
    "beta negated": Mutation(lambda m: _set_beta(m, -1.0), trace="small"),
    "beta zeroed": Mutation(lambda m: _set_beta(m, 0.0), trace="small"),
    "beta halved": Mutation(lambda m: _set_beta(m, 0.5), trace="small"),
    "mask transposed": Mutation(lambda m: _elevations(m, _transposed_mask)),
    "elevation from another channel": Mutation(lambda m: _elevations(m, _other_channel)),
    "patches column-major": Mutation(lambda m: _elevations(m, _column_major)),
    "renormalisation dropped": Mutation(_drop_renormalisation),
    "scan dropped": Mutation(_drop_scan, "small-wind"),
    # The traced graph holds one WindScanOrder node on x[:, 0], x[:, 1]; its function body (the table)
    # is attached after tracing, so these two share the unmutated small-wind trace.
    "scan order reversed": Mutation(_rescan(_ReversedScan), "small-wind", trace="small-wind"),
    "u and v swapped": Mutation(_swap_winds, "small-wind"),
    "projection over the region's own sizes": Mutation(_rescan(_RegionNormScan), "small-wind-wide"),
}
SCAN_MUTATIONS = {name for name, m in MUTATIONS.items() if m.model != "small"}


def build(config: str, seed: int = 0) -> ClimaX:
    """The unmutated model of a CONFIGS key."""
    return build_model(CONFIGS[config], seed=seed).eval()


def mutated_model(name: str, seed: int = 0) -> ClimaX:
    model = build(MUTATIONS[name].model, seed)
    MUTATIONS[name].apply(model)
    return model.eval()


def provenance(config: str, seed: int = 0) -> object:
    """The Provenance check-parity rebuilds the truth from (the manifest also records the config)."""
    from climax_deploy.export import Provenance

    return Provenance(preset=config if config in PRESETS else None, seed=seed)


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
    """export_onnx of `model` through the shared trace cache (tag: which models share a trace)."""
    from climax_deploy.export import ExportOptions, export_onnx

    with TRACES.active(tag):
        export_onnx(model, path, ExportOptions(precision=precision), provenance)  # type: ignore[arg-type]
    return path


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(repr((part.shape, part.dtype.str)).encode() + part.tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


class ReferenceCache:
    """Reuses check-parity's PyTorch reference runs (float64 truth, PyTorch in the artifact's precision)
    across parity runs whose truth is the same model (the manifest's config, seed and checkpoint) on
    the same inputs: every mutation of one model, fp32 and fp16 of one artifact. A run computes what
    `reference_outputs` computes; only a repeated one is looked up. `with REFERENCES.active(): ...`."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        import climax_deploy.validate.parity as parity
        from climax_deploy.validate.reference import run_reference

        real = parity.reference_outputs

        def cached(
            manifest: Any, cases: Mapping[str, np.ndarray], lead: np.ndarray, precision: str, checkpoint: Any = None,
            device: str = "cpu",
        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
            record = manifest.model
            override = checkpoint and sha256_file(checkpoint)
            weights = (record.seed, record.checkpoint and record.checkpoint.sha256, override)
            inputs = [(label, np.ascontiguousarray(x, dtype=np.float32)) for label, x in cases.items()]
            key = _digest(json.dumps(record.config, sort_keys=True, default=str), weights, np.asarray(lead),
                          *(part for item in inputs for part in item))  # fmt: skip
            missing = [p for p in (precision, "fp64") if (key, p) not in self._runs]
            if missing:
                model = parity.reference_from_manifest(manifest, checkpoint)
                for p in missing:
                    self._runs[key, p] = run_reference(model, cases, lead, p, device)
            return self._runs[key, "fp64"], self._runs[key, precision]

        parity.reference_outputs = cached  # type: ignore[assignment]
        try:
            yield
        finally:
            parity.reference_outputs = real


REFERENCES = ReferenceCache()  # one per test session
