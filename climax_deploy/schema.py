"""The model's data contract: variable order, outputs, grid. Torch-free; shared by every subpackage."""

from __future__ import annotations

# The 15 input variables in the order the author's code and checkpoints use.
VARIABLES: tuple[str, ...] = (
    "u", "v", "temp", "rh", "psfc", "pm10", "so2", "no2", "co", "o3",
    "lat2d", "lon2d", "pm25", "elevation", "population",
)  # fmt: skip
ELEVATION_VARIABLE = "elevation"
# The six predicted pollutants, in output-channel order.
OUTPUTS: tuple[str, ...] = ("pm25", "pm10", "so2", "no2", "co", "o3")

# Physics attention constants (docs/model.md): mask entries are clamped to [MASK_FLOOR, 1] and a
# per-sample elevation range at or below FLAT_RANGE counts as 1 (so a flat field normalises to zeros).
MASK_FLOOR = 1e-6
FLAT_RANGE = 1e-6
RENORM_EPS = 1e-8

# Names of the graph's inputs and outputs, identical across ONNX, TensorRT and the runtime.
INPUT_NAME = "x"
LEAD_TIMES_NAME = "lead_times"
OUTPUT_NAME = "y"

# Custom op carrying the physics attention in exported graphs.
CUSTOM_DOMAIN = "climax"
CUSTOM_OP = "ElevationAttention"
CUSTOM_OP_VERSION = 1
# Plain multi-head attention of blocks 1.., also a custom node so passes can pick its body per target.
SELF_ATTENTION_OP = "SelfAttention"
# The wind-following scan's token order (docs/model.md): float32 only, so TensorRT runs it as it is.
WIND_SCAN_OP = "WindScanOrder"

# The author's data loader standardises every variable as (x - mean) / (std + 1e-8) with these fixed
# (mean, std) pairs, in physical units (docs/model.md). Model inputs and outputs are standardised.
STANDARDISATION: dict[str, tuple[float, float]] = {
    "u": (0.0, 10.0), "v": (0.0, 10.0), "temp": (273.15, 30.0), "rh": (50.0, 30.0),
    "psfc": (101325.0, 1000.0), "pm10": (50.0, 25.0), "so2": (5.0, 5.0), "no2": (20.0, 15.0),
    "co": (200.0, 100.0), "o3": (40.0, 20.0), "pm25": (25.0, 15.0), "lat2d": (32.0, 12.0),
    "lon2d": (106.0, 16.0), "elevation": (1039.13, 1931.40), "population": (13381.20, 67986.97),
}  # fmt: skip
STANDARDISATION_EPS = 1e-8

# The units of every variable as the model sees it (and as STANDARDISATION's means and stds are given),
# as CF/UDUNITS strings. Forecast files are converted to these on input; outputs are written in them.
UNITS: dict[str, str] = {
    "u": "m s-1", "v": "m s-1", "temp": "K", "rh": "%", "psfc": "Pa", "pm10": "ug m-3", "so2": "ug m-3",
    "no2": "ug m-3", "co": "ug m-3", "o3": "ug m-3", "pm25": "ug m-3", "lat2d": "degrees_north",
    "lon2d": "degrees_east", "elevation": "m", "population": "1",
}  # fmt: skip

# The training domain (the author's China and Taiwan domain): cell centres from LAT_RANGE[1] (north,
# row 0) to LAT_RANGE[0] (south), and LON_RANGE[0] (west) to LON_RANGE[1] (east), in degrees. The
# default model grid of an export; the manifest records the coordinates (ModelRecord.lat, .lon).
LAT_RANGE: tuple[float, float] = (15.0, 55.0)
LON_RANGE: tuple[float, float] = (72.0, 136.0)


def _linspace(start: float, stop: float, num: int) -> tuple[float, ...]:
    step = (stop - start) / (num - 1)
    return tuple(start + i * step for i in range(num - 1)) + (stop,)


def domain_coordinates(grid: tuple[int, int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(lat north to south, lon west to east) cell centres of an H x W grid over the training domain."""
    h, w = grid
    return _linspace(LAT_RANGE[1], LAT_RANGE[0], h), _linspace(LON_RANGE[0], LON_RANGE[1], w)
