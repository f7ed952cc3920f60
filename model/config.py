"""One config dataclass for the model, its presets, and config files (JSON or YAML)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from climax_deploy.errors import BadInputError
from climax_deploy.optional import YAML
from climax_deploy.schema import ELEVATION_VARIABLE, OUTPUTS, STANDARDISATION, VARIABLES


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the patch-level physics-guided ClimaX."""

    img_size: tuple[int, int] = (128, 256)
    patch_size: int = 2
    embed_dim: int = 768
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 4.0
    beta_init: float = 3.0  # initial elevation_barrier_strength
    # The author's wind-following patch scan (model/wind_scan.py): on in every model the author's code
    # builds with `parallel_patch_embed: true` and u, v among the variables.
    wind_scan: bool = True
    variables: tuple[str, ...] = VARIABLES
    outputs: tuple[str, ...] = OUTPUTS
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for key in ("img_size", "variables", "outputs"):  # lists from JSON/YAML become tuples (hashable, frozen)
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        problems = _field_problems(self)
        if not problems:  # relations between fields, once each field has the right type
            h, w = self.img_size
            p = self.patch_size
            if h % p or w % p:
                problems.append(f"img_size {list(self.img_size)} must be divisible by patch_size {p}")
            if self.embed_dim % self.num_heads:
                problems.append(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
            if int(self.embed_dim * self.mlp_ratio) < 1:
                problems.append(f"mlp_ratio: expected embed_dim * mlp_ratio >= 1, got {self.mlp_ratio!r}")
            if ELEVATION_VARIABLE not in self.variables:
                problems.append(f"variables must include {ELEVATION_VARIABLE!r}")
            if len(set(self.variables)) != len(self.variables):
                problems.append(f"variables: expected distinct names, got {list(self.variables)}")
            missing = [o for o in self.outputs if o not in self.variables]
            if missing:
                problems.append(f"outputs {missing} are not among the variables")
            if self.wind_scan:
                problems.extend(_scan_problems(self))
        if problems:
            raise BadInputError("invalid model config: " + "; ".join(problems))

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols)."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def elevation_index(self) -> int:
        return self.variables.index(ELEVATION_VARIABLE)

    @property
    def output_indices(self) -> tuple[int, ...]:
        return tuple(self.variables.index(o) for o in self.outputs)

    def on_image(self, img_size: tuple[int, int], name: str) -> ModelConfig:
        """This architecture on another image size (scaling studies); the wind-following scan stays on
        only where the new patch grid allows it (multiples of 32 patches each way)."""
        from climax_deploy.model.wind_scan import scan_grid_problem

        p = self.patch_size
        scan = self.wind_scan and scan_grid_problem((img_size[0] // p, img_size[1] // p)) is None
        return dataclasses.replace(self, img_size=img_size, wind_scan=scan, name=name)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["img_size"] = list(self.img_size)
        d["variables"] = list(self.variables)
        d["outputs"] = list(self.outputs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise BadInputError(f"unknown model config keys {unknown}; expected some of {sorted(allowed)}")
        return cls(**d)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def as_written(value: Any) -> str:
    """A value as the user wrote it: tuples back as lists."""
    return repr(list(value) if isinstance(value, tuple) else value)


def _scan_problems(c: ModelConfig) -> list[str]:
    """Why the wind-following scan cannot run on this config (wind_scan: true)."""
    from climax_deploy.model.wind_scan import scan_grid_problem

    problems = []
    if not {"u", "v"} <= set(c.variables):
        problems.append(f"wind_scan: the scan reads the wind (u, v) but the variables are {list(c.variables)}")
    grid_problem = scan_grid_problem(c.grid)
    if grid_problem:
        problems.append(f"wind_scan: {grid_problem}; set wind_scan: false for a model trained without it")
    return problems


def _field_problems(c: ModelConfig) -> list[str]:
    """Each field against its expected type and range, named, with the value that came."""
    problems = []
    size = c.img_size
    if not (isinstance(size, tuple) and len(size) == 2 and all(_is_int(s) and s >= 1 for s in size)):
        problems.append(f"img_size: expected [height, width], two integers >= 1, got {as_written(size)}")
    for key in ("patch_size", "embed_dim", "depth", "num_heads"):
        value = getattr(c, key)
        if not (_is_int(value) and value >= 1):
            problems.append(f"{key}: expected an integer >= 1, got {as_written(value)}")
    if not (_is_number(c.mlp_ratio) and c.mlp_ratio > 0):
        problems.append(f"mlp_ratio: expected a number > 0, got {as_written(c.mlp_ratio)}")
    if not _is_number(c.beta_init):
        problems.append(f"beta_init: expected a finite number, got {as_written(c.beta_init)}")
    if not isinstance(c.wind_scan, bool):
        problems.append(f"wind_scan: expected true or false, got {as_written(c.wind_scan)}")
    for key in ("variables", "outputs"):
        names = getattr(c, key)
        if not (isinstance(names, tuple) and names and all(isinstance(n, str) for n in names)):
            problems.append(f"{key}: expected a list of variable names, got {as_written(names)}")
    return problems


PRESETS: dict[str, ModelConfig] = {
    # The author's model: 128 x 256 grid, 2 x 2 patches -> 8192 patches, the wind-following scan on.
    "full": ModelConfig(wind_scan=True, name="full"),
    # Same structure, small enough for unit tests: 16 x 32 = 512 patches. Without the wind-following
    # scan: it needs patch rows and columns in multiples of 32 (the author's 32 x 32 regions).
    "small": ModelConfig(img_size=(32, 64), embed_dim=128, depth=2, num_heads=4, wind_scan=False, name="small"),
    # The smallest grid on which the scan reorders in two dimensions: 64 x 64 patches, 2 x 2 per region.
    "small-wind": ModelConfig(img_size=(128, 128), embed_dim=64, depth=2, num_heads=4, wind_scan=True,
                              name="small-wind"),
}


def read_text_config(path: str | Path, what: str) -> Any:
    """Parse a JSON or YAML file (by suffix; YAML otherwise) into Python data; a parse error is one line.

    YAML is read safely; `!!python/tuple` (what Lightning's hparams.yaml uses for tuples) reads as a list.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{what} {path} does not exist")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{what} {path} is not valid JSON: {exc}") from exc
    yaml = YAML.load()

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_constructor("tag:yaml.org,2002:python/tuple", _Loader.construct_sequence)
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInputError(f"{what} {path} is not valid YAML: {problem}{where}") from exc


def load_config_file(path: str | Path) -> ModelConfig:
    """Read a JSON or YAML config: flat keys of ModelConfig, nested under `model:`, or the author's layout.

    The author's layout (`config: {model: ..., data: ...}`, or `model:` beside `data:`, as in a run's
    hparams.yaml) is read like a checkpoint's hyper-parameters: see `config_from_hparams`.
    """
    path = Path(path)
    data = read_text_config(path, "config file")
    if isinstance(data, dict) and is_author_layout(data):
        return dataclasses.replace(config_from_hparams(data, str(path)), name=path.stem)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise BadInputError(f"config file {path}: expected a mapping of model settings, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    return ModelConfig.from_dict(data)


# --- The author's training config, as save_hyperparameters() stores it -----------------------------

# Keys of the author's `model` section this toolkit reads; the rest (decoder_depth, drop_path, ...)
# do not change the function computed at inference or are visible in the weights.
HPARAMS_MODEL_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
# The author's switch that builds ParallelVarPatchEmbedWind, whose wind-following scan is on by default.
PARALLEL_PATCH_EMBED_KEY = "parallel_patch_embed"
# Where the author's configs list the input variables and the predicted ones, in order of preference.
HPARAMS_VARIABLE_KEYS = (("data", "variables"), ("data", "in_variables"), ("model", "default_vars"))
HPARAMS_OUTPUT_KEYS = (("data", "target_variables"), ("data", "out_variables"), ("data", "outputs"))
# The author's optional modules that this toolkit does not implement, by a fragment of their config keys.
OPTIONAL_MODULES: dict[str, str] = {
    "cross": "pollutant cross-attention",
    "hierarch": "hierarchical physics",
    "memory": "wind memory",
}
_NOT_A_MODULE = ("pin_memory", "memory_efficient", "low_memory")
_FALSE_WORDS = ("", "0", "false", "no", "off", "none", "null", "disabled")


def is_author_layout(hparams: Mapping[str, Any]) -> bool:
    """True for `{config: {model: ...}}` or `{model: {...}, data: {...}}`."""
    config = hparams.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("model"), Mapping):
        return True
    return isinstance(hparams.get("model"), Mapping) and isinstance(hparams.get("data"), Mapping)


def hparams_sections(hparams: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(model settings, data settings) of stored hyper-parameters in any layout this toolkit reads.

    Layouts: the author's (`config.model`/`config.data`, or `model`/`data` at the top), a `net` section,
    or flat keys at the top.
    """
    config = hparams.get("config")
    root: Mapping[str, Any] = config if isinstance(config, Mapping) else hparams
    data = root.get("data")
    sections = [root[key] for key in ("model", "net") if isinstance(root.get(key), Mapping)]
    return (sections[0] if sections else root), (data if isinstance(data, Mapping) else {})


def module_family(key: str) -> str | None:
    """The optional module a config key or weight name belongs to, if any."""
    name = key.lower()
    if any(word in name for word in _NOT_A_MODULE):
        return None
    return next((family for fragment, family in OPTIONAL_MODULES.items() if fragment in name), None)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    return bool(value)


def refuse_optional_modules(model: Mapping[str, Any], source: str) -> None:
    """Refuse settings that switch on one of the author's modules this toolkit does not implement.

    A key belongs to a module when its name (or an enclosing section's) contains the module's fragment
    (`cross`, `hierarch`, `memory`). A module is on when one of its boolean keys is true, or, when it has
    no boolean key, when any of its values is truthy (e.g. `wind_memory_steps: 4`).
    """
    found: dict[str, list[tuple[str, Any]]] = {}

    def walk(section: Mapping[str, Any], prefix: str, family: str | None) -> None:
        for key, value in section.items():
            fam = module_family(str(key)) or family
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, path + ".", fam)
            elif fam is not None:
                found.setdefault(fam, []).append((path, value))

    walk(model, "", None)
    for family, items in found.items():
        switches = [(k, v) for k, v in items if isinstance(v, bool)]
        on = [(k, v) for k, v in (switches or items) if _truthy(v)]
        if on:
            key, value = on[0]
            raise BadInputError(
                f"{source}: the checkpoint was trained with the author's {family} ({key}: {value!r}), which "
                "this toolkit does not implement; only the physics-guided ClimaX core can be exported"
            )


def _names(value: Any, where: str, source: str) -> tuple[str, ...]:
    if not (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)):
        raise BadInputError(f"{source}: {where}: expected a list of variable names, got {as_written(value)}")
    return tuple(value)


def hparams_settings(hparams: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ModelConfig fields that stored hyper-parameters state; optional modules and unknown variables refused.

    Variables keep the checkpoint's order (the weights are indexed by it); each must be one this toolkit
    knows (it has standardisation constants), and the outputs must be among them.
    """
    model, data = hparams_sections(hparams)
    refuse_optional_modules(model, source)
    settings = {key: model[key] for key in HPARAMS_MODEL_KEYS if key in model}
    if isinstance(settings.get("img_size"), (list, tuple)):
        settings["img_size"] = tuple(settings["img_size"])
    sections = {"model": model, "data": data}
    for field_name, candidates in (("variables", HPARAMS_VARIABLE_KEYS), ("outputs", HPARAMS_OUTPUT_KEYS)):
        for section, key in candidates:
            if key in sections[section]:
                settings[field_name] = _names(sections[section][key], f"{section}.{key}", source)
                break
    # The author's ClimaX defaults to parallel_patch_embed=False (per-variable embeddings, no scan).
    settings["wind_scan"] = _truthy(model.get(PARALLEL_PATCH_EMBED_KEY, False))
    unknown = [v for v in settings.get("variables", ()) if v not in STANDARDISATION]
    if unknown:
        raise BadInputError(f"{source}: unknown variables {unknown}; expected names from {list(VARIABLES)}")
    outputs = settings.get("outputs", ())
    missing = [o for o in outputs if o not in settings.get("variables", VARIABLES)]
    if missing:
        raise BadInputError(f"{source}: target variables {missing} are not among the input variables")
    return settings


def replace_settings(base: ModelConfig, settings: Mapping[str, Any], source: str) -> ModelConfig:
    """`base` with `settings` applied; an invalid result names where the settings came from.

    `wind_scan` follows the author's rule: the parallel patch embedding scans when u and v are among
    the variables (their var ids 0 and 1 are in `vars`), and never otherwise.
    """
    settings = dict(settings)
    if settings.get("wind_scan"):
        variables = settings.get("variables", base.variables)
        settings["wind_scan"] = {"u", "v"} <= set(variables)
    try:
        return dataclasses.replace(base, **settings)
    except BadInputError as exc:
        raise BadInputError(f"{source}: {exc}") from None


def config_from_hparams(hparams: Mapping[str, Any], source: str, base: ModelConfig | None = None) -> ModelConfig:
    """The architecture stated by an author's config; `num_heads` is required unless `base` is given.

    Settings the hyper-parameters do not state come from `base`, else from the `full` preset, whose
    head count is never assumed: the heads cannot be checked against any weights.
    """
    settings = hparams_settings(hparams, source)
    if "num_heads" not in settings and base is None:
        raise BadInputError(f"{source}: expected model.num_heads in the author's config, found none")
    return replace_settings(base if base is not None else PRESETS["full"], settings, source)


def resolve_config(preset_or_config: str | Path | ModelConfig | dict[str, Any]) -> ModelConfig:
    """A preset name, a config file path, a dict or a ModelConfig -> ModelConfig."""
    if isinstance(preset_or_config, ModelConfig):
        return preset_or_config
    if isinstance(preset_or_config, dict):
        return ModelConfig.from_dict(preset_or_config)
    key = str(preset_or_config)
    if key in PRESETS:
        return PRESETS[key]
    if Path(key).suffix in (".json", ".yaml", ".yml"):
        return load_config_file(key)
    raise BadInputError(f"unknown preset {key!r}; expected one of {sorted(PRESETS)} or a .json/.yaml config file")
