"""Loading the author's checkpoints: Lightning .ckpt, plain state dicts, both patch-embedding layouts."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from cli_run import Completed, run_main  # tests/ is on sys.path under pytest

from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.model import build_model
from climax_deploy.schema import VARIABLES



def _author_state(model: torch.nn.Module, per_variable: bool) -> dict[str, torch.Tensor]:
    """The model's weights renamed the way the author's Lightning module stores them."""
    state = {}
    for key, value in model.state_dict().items():
        if per_variable and key == "token_embeds.proj_weights":
            for i, w in enumerate(value):
                state[f"model.climax.token_embeds.{i}.proj.weight"] = w.clone()
            continue
        if per_variable and key == "token_embeds.proj_biases":
            for i, b in enumerate(value):
                state[f"model.climax.token_embeds.{i}.proj.bias"] = b.clone()
            continue
        state[f"model.climax.{key}"] = value.clone()
    state["model.target_indices"] = torch.tensor([12, 5, 6, 7, 8, 9])
    state["china_mask"] = torch.ones(32, 64)
    return state


@pytest.mark.parametrize("per_variable", [False, True])
def test_lightning_checkpoint_round_trip(tmp_path, per_variable: bool) -> None:
    source = build_model("small", seed=7)
    with torch.no_grad():
        source.blocks[0].attn.elevation_barrier_strength.fill_(4.5)
    ckpt = tmp_path / "author.ckpt"
    torch.save({"state_dict": _author_state(source, per_variable), "hyper_parameters": {"net": {"num_heads": 4}},
                "epoch": 3}, ckpt)  # fmt: skip
    loaded = build_model("small", seed=0, checkpoint=ckpt)
    x, lt = torch.randn(1, 15, 32, 64), torch.tensor([24.0])
    with torch.no_grad():
        assert torch.equal(loaded(x, lt), source(x, lt))
    assert loaded.blocks[0].attn.elevation_barrier_strength.item() == 4.5


def test_plain_state_dict_infers_depth_and_width(tmp_path) -> None:
    source = build_model({"img_size": [32, 64], "embed_dim": 64, "depth": 3, "num_heads": 4, "wind_scan": False})
    path = tmp_path / "plain.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model("small", checkpoint=path)  # small says width 128, depth 2: the file wins
    assert len(loaded.blocks) == 3 and loaded.config.embed_dim == 64


def test_mismatch_names_missing_and_unexpected_keys(tmp_path) -> None:
    state = build_model("small").state_dict()
    del state["head.weight"]
    state["blocks.0.attn.extra"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=r"missing keys \[head.weight\].*unexpected keys \[blocks.0.attn.extra\]"):
        build_model("small", checkpoint=path)


def test_not_a_checkpoint(tmp_path) -> None:
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="cannot read"):
        build_model("small", checkpoint=path)


def _author_hparams(model: torch.nn.Module, **model_keys: Any) -> dict[str, Any]:
    """What the author's Lightning module stores via save_hyperparameters(): its whole config."""
    c = model.config
    net = {"img_size": list(c.img_size), "patch_size": c.patch_size, "embed_dim": c.embed_dim, "depth": c.depth,
           "num_heads": c.num_heads, "mlp_ratio": c.mlp_ratio, "decoder_depth": 2, "parallel_patch_embed": c.wind_scan,
           "drop_path": 0.1, **model_keys}  # fmt: skip
    data = {"variables": list(c.variables), "target_variables": list(c.outputs), "batch_size": 4, "pin_memory": True}
    return {"config": {"model": net, "data": data, "train": {"lr": 5e-4, "max_epochs": 50}}}


def _save_author(path: Path, model: torch.nn.Module, hparams: dict[str, Any] | None) -> Path:
    ckpt: dict[str, Any] = {"state_dict": _author_state(model, per_variable=False), "epoch": 3}
    if hparams is not None:
        ckpt["hyper_parameters"] = hparams
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def _same_output(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    h, w = a.config.img_size
    x, lt = torch.randn(1, len(a.config.variables), h, w), torch.tensor([24.0])
    with torch.no_grad():
        return torch.equal(a(x, lt), b(x, lt))


# A grid and head count no preset has: before, these checkpoints failed to load or loaded with 8 heads.
ODD = {"img_size": [16, 32], "embed_dim": 64, "depth": 2, "num_heads": 2, "wind_scan": False}


def test_author_hyper_parameters_give_heads_and_grid(tmp_path: Path) -> None:
    source = build_model(ODD, seed=3)
    ckpt = _save_author(tmp_path / "epoch=3.ckpt", source, _author_hparams(source))
    loaded = build_model(checkpoint=ckpt)
    assert loaded.config.num_heads == 2 and loaded.config.img_size == (16, 32)
    assert _same_output(loaded, source)


@pytest.mark.parametrize("layout", ["beside", "version_folder"])
def test_hparams_yaml_next_to_the_checkpoint(tmp_path: Path, layout: str) -> None:
    source = build_model(ODD, seed=3)
    run = tmp_path / "lightning_logs" / "version_0"
    ckpt_dir = run if layout == "beside" else run / "checkpoints"
    ckpt = _save_author(ckpt_dir / "epoch=3-step=100.ckpt", source, None)
    (run / "hparams.yaml").write_text(yaml.safe_dump(_author_hparams(source)))
    loaded = build_model(checkpoint=ckpt)
    assert loaded.config.num_heads == 2 and _same_output(loaded, source)


@pytest.mark.parametrize("form", ["file", "mapping"])
def test_explicit_hparams_argument(tmp_path: Path, form: str) -> None:
    source = build_model(ODD, seed=3)
    ckpt = tmp_path / "weights.pt"
    torch.save(source.state_dict(), ckpt)
    hparams: Any = _author_hparams(source)
    if form == "file":
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(hparams))
        hparams = tmp_path / "run.yaml"
    loaded = build_model(checkpoint=ckpt, hparams=hparams)
    assert loaded.config.num_heads == 2 and _same_output(loaded, source)


def test_unknown_heads_are_refused_unless_a_config_says_them(tmp_path: Path) -> None:
    """A plain state dict on the full grid with 4 heads used to load silently with the full preset's 8."""
    source = build_model({"embed_dim": 64, "depth": 1, "num_heads": 4})  # the full preset's 128 x 256 grid
    ckpt = tmp_path / "plain.pt"
    torch.save(source.state_dict(), ckpt)
    with pytest.raises(BadInputError, match=r"heads.*hparams.*preset full") as info:
        build_model(checkpoint=ckpt)
    assert "\n" not in str(info.value)
    assert build_model("full", checkpoint=ckpt).config.num_heads == 8  # an explicit preset is taken at its word
    assert build_model({"num_heads": 4}, checkpoint=ckpt).config.num_heads == 4


def test_variable_order_comes_from_the_data_config(tmp_path: Path) -> None:
    order = tuple(reversed(VARIABLES))
    outputs = ("o3", "pm25")
    source = build_model({**ODD, "variables": order, "outputs": outputs}, seed=5)
    ckpt = _save_author(tmp_path / "a.ckpt", source, _author_hparams(source))
    loaded = build_model("small", checkpoint=ckpt)
    assert loaded.config.variables == order and loaded.config.outputs == outputs
    assert _same_output(loaded, source)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"variables": ["t2m" if v == "temp" else v for v in VARIABLES]}, r"unknown variables \['t2m'\]"),
        ({"variables": list(VARIABLES[:-1])}, r"14 variables.*weights have 15"),
        ({"target_variables": ["pm25", "nox"]}, r"'nox'"),
    ],
)
def test_bad_variable_lists_are_refused_by_name(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    source = build_model("small")
    hparams = _author_hparams(source)
    hparams["config"]["data"].update(data)
    ckpt = _save_author(tmp_path / "a.ckpt", source, hparams)
    with pytest.raises(BadInputError, match=message):
        build_model(checkpoint=ckpt)


@pytest.mark.parametrize(
    ("model_keys", "message"),
    [
        ({"use_pollutant_cross_attention": True}, "pollutant cross-attention"),
        ({"hierarchical_physics": {"enabled": True, "levels": 3}}, "hierarchical physics"),
        ({"use_wind_memory": True, "wind_memory_steps": 4}, "wind memory"),
        ({"wind_memory_steps": 4}, "wind memory"),
    ],
)
def test_optional_modules_are_refused_by_name(tmp_path: Path, model_keys: dict[str, Any], message: str) -> None:
    source = build_model("small")
    ckpt = _save_author(tmp_path / "a.ckpt", source, _author_hparams(source, **model_keys))
    with pytest.raises(BadInputError, match=message):
        build_model(checkpoint=ckpt)


def test_disabled_optional_modules_load(tmp_path: Path) -> None:
    source = build_model("small")
    keys = {"use_wind_memory": False, "wind_memory_steps": 4, "use_pollutant_cross_attention": False}
    ckpt = _save_author(tmp_path / "a.ckpt", source, _author_hparams(source, **keys))
    assert _same_output(build_model(checkpoint=ckpt), source)


def test_optional_module_weights_are_refused(tmp_path: Path) -> None:
    """Weights outside model.climax.* (dropped with the prefix) that belong to a module this toolkit lacks."""
    source = build_model("small")
    ckpt = {"state_dict": _author_state(source, per_variable=False), "hyper_parameters": _author_hparams(source)}
    ckpt["state_dict"]["model.pollutant_cross_attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "a.ckpt")
    with pytest.raises(ModelFileError, match=r"pollutant cross-attention.*model.pollutant_cross_attn.qkv.weight"):
        build_model(checkpoint=tmp_path / "a.ckpt")


def test_hparams_that_contradict_the_weights_are_refused(tmp_path: Path) -> None:
    source = build_model("small")  # depth 2
    ckpt = _save_author(tmp_path / "a.ckpt", source, _author_hparams(source, depth=8))
    with pytest.raises(BadInputError, match=r"depth 8.*2"):
        build_model(checkpoint=ckpt)


def test_non_finite_weights_are_refused_by_name(tmp_path: Path) -> None:
    state = build_model("small").state_dict()
    state["head.weight"][0, 0] = float("nan")
    state["blocks.1.norm1.bias"][3] = float("inf")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(ModelFileError, match=r"NaN or Inf.*blocks.1.norm1.bias.*head.weight"):
        build_model("small", checkpoint=tmp_path / "nan.pt")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b"not a checkpoint"), "expected a PyTorch checkpoint"),
        (lambda p: p.write_bytes(pickle.dumps("hello")), "expected a PyTorch checkpoint"),
        (lambda p: torch.save("hello", p), "got str"),
        (lambda p: torch.save({"state_dict": 5}, p), r"'state_dict'.*got int"),
        (lambda p: torch.save({"state_dict": {"a": "b"}}, p), "no tensors"),
        (lambda p: torch.save({"hyper_parameters": 7, "state_dict": {}}, p), "no tensors"),
    ],
)
def test_unreadable_checkpoints_are_one_line(tmp_path: Path, write: Any, message: str) -> None:
    path = tmp_path / "x.ckpt"
    write(path)
    with pytest.raises((ModelFileError, BadInputError), match=message) as info:
        build_model("small", checkpoint=path)
    assert "\n" not in str(info.value) and "x.ckpt" in str(info.value)


def _export_onnx(tmp_path: Path, *args: str) -> Completed:
    """export-onnx -q -o m.onnx ARGS, in-process (main(argv))."""
    from climax_deploy.export.cli import main

    return run_main("export-onnx", main, ["-q", "-o", "m.onnx", *args], tmp_path)


def _assert_one_line_exit_2(out: Completed, *fragments: str) -> None:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, out.stderr


def test_cli_refuses_a_checkpoint_without_heads(tmp_path: Path) -> None:
    torch.save(build_model("small").state_dict(), tmp_path / "plain.pt")
    _assert_one_line_exit_2(_export_onnx(tmp_path, "--checkpoint", "plain.pt"), "--hparams", "--preset full")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    ("write", "fragment"),
    [
        (lambda p: p.write_bytes(b"not a checkpoint"), "expected a PyTorch checkpoint"),
        (lambda p: p.write_bytes(pickle.dumps("hello")), "expected a PyTorch checkpoint"),
        (lambda p: torch.save({"state_dict": 5}, p), "got int"),
    ],
)
def test_cli_unreadable_checkpoint_is_one_line(tmp_path: Path, write: Any, fragment: str) -> None:
    write(tmp_path / "x.ckpt")
    _assert_one_line_exit_2(_export_onnx(tmp_path, "--preset", "small", "--checkpoint", "x.ckpt"), fragment)


def test_cli_bad_hparams_file_is_one_line(tmp_path: Path) -> None:
    torch.save(build_model("small").state_dict(), tmp_path / "plain.pt")
    (tmp_path / "hparams.yaml").write_text("config:\n  model: [1,\n")
    out = _export_onnx(tmp_path, "--hparams", "hparams.yaml", "--checkpoint", "plain.pt")
    _assert_one_line_exit_2(out, "hparams.yaml", "YAML")


def test_cli_exports_with_an_hparams_file(tmp_path: Path) -> None:
    source = build_model(ODD, seed=3)
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    (tmp_path / "hparams.yaml").write_text(yaml.safe_dump(_author_hparams(source)))
    out = _export_onnx(tmp_path, "--hparams", "hparams.yaml", "--checkpoint", "plain.pt")
    assert out.returncode == 0, out.stderr
    manifest = (tmp_path / "m.onnx.manifest.json").read_text()
    assert '"num_heads": 2' in manifest and "hparams.yaml" in manifest
