"""A Triton Inference Server model repository from exported artifacts (torch-free).

    repo/
      climax_onnx/config.pbtxt     backend onnxruntime, dynamic batching, CPU (or GPU) instances
      climax_onnx/1/model.onnx     + its external data and manifest
      climax_trt/config.pbtxt      backend tensorrt, GPU instances (only where an engine is given)
      climax_trt/1/model.plan      + its manifest
      README.md                    how to serve it, plugin library notes

Shapes come from each artifact's manifest: x [B, V, H, W] and lead_times [B] (a batched [B, 1]
reshaped to [B] for the model) in, y [B, O, H, W] out, float32. A fixed-batch artifact gets
max_batch_size 0 and full shapes (Triton cannot batch it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from climax_deploy.artifacts import manifest_path, read_manifest, write_bytes_atomic
from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

ONNX_KIND = "onnx"
ENGINE_KIND = "tensorrt-engine"
INSTANCE_KINDS = ("cpu", "gpu")


@dataclass(frozen=True)
class TritonRepoOptions:
    """What goes into each config.pbtxt."""

    name: str = "climax"
    max_batch: int = 4
    preferred_batch_sizes: tuple[int, ...] | None = None  # None: powers of two up to max_batch, and max_batch
    max_queue_delay_us: int = 2000
    instances: int = 1
    onnx_instance_kind: str = "cpu"  # the TensorRT plan always runs on GPU
    onnx_threads: int | None = None  # ONNX Runtime intra-op threads per instance
    version: int = 1


def preferred_sizes(max_batch: int, given: Sequence[int] | None) -> list[int]:
    if given:
        bad = [b for b in given if b < 1 or b > max_batch]
        if bad:
            raise BadInputError(f"preferred batch sizes {bad} are outside 1..{max_batch} (the max batch)")
        return sorted(set(given))
    return sorted({b for b in (1, 2, 4, 8, 16, 32, 64) if b <= max_batch} | {max_batch})


def _dims(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def model_config(manifest: dict[str, Any], name: str, backend: str, kind: str, options: TritonRepoOptions,
                 filename: str, max_batch_limit: int | None = None) -> str:  # fmt: skip
    """The config.pbtxt text (protobuf text format of Triton's ModelConfig)."""
    try:
        n_vars, n_out = len(manifest["variables"]), len(manifest["output_variables"])
        h, w = (int(v) for v in manifest["grid"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"manifest lacks variables/output_variables/grid ({exc!r})") from exc
    fixed = manifest.get("batch", "dynamic")
    lines = [f'name: "{name}"', f'backend: "{backend}"', f'default_model_filename: "{filename}"']
    if fixed == "dynamic":
        max_batch = options.max_batch if max_batch_limit is None else min(options.max_batch, max_batch_limit)
        if max_batch < 1:
            raise BadInputError(f"max batch must be >= 1, got {max_batch}")
        lines.append(f"max_batch_size: {max_batch}")
        x_dims, lead_dims, y_dims = [n_vars, h, w], [1], [n_out, h, w]
        lead_reshape = "\n    reshape: { shape: [ ] }"  # the client's [B, 1] is the model's [B]
    else:  # a fixed-batch artifact: Triton passes whole tensors, no batching
        b = int(fixed)
        lines.append("max_batch_size: 0")
        x_dims, lead_dims, y_dims = [b, n_vars, h, w], [b], [b, n_out, h, w]
        lead_reshape = ""
    lines += [
        "input [",
        f'  {{\n    name: "{INPUT_NAME}"\n    data_type: TYPE_FP32\n    dims: {_dims(x_dims)}\n  }},',
        f'  {{\n    name: "{LEAD_TIMES_NAME}"\n    data_type: TYPE_FP32\n    dims: {_dims(lead_dims)}{lead_reshape}\n  }}',
        "]",
        "output [",
        f'  {{\n    name: "{OUTPUT_NAME}"\n    data_type: TYPE_FP32\n    dims: {_dims(y_dims)}\n  }}',
        "]",
        f"instance_group [\n  {{\n    count: {options.instances}\n    kind: KIND_{kind.upper()}\n  }}\n]",
    ]
    if fixed == "dynamic":
        sizes = preferred_sizes(max_batch, options.preferred_batch_sizes)
        lines.append(
            f"dynamic_batching {{\n  preferred_batch_size: {_dims(sizes)}\n"
            f"  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}"
        )
    if backend == "onnxruntime" and options.onnx_threads:
        lines.append('parameters { key: "intra_op_thread_count" value: { string_value: "%d" } }' % options.onnx_threads)
    return "\n".join(lines) + "\n"


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _add_onnx(repo: Path, onnx_path: Path, options: TritonRepoOptions) -> Path:
    manifest = read_manifest(onnx_path)
    if manifest.get("kind") != ONNX_KIND:
        raise ModelFileError(f"{onnx_path}: manifest kind {manifest.get('kind')!r}, expected {ONNX_KIND!r}")
    if options.onnx_instance_kind not in INSTANCE_KINDS:
        raise BadInputError(f"instance kind must be one of {INSTANCE_KINDS}, got {options.onnx_instance_kind!r}")
    name = f"{options.name}_onnx"
    version_dir = repo / name / str(options.version)
    _copy(onnx_path, version_dir / "model.onnx")
    # External weights keep their file name: the graph refers to them by it, relative to the model.
    for data_name in manifest.get("external_data", {}):
        _copy(onnx_path.parent / data_name, version_dir / data_name)
    _copy(manifest_path(onnx_path), version_dir / "model.onnx.manifest.json")
    config = model_config(manifest, name, "onnxruntime", options.onnx_instance_kind, options, "model.onnx")
    write_bytes_atomic(repo / name / "config.pbtxt", config.encode())
    return repo / name / "config.pbtxt"


def _add_engine(repo: Path, engine_path: Path, options: TritonRepoOptions) -> Path:
    manifest = read_manifest(engine_path)
    if manifest.get("kind") != ENGINE_KIND:
        raise ModelFileError(f"{engine_path}: manifest kind {manifest.get('kind')!r}, expected {ENGINE_KIND!r}")
    name = f"{options.name}_trt"
    version_dir = repo / name / str(options.version)
    _copy(engine_path, version_dir / "model.plan")
    _copy(manifest_path(engine_path), version_dir / "model.plan.manifest.json")
    limit = manifest.get("max_batch")
    config = model_config(manifest, name, "tensorrt", "gpu", options, "model.plan",
                          int(limit) if limit is not None else None)  # fmt: skip
    write_bytes_atomic(repo / name / "config.pbtxt", config.encode())
    return repo / name / "config.pbtxt"


def repo_readme(models: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Triton model repository (written by climax-deploy `export-triton-repo`)",
        "",
        "Serve it: `tritonserver --model-repository $(pwd)` (NVIDIA's container nvcr.io/nvidia/tritonserver:<yy.mm>-py3).",
        "Inputs: `x` [B, V, H, W] float32 (standardised, variables in the manifest's order), `lead_times` [B, 1]",
        "float32 hours; output `y` [B, O, H, W] float32 (standardised). Each version folder keeps the artifact's",
        "manifest (standardisation stats, variables, sha256).",
        "",
    ]
    for name, info in models.items():
        lines.append(f"- `{name}`: {info['backend']} backend, from `{info['source']}`")
    if any(i["backend"] == "tensorrt" for i in models.values()):
        lines += [
            "",
            "## TensorRT plan",
            "- The plan runs only with the TensorRT version and GPU it was built for (see model.plan.manifest.json);",
            "  use the Triton release whose TensorRT matches, or a version-compatible engine.",
            "- An engine built with the ElevationAttention *plugin* needs the plugin library loaded into the server:",
            "  `LD_PRELOAD=/path/libclimax_plugins.so tritonserver ...` or",
            "  `tritonserver --backend-config=tensorrt,plugins=/path/libclimax_plugins.so ...`. Engines whose plugin",
            "  is an ahead-of-time Python plugin (TensorRT >= 10.9) or that use native attention need nothing extra.",
        ]
    lines += [
        "",
        "## ONNX",
        "- The graph's `climax::ElevationAttention` node is a model-local function; ONNX Runtime (>= 1.15) inlines",
        "  it, so the stock onnxruntime backend runs the file as is.",
    ]
    return "\n".join(lines) + "\n"


def write_triton_repo(
    output: str | os.PathLike[str],
    onnx: str | os.PathLike[str] | None = None,
    engine: str | os.PathLike[str] | None = None,
    options: TritonRepoOptions | None = None,
) -> dict[str, Path]:
    """Write the repository; return {model name: its config.pbtxt}. Existing model folders are replaced."""
    options = options or TritonRepoOptions()
    if onnx is None and engine is None:
        raise BadInputError("nothing to export: give an ONNX model, an engine, or both")
    repo = Path(output)
    if repo.exists() and not repo.is_dir():
        raise BadInputError(f"{repo} exists and is not a directory")
    staging = repo.with_name(f".{repo.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    configs: dict[str, Path] = {}
    models: dict[str, dict[str, Any]] = {}
    try:
        if onnx is not None:
            cfg = _add_onnx(staging, Path(onnx), options)
            configs[cfg.parent.name] = cfg
            models[cfg.parent.name] = {"backend": "onnxruntime", "source": str(onnx)}
        if engine is not None:
            cfg = _add_engine(staging, Path(engine), options)
            configs[cfg.parent.name] = cfg
            models[cfg.parent.name] = {"backend": "tensorrt", "source": str(engine)}
        (staging / "README.md").write_text(repo_readme(models))
        repo.mkdir(parents=True, exist_ok=True)
        for entry in staging.iterdir():  # replace only what we wrote; other models in the repo stay
            target = repo / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: repo / name / "config.pbtxt" for name in configs}


__all__ = ["TritonRepoOptions", "model_config", "preferred_sizes", "write_triton_repo"]
