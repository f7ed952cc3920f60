"""TensorRT backend: `load("model.engine")` -> the same predict(x, lead_times) contract as ONNX Runtime.

Device buffers and a CUDA stream per thread, one execution context per thread (TensorRT contexts
are not thread-safe; the engine is). The lean runtime (`tensorrt_lean`) runs version-compatible
engines when the full TensorRT is absent. Before deserialising, the engine's manifest is compared
with the installed TensorRT and the GPU, so a mismatch is one clear message, not a crash.

Everything TensorRT- or CUDA-related is imported lazily: `climax_deploy.runtime` imports without
torch and without TensorRT. Code valid only on TensorRT 11 sits behind `TensorRTVersion` checks.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from climax_deploy.errors import BadInputError, EngineBuildError, MissingBackendError, ModelFileError
from climax_deploy.manifest import EngineManifest, GpuRecord, read_engine_manifest
from climax_deploy.optional import POLYGRAPHY, TENSORRT, TENSORRT_LEAN
from climax_deploy.runner import ModelSpec, Runner
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

# -- TensorRT version -----------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class TensorRTVersion:
    """A TensorRT release and the API paths it offers."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> TensorRTVersion:
        match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
        if not match:
            raise BadInputError(f"cannot read a TensorRT version from {text!r}; expected e.g. '10.13.0'")
        return cls(int(match[1]), int(match[2]), int(match[3] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 builds strongly typed networks only (BuilderFlag.FP16 is gone)."""
        return self.major >= 11

    @property
    def has_fp16_flag(self) -> bool:
        """BuilderFlag.FP16 exists (deprecated since 10.12, removed in 11)."""
        return self.major < 11

    @property
    def has_native_attention(self) -> bool:
        """The ONNX parser maps Attention-23 to the fused IAttention layer (10.14+)."""
        return (self.major, self.minor) >= (10, 14)

    @property
    def has_python_plugins(self) -> bool:
        """tensorrt.plugin (quickly deployable Python plugins); AOT implementations since 10.9."""
        return (self.major, self.minor) >= (10, 9)


def import_tensorrt(lean: bool = False) -> ModuleType:
    """The TensorRT Python module (with `lean`, the lean runtime where installed, else the full one).

    MissingBackendError with the install line when neither is there.
    """
    if lean and TENSORRT_LEAN.available():
        return TENSORRT_LEAN.load()
    return TENSORRT.load()


def tensorrt_version(module: ModuleType | None = None) -> TensorRTVersion:
    module = module or import_tensorrt()
    return TensorRTVersion.parse(str(module.__version__))


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except MissingBackendError:
        return False
    return True


# -- GPU identity (CUDA driver API through ctypes: no extra package) ------------------------------

_CU_COMPUTE_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
_CU_COMPUTE_MINOR = 76
_CU_TOTAL_MEMORY_NAME = "cuDeviceTotalMem_v2"


def _load_libcuda() -> ctypes.CDLL:
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise MissingBackendError("no NVIDIA driver found (libcuda); TensorRT needs a CUDA GPU and its driver")


def gpu_info(index: int = 0) -> GpuRecord:
    """Name, compute capability and memory of CUDA device `index`."""
    cuda = _load_libcuda()

    def check(status: int, what: str) -> None:
        if status != 0:
            raise MissingBackendError(f"CUDA driver call {what} failed with error {status}; is a GPU visible?")

    check(cuda.cuInit(0), "cuInit")
    device = ctypes.c_int()
    check(cuda.cuDeviceGet(ctypes.byref(device), index), f"cuDeviceGet({index})")
    name = ctypes.create_string_buffer(256)
    check(cuda.cuDeviceGetName(name, 256, device), "cuDeviceGetName")
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(cuda.cuDeviceGetAttribute(ctypes.byref(major), _CU_COMPUTE_MAJOR, device), "cuDeviceGetAttribute")
    check(cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CU_COMPUTE_MINOR, device), "cuDeviceGetAttribute")
    total = ctypes.c_size_t()
    check(getattr(cuda, _CU_TOTAL_MEMORY_NAME)(ctypes.byref(total), device), _CU_TOTAL_MEMORY_NAME)
    return GpuRecord(name.value.decode(errors="replace"), f"{major.value}.{minor.value}", int(total.value), index)


# -- engine manifest checks (pure: tested without TensorRT) ----------------------------------------


def check_engine_compatibility(manifest: EngineManifest, installed: TensorRTVersion, gpu: GpuRecord | None) -> None:
    """Refuse an engine the installed TensorRT or this GPU cannot run; the message says what to do."""
    built = TensorRTVersion.parse(manifest.tensorrt_version)
    rebuild = "rebuild it here with build-engine"
    if manifest.version_compatible:
        if installed < built:
            raise ModelFileError(
                f"engine is version-compatible from TensorRT {built} onwards, but {installed} is installed "
                f"(compatibility is forward only); upgrade TensorRT or {rebuild}"
            )
        if installed.major > built.major + 1:
            raise ModelFileError(f"engine built with TensorRT {built}; {installed} is too new to run it; {rebuild}")
    elif (installed.major, installed.minor, installed.patch) != (built.major, built.minor, built.patch):
        raise ModelFileError(
            f"engine built with TensorRT {built} but {installed} is installed; {rebuild}, "
            "or build with --version-compatible to run on later releases"
        )
    if gpu is None:
        return
    want = manifest.gpu
    level = manifest.hardware_compatibility
    built_cc = _cc(want.compute_capability)
    here_cc = _cc(gpu.compute_capability)
    if level == "ampere+":
        if here_cc < (8, 0):
            raise ModelFileError(f"engine needs an Ampere or newer GPU (compute capability >= 8.0); {gpu.name} is {gpu.compute_capability}")
    elif here_cc != built_cc:
        raise ModelFileError(
            f"engine built for compute capability {want.compute_capability} ({want.name}), "
            f"this GPU is {gpu.name} ({gpu.compute_capability}); {rebuild} or build with --hardware-compat ampere+"
        )
    elif level == "none" and want.name != gpu.name:
        log.warning("engine was built on %s and runs on %s (same compute capability): performance may differ",
                    want.name, gpu.name)  # fmt: skip


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise ModelFileError(f"compute capability {text!r} is not of the form 'major.minor'") from None


# -- the forecaster -------------------------------------------------------------------------------


def _import_cuda() -> Any:
    """Polygraphy's CUDA wrapper (ctypes over libcudart): device arrays and streams."""
    POLYGRAPHY.load()
    from polygraphy import cuda

    return cuda


@dataclass(frozen=True)
class TensorRTOptions:
    """How to run a TensorRT engine."""

    device: int = 0  # CUDA device index
    verify: bool = True  # check the manifest's sha256 before deserialising
    # Registers the ElevationAttention plugin before a plugin engine is deserialised, e.g.
    # climax_deploy.kernels.trt_plugin.register_elevation_attention_plugin; None relies on the
    # kernel the engine embeds.
    register_plugins: Callable[[], object] | None = None


class _ThreadState:
    """One execution context, stream and set of device buffers per thread."""

    def __init__(self, engine: trt.ICudaEngine, cuda: Any) -> None:
        context = engine.create_execution_context()
        if context is None:
            raise EngineBuildError("TensorRT could not create an execution context (out of GPU memory?)")
        self.context: trt.IExecutionContext = context
        self.stream = cuda.Stream()
        self.buffers: dict[str, Any] = {}

    def buffer(self, cuda: Any, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        array = self.buffers.get(name)
        if array is None:
            array = cuda.DeviceArray(shape=shape, dtype=dtype)
            self.buffers[name] = array
        elif tuple(array.shape) != shape:
            array.resize(shape)
        return array

    def free(self) -> None:
        for array in self.buffers.values():
            array.free()
        self.buffers.clear()
        self.stream.free()


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine built by `build-engine`."""

    backend = "tensorrt"
    manifest: EngineManifest

    def __init__(self, path: str | os.PathLike[str], options: TensorRTOptions | None = None) -> None:
        options = options or TensorRTOptions()
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"engine file {path} does not exist")
        manifest = read_engine_manifest(path, verify=options.verify)
        module = import_tensorrt(lean=manifest.version_compatible)
        self.runtime_module = module.__name__
        installed = tensorrt_version(module)
        self.gpu = gpu_info(options.device)
        try:
            check_engine_compatibility(manifest, installed, self.gpu)
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: {exc}") from exc
        super().__init__(ModelSpec.from_manifest(manifest), manifest)
        self.path, self.options, self.tensorrt = path, options, str(installed)
        if manifest.attention == "plugin":
            if options.register_plugins is not None:
                options.register_plugins()
            else:
                log.info("plugin engine: relying on the ElevationAttention kernel embedded in the engine")
        self._cuda = _import_cuda()
        self._engine: trt.ICudaEngine | None = self._deserialize(module, path, manifest.version_compatible)
        self._states: dict[int, _ThreadState] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _deserialize(module: ModuleType, path: Path, version_compatible: bool) -> trt.ICudaEngine:
        logger = module.Logger(module.Logger.WARNING)
        runtime = module.Runtime(logger)
        if version_compatible:
            # A version-compatible plan carries its lean runtime as host code; only load trusted plans.
            runtime.engine_host_code_allowed = True
        engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelFileError(f"{path}: TensorRT could not deserialize the engine (see its log above)")
        return engine

    def _live_engine(self) -> trt.ICudaEngine:
        if self._engine is None:
            raise BadInputError(f"this {self.backend} runner was closed; load the engine again")
        return self._engine

    def _state(self) -> _ThreadState:
        key = threading.get_ident()
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = _ThreadState(self._live_engine(), self._cuda)
                self._states[key] = state
        return state

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        state = self._state()
        context, cuda, stream = state.context, self._cuda, state.stream
        feeds = {INPUT_NAME: x, LEAD_TIMES_NAME: lead_times}
        for name, host in feeds.items():
            dtype = np.dtype(self._np_dtype(name))
            host = np.ascontiguousarray(host.astype(dtype, copy=False))
            if not context.set_input_shape(name, host.shape):
                raise BadInputError(f"TensorRT rejected input {name} of shape {host.shape} (outside the engine's profile)")
            device = state.buffer(cuda, name, host.shape, dtype)
            device.copy_from(host, stream)
            context.set_tensor_address(name, int(device.ptr))
        dims = context.get_tensor_shape(OUTPUT_NAME)
        out_shape = tuple(int(dims[i]) for i in range(len(dims)))
        out_dtype = np.dtype(self._np_dtype(OUTPUT_NAME))
        out_device = state.buffer(cuda, OUTPUT_NAME, out_shape, out_dtype)
        context.set_tensor_address(OUTPUT_NAME, int(out_device.ptr))
        if not context.execute_async_v3(stream.ptr):
            raise EngineBuildError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        out = np.empty(out_shape, dtype=out_dtype)
        out_device.copy_to(out, stream)
        stream.synchronize()
        return out.astype(np.float32, copy=False)

    def _np_dtype(self, name: str) -> Any:
        module = importlib.import_module(self.runtime_module)
        return module.nptype(self._live_engine().get_tensor_dtype(name))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": str(self.path),
            "tensorrt": self.tensorrt,
            "runtime": self.runtime_module,
            "gpu": dataclasses.asdict(self.gpu),
            "attention": self.manifest.attention,
            "build_path": self.manifest.build_path,
        }

    def _close_impl(self) -> None:
        with self._lock:
            for state in self._states.values():
                state.free()
            self._states.clear()
            self._engine = None  # TensorRT frees the engine with its last reference


__all__ = [
    "TensorRTOptions",
    "TensorRTRunner",
    "TensorRTVersion",
    "check_engine_compatibility",
    "gpu_info",
    "import_tensorrt",
    "tensorrt_available",
    "tensorrt_version",
]
