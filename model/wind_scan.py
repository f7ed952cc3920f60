"""The author's wind-following patch scan: patch tokens reordered by the wind, right after the embedding.

What the author's training code computes (docs/model.md, "Wind-following patch scan"), per sample:
- the image is cut into 32 x 32 pixel blocks; block k = 32 r + c takes rows [r (H // 32), (r + 1) (H // 32))
  and columns [c (W // 32), ...) of the STANDARDISED u and v inputs (channels 0 and 1);
- its wind angle is the float32 atan2 of the magnitude-weighted mean wind, 0 where the block is calm;
- the tokens it reorders are the RUN of ppr = (rows // 32) (cols // 32) consecutive row-major tokens
  [k ppr, (k + 1) ppr), local index i read as (i // rw, i % rw) with rw = cols // 32;
- each local patch is projected on the wind in float64, nr = lr / (rows - 1) 2 - 1 and
  nc = lc / (cols - 1) 2 - 1 over the WHOLE patch grid, p = nc cos a + (-nr) sin a; a stable sort of p
  gives the new order (token i of the run is the old token order[i]). Nothing is ever un-permuted.

Two exact implementations:
- `WindScan.token_order` (the reference): the angle through the C library's float32 atan2 (what
  torch.atan2 on the author's 0-d tensors calls on the CPU) and Python's math on each angle, as the
  author's loop does;
- `ScanTable` (what exported graphs compute, in float32 only, so TensorRT runs it too): the order is a
  piecewise-constant function of the float32 angle; its breakpoints are found here, once per grid, by
  evaluating the float64 projection exactly as above at every float32 angle where it can change. The
  graph compares the angle with them (exact in float32) and gathers the order from a table.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from climax_deploy.errors import BadInputError
from climax_deploy.schema import CUSTOM_DOMAIN, CUSTOM_OP_VERSION, WIND_SCAN_OP

REGIONS = 32  # regions per side: 32 x 32 = 1024 regions
WIND_CHANNELS = (0, 1)  # the author's u_var_idx, v_var_idx: the first two input channels
# Float32 neighbours examined around every candidate breakpoint: float64 rounding can move a tie by
# far less than one float32 step, so +-3 steps hold every change of order near a candidate.
_NEIGHBOURS = 3


def scan_grid_problem(grid: tuple[int, int]) -> str | None:
    """Why the author's scan has no defined output on this patch grid, or None."""
    rows, cols = grid
    if rows % REGIONS or cols % REGIONS:
        return (
            f"the wind-following scan needs patch rows and columns that are multiples of {REGIONS}, got a "
            f"{rows} x {cols} patch grid: the author's code leaves the tokens outside {REGIONS} x {REGIONS} "
            "regions uninitialised (torch.empty_like), so such a model has no defined output"
        )
    return None


def local_coordinates(grid: tuple[int, int], norm: tuple[int, int] | None = None) -> list[tuple[float, float]]:
    """(nr, nc) of each local patch of a region, in local order, as the author's float64 Python computes them."""
    rows, cols = grid
    nh, nw = norm or grid
    rh, rw = rows // REGIONS, cols // REGIONS
    return [((i // rw / (nh - 1)) * 2 - 1, (i % rw / (nw - 1)) * 2 - 1) for i in range(rh * rw)]


def order_for_angle(angle: float, coords: tuple[tuple[float, float], ...]) -> tuple[int, ...]:
    """The author's order of one region: stable sort by nc cos(a) + (-nr) sin(a) in float64."""
    wind_x, wind_y = math.cos(angle), math.sin(angle)
    projections = [nc * wind_x + (-nr) * wind_y for nr, nc in coords]
    return tuple(sorted(range(len(coords)), key=projections.__getitem__))


@dataclass(frozen=True)
class ScanTable:
    """The order of a region as a function of its float32 angle a: orders[sum(a >= breakpoints)]."""

    breakpoints: np.ndarray  # float32 [K], ascending
    orders: np.ndarray  # int64 [K + 1, ppr]

    def lookup(self, angles: np.ndarray) -> np.ndarray:
        """Orders [..., ppr] of float32 angles [...] (what the exported graph computes)."""
        index = (angles[..., None] >= self.breakpoints).sum(-1)
        return self.orders[index]


def _f32_steps(value: float, steps: int) -> list[float]:
    """The float32 nearest `value` and `steps` float32 neighbours each side, as floats."""
    centre = np.float32(value)
    below, above = [centre], [centre]
    for _ in range(steps):
        below.append(np.nextafter(below[-1], np.float32(-np.inf)))
        above.append(np.nextafter(above[-1], np.float32(np.inf)))
    return [float(v) for v in sorted(set(below + above))]


def candidate_angles(coords: tuple[tuple[float, float], ...]) -> set[float]:
    """Angles near which the order can change.

    - geometry: patches i, j tie where (nc_j - nc_i) cos a = (nr_j - nr_i) sin a;
    - the axes (0, +-pi/2, +-pi): exact ties, and float32 pi or pi/2 sit just past the true values;
    - near 0 only, float64 rounding decides: for |a| < 1e-8, cos a = 1 and sin a = a exactly, so
      same-column patches tie or not as fl(nc + fl(-nr a)) rounds; the order flips at each rounding
      boundary (m + 1/2) ulp(nc) / |nr| until the gaps exceed two ulps.
    """
    angles = {0.0, math.pi, -math.pi, math.pi / 2, -math.pi / 2}
    for i, (nr_i, nc_i) in enumerate(coords):
        for nr_j, nc_j in coords[i + 1 :]:
            theta = math.atan2(nc_j - nc_i, nr_j - nr_i)
            angles.update((theta, theta - math.pi if theta > 0 else theta + math.pi))
    row_gaps = [abs(a[0] - b[0]) for a in coords for b in coords if a[0] != b[0]]
    min_gap = min(row_gaps) if row_gaps else 1.0
    for nr, nc in coords:
        if nr == 0:
            continue
        for direction in (-math.inf, math.inf):
            spacing = abs(math.nextafter(nc, direction) - nc)
            for m in range(int(4 * abs(nr) / min_gap) + 4):
                a = (m + 0.5) * spacing / abs(nr)
                angles.update((a, -a))
    return angles


@functools.lru_cache(maxsize=8)
def build_table(coords: tuple[tuple[float, float], ...]) -> ScanTable:
    """The exact breakpoint table of `order_for_angle` over float32 angles."""
    order = functools.lru_cache(maxsize=None)(lambda a: order_for_angle(a, coords))
    lowest = float(np.float32(-math.pi))  # atan2's float32 range is [-pi_f32, pi_f32]
    breakpoints = set()
    for candidate in candidate_angles(coords):
        window = [v for v in _f32_steps(candidate, _NEIGHBOURS + 1) if lowest <= v <= -lowest]
        for prev, value in itertools.pairwise(window):
            if order(prev) != order(value):
                breakpoints.add(value)
    points = sorted(breakpoints)
    orders = [order(lowest)] + [order(p) for p in points]
    return ScanTable(np.asarray(points, dtype=np.float32), np.asarray(orders, dtype=np.int64))


def region_blocks(field: torch.Tensor) -> torch.Tensor:
    """[B, H, W] -> [B, 32, 32, (H // 32) (W // 32)]: each region's pixel block, contiguous and row-major,
    as the author's per-region slices are once multiplied (so float32 sums add in the author's order)."""
    B, H, W = field.shape
    bh, bw = H // REGIONS, W // REGIONS
    blocks = field[:, : REGIONS * bh, : REGIONS * bw].float().reshape(B, REGIONS, bh, REGIONS, bw)
    return blocks.permute(0, 1, 3, 2, 4).reshape(B, REGIONS, REGIONS, bh * bw)


def region_mean_winds(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude-weighted mean wind (u, v) per region [B, 32, 32] in float32; (0, 0) where calm."""
    ub, vb = region_blocks(u), region_blocks(v)
    magnitude = torch.sqrt(ub**2 + vb**2)
    total = magnitude.sum(-1)
    blowing = total > 0  # NaN winds count as calm too, as in the author's `if sum > 0`
    mean_u = torch.where(blowing, (ub * magnitude).sum(-1) / total, 0.0)
    mean_v = torch.where(blowing, (vb * magnitude).sum(-1) / total, 0.0)
    return mean_u, mean_v


class WindScan(nn.Module):
    """The scan of one model: which channels carry the wind, and the grid it reorders."""

    def __init__(self, grid: tuple[int, int], wind_channels: tuple[int, int] = WIND_CHANNELS) -> None:
        super().__init__()
        problem = scan_grid_problem(grid)
        if problem:
            raise BadInputError(problem)
        self.grid = grid
        self.wind_channels = wind_channels
        self.region_shape = (grid[0] // REGIONS, grid[1] // REGIONS)

    @property
    def patches_per_region(self) -> int:
        return self.region_shape[0] * self.region_shape[1]

    def coordinates(self) -> tuple[tuple[float, float], ...]:
        """(nr, nc) of the local patches: the whole grid's sizes normalise them."""
        return tuple(local_coordinates(self.grid))

    def table(self) -> ScanTable:
        return build_table(self.coordinates())

    def winds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The standardised (u, v) fields [B, H, W] the scan reads from x [B, V, H, W]."""
        return x[:, self.wind_channels[0]], x[:, self.wind_channels[1]]

    def region_orders(self, angles: np.ndarray) -> np.ndarray:
        """Local orders [..., ppr] of float32 angles [...], each computed as the author's loop does."""
        coords = self.coordinates()
        unique, inverse = np.unique(angles.astype(np.float32), return_inverse=True)
        orders = np.array([order_for_angle(float(a), coords) for a in unique], dtype=np.int64)
        return orders[inverse.reshape(angles.shape)]

    def angles(self, x: torch.Tensor) -> np.ndarray:
        """Region angles [B, 1024] (float32): the C library's atan2f, what torch.atan2 runs on 0-d CPU tensors."""
        mean_u, mean_v = region_mean_winds(*self.winds(x))
        return np.arctan2(mean_v.detach().cpu().numpy(), mean_u.detach().cpu().numpy()).reshape(len(x), -1)

    def token_order(self, x: torch.Tensor) -> torch.Tensor:
        """Token order [B, L]: token i of the scanned sequence is row-major token order[b, i]."""
        local = self.region_orders(self.angles(x))  # [B, 1024, ppr]
        ppr = self.patches_per_region
        offsets = np.arange(REGIONS * REGIONS, dtype=np.int64)[:, None] * ppr
        return torch.from_numpy((local + offsets).reshape(len(x), -1)).to(x.device)

    def onnx_token_order(self, x: torch.Tensor) -> torch.Tensor:
        """One `climax::WindScanOrder` node for torch.onnx.export; export/wind_scan_function.py gives its body."""
        u, v = self.winds(x)
        return torch.onnx.ops.symbolic(
            f"{CUSTOM_DOMAIN}::{WIND_SCAN_OP}",
            (u, v),
            dtype=torch.int64,
            shape=(x.shape[0], self.grid[0] * self.grid[1]),
            version=CUSTOM_OP_VERSION,
        )

    def forward(self, h: torch.Tensor, x: torch.Tensor, onnx: bool = False) -> torch.Tensor:
        """Tokens h [B, L, D] in the order the wind of x [B, V, H, W] gives them."""
        order = self.onnx_token_order(x) if onnx else self.token_order(x)  # [B, L]
        return permute_tokens(h, order)


def permute_tokens(h: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """h [B, L, D] -> h[b, order[b]]: one flat Gather (exports as Gather on axis 0)."""
    B, L, D = h.shape
    flat = order + torch.arange(B, device=h.device, dtype=order.dtype).unsqueeze(1) * L
    return h.reshape(B * L, D).index_select(0, flat.reshape(-1)).reshape(B, L, D)


__all__ = [
    "REGIONS",
    "ScanTable",
    "WIND_CHANNELS",
    "WindScan",
    "build_table",
    "local_coordinates",
    "order_for_angle",
    "permute_tokens",
    "region_mean_winds",
    "scan_grid_problem",
]
