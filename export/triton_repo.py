"""A Triton Inference Server model repository from exported artifacts (torch-free).

    repo/
      climax_onnx/config.pbtxt     backend onnxruntime, dynamic batching, CPU (or GPU) instances
      climax_onnx/1/model.onnx     + its external data and manifest
      climax_trt/config.pbtxt      backend tensorrt, GPU instances (only where an engine is given)
      climax_trt/1/model.plan      + its manifest
      README.md                    how to serve it, plugin library notes

Shapes come from each artifact's manifest: x [B, V, H, W] and lead_times [B] (a batched [B, 1]
reshaped to [B] for the model) in, y [B, O, H, W] out, float32. A fixed-batch artifact gets
max_batch_size 0 and full shapes (Triton cannot batch it). Model names follow MODEL_NAME (a model's
folder name, nothing else); every string in a config.pbtxt is written escaped (`pbtxt_string`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from climax_deploy.artifacts import check_outputs_distinct, check_writable_dir, write_bytes_atomic
from climax_deploy.errors import BadInputError
from climax_deploy.manifest import (
    ENGINE_KIND,
    ONNX_KIND,
    Manifest,
    artifact_files,
    manifest_path,
    read_engine_manifest,
    read_onnx_manifest,
)
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

INSTANCE_KINDS = ("cpu", "gpu")
BACKENDS = {ONNX_KIND: "onnxruntime", ENGINE_KIND: "tensorrt"}  # Triton backend of each artifact kind
# A Triton model name is its folder's name in the repository (and a URL path segment of the KServe API):
# letters, digits, '_', '-', '.', starting with a letter or digit, within a file name's length.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
NAME_SUFFIXES = ("_onnx", "_trt")


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

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not MODEL_NAME.fullmatch(self.name):
            raise BadInputError(
                f"--name must be letters, digits, '_', '-' or '.', starting with a letter or digit (at most "
                f"200; it names the model folders {self.name}_onnx and _trt), got {self.name!r}"
            )
        if self.version < 1:
            raise BadInputError(f"model version must be >= 1, got {self.version}")
        if self.max_batch < 1 or self.instances < 1:
            raise BadInputError(f"max batch and instances must be >= 1, got {self.max_batch} and {self.instances}")
        if self.onnx_instance_kind not in INSTANCE_KINDS:
            raise BadInputError(f"instance kind must be one of {INSTANCE_KINDS}, got {self.onnx_instance_kind!r}")
        if self.max_queue_delay_us < 0:
            raise BadInputError(f"max queue delay must be >= 0 microseconds, got {self.max_queue_delay_us}")


def preferred_sizes(max_batch: int, given: Sequence[int] | None) -> list[int]:
    if given:
        bad = [b for b in given if b < 1 or b > max_batch]
        if bad:
            raise BadInputError(f"preferred batch sizes {bad} are outside 1..{max_batch} (the max batch)")
        return sorted(set(given))
    return sorted({b for b in (1, 2, 4, 8, 16, 32, 64) if b <= max_batch} | {max_batch})


def pbtxt_string(text: str) -> str:
    """`text` as a quoted protobuf text-format string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _dims(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def model_config(manifest: Manifest, name: str, instance_kind: str, options: TritonRepoOptions, filename: str) -> str:
    """The config.pbtxt text (protobuf text format of Triton's ModelConfig) of one artifact.

    `instance_kind` is "cpu" or "gpu". A dynamic batch is capped by the artifact's maximum
    (an engine's profile); a fixed-batch artifact is not batched by Triton.
    """
    backend = BACKENDS[manifest.kind]
    n_vars, n_out = len(manifest.model.variables), len(manifest.model.output_variables)
    h, w = manifest.model.grid
    fixed = manifest.batch.size
    max_batch = options.max_batch if manifest.batch.max is None else min(options.max_batch, manifest.batch.max)
    lines = [f"name: {pbtxt_string(name)}", f"backend: {pbtxt_string(backend)}",
             f"default_model_filename: {pbtxt_string(filename)}"]  # fmt: skip
    if fixed is None:
        lines.append(f"max_batch_size: {max_batch}")
        x_dims, lead_dims, y_dims = [n_vars, h, w], [1], [n_out, h, w]
        lead_reshape = "\n    reshape: { shape: [ ] }"  # the client's [B, 1] is the model's [B]
    else:  # a fixed-batch artifact: Triton passes whole tensors, no batching
        lines.append("max_batch_size: 0")
        x_dims, lead_dims, y_dims = [fixed, n_vars, h, w], [fixed], [fixed, n_out, h, w]
        lead_reshape = ""
    lines += [
        "input [",
        f'  {{\n    name: {pbtxt_string(INPUT_NAME)}\n    data_type: TYPE_FP32\n    dims: {_dims(x_dims)}\n  }},',
        f'  {{\n    name: {pbtxt_string(LEAD_TIMES_NAME)}\n    data_type: TYPE_FP32\n    dims: {_dims(lead_dims)}{lead_reshape}\n  }}',
        "]",
        "output [",
        f'  {{\n    name: {pbtxt_string(OUTPUT_NAME)}\n    data_type: TYPE_FP32\n    dims: {_dims(y_dims)}\n  }}',
        "]",
        f"instance_group [\n  {{\n    count: {options.instances}\n    kind: KIND_{instance_kind.upper()}\n  }}\n]",
    ]
    if fixed is None:
        sizes = preferred_sizes(max_batch, options.preferred_batch_sizes)
        lines.append(
            f"dynamic_batching {{\n  preferred_batch_size: {_dims(sizes)}\n"
            f"  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}"
        )
    if manifest.kind == ONNX_KIND and options.onnx_threads:
        lines.append('parameters { key: "intra_op_thread_count" value: { string_value: "%d" } }' % options.onnx_threads)
    return "\n".join(lines) + "\n"


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _add_onnx(repo: Path, onnx_path: Path, options: TritonRepoOptions) -> Path:
    manifest = read_onnx_manifest(onnx_path)
    name = f"{options.name}_onnx"
    version_dir = repo / name / str(options.version)
    _copy(onnx_path, version_dir / "model.onnx")
    # External weights keep their file name: the graph refers to them by it, relative to the model.
    # artifact_files keeps them inside the artifact's folder, so their copies stay inside version_dir.
    for data_name, data_path in artifact_files(onnx_path, manifest).items():
        _copy(data_path, version_dir / data_name)
    _copy(manifest_path(onnx_path), version_dir / "model.onnx.manifest.json")
    config = model_config(manifest, name, options.onnx_instance_kind, options, "model.onnx")
    write_bytes_atomic(repo / name / "config.pbtxt", config.encode())
    return repo / name / "config.pbtxt"


def _add_engine(repo: Path, engine_path: Path, options: TritonRepoOptions) -> Path:
    manifest = read_engine_manifest(engine_path)
    name = f"{options.name}_trt"
    version_dir = repo / name / str(options.version)
    _copy(engine_path, version_dir / "model.plan")
    _copy(manifest_path(engine_path), version_dir / "model.plan.manifest.json")
    config = model_config(manifest, name, "gpu", options, "model.plan")
    write_bytes_atomic(repo / name / "config.pbtxt", config.encode())
    return repo / name / "config.pbtxt"


def repo_readme(models: dict[str, dict[str, str]]) -> str:
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
        raise BadInputError("nothing to export: give --onnx MODEL.onnx, --engine MODEL.engine, or both")
    repo = Path(output)
    if repo.exists() and not repo.is_dir():
        raise BadInputError(f"{repo} exists and is not a directory")
    # The model folders this run replaces (and its staging folder) must hold none of the inputs.
    replaced = {f"the {kind} model folder": repo / f"{options.name}_{kind}" for kind in ("onnx", "trt")}
    replaced["the staging folder"] = repo.with_name(f".{repo.name}.tmp")
    check_outputs_distinct({"--onnx": onnx, "--engine": engine}, {"-o": repo}, replaced)
    check_writable_dir(repo)
    staging = repo.with_name(f".{repo.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    configs: dict[str, Path] = {}
    models: dict[str, dict[str, str]] = {}
    try:
        if onnx is not None:
            cfg = _add_onnx(staging, Path(onnx), options)
            configs[cfg.parent.name] = cfg
            models[cfg.parent.name] = {"backend": "onnxruntime", "source": str(onnx)}
        if engine is not None:
            cfg = _add_engine(staging, Path(engine), options)
            configs[cfg.parent.name] = cfg
            models[cfg.parent.name] = {"backend": "tensorrt", "source": str(engine)}
        write_bytes_atomic(staging / "README.md", repo_readme(models).encode())
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


__all__ = ["MODEL_NAME", "TritonRepoOptions", "model_config", "pbtxt_string", "preferred_sizes", "write_triton_repo"]
