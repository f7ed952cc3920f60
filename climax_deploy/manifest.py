"""The artifact contract: typed manifests of exported ONNX models and TensorRT engines.

This is the only module that reads or writes manifest JSON (the sidecar `<artifact>.manifest.json`
and the copy embedded in an ONNX file's metadata). Everything else uses the dataclasses' attributes.

    manifest = read_manifest("m.onnx")          # OnnxManifest | EngineManifest, sha256 verified
    manifest.model.grid, manifest.batch.max     # typed fields, never manifest["..."]

Parsing is strict: a missing or mistyped field is a ModelFileError naming the field. A manifest
from another schema version is refused with the version it has and the one this toolkit reads.
Manifests may come from elsewhere: hostile JSON is refused (climax_deploy.artifacts.parse_json) and
every file a manifest names must lie inside the artifact's folder (`artifact_files`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar, Union

from climax_deploy.artifacts import (
    MANIFEST_SUFFIX,
    ArtifactWriter,
    check_relative_name,
    inside_folder,
    json_bytes,
    parse_json,
    sha256_file,
)
from climax_deploy.errors import BadInputError, ModelFileError
from climax_deploy.schema import (
    CUSTOM_DOMAIN,
    CUSTOM_OP,
    CUSTOM_OP_VERSION,
    INPUT_NAME,
    LEAD_TIMES_NAME,
    OUTPUT_NAME,
)
from climax_deploy.standardisation import Standardisation, check_stats

FORMAT = "climax-deploy/manifest"
SCHEMA_VERSION = 4  # 4: model.config.wind_scan (the wind-following patch scan is part of the model)
METADATA_KEY = "climax_deploy.manifest"  # the manifest embedded in an ONNX file's metadata_props
CONTENT_KEY = "content_sha256"  # sha256 of the manifest's canonical JSON without this field
ONNX_KIND = "onnx"
ENGINE_KIND = "tensorrt-engine"
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
ATTENTION_MODES: tuple[str, ...] = ("inline", "native", "plugin")
HARDWARE_COMPAT_LEVELS: tuple[str, ...] = ("none", "ampere+", "same-cc")
PRECISION_CHOICES: tuple[str, ...] = ("auto", *PRECISIONS)  # an engine build's request: "auto" is the graph's
DEFAULT_OPT_LEVEL = 3
MAX_OPT_LEVEL = 5


# -- batch ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSpec:
    """The batch sizes an artifact accepts: min <= opt <= max; max None means no upper limit.

    A fixed-batch export is (B, B, B); a dynamic export (1, 1, None); an engine its optimisation
    profile (min, opt, max).
    """

    min: int = 1
    opt: int = 1
    max: int | None = None

    def __post_init__(self) -> None:
        hi = self.max if self.max is not None else max(self.min, self.opt)
        if not 1 <= self.min <= self.opt <= hi:
            raise BadInputError(f"batch needs 1 <= min <= opt <= max, got {self.min},{self.opt},{self.max}")

    @classmethod
    def dynamic(cls) -> BatchSpec:
        return cls(1, 1, None)

    @classmethod
    def fixed(cls, size: int) -> BatchSpec:
        return cls(size, size, size)

    @classmethod
    def parse(cls, text: str) -> BatchSpec:
        """'dynamic' -> (1, 1, None); 'N' -> (N, N, N); 'MIN,OPT,MAX' -> a profile."""
        text = text.strip()
        if text == "dynamic":
            return cls.dynamic()
        expected = f"expected 'dynamic' or a positive integer N or MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {text!r}"
        try:
            values = [int(p) for p in text.split(",")]
        except ValueError:
            raise BadInputError(expected) from None
        if len(values) == 1:
            values *= 3
        if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
            raise BadInputError(expected)
        return cls(*values)

    @property
    def size(self) -> int | None:
        """The one batch a fixed-batch artifact takes; None when it takes a range."""
        return self.min if self.min == self.max else None

    def admits(self, batch: int) -> bool:
        return self.min <= batch and (self.max is None or batch <= self.max)

    def check(self, batch: int) -> None:
        """BadInputError unless this artifact runs `batch` samples at once."""
        if self.size is not None and batch != self.size:
            raise BadInputError(f"this model was exported for batch {self.size}, got batch {batch}")
        if batch < self.min:
            raise BadInputError(f"batch {batch} is below this model's minimum batch {self.min}")
        if self.max is not None and batch > self.max:
            raise BadInputError(f"batch {batch} exceeds this model's maximum batch {self.max}")

    def within(self, outer: BatchSpec) -> None:
        """BadInputError unless every batch of this spec is one that `outer` (the export) admits."""
        if outer.size is not None and (self.min, self.max) != (outer.size, outer.size):
            raise BadInputError(
                f"the model was exported for batch {outer.size}; use --batch {outer.size} or re-export with --batch dynamic"
            )
        if self.max is None or not outer.admits(self.min) or not outer.admits(self.max):
            raise BadInputError(f"batch {self} is outside what the model takes ({outer})")

    def __str__(self) -> str:
        if self.size is not None:
            return str(self.size)
        if (self.min, self.opt, self.max) == (1, 1, None):
            return "dynamic"
        return f"{self.min},{self.opt},{'*' if self.max is None else self.max}"

    def to_json(self) -> dict[str, int | None]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


# -- records ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    """A file the artifact came from: path (as given) and sha256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ModelRecord:
    """What the model is, shared by an export and the engines built from it."""

    variables: tuple[str, ...]
    output_variables: tuple[str, ...]
    grid: tuple[int, int]
    lat: tuple[float, ...]  # the training grid's cell centres in degrees_north, in the model's row order
    lon: tuple[float, ...]  # ... and in degrees_east, in its column order
    patch_size: int
    num_patches: int
    config: Mapping[str, Any]  # ModelConfig.to_dict(): enough to rebuild the PyTorch reference
    standardisation: Standardisation
    seed: int | None = None  # seeded random weights, or
    checkpoint: FileRecord | None = None  # the checkpoint the weights came from
    preset: str | None = None
    config_file: FileRecord | None = None
    stats_file: FileRecord | None = None


@dataclass(frozen=True)
class OnnxManifest:
    """The manifest of a model written by export-onnx."""

    precision: str
    batch: BatchSpec
    model: ModelRecord
    opset: int
    heads_per_chunk: int  # attention layout: heads computed together in each chunk
    versions: Mapping[str, str]
    created_utc: str
    # (domain, op, version) of the custom attention node; None: `--standard-ops`, no custom domain in the file
    custom_op: tuple[str, str, int] | None = (CUSTOM_DOMAIN, CUSTOM_OP, CUSTOM_OP_VERSION)
    file: str = ""  # set by write_manifest, with the checksums
    sha256: str = ""
    external_data: Mapping[str, str] = field(default_factory=dict)  # {file name: sha256}

    kind = ONNX_KIND


@dataclass(frozen=True)
class GpuRecord:
    name: str
    compute_capability: str  # "8.9"
    total_memory_bytes: int
    index: int = 0


@dataclass(frozen=True)
class BuildOptions:
    """How a TensorRT engine is built: what build-engine is asked for and, resolved, what its manifest records.

    The one record of the build options: build-engine's flags fill it, the builder reads it, the
    engine's manifest stores it (its fields are the manifest's keys) and the runtime reads it back.
    A request may leave `batch` None (the export's fixed batch, else a default profile) and
    `precision` "auto" (the graph's); a manifest holds them resolved.
    """

    batch: BatchSpec | None = None  # the optimisation profile over the batch
    precision: str = "auto"  # what the engine computes in
    attention: str = "inline"  # how the ElevationAttention function is built: inline, native, plugin
    opt_level: int = DEFAULT_OPT_LEVEL  # builder optimisation level
    hardware_compatibility: str = "none"
    version_compatible: bool = False  # runs on later TensorRT releases (and the lean runtime)
    exclude_lean_runtime: bool = False  # with version_compatible: the plan carries no lean runtime
    workspace_bytes: int | None = None  # workspace memory-pool limit; None: TensorRT's
    timing_cache: str | None = None  # timing cache file, loaded if present and saved after
    tf32: bool = False  # BuilderFlag.TF32: float32 GEMMs may round inputs to TF32 (trtexec without --noTF32)

    def __post_init__(self) -> None:
        if not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise BadInputError(f"--opt-level must be 0..{MAX_OPT_LEVEL}, got {self.opt_level}")
        if self.hardware_compatibility not in HARDWARE_COMPAT_LEVELS:
            raise BadInputError(
                f"--hardware-compat must be one of {HARDWARE_COMPAT_LEVELS}, got {self.hardware_compatibility!r}"
            )
        if self.attention not in ATTENTION_MODES:
            raise BadInputError(f"--attention must be one of {', '.join(ATTENTION_MODES)}, got {self.attention!r}")
        if self.precision not in PRECISION_CHOICES:
            raise BadInputError(f"--precision must be one of {PRECISION_CHOICES}, got {self.precision!r}")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise BadInputError("--exclude-lean-runtime only applies with --version-compatible")
        if self.workspace_bytes is not None and self.workspace_bytes <= 0:
            raise BadInputError(f"--workspace must be positive, got {self.workspace_bytes} bytes")


@dataclass(frozen=True)
class EngineManifest:
    """The manifest of a TensorRT engine written by build-engine."""

    build: BuildOptions  # resolved: batch is the optimisation profile, precision fp32 or fp16
    model: ModelRecord
    source_onnx: FileRecord
    source_precision: str
    tensorrt_version: str
    gpu: GpuRecord
    build_path: str
    strongly_typed: bool
    build_seconds: float
    versions: Mapping[str, str]
    created_utc: str
    file: str = ""
    sha256: str = ""

    kind = ENGINE_KIND

    def __post_init__(self) -> None:
        if self.build.batch is None or self.build.precision not in PRECISIONS:
            raise BadInputError(f"an engine's manifest records its resolved batch and precision, got {self.build}")

    @property
    def precision(self) -> str:
        return self.build.precision

    @property
    def batch(self) -> BatchSpec:
        assert self.build.batch is not None  # __post_init__
        return self.build.batch


Manifest = Union[OnnxManifest, EngineManifest]
M = TypeVar("M", OnnxManifest, EngineManifest)


# -- JSON -------------------------------------------------------------------------------------------


def io_shapes(manifest: Manifest) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs with shapes, for people reading the JSON (derived, never parsed back)."""
    batch: int | str = manifest.batch.size or "batch"
    h, w = manifest.model.grid
    nv, no = len(manifest.model.variables), len(manifest.model.output_variables)
    return {
        "inputs": [
            {"name": INPUT_NAME, "shape": [batch, nv, h, w], "dtype": "float32"},
            {"name": LEAD_TIMES_NAME, "shape": [batch], "dtype": "float32", "units": "hours"},
        ],
        "outputs": [{"name": OUTPUT_NAME, "shape": [batch, no, h, w], "dtype": "float32"}],
    }


def _file_json(record: FileRecord | None) -> dict[str, str] | None:
    return None if record is None else {"path": record.path, "sha256": record.sha256}


def _model_json(m: ModelRecord) -> dict[str, Any]:
    return {
        "variables": list(m.variables),
        "output_variables": list(m.output_variables),
        "grid": list(m.grid),
        "lat": list(m.lat),
        "lon": list(m.lon),
        "patch_size": m.patch_size,
        "num_patches": m.num_patches,
        "config": dict(m.config),
        "standardisation": m.standardisation.to_json(),
        "standardisation_eps": m.standardisation.eps,
        "seed": m.seed,
        "checkpoint": _file_json(m.checkpoint),
        "preset": m.preset,
        "config_file": _file_json(m.config_file),
        "stats_file": _file_json(m.stats_file),
    }


def to_json(manifest: Manifest) -> dict[str, Any]:
    """The manifest as a JSON-ready dict (the sidecar file's content)."""
    head = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "kind": manifest.kind, "file": manifest.file,
            "sha256": manifest.sha256, "precision": manifest.precision, "batch": manifest.batch.to_json(),
            "model": _model_json(manifest.model), **io_shapes(manifest),
            "versions": dict(manifest.versions), "created_utc": manifest.created_utc}  # fmt: skip
    if isinstance(manifest, OnnxManifest):
        op = manifest.custom_op
        custom_op = None if op is None else {"domain": op[0], "name": op[1], "version": op[2]}
        return {**head, "opset": manifest.opset, "heads_per_chunk": manifest.heads_per_chunk,
                "custom_op": custom_op,
                "external_data": dict(manifest.external_data)}  # fmt: skip
    gpu = manifest.gpu
    return {
        **head,
        "source_onnx": {**(_file_json(manifest.source_onnx) or {}), "precision": manifest.source_precision},
        "tensorrt": {"version": manifest.tensorrt_version},
        "gpu": {"name": gpu.name, "compute_capability": gpu.compute_capability,
                "total_memory_bytes": gpu.total_memory_bytes, "index": gpu.index},  # fmt: skip
        **_build_json(manifest.build),
        "build_path": manifest.build_path,
        "strongly_typed": manifest.strongly_typed,
        "build_seconds": manifest.build_seconds,
    }


# batch and precision are in every manifest's head; the other build options are written beside them.
_HEAD_BUILD_OPTIONS = ("batch", "precision")


def _build_json(build: BuildOptions) -> dict[str, Any]:
    return {f.name: getattr(build, f.name) for f in fields(build) if f.name not in _HEAD_BUILD_OPTIONS}


class _Fields:
    """Strict typed access to one JSON object; every error names the field's full path."""

    def __init__(self, obj: Any, where: str, source: str) -> None:
        if not isinstance(obj, Mapping):
            raise ModelFileError(f"{source}: field {where or 'manifest'!r} must be an object, got {type(obj).__name__}")
        self.obj, self.where, self.source = obj, where, source

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _bad(self, key: str, expected: str, got: Any) -> ModelFileError:
        return ModelFileError(f"{self.source}: field {self._path(key)!r}: expected {expected}, got {got!r}")

    def get(self, key: str) -> Any:
        if key not in self.obj:
            raise ModelFileError(f"{self.source}: required field {self._path(key)!r} is missing")
        return self.obj[key]

    def sub(self, key: str) -> _Fields:
        return _Fields(self.get(key), self._path(key), self.source)

    def optional_sub(self, key: str) -> _Fields | None:
        return None if self.obj.get(key) is None else self.sub(key)

    def str(self, key: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.get(key)
        if not isinstance(value, str) or (choices is not None and value not in choices):
            raise self._bad(key, f"one of {list(choices)}" if choices else "a string", value)
        return value

    def optional_str(self, key: str) -> str | None:
        return None if self.obj.get(key) is None else self.str(key)

    def int(self, key: str, minimum: int | None = None) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self._bad(key, "an integer" + (f" >= {minimum}" if minimum is not None else ""), value)
        return value

    def optional_int(self, key: str, minimum: int | None = None) -> int | None:
        return None if self.obj.get(key) is None else self.int(key, minimum)

    def float(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, "a number", value)
        return float(value)

    def bool(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def names(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a non-empty list of names", value)
        return tuple(value)

    def grid(self, key: str) -> tuple[int, int]:
        value = self.get(key)
        if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int and v > 0 for v in value)):
            raise self._bad(key, "[H, W] positive integers", value)
        return value[0], value[1]

    def file_name(self, key: str) -> str:
        """A file the artifact consists of: a name relative to its folder (no '..', not absolute)."""
        value = self.str(key)
        if value:  # "" before write_manifest sets it
            self._relative_name(value, f"field {self._path(key)!r}")
        return value

    def file_names(self, key: str) -> dict[str, str]:
        """{file name: sha256} of files beside the artifact, each name checked like `file_name`."""
        value = self.str_map(key)
        for name in value:
            self._relative_name(name, f"field {self._path(key)!r} entry")
        return value

    def _relative_name(self, name: str, what: str) -> None:
        try:
            check_relative_name(name, what)
        except BadInputError as exc:
            raise ModelFileError(f"{self.source}: {exc}") from None

    def str_map(self, key: str) -> dict[str, str]:
        value = self.obj.get(key) or {}
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise self._bad(key, "an object of strings", value)
        return {str(k): v for k, v in value.items()}


def _file_record(f: _Fields | None) -> FileRecord | None:
    return None if f is None else FileRecord(f.str("path"), f.str("sha256"))


def _batch(f: _Fields) -> BatchSpec:
    b = f.sub("batch")
    try:
        return BatchSpec(b.int("min", 1), b.int("opt", 1), b.optional_int("max", 1))
    except BadInputError as exc:
        raise ModelFileError(f"{f.source}: field 'batch': {exc}") from None


def _coordinates(m: _Fields, key: str, size: int) -> tuple[float, ...]:
    """A grid coordinate: `size` finite, strictly monotonic numbers in degrees."""
    value = m.get(key)
    ok = isinstance(value, list) and len(value) == size and size >= 2
    ok = ok and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value)
    steps = [b - a for a, b in zip(value, value[1:])] if ok else []
    if not ok or not (all(d > 0 for d in steps) or all(d < 0 for d in steps)):
        raise m._bad(key, f"{size} strictly monotonic degrees (one per grid cell)", value)
    return tuple(float(v) for v in value)


def _model(f: _Fields) -> ModelRecord:
    m = f.sub("model")
    try:
        stats = check_stats(m.get("standardisation"), f"{f.source}: field 'model.standardisation'")
    except BadInputError as exc:
        raise ModelFileError(str(exc)) from None
    variables = m.names("variables")
    missing = [v for v in variables if v not in stats]
    if missing:
        raise ModelFileError(f"{f.source}: field 'model.standardisation' lacks variable(s) {', '.join(missing)}")
    grid = m.grid("grid")
    config = m.get("config")
    if not isinstance(config, Mapping):
        raise m._bad("config", "an object (the model config)", config)
    if not isinstance(config.get("wind_scan"), bool):
        raise m._bad("config.wind_scan", "true or false (whether the model runs the wind-following scan)",
                     config.get("wind_scan"))  # fmt: skip
    return ModelRecord(
        variables=variables,
        output_variables=m.names("output_variables"),
        grid=grid,
        lat=_coordinates(m, "lat", grid[0]),
        lon=_coordinates(m, "lon", grid[1]),
        patch_size=m.int("patch_size", 1),
        num_patches=m.int("num_patches", 1),
        config=dict(config),
        standardisation=Standardisation(stats, m.float("standardisation_eps"), f"the manifest ({f.source})"),
        seed=m.optional_int("seed"),
        checkpoint=_file_record(m.optional_sub("checkpoint")),
        preset=m.optional_str("preset"),
        config_file=_file_record(m.optional_sub("config_file")),
        stats_file=_file_record(m.optional_sub("stats_file")),
    )


# How each BuildOptions field type is read, strictly, from a manifest.
_BUILD_READERS: dict[str, Any] = {
    "str": lambda f, key: f.str(key),
    "int": lambda f, key: f.int(key, 0),
    "bool": lambda f, key: f.bool(key),
    "int | None": lambda f, key: f.optional_int(key, 1),
    "str | None": lambda f, key: f.optional_str(key),
    "BatchSpec | None": lambda f, key: _batch(f),
}


def _build_options(f: _Fields) -> BuildOptions:
    values = {o.name: _BUILD_READERS[str(o.type)](f, o.name) for o in fields(BuildOptions)}
    try:
        return BuildOptions(**values)
    except BadInputError as exc:
        raise ModelFileError(f"{f.source}: {exc}") from None


def from_json(obj: Any, source: str = "manifest") -> Manifest:
    """Parse a manifest dict strictly; ModelFileError naming the field on anything missing or mistyped."""
    f = _Fields(obj, "", source)
    fmt = obj.get("format")
    if fmt != FORMAT:
        raise ModelFileError(f"{source}: expected manifest format {FORMAT!r}, got {fmt!r}; not a climax-deploy manifest")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ModelFileError(
            f"{source}: manifest schema_version {version!r}, this toolkit reads {SCHEMA_VERSION}; "
            "re-export the model (or rebuild the engine) with this version of climax-deploy"
        )
    kind = f.str("kind", (ONNX_KIND, ENGINE_KIND))
    precision = f.str("precision", PRECISIONS)
    common = dict(
        model=_model(f),
        versions=f.str_map("versions"),
        created_utc=f.str("created_utc"),
        file=f.file_name("file"),
        sha256=f.str("sha256"),
    )
    if kind == ONNX_KIND:
        op = None if f.get("custom_op") is None else f.sub("custom_op")  # required; null: a --standard-ops export
        return OnnxManifest(**common, precision=precision, batch=_batch(f), opset=f.int("opset", 1),
                            heads_per_chunk=f.int("heads_per_chunk", 1),
                            custom_op=None if op is None else (op.str("domain"), op.str("name"), op.int("version")),
                            external_data=f.file_names("external_data"))  # fmt: skip
    src, gpu = f.sub("source_onnx"), f.sub("gpu")
    return EngineManifest(
        **common,
        build=_build_options(f),
        source_onnx=FileRecord(src.str("path"), src.str("sha256")),
        source_precision=src.str("precision", PRECISIONS),
        tensorrt_version=f.sub("tensorrt").str("version"),
        gpu=GpuRecord(gpu.str("name"), gpu.str("compute_capability"), gpu.int("total_memory_bytes", 0), gpu.int("index", 0)),
        build_path=f.str("build_path"),
        strongly_typed=f.bool("strongly_typed"),
        build_seconds=f.float("build_seconds"),
    )


# -- files ------------------------------------------------------------------------------------------


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """The sidecar manifest of an artifact: `model.onnx` -> `model.onnx.manifest.json`."""
    return Path(str(artifact) + MANIFEST_SUFFIX)


def content_sha256(obj: Mapping[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON (sorted keys, no spaces) without its CONTENT_KEY."""
    body = {k: v for k, v in obj.items() if k != CONTENT_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def manifest_bytes(manifest: Manifest) -> bytes:
    """The sidecar file's bytes: the manifest's JSON with its content checksum."""
    obj = to_json(manifest)
    obj[CONTENT_KEY] = content_sha256(obj)
    return json_bytes(obj)


def stage_manifest(writer: ArtifactWriter, artifact: str | os.PathLike[str], manifest: M, staged: Path) -> M:
    """Stage the sidecar of `artifact` in `writer`, its sha256 taken from `staged` (the artifact's
    temporary, renamed with it); return the manifest as it will be written."""
    artifact = Path(artifact)
    final = replace(manifest, file=artifact.name, sha256=sha256_file(staged))
    writer.stage(manifest_path(artifact)).write_bytes(manifest_bytes(final))
    return final


def write_artifact(artifact: str | os.PathLike[str], data: bytes, manifest: M) -> M:
    """Write `artifact` (its bytes) and its manifest as one unit; return the manifest as written."""
    with ArtifactWriter(artifact) as writer:
        staged = writer.stage(artifact)
        staged.write_bytes(data)
        return stage_manifest(writer, artifact, manifest, staged)


def write_manifest(artifact: str | os.PathLike[str], manifest: M) -> M:
    """Write the sidecar manifest of an existing artifact atomically with its name and sha256."""
    artifact = Path(artifact)
    with ArtifactWriter(artifact) as writer:
        return stage_manifest(writer, artifact, manifest, artifact)


def read_manifest(artifact: str | os.PathLike[str], *, verify: bool = True, kind: str | None = None) -> Manifest:
    """Read an artifact's sidecar manifest and check the files it names (inside the artifact's folder,
    sha256 of the external weights). `verify` also checks the artifact file's own sha256 and the
    manifest's content checksum; verify=False skips exactly those two (a re-serialised model whose
    embedded manifest agrees), never the weights' checksums or where the files lie.

    `kind` ('onnx' or 'tensorrt-engine') refuses the other kind of artifact.
    """
    artifact = Path(artifact)
    path = manifest_path(artifact)
    if not path.is_file():
        raise ModelFileError(f"{artifact}: no manifest at {path}; export the model with climax-deploy")
    obj = parse_json(path.read_bytes(), f"{path} (manifest)", ModelFileError)
    if verify and isinstance(obj, dict) and obj.get("format") == FORMAT:
        check_content(obj, path)  # before parsing: an edit is named as such, not as the field it broke
    manifest = from_json(obj, str(path))
    if kind is not None and manifest.kind != kind:
        raise ModelFileError(f"{artifact}: manifest says kind {manifest.kind!r}, expected {kind!r}")
    if verify:
        check_checksums(artifact, manifest)
    else:
        check_external_data(artifact, manifest)
    return manifest


def read_onnx_manifest(artifact: str | os.PathLike[str], *, verify: bool = True) -> OnnxManifest:
    manifest = read_manifest(artifact, verify=verify, kind=ONNX_KIND)
    assert isinstance(manifest, OnnxManifest)
    return manifest


def read_engine_manifest(artifact: str | os.PathLike[str], *, verify: bool = True) -> EngineManifest:
    manifest = read_manifest(artifact, verify=verify, kind=ENGINE_KIND)
    assert isinstance(manifest, EngineManifest)
    return manifest


def check_content(obj: Mapping[str, Any], path: Path) -> None:
    """ModelFileError unless the manifest's content matches its content_sha256 (an edited manifest)."""
    recorded = obj.get(CONTENT_KEY)
    if not isinstance(recorded, str):
        raise ModelFileError(f"{path}: manifest has no {CONTENT_KEY}; expected one from this climax-deploy, re-export the model")
    actual = content_sha256(obj)
    if actual != recorded:
        raise ModelFileError(
            f"{path}: manifest content sha256 {actual[:12]}... does not match its {CONTENT_KEY} {recorded[:12]}...; "
            "the manifest was edited after export, re-export the model instead"
        )


def artifact_files(artifact: str | os.PathLike[str], manifest: Manifest) -> dict[str, Path]:
    """{name: path} of the files beside `artifact` that its manifest names (external weights), each
    resolved inside the artifact's folder: ModelFileError for '..', an absolute path or a symlink out."""
    folder = Path(artifact).parent
    files = {}
    for name in getattr(manifest, "external_data", {}):
        try:
            files[name] = inside_folder(folder, name, f"{manifest_path(artifact)}: external data file")
        except BadInputError as exc:
            raise ModelFileError(str(exc)) from None
    return files


def check_external_data(artifact: Path, manifest: Manifest) -> None:
    """ModelFileError unless every external data file lies inside the artifact's folder with its sha256."""
    digests = getattr(manifest, "external_data", {})
    for name, data in artifact_files(artifact, manifest).items():
        if not data.is_file():
            raise ModelFileError(f"{artifact}: external data file {data} is missing")
        if sha256_file(data) != digests[name]:
            raise ModelFileError(f"{data}: sha256 does not match the manifest; the file is truncated or changed")


def check_checksums(artifact: Path, manifest: Manifest) -> None:
    actual = sha256_file(artifact)
    if actual != manifest.sha256:
        hint = ""
        if manifest.kind == ONNX_KIND:
            hint = "; load(path, verify=False) accepts a re-serialised model whose embedded manifest agrees"
        raise ModelFileError(
            f"{artifact}: sha256 {actual[:12]}... does not match the manifest's {manifest.sha256[:12]}...; "
            f"the file is truncated or was changed after export{hint}"
        )
    check_external_data(artifact, manifest)


# -- the copy embedded in an ONNX file --------------------------------------------------------------


def embedded_metadata(manifest: OnnxManifest) -> dict[str, str]:
    """metadata_props entries for an ONNX file: the manifest (without checksums) and a few readable keys."""
    from climax_deploy import __version__

    return {
        METADATA_KEY: json.dumps(to_json(manifest), sort_keys=True),
        "climax_deploy.version": __version__,
        "climax_deploy.precision": manifest.precision,
        "climax_deploy.variables": ",".join(manifest.model.variables),
        "climax_deploy.outputs": ",".join(manifest.model.output_variables),
    }


def check_embedded(metadata: Mapping[str, str], manifest: OnnxManifest, source: str) -> None:
    """The file's embedded manifest must agree with the sidecar on what the model consumes and produces."""
    if METADATA_KEY not in metadata:
        raise ModelFileError(f"{source}: not a climax-deploy model (no {METADATA_KEY} metadata)")
    where = f"{source} (embedded manifest)"
    embedded = from_json(parse_json(metadata[METADATA_KEY], where, ModelFileError), where)
    pairs = {
        "model.variables": (manifest.model.variables, embedded.model.variables),
        "model.output_variables": (manifest.model.output_variables, embedded.model.output_variables),
        "model.grid": (manifest.model.grid, embedded.model.grid),
        "precision": (manifest.precision, embedded.precision),
        "batch": (manifest.batch, embedded.batch),
    }
    for key, (sidecar, inside) in pairs.items():
        if sidecar != inside:
            raise ModelFileError(f"{source}: manifest {key}={sidecar!r} disagrees with the file's {inside!r}")
    # Everything else too (standardisation, config, opset ...): all but the checksums set at write time.
    unchecked = {"file", "sha256", "external_data", CONTENT_KEY}
    ours, theirs = to_json(manifest), to_json(embedded)
    for key in sorted(set(ours) | set(theirs)):
        if key in unchecked or ours.get(key) == theirs.get(key):
            continue
        sub_a, sub_b = ours.get(key), theirs.get(key)
        if isinstance(sub_a, dict) and isinstance(sub_b, dict):
            key = next((f"{key}.{k}" for k in sorted(set(sub_a) | set(sub_b)) if sub_a.get(k) != sub_b.get(k)), key)
        raise ModelFileError(
            f"{source}: manifest field {key!r} disagrees with the manifest embedded in the file; "
            "expected the sidecar written with this model (re-export it)"
        )


__all__ = [
    "artifact_files",
    "BatchSpec",
    "BuildOptions",
    "ENGINE_KIND",
    "EngineManifest",
    "FileRecord",
    "GpuRecord",
    "Manifest",
    "METADATA_KEY",
    "ModelRecord",
    "ONNX_KIND",
    "OnnxManifest",
    "SCHEMA_VERSION",
    "CONTENT_KEY",
    "check_embedded",
    "content_sha256",
    "embedded_metadata",
    "from_json",
    "manifest_path",
    "read_engine_manifest",
    "read_manifest",
    "read_onnx_manifest",
    "to_json",
    "manifest_bytes",
    "stage_manifest",
    "write_artifact",
    "write_manifest",
]
