"""OpenVINO backend (CPU): the exported .onnx read as it is, its model-local functions inlined once.

OpenVINO's ONNX frontend cannot read the export's model-local functions (climax::ElevationAttention,
climax::SelfAttention, climax::WindScanOrder, the climax.shapes reductions), so the first load inlines
them (onnx.inliner.inline_local_functions) and saves OpenVINO's IR in a cache folder keyed by the
export's sha256 (from its manifest) and the OpenVINO version; later loads read the IR (weights mapped,
no onnx import). This module is the one place runtime/ imports onnx (pyproject.toml's import-linter
contract names it), and only on a cache miss.

Precision: fp32 (INFERENCE_PRECISION_HINT=f32, the default; OpenVINO's own default on CPUs with bf16 is
bf16) or bf16 (opt-in, graded by `check-parity --backend openvino --precision bf16`, docs/runtime.md).
OpenVINO silently runs f32 where the CPU has no AVX512-BF16/AMX: a bf16 request there is refused.
Thread safety: a pool of infer requests, one per concurrent call.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.artifacts import cache_folder
from climax_deploy.errors import BadInputError, MissingBackendError, ModelFileError
from climax_deploy.manifest import OnnxManifest, read_onnx_manifest
from climax_deploy.optional import ONNX_FOR_OPENVINO, OPENVINO
from climax_deploy.runner import ModelSpec, Runner
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME

log = logging.getLogger(__name__)

# The toolkit's precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
PRECISIONS: dict[str, str] = {"fp32": "f32", "bf16": "bf16"}
CACHE_ENV = "CLIMAX_DEPLOY_CACHE"  # overrides the default cache folder (XDG_CACHE_HOME/climax-deploy)
IR_NAME = "model.xml"  # with model.bin beside it


@dataclass(frozen=True)
class OpenVinoOptions:
    """How to run an exported .onnx file with OpenVINO on the CPU."""

    precision: str = "fp32"  # 'fp32' or 'bf16' (needs a CPU with AVX512-BF16 or AMX)
    threads: int | None = None  # INFERENCE_NUM_THREADS (default: OpenVINO's, all cores)
    cache_dir: str | os.PathLike[str] | None = None  # the IR cache (default: $CLIMAX_DEPLOY_CACHE or ~/.cache)
    verify: bool = True  # check the manifest's sha256 before loading


def default_cache_dir() -> Path:
    """$CLIMAX_DEPLOY_CACHE/openvino, else $XDG_CACHE_HOME (or ~/.cache)/climax-deploy/openvino."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "openvino"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "climax-deploy" / "openvino"


def ir_cache_path(manifest: OnnxManifest, cache_dir: str | os.PathLike[str] | None, ov_version: str) -> Path:
    """Where the IR of this export lives: <cache>/<sha256>-ov<version>/model.xml."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if not manifest.sha256:
        raise ModelFileError("the manifest records no sha256; re-export the model")
    return folder / f"{manifest.sha256}-ov{ov_version.split('-')[0]}" / IR_NAME


def build_ir(onnx_path: Path, ir: Path, ov: Any) -> None:
    """Inline the export's model-local functions, convert to OpenVINO IR (fp32 weights), save atomically."""
    ONNX_FOR_OPENVINO.load()  # MissingBackendError with the install line
    # The one onnx import of runtime/ (the import-linter contract's stated exception); cache misses only.
    import onnx
    import onnx.inliner

    parent = cache_folder(ir.parent.parent, "OpenVINO cache_dir")
    with tempfile.TemporaryDirectory(prefix=".building-", dir=parent) as tmp:
        model = onnx.load(str(onnx_path))  # external data beside the file is loaded too
        inlined = onnx.inliner.inline_local_functions(model)
        del model
        flat = Path(tmp) / "inlined.onnx"
        onnx.save(inlined, str(flat), save_as_external_data=True, location="inlined.onnx.data")
        del inlined
        try:
            converted = ov.Core().read_model(str(flat))
        except Exception as exc:  # OpenVINO raises its own exception types
            raise ModelFileError(f"{onnx_path}: OpenVINO cannot read it ({str(exc).splitlines()[0]})") from exc
        staged = Path(tmp) / "ir"
        staged.mkdir()
        ov.save_model(converted, str(staged / IR_NAME), compress_to_fp16=False)
        del converted
        try:
            os.replace(staged, ir.parent)  # atomic; another process may have won the race
        except OSError:
            if not ir.is_file():
                raise
    log.info("OpenVINO IR of %s cached in %s", onnx_path, ir.parent)


class OpenVinoRunner(Runner):
    """Runs an exported .onnx model with OpenVINO on the CPU, fp32 or bf16."""

    backend = "openvino"
    manifest: OnnxManifest

    def __init__(self, path: str | os.PathLike[str], options: OpenVinoOptions | None = None) -> None:
        options = options or OpenVinoOptions()
        if options.precision not in PRECISIONS:
            raise BadInputError(f"OpenVINO precision must be one of {list(PRECISIONS)}, got {options.precision!r}")
        if options.threads is not None and options.threads < 1:
            raise BadInputError(f"threads must be >= 1, got {options.threads}")
        ov = OPENVINO.load()
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        manifest = read_onnx_manifest(path, verify=options.verify)
        super().__init__(replace(ModelSpec.from_manifest(manifest), precision=options.precision), manifest)
        self.path = path
        self.options = options
        self.ir = ir_cache_path(manifest, options.cache_dir, ov.__version__)
        self.cache_hit = self.ir.is_file() and self.ir.with_suffix(".bin").is_file()
        if not self.cache_hit:
            if self.ir.parent.exists():  # a half-written folder from a killed build: rebuild it
                shutil.rmtree(self.ir.parent, ignore_errors=True)
            build_ir(path, self.ir, ov)
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISIONS[options.precision]}
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = int(options.threads)
        try:
            self.compiled: Any = core.compile_model(str(self.ir), "CPU", config)
        except Exception as exc:
            raise ModelFileError(f"{path}: OpenVINO cannot compile it ({str(exc).splitlines()[0]}); "
                                 f"remove the cache folder {self.ir.parent} if it is damaged") from exc  # fmt: skip
        used = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # 'f32', 'bf16'
        if used != PRECISIONS[options.precision]:
            # OpenVINO falls back to f32 without a word where the CPU lacks bf16 instructions.
            caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            raise MissingBackendError(f"OpenVINO bf16 needs a CPU with AVX512-BF16 or AMX; this one offers {list(caps)} "
                                      f"and would run {used}; use precision='fp32'")  # fmt: skip
        self.inference_precision = used
        names = [port.get_any_name() for port in self.compiled.inputs]
        if names != [INPUT_NAME, LEAD_TIMES_NAME]:
            raise ModelFileError(f"{path}: inputs {names}, expected {[INPUT_NAME, LEAD_TIMES_NAME]}")
        self._lock = threading.Lock()
        self._idle: list[Any] = []  # infer requests not in use; one is created per concurrent call

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        with self._lock:
            if self.compiled is None:
                raise BadInputError(f"this {self.backend} runner was closed; load the model again")
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
        try:
            request.infer({INPUT_NAME: x, LEAD_TIMES_NAME: lead_times})
            y = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        finally:
            with self._lock:
                if self.compiled is not None:
                    self._idle.append(request)
        return y

    def _close_impl(self) -> None:
        with self._lock:
            self._idle.clear()
            self.compiled = None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": str(self.path),
            "inference_precision": self.inference_precision,
            "ir_cache": str(self.ir.parent),
            "threads": self.options.threads,
        }


__all__ = ["OpenVinoOptions", "OpenVinoRunner", "build_ir", "default_cache_dir", "ir_cache_path"]
