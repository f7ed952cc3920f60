"""The model's data contract: variable order, outputs, grid. Torch-free; shared by every subpackage."""

from __future__ import annotations

# The 15 input variables in the order the seed and the author's checkpoints use.
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

# The author's data loader standardises every variable as (x - mean) / (std + 1e-8) with these fixed
# (mean, std) pairs, in physical units (docs/model.md). Model inputs and outputs are standardised.
STANDARDISATION: dict[str, tuple[float, float]] = {
    "u": (0.0, 10.0), "v": (0.0, 10.0), "temp": (273.15, 30.0), "rh": (50.0, 30.0),
    "psfc": (101325.0, 1000.0), "pm10": (50.0, 25.0), "so2": (5.0, 5.0), "no2": (20.0, 15.0),
    "co": (200.0, 100.0), "o3": (40.0, 20.0), "pm25": (25.0, 15.0), "lat2d": (32.0, 12.0),
    "lon2d": (106.0, 16.0), "elevation": (1039.13, 1931.40), "population": (13381.20, 67986.97),
}  # fmt: skip
STANDARDISATION_EPS = 1e-8
