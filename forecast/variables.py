"""Which file variable is which model variable: by name, then CF standard_name, then known aliases.

Operational centres name their fields their own way (ECMWF/CAMS: u10, t2m, sp, pm2p5, go3, ...) and
tag them with CF standard names. A model variable is looked up in four steps; the first that finds it
wins, and within a step, the first dataset (analysis, then static) that has it:

1. `rename` (the caller's `{file name: model name}`, `--rename a=b`);
2. the model's own name (`u`, `temp`, `pm25`, ...);
3. the CF standard_name attribute (STANDARD_NAMES below);
4. the alias table (ALIASES below: ECMWF/CAMS short names).

Two variables of one dataset matching at the same step are refused, naming both: guessing between
`t2m` and `t` is not ours to do. So is one file variable claimed by two model variables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from climax_deploy.errors import BadInputError

if TYPE_CHECKING:
    import xarray as xr

# CF standard names (CF standard name table v84) accepted for each model variable. The gases also come
# as mass or mole fractions (mixing ratios): found here, converted only on request (mixing_ratios.py).
STANDARD_NAMES: dict[str, tuple[str, ...]] = {
    "u": ("eastward_wind",),
    "v": ("northward_wind",),
    "temp": ("air_temperature",),
    "rh": ("relative_humidity",),
    "psfc": ("surface_air_pressure",),
    "pm25": ("mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air",),
    "pm10": ("mass_concentration_of_pm10_ambient_aerosol_particles_in_air",),
    "so2": ("mass_concentration_of_sulfur_dioxide_in_air", "mass_fraction_of_sulfur_dioxide_in_air",
            "mole_fraction_of_sulfur_dioxide_in_air"),
    "no2": ("mass_concentration_of_nitrogen_dioxide_in_air", "mass_fraction_of_nitrogen_dioxide_in_air",
            "mole_fraction_of_nitrogen_dioxide_in_air"),
    "co": ("mass_concentration_of_carbon_monoxide_in_air", "mass_fraction_of_carbon_monoxide_in_air",
           "mole_fraction_of_carbon_monoxide_in_air"),
    "o3": ("mass_concentration_of_ozone_in_air", "mass_fraction_of_ozone_in_air", "mole_fraction_of_ozone_in_air"),
    "elevation": ("surface_altitude",),
}  # fmt: skip

# ECMWF (ERA5, IFS) and CAMS short names (ECMWF parameter database) of the model's variables: 10 m wind,
# 2 m temperature and relative humidity, surface pressure, surface pollutants. CAMS's so2, no2, co and
# pm10 equal the model's names, so step 2 finds them.
ALIASES: dict[str, tuple[str, ...]] = {
    "u": ("u10",),
    "v": ("v10",),
    "temp": ("t2m",),
    "rh": ("r2",),
    "psfc": ("sp",),
    "pm25": ("pm2p5",),
    "o3": ("go3",),
}


@dataclass(frozen=True)
class Found:
    """Where a model variable was found: the dataset's label, the file's variable name, and how."""

    source: str
    name: str
    how: str  # "rename", "name", "standard_name" or "alias"

    def describe(self) -> str:
        return f"{self.source} variable {self.name!r} (by {self.how.replace('_', ' ')})"


def parse_renames(pairs: Sequence[str]) -> dict[str, str]:
    """['t2m=temp', ...] -> {'t2m': 'temp'}; a malformed or repeated pair is refused."""
    renames: dict[str, str] = {}
    for pair in pairs:
        file_name, sep, model_name = (part.strip() for part in pair.partition("="))
        if not sep or not file_name or not model_name:
            raise BadInputError(f"--rename expects FILE_NAME=MODEL_NAME such as t2m=temp, got {pair!r}")
        if file_name in renames:
            raise BadInputError(f"--rename names {file_name!r} twice ({renames[file_name]} and {model_name})")
        renames[file_name] = model_name
    return renames


def find_variables(
    needed: Sequence[str],
    sources: Sequence[tuple[str, xr.Dataset]],
    rename: Mapping[str, str] | None = None,
) -> dict[str, Found]:
    """The file variable of each needed model variable that some dataset holds (absent ones are left out)."""
    rename = dict(rename or {})
    unknown = sorted(set(rename.values()) - set(needed))
    if unknown:
        raise BadInputError(f"--rename targets {', '.join(unknown)}, which the model does not read; "
                            f"it reads {', '.join(needed)}")  # fmt: skip
    found: dict[str, Found] = {}
    for model_name in needed:
        hit = _find(model_name, sources, rename)
        if hit is not None:
            found[model_name] = hit
    claimed: dict[tuple[str, str], str] = {}
    for model_name, hit in found.items():
        other = claimed.setdefault((hit.source, hit.name), model_name)
        if other != model_name:
            raise BadInputError(
                f"{hit.source} variable {hit.name!r} would be both {other!r} and {model_name!r}; "
                f"name the one it is with --rename {hit.name}=MODEL_NAME and the other's file variable too"
            )
    return found


def _find(model_name: str, sources: Sequence[tuple[str, xr.Dataset]], rename: Mapping[str, str]) -> Found | None:
    steps = (
        ("rename", lambda ds: [n for n, target in rename.items() if target == model_name and n in ds.data_vars]),
        ("name", lambda ds: [model_name] if model_name in ds.data_vars and model_name not in rename else []),
        ("standard_name", lambda ds: [
            str(n) for n, da in ds.data_vars.items()
            if da.attrs.get("standard_name") in STANDARD_NAMES.get(model_name, ()) and n not in rename
        ]),
        ("alias", lambda ds: [a for a in ALIASES.get(model_name, ()) if a in ds.data_vars and a not in rename]),
    )  # fmt: skip
    for how, match in steps:
        for label, ds in sources:
            names = match(ds)
            if len(names) > 1:
                raise BadInputError(
                    f"{label} variables {' and '.join(repr(n) for n in names)} each match the model's "
                    f"{model_name!r} by {how.replace('_', ' ')}; say which with --rename {names[0]}={model_name}"
                )
            if names:
                return Found(label, names[0], how)
    return None


__all__ = ["ALIASES", "STANDARD_NAMES", "Found", "find_variables", "parse_renames"]
