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

# Physics attention constants (shared/NOTES.md): mask entries are clamped to [MASK_FLOOR, 1] and a
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
