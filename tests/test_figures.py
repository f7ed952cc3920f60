"""climax_deploy.figures: PNGs written atomically, with panel boxes and colour scales a test can read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from picture_checks import assert_panels_drawn, panel_pixels, read_png  # tests/ is on sys.path under pytest

from climax_deploy import figures
from climax_deploy.errors import BadInputError, MissingBackendError
from climax_deploy.figures import Drawn, check_png_path, grid_figure, map_panel, new_figure, save_png
from climax_deploy.optional import OptionalDependency


def test_a_blank_panel_is_caught(tmp_path: Path) -> None:
    """The pictures' check can fail: of two panels, the empty one is reported blank."""
    fig = new_figure(4, 2)
    drawn, empty = fig.subplots(1, 2)
    drawn.plot([0, 1, 2], [0, 2, 1])
    layout = save_png(fig, tmp_path / "two.png", {"drawn": Drawn(drawn), "empty": Drawn(empty)})
    with pytest.raises(AssertionError, match="empty is blank"):
        assert_panels_drawn(layout, ["drawn", "empty"])


def test_map_panel_masks_nan_cells_grey(tmp_path: Path) -> None:
    lat, lon = np.linspace(50, 40, 10), np.linspace(0, 20, 20)
    field = np.add.outer(np.arange(10.0), np.arange(20.0))
    field[:, :10] = np.nan  # the western half masked
    grid = grid_figure(1, 1, 3.0, 0.5, "masked")
    drawn = map_panel(grid.figure, grid.axes[0][0], grid.colour_bars[0][0], field, lat, lon, cmap="viridis",
                      label="x (units)")  # fmt: skip
    layout = save_png(grid.figure, tmp_path / "m.png", {"map": drawn})
    assert (drawn.vmin, drawn.vmax) == (float(np.nanmin(field)), float(np.nanmax(field)))
    pixels = panel_pixels(read_png(layout), layout.panel("map"))
    west = pixels[:, : pixels.shape[1] // 2 - 3]
    assert np.ptp(west) == 0 and abs(west.mean() - 0.75 * 255) < 2  # one grey: MASKED_COLOUR
    assert pixels[:, pixels.shape[1] // 2 + 3 :].var() > 4


def test_png_path_and_missing_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadInputError, match=r"expected a FILE.png, got out.jpg"):
        check_png_path("out.jpg", "--plot")
    absent = OptionalDependency("no_such_module_here", "pip install 'climax-deploy[plot]'", "pictures")
    monkeypatch.setattr(figures, "MATPLOTLIB", absent)
    with pytest.raises(MissingBackendError, match=r"climax-deploy\[plot\]"):
        figures.require_matplotlib()
