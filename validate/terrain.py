"""Terrains in metres for parity checks: flat plains, a high flat plateau, a mountain massif, a DEM file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from climax_deploy.errors import BadInputError

BUILTIN_TERRAINS = ("mountain", "flat", "plateau")
FLAT_HEIGHT_M = 50.0
PLATEAU_HEIGHT_M = 4500.0


def make_terrain(name: str, grid: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A built-in terrain [H, W] in metres (float64)."""
    h, w = grid
    if name == "flat":
        return np.full((h, w), FLAT_HEIGHT_M)
    if name == "plateau":
        return np.full((h, w), PLATEAU_HEIGHT_M)
    if name == "mountain":
        return mountain_massif(grid, seed)
    raise BadInputError(f"unknown terrain {name!r}; expected one of {BUILTIN_TERRAINS} or a .npy file")


def mountain_massif(grid: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A massif whose peaks rise above 4 km, cut by deep valleys, beside low plains.

    A broad dome (the plateau body) carries several sharp peaks; a ridged pattern carves valleys
    a few kilometres deep into it, so neighbouring patches differ by up to thousands of metres.
    """
    rng = np.random.default_rng(seed)
    h, w = grid
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing="ij")
    dome = np.exp(-(((yy - 0.45) / 0.28) ** 2 + ((xx - 0.35) / 0.22) ** 2))
    peaks = np.zeros_like(dome)
    for _ in range(6):
        cy, cx = rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.5)
        r = rng.uniform(0.03, 0.08)
        peaks += np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / r**2))
    phase = rng.uniform(0, 2 * np.pi)
    ridges = np.abs(np.sin(9 * np.pi * (xx + 0.3 * yy) + phase))  # 0 on valley floors
    terrain = 300.0 + 3800.0 * dome * (0.35 + 0.65 * ridges) + 2500.0 * peaks * dome
    return np.clip(terrain, 0.0, None)


def load_terrain_file(path: str | Path, grid: tuple[int, int]) -> np.ndarray:
    """A user's DEM: a .npy array [H, W] in metres on the model grid, finite everywhere."""
    path = Path(path)
    if path.suffix != ".npy":
        raise BadInputError(f"terrain file {path} must be a .npy array of metres, shape {grid}")
    if not path.is_file():
        raise BadInputError(f"terrain file {path} does not exist")
    try:
        dem = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BadInputError(f"terrain file {path} is not a readable .npy array ({exc})") from exc
    if dem.ndim != 2 or tuple(dem.shape) != tuple(grid):
        raise BadInputError(f"terrain file {path} has shape {dem.shape}, expected {tuple(grid)} (H x W metres)")
    if dem.dtype.kind not in "iuf":
        raise BadInputError(f"terrain file {path} has dtype {dem.dtype}, expected numbers (metres)")
    bad = int((~np.isfinite(dem)).sum()) if dem.dtype.kind == "f" else 0
    if bad:
        raise BadInputError(f"terrain file {path} has {bad} NaN or Inf values; fill them before checking parity")
    return dem.astype(np.float64)


def resolve_terrain(spec: str, grid: tuple[int, int], seed: int = 0) -> tuple[str, np.ndarray]:
    """'mountain' | 'flat' | 'plateau' | path.npy -> (label, terrain in metres)."""
    if spec in BUILTIN_TERRAINS:
        return spec, make_terrain(spec, grid, seed)
    return Path(spec).stem, load_terrain_file(spec, grid)
