"""One config dataclass for the model, its presets, and config files (JSON or YAML)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from climax_deploy.errors import BadInputError
from climax_deploy.schema import ELEVATION_VARIABLE, OUTPUTS, VARIABLES


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
    variables: tuple[str, ...] = VARIABLES
    outputs: tuple[str, ...] = OUTPUTS
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        h, w = self.img_size
        p = self.patch_size
        problems = []
        if p < 1 or h % p or w % p:
            problems.append(f"img_size {self.img_size} must be divisible by patch_size {p}")
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if self.depth < 1:
            problems.append(f"depth must be >= 1, got {self.depth}")
        if ELEVATION_VARIABLE not in self.variables:
            problems.append(f"variables must include {ELEVATION_VARIABLE!r}")
        missing = [o for o in self.outputs if o not in self.variables]
        if missing:
            problems.append(f"outputs {missing} are not among the variables")
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
        kwargs = dict(d)
        for key in ("img_size", "variables", "outputs"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


PRESETS: dict[str, ModelConfig] = {
    # The seed's model: 128 x 256 grid, 2 x 2 patches -> 8192 patches.
    "full": ModelConfig(name="full"),
    # Same structure, small enough for unit tests: 16 x 32 = 512 patches.
    "small": ModelConfig(img_size=(32, 64), embed_dim=128, depth=2, num_heads=4, name="small"),
}


def load_config_file(path: str | Path) -> ModelConfig:
    """Read a JSON or YAML config: flat keys of ModelConfig, or nested under `model:`."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - pyyaml ships with the export extra
            raise BadInputError("YAML configs need pyyaml: pip install pyyaml") from exc
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"config file {path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise BadInputError(f"config file {path}: expected a mapping of model settings, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    return ModelConfig.from_dict(data)


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
