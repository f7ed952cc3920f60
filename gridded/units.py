"""Physical units of forecast files: CF/UDUNITS strings read with pint and cf-xarray's unit registry.

Every variable is converted to the model's units (climax_deploy.schema.UNITS) before standardisation.
A variable with units that do not convert is refused by name. A missing units attribute means
"dimensionless" in CF, so it is accepted (with a warning) only where the model's unit is "1"
(population); elsewhere it is ambiguous (ug m-3 or mg m-3? K or degC? % or a fraction?) and refused.
Grid coordinates must be latitude/longitude in degrees; projected x/y in metres are refused.
UDUNITS spells temperatures 'deg C', 'degrees C', 'degree_F', 'deg K' ... which pint reads as an angle
times a temperature (20 'deg C' would become 0.349 K): they are rewritten to degC/degF/K first. A
leading scale factor ('1e-9 kg m-3') multiplies the values, as UDUNITS reads it.
pint and cf-xarray are the optional `io` extra, imported on first use.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from functools import lru_cache
from typing import Any

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.optional import CF_XARRAY_UNITS, PINT

DIMENSIONLESS = "1"
# Parsed (pint) names of latitude and longitude units; plain "degrees" only on dims named lat/lon.
LATITUDE_UNITS = ("degrees_north",)
LONGITUDE_UNITS = ("degrees_east",)
PLAIN_DEGREES = ("degree", "degrees")
GEOGRAPHIC_NAMES = {"lat": "latitude", "latitude": "latitude", "lon": "longitude", "longitude": "longitude"}
# UDUNITS temperature spellings: deg/degs/degree/degrees, then optional space or '_', then C, F or K.
TEMPERATURE_SPELLING = re.compile(r"(?:deg|degs|degree|degrees)[ _]*([CFK])")
TEMPERATURE_UNITS = {"C": "degC", "F": "degF", "K": "K"}
OFFSET_UNITS = ("degree_Celsius", "degree_Fahrenheit")  # pint's names; a scale factor on them is refused
# A leading number times a unit: '1e-9 kg m-3', '1000 Pa', '0.01*m'.
SCALED_UNIT = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(?:\*\s*|\s+)(\S.*)")


@lru_cache(maxsize=1)
def registry() -> Any:
    """cf-xarray's pint registry, which reads CF/UDUNITS strings such as 'ug m-3', 'degC', 'hPa'."""
    PINT.load()
    log = logging.getLogger("pint")  # cf-xarray redefines some of pint's units, which pint logs
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # cf_xarray.units warns when matplotlib is absent: irrelevant here
            warnings.simplefilter("ignore")
            return CF_XARRAY_UNITS.load().units
    finally:
        log.setLevel(level)


def _split_scale(units: str) -> tuple[float, str]:
    """'1e-9 kg m-3' -> (1e-9, 'kg m-3'); a unit without a leading number -> (1.0, it), spellings normalised."""
    text = units.strip()
    scale = 1.0
    match = SCALED_UNIT.fullmatch(text)
    if match:
        scale, text = float(match.group(1)), match.group(2).strip()
    temperature = TEMPERATURE_SPELLING.fullmatch(text)
    if temperature:
        text = TEMPERATURE_UNITS[temperature.group(1)]
    return scale, text


def _parse(units: str) -> Any:
    ureg = registry()
    _, text = _split_scale(units)
    try:
        return ureg.parse_units(text) if text else ureg.dimensionless
    except Exception:  # pint raises UndefinedUnitError, DefinitionSyntaxError, ValueError, ...
        return None


def to_model_units(values: np.ndarray, attrs: Any, name: str, target: str, source: str) -> np.ndarray:
    """`values` with CF attributes `attrs` converted to the model's `target` units (float64)."""
    values = np.asarray(values, dtype=np.float64)
    units = attrs.get("units") if hasattr(attrs, "get") else None
    if units is None:
        if target != DIMENSIONLESS:
            raise BadInputError(
                f"{source} variable {name!r} has no units attribute; expected units convertible to {target!r} "
                f"(set e.g. units={target!r}); a missing unit is not guessed"
            )
        warnings.warn(
            f"{source} variable {name!r} has no units attribute; taken as {DIMENSIONLESS!r} (dimensionless, as CF "
            "reads a missing unit)",
            UserWarning,
            stacklevel=3,
        )
        return values
    unit = _parse(str(units))
    scale, _ = _split_scale(str(units))
    ureg = registry()
    if not (math.isfinite(scale) and scale > 0):
        raise BadInputError(
            f"{source} variable {name!r} has units {str(units)!r}: a scale factor must be a positive finite number"
        )
    try:
        if unit is None:
            raise ValueError("unknown unit")
        if scale != 1.0 and str(unit) in OFFSET_UNITS:
            raise ValueError("a scaled offset unit is ambiguous")
        return np.asarray(ureg.Quantity(values * scale, unit).to(target).magnitude, dtype=np.float64)
    except Exception:  # DimensionalityError, OffsetUnitCalculusError, unknown units
        known = "" if unit is not None else ", not a CF/UDUNITS unit"
        raise BadInputError(
            f"{source} variable {name!r} has units {str(units)!r}{known}; expected units convertible to {target!r}"
        ) from None


def check_degrees(attrs: Any, name: str, axis: str, source: str) -> None:
    """A grid coordinate `name` must be latitude ('lat') or longitude ('lon') in degrees, not projected."""
    expected = "degrees_north" if axis == "lat" else "degrees_east"
    units = attrs.get("units") if hasattr(attrs, "get") else None
    if units is None:
        raise BadInputError(
            f"{source}: coordinate {name!r} has no units; expected {expected} (a latitude/longitude grid in degrees)"
        )
    unit = _parse(str(units))
    parsed = str(unit) if unit is not None else ""
    allowed = (LATITUDE_UNITS if axis == "lat" else LONGITUDE_UNITS) + (
        PLAIN_DEGREES if GEOGRAPHIC_NAMES.get(name) else ()
    )
    if parsed in allowed:
        return
    projected = unit is not None and unit.dimensionality == registry().meter.dimensionality
    what = "projected coordinates (metres); reproject onto a latitude/longitude grid" if projected else "not degrees"
    raise BadInputError(f"{source}: coordinate {name!r} has units {str(units)!r}: {what}; expected {expected}")


__all__ = ["check_degrees", "registry", "to_model_units"]
