"""Load the author's checkpoints (Lightning .ckpt or plain state dicts) into the reference model."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.model.config import (
    PRESETS,
    ModelConfig,
    as_written,
    hparams_sections,
    hparams_settings,
    module_family,
    read_text_config,
    replace_settings,
)

LIGHTNING_PREFIXES = ("model.climax.", "climax.", "net.", "model.")
IGNORED_KEYS = ("model.target_indices", "china_mask", "target_indices")
HPARAMS_FILE = "hparams.yaml"  # what Lightning writes in a run's version folder
_PER_VAR_EMBED = re.compile(r"^token_embeds\.(\d+)\.proj\.(weight|bias)$")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state dict with the `model.climax.` prefix removed, hyper-parameters if stored).

    Refused, each in one line: files torch cannot read, contents that are not a state dict, weights of
    the author's optional modules, non-finite weights.
    """
    path = Path(path)
    raw = _load(path)
    if "state_dict" in raw:
        state = raw["state_dict"]
        if not isinstance(state, Mapping):
            raise ModelFileError(f"{path}: expected 'state_dict' to map parameter names to tensors, "
                                 f"got {type(state).__name__}")  # fmt: skip
    else:
        state = raw
    _refuse_module_weights(state, path)
    tensors = strip_prefixes(state)
    if not tensors:
        raise ModelFileError(
            f"{path}: expected parameter tensors (keys such as model.climax.pos_embed), found no tensors"
        )
    check_finite(tensors, path)
    return tensors, _stored_hparams(raw, path)


def _stored_hparams(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    hparams = raw.get("hyper_parameters")
    if hparams is None or "state_dict" not in raw:
        return {}
    if not isinstance(hparams, Mapping):
        raise ModelFileError(f"{path}: expected 'hyper_parameters' to be a mapping, got {type(hparams).__name__}")
    return dict(hparams)


def _load(path: Path, mmap: bool = False) -> Mapping[str, Any]:
    """torch.load without pickled code; anything torch cannot read, or that is not a mapping, is one line."""
    if not path.is_file():
        raise BadInputError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr: not the user's concern
            warnings.simplefilter("ignore")
            try:
                raw = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                raw = torch.load(path, map_location="cpu", weights_only=True)  # legacy format: no mmap
    except Exception as exc:
        raise ModelFileError(
            f"{path}: expected a PyTorch checkpoint (torch.save or a Lightning .ckpt), got a file torch "
            f"cannot read ({_load_problem(exc)})"
        ) from exc
    if not isinstance(raw, Mapping):
        raise ModelFileError(f"{path}: expected a state dict or a Lightning checkpoint (a mapping), "
                             f"got {type(raw).__name__}")  # fmt: skip
    return raw


def _load_problem(exc: Exception) -> str:
    """torch's reason in a few words: its messages run to several lines of advice."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
        text = text.split(" Please use", 1)[0].split("Check the documentation", 1)[0]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("Unsupported global"):  # e.g. an OmegaConf config pickled into hyper_parameters
        return f"{first} Pickled Python objects are not loaded; re-save it with plain dicts and lists"
    return first or type(exc).__name__


def _refuse_module_weights(state: Mapping[str, Any], path: Path) -> None:
    """Weights of the author's optional modules sit beside `model.climax.*` and would be dropped silently."""
    by_family: dict[str, list[str]] = {}
    for key, value in state.items():
        family = module_family(str(key)) if isinstance(value, torch.Tensor) else None
        if family is not None:
            by_family.setdefault(family, []).append(str(key))
    for family, keys in by_family.items():
        raise ModelFileError(
            f"{path}: holds weights of the author's {family} {_few(sorted(keys))}, which this toolkit does not "
            "implement; only the physics-guided ClimaX core can be exported"
        )


def check_finite(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse NaN or Inf weights, naming the tensors: they would only surface as NaN forecasts."""
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise ModelFileError(f"{path}: NaN or Inf in {len(bad)} weight tensor(s) {_few(bad)}; expected finite weights")


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Drop the wrapper prefix (`model.climax.` in the author's Lightning module) and unrelated buffers."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k not in IGNORED_KEYS}
    for prefix in LIGHTNING_PREFIXES:
        if any(k.startswith(prefix + "pos_embed") for k in tensors):
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def to_parallel_patch_embed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert per-variable `token_embeds.{i}.proj.*` keys to the parallel `proj_weights/biases` layout."""
    per_var: dict[int, dict[str, torch.Tensor]] = {}
    rest = {}
    for key, value in state.items():
        m = _PER_VAR_EMBED.match(key)
        if m:
            per_var.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            rest[key] = value
    if not per_var:
        return rest
    indices = sorted(per_var)
    if indices != list(range(len(indices))) or any(len(per_var[i]) != 2 for i in indices):
        raise ModelFileError(f"per-variable patch embeddings are incomplete: found indices {indices}")
    rest["token_embeds.proj_weights"] = torch.stack([per_var[i]["weight"] for i in indices])
    rest["token_embeds.proj_biases"] = torch.stack([per_var[i]["bias"] for i in indices])
    return rest


def find_hparams(
    checkpoint: Path, stored: Mapping[str, Any], explicit: str | Path | Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """(hyper-parameters, where they came from) for a checkpoint; ({}, "") when there are none.

    Order: `explicit` (a file or mapping), those stored in the checkpoint when they give the heads, an
    hparams.yaml beside the checkpoint or in the version folder above its `checkpoints/` folder, then
    stored ones without heads (they may still give the variables).
    """
    if explicit is not None:
        if isinstance(explicit, Mapping):
            return dict(explicit), "the given hparams"
        return read_hparams_file(explicit), str(explicit)
    if stored and "num_heads" in hparams_sections(stored)[0]:
        return dict(stored), f"{checkpoint}'s hyper_parameters"
    folders = [checkpoint.parent] + ([checkpoint.parent.parent] if checkpoint.parent.name == "checkpoints" else [])
    for candidate in (folder / HPARAMS_FILE for folder in folders):
        if candidate.is_file():
            return read_hparams_file(candidate), str(candidate)
    return (dict(stored), f"{checkpoint}'s hyper_parameters") if stored else ({}, "")


def read_hparams_file(path: str | Path) -> dict[str, Any]:
    """A run's hparams.yaml (or a JSON/YAML file in the same layout) as a mapping."""
    data = read_text_config(path, "hparams file")
    if not isinstance(data, dict):
        raise BadInputError(
            f"hparams file {path}: expected a mapping (a run's hparams.yaml), got {type(data).__name__}"
        )
    return data


def heads_unknown(checkpoint: str | Path) -> BadInputError:
    """The refusal for a checkpoint whose head count nothing states."""
    return BadInputError(
        f"{checkpoint}: the number of attention heads is not in the weights and no hyper-parameters give it "
        f"(none stored in the file, no {HPARAMS_FILE} beside it); pass --hparams FILE (the run's {HPARAMS_FILE}) "
        "or --config FILE, or --preset full to assume the full preset's 8 heads"
    )


def weight_settings(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What the weights show: depth, width, patch size, MLP ratio; `num_variables`, `num_patches` for checks."""
    seen: dict[str, Any] = {}
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if blocks:
        seen["depth"] = max(blocks) + 1
    if "pos_embed" in state and state["pos_embed"].dim() == 3:
        seen["num_patches"], seen["embed_dim"] = (int(n) for n in state["pos_embed"].shape[1:])
    if "token_embeds.proj_weights" in state and state["token_embeds.proj_weights"].dim() == 5:
        seen["num_variables"] = int(state["token_embeds.proj_weights"].shape[0])
        seen["patch_size"] = int(state["token_embeds.proj_weights"].shape[-1])
    fc1 = state.get("blocks.0.mlp.0.weight")
    if fc1 is not None and fc1.dim() == 2 and fc1.shape[1] > 0:
        hidden, width = (int(n) for n in fc1.shape)
        if int(width * (hidden / width)) == hidden:
            seen["mlp_ratio"] = hidden / width
    return seen


def infer_config(
    state: Mapping[str, torch.Tensor],
    hparams: Mapping[str, Any],
    base: ModelConfig | None,
    source: str = "hparams",
    checkpoint: str | Path = "checkpoint",
    parallel_embed: bool | None = None,
) -> ModelConfig:
    """The checkpoint's architecture: the weights, then its hyper-parameters, then `base`.

    The weights give depth, width, patch size and MLP ratio (hyper-parameters that contradict them are
    refused). Heads, grid and variables come from the hyper-parameters; what they do not state comes
    from `base`. The heads are invisible in the weights, so without hyper-parameters giving them and
    without a `base` (a preset or config chosen explicitly) the checkpoint is refused. The wind-following
    scan is on exactly when the author's code turns it on: never with per-variable embeddings
    (`parallel_embed` False: `token_embeds.{i}.proj`), else as `parallel_patch_embed` in the
    hyper-parameters says, else as `base` says.
    """
    settings = hparams_settings(hparams, source) if hparams else {}
    if parallel_embed is False:
        settings["wind_scan"] = False
    seen = weight_settings(state)
    for key in ("depth", "embed_dim", "patch_size"):
        if key in settings and key in seen and settings[key] != seen[key]:
            raise BadInputError(
                f"{source} says {key} {settings[key]!r} but the checkpoint's weights have {seen[key]}; "
                "pass the hyper-parameters of the run these weights come from"
            )
    if "num_heads" not in settings and base is None:
        raise heads_unknown(checkpoint)
    updates = {**settings, **{k: v for k, v in seen.items() if k in ("depth", "embed_dim", "patch_size", "mlp_ratio")}}
    config = replace_settings(
        base if base is not None else PRESETS["full"], updates, source if hparams else str(checkpoint)
    )
    weights_v = seen.get("num_variables")
    if weights_v is not None and weights_v != len(config.variables):
        origin = source if "variables" in settings else "the config"
        raise BadInputError(
            f"{origin} lists {len(config.variables)} variables but the checkpoint's weights have {weights_v}; "
            "pass the run's hyper-parameters (--hparams) or a matching --config"
        )
    if "num_patches" in seen and seen["num_patches"] != config.num_patches:
        raise ModelFileError(
            f"{checkpoint}: the weights have {seen['num_patches']} patches but the grid {list(config.img_size)} "
            f"with patch {config.patch_size} gives {config.num_patches}; pass the run's hparams (--hparams) or a "
            "matching --config"
        )
    return config


def load_checkpoint(
    checkpoint: str | Path, base: ModelConfig | None, hparams: str | Path | Mapping[str, Any] | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(architecture, state dict in this toolkit's layout) of a checkpoint; see `infer_config`.

    Explicit `hparams` and hyper-parameters stored in the file must agree on what both state.
    """
    path = Path(checkpoint)
    raw, stored = read_checkpoint(path)
    parallel = not any(_PER_VAR_EMBED.match(key) for key in raw)
    state = to_parallel_patch_embed(raw)
    found, source = find_hparams(path, stored, hparams)
    if hparams is not None and stored:
        _check_agreement(
            hparams_settings(found, source), hparams_settings(stored, f"{path}'s hyper_parameters"), source
        )
    return infer_config(state, found, base, source, path, parallel), state


def _check_agreement(given: Mapping[str, Any], stored: Mapping[str, Any], source: str) -> None:
    for key in sorted(set(given) & set(stored)):
        if given[key] != stored[key]:
            raise BadInputError(
                f"{source} says {key} {as_written(given[key])} but the checkpoint's stored hyper-parameters say "
                f"{as_written(stored[key])}; expected the same run's settings"
            )


def load_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Strict load with an error that names missing and unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches {_few(mismatched)}")
        raise ModelFileError("checkpoint does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _few(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items)} in all)' if len(items) > limit else ''}]"
