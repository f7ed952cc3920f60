"""Mixing ratios -> mass concentrations (ug m-3), only when asked (`--convert-mixing-ratios`).

Air-quality analyses often carry mixing ratios: CAMS gives mass mixing ratios (kg kg-1), stations and
other models volume mixing ratios (ppb). The model reads mass concentrations, and converting needs the
air's density, taken from the file's own surface pressure p and temperature T (the model's `psfc` and
`temp`), treating the air as an ideal gas:

    mass mixing ratio q (kg kg-1):   c = q * rho,            rho = p / (R_d T),  R_d = 287.05 J kg-1 K-1
    volume mixing ratio x (mol mol-1): c = x * p * M / (R T),  R = 8.314462618 J mol-1 K-1, M per gas

Assumptions (returned by `describe`, printed by climax-forecast, written into the forecast's attributes):
dry air (no virtual-temperature correction), the surface pressure and the near-surface temperature as the
state of the air the pollutant lives in, molar masses of MOLAR_MASS.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np

from climax_deploy.errors import BadInputError
from climax_deploy.gridded.units import registry

R_DRY_AIR = 287.05  # J kg-1 K-1, the specific gas constant of dry air (ECMWF IFS, WMO)
R_GAS = 8.314462618  # J mol-1 K-1, the molar gas constant (CODATA 2018, exact)
MOLAR_MASS = {"o3": 47.997e-3, "so2": 64.066e-3, "no2": 46.0055e-3, "co": 28.010e-3}  # kg mol-1 (IUPAC weights)
PRESSURE, TEMPERATURE = "psfc", "temp"  # the model variables (Pa, K) the density comes from

Kind = Literal["mass", "volume"]
# Volume mixing ratio units that UDUNITS/pint do not define, as fractions (mol mol-1).
PARTS_PER = {"ppm": 1e-6, "ppmv": 1e-6, "ppb": 1e-9, "ppbv": 1e-9, "ppt": 1e-12, "pptv": 1e-12}
_RATIO = r"(?:\s*/\s*|\s+){unit}(?:-1|\^-1|\*\*-1)?"
_MASS_UNITS = re.compile(r"[a-z]?g" + _RATIO.format(unit=r"[a-z]?g"))  # kg kg-1, g kg-1, ug kg-1, kg/kg
_MOLE_UNITS = re.compile(r"[a-z]?mol" + _RATIO.format(unit=r"[a-z]?mol"))  # mol mol-1, nmol mol-1


def mixing_ratio_kind(attrs: Any, name: str) -> Kind | None:
    """'mass' or 'volume' if model variable `name` comes as a mixing ratio (by CF standard_name, else by
    units); None otherwise. Volume mixing ratios only for the gases of MOLAR_MASS (ppb of PM2.5 is no unit)."""
    kind = _kind(attrs)
    return None if kind == "volume" and name not in MOLAR_MASS else kind


def _kind(attrs: Any) -> Kind | None:
    standard_name = str(attrs.get("standard_name", ""))
    if standard_name.startswith("mass_fraction_of_"):
        return "mass"
    if standard_name.startswith("mole_fraction_of_"):
        return "volume"
    units = " ".join(str(attrs.get("units", "")).split()).lower()
    if _MASS_UNITS.fullmatch(units):
        return "mass"
    if units in PARTS_PER or _MOLE_UNITS.fullmatch(units):
        return "volume"
    return None


def as_fraction(values: np.ndarray, attrs: Any, name: str, source: str) -> np.ndarray:
    """A mixing ratio as a pure fraction (kg kg-1 or mol mol-1): ppb -> 1e-9, g kg-1 -> 1e-3, no unit -> 1."""
    units = " ".join(str(attrs.get("units", "1")).split())
    if units.lower() in PARTS_PER:
        return np.asarray(values, dtype=np.float64) * PARTS_PER[units.lower()]
    try:
        factor = float(registry().Quantity(1.0, units or "1").to("1").magnitude)
    except Exception:  # pint: undefined unit, not dimensionless
        raise BadInputError(f"{source} variable {name!r} is a mixing ratio with units {units!r}; expected a "
                            "fraction such as kg kg-1, mol mol-1 or ppb") from None  # fmt: skip
    return np.asarray(values, dtype=np.float64) * factor


def to_mass_concentration(
    fraction: np.ndarray, kind: Kind, name: str, pressure: np.ndarray, temperature: np.ndarray
) -> np.ndarray:
    """Mixing ratio (a fraction) -> ug m-3, with the air's pressure (Pa) and temperature (K) at each cell."""
    if kind == "volume" and name not in MOLAR_MASS:
        raise BadInputError(
            f"{name!r} comes as a volume mixing ratio, which converts with a molar mass: known for "
            f"{', '.join(MOLAR_MASS)}; give {name} as a mass concentration or a mass mixing ratio"
        )
    if np.any(temperature <= 0) or np.any(pressure <= 0):
        raise BadInputError(f"converting {name!r} needs p > 0 Pa and T > 0 K everywhere; the file's {PRESSURE} "
                            f"or {TEMPERATURE} has values <= 0")  # fmt: skip
    if kind == "mass":
        density = pressure / (R_DRY_AIR * temperature)  # kg m-3
    else:
        density = pressure * MOLAR_MASS[name] / (R_GAS * temperature)  # kg m-3 of the gas per unit mole fraction
    return fraction * density * 1e9  # kg m-3 -> ug m-3


def describe(name: str, kind: Kind, file_variable: str, units: str) -> str:
    """One line saying what was assumed for `name`'s conversion."""
    if kind == "mass":
        how = f"mass mixing ratio ({units}) x dry-air density p / (R_d T), R_d = {R_DRY_AIR} J kg-1 K-1"
    else:
        how = (f"volume mixing ratio ({units}) x p M / (R T), M = {MOLAR_MASS[name] * 1e3:g} g mol-1, "
               f"R = {R_GAS} J mol-1 K-1")  # fmt: skip
    return (f"{name} from {file_variable!r}: {how}; p, T = the file's {PRESSURE}, {TEMPERATURE} at each cell "
            "(ideal gas, dry air, no virtual-temperature correction)")  # fmt: skip


__all__ = ["MOLAR_MASS", "R_DRY_AIR", "R_GAS", "as_fraction", "describe", "mixing_ratio_kind", "to_mass_concentration"]
