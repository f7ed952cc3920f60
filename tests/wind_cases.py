"""Standardised wind fields for the wind-following scan's tests: random, smooth, and its edge cases.

Each case is (u, v) float32 [H, W] in the model's standardised units (u / 10 m s-1, v likewise).
"""

from __future__ import annotations

import numpy as np

from climax_deploy.model.wind_scan import REGIONS
from climax_deploy.synthetic import WIND_KINDS, wind_fields

WIND_STD = 10.0  # the author's standardisation of u and v: (x - 0) / (10 + 1e-8)


def _standardise(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (u / (WIND_STD + 1e-8)).astype(np.float32), (v / (WIND_STD + 1e-8)).astype(np.float32)


def _per_region(image: tuple[int, int], values: np.ndarray) -> np.ndarray:
    """A [32, 32] array of per-region values spread over the image's pixel blocks."""
    H, W = image
    return np.kron(values, np.ones((H // REGIONS, W // REGIONS)))


def wind_cases(image: tuple[int, int], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named standardised (u, v) fields: every edge case of the scan, and random ones."""
    rng = np.random.default_rng(seed)
    H, W = image
    cases: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind in WIND_KINDS:
        cases[f"synthetic {kind}"] = _standardise(*wind_fields(kind, np.random.default_rng([seed, 1]), image))
    cases["random"] = _standardise(*(rng.normal(0, 8, image) for _ in range(2)))
    cases["random light"] = _standardise(*(rng.normal(0, 1e-3, image) for _ in range(2)))
    zeros = np.zeros(image, dtype=np.float32)
    cases["all zero"] = (zeros, zeros)
    cases["negative zero"] = (np.full(image, -0.0, dtype=np.float32), np.full(image, -0.0, dtype=np.float32))
    cases["easterly"] = (np.full(image, -0.5, dtype=np.float32), zeros)  # v = 0, u < 0: angle pi
    cases["westerly"] = (np.full(image, 0.5, dtype=np.float32), zeros)
    cases["southerly"] = (zeros, np.full(image, 0.5, dtype=np.float32))  # u = 0: angle pi/2
    cases["northerly"] = (zeros, np.full(image, -0.5, dtype=np.float32))
    cases["easterly with -0 v"] = (np.full(image, -0.5, dtype=np.float32), np.full(image, -0.0, dtype=np.float32))
    cases["diagonal"] = (np.full(image, 0.3, dtype=np.float32), np.full(image, 0.3, dtype=np.float32))
    cases["cancelling"] = (np.tile(np.array([1.0, -1.0], dtype=np.float32), (H, W // 2)), zeros)  # sum 0, S > 0
    # One region direction each, from the 16 compass sectors and the axes, on a random speed.
    angles = rng.choice(np.arange(16) * np.pi / 8, size=(REGIONS, REGIONS))
    speed = rng.uniform(0.1, 1.5, size=(REGIONS, REGIONS))
    cases["compass regions"] = (
        _per_region(image, speed * np.cos(angles)).astype(np.float32),
        _per_region(image, speed * np.sin(angles)).astype(np.float32),
    )
    # Nearly zonal: v tiny against u, angles from 1e-17 to 1e-6 (float64 rounding decides near 0).
    tiny = 10.0 ** rng.uniform(-17, -6, size=(REGIONS, REGIONS)) * rng.choice([-1.0, 1.0], size=(REGIONS, REGIONS))
    cases["nearly zonal"] = (np.ones(image, dtype=np.float32), _per_region(image, tiny).astype(np.float32))
    # Calm and blowing regions mixed, as a land mask filled with the mean makes them.
    calm = rng.random((REGIONS, REGIONS)) < 0.3
    u, v = cases["random"]
    keep = ~_per_region(image, calm).astype(bool)
    cases["calm regions"] = (np.where(keep, u, 0).astype(np.float32), np.where(keep, v, 0).astype(np.float32))
    return cases


def stack_cases(cases: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, u [N, H, W], v [N, H, W])."""
    names = list(cases)
    return names, np.stack([cases[n][0] for n in names]), np.stack([cases[n][1] for n in names])
