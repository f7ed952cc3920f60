"""Shared by the picture tests: a PNG is valid, of its stated size, and no panel in it is blank."""

from __future__ import annotations

import numpy as np
from PIL import Image  # matplotlib's own dependency

from climax_deploy.figures import PNG_SIGNATURE, FigureLayout, Panel

INSET_PX = 4  # a panel's frame (spines, ticks) is left out of its pixels
MIN_VARIANCE = 4.0  # grey levels squared: a one-colour panel has 0, a drawn map hundreds


def read_png(layout: FigureLayout) -> np.ndarray:
    """The picture as grey levels [height, width], after checking it is a PNG of the layout's size."""
    data = layout.path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{layout.path} is not a PNG"
    with Image.open(layout.path) as image:
        assert image.format == "PNG"
        assert image.size == layout.size, f"{layout.path}: {image.size} pixels, the layout says {layout.size}"
        return np.asarray(image.convert("L"), dtype=np.float64)


def panel_pixels(grey: np.ndarray, panel: Panel) -> np.ndarray:
    left, top, right, bottom = panel.box
    assert 0 <= left < right <= grey.shape[1] and 0 <= top < bottom <= grey.shape[0], f"{panel.name}: {panel.box}"
    return grey[top + INSET_PX : bottom - INSET_PX, left + INSET_PX : right - INSET_PX]


def assert_panels_drawn(layout: FigureLayout, names: list[str]) -> None:
    """The layout has exactly these panels, and each one's pixels vary (it is not blank)."""
    assert [p.name for p in layout.panels] == names
    grey = read_png(layout)
    for panel in layout.panels:
        pixels = panel_pixels(grey, panel)
        assert pixels.size > 100, f"{panel.name} is only {pixels.shape} pixels"
        assert pixels.var() > MIN_VARIANCE, f"{panel.name} is blank (pixel variance {pixels.var():.2f})"

