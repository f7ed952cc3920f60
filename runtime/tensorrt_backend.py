"""TensorRT backend: `load("model.engine")` -> the same predict(x, lead_times) contract as ONNX Runtime.

Device buffers and a CUDA stream per thread, one execution context per thread (TensorRT contexts
are not thread-safe; the engine is); a thread's resources are freed once the thread has ended.
Which TensorRT module runs a plan follows TensorRT's rules (select_runtime): a version-compatible
plan with its lean runtime embedded runs on `tensorrt_dispatch` or the full `tensorrt` (host code
allowed), the lean runtime `tensorrt_lean` only runs plans built by its own version. Before
deserialising, the engine's manifest is compared with that TensorRT and the GPU, so a mismatch is
one clear message, not a crash.

Everything TensorRT- or CUDA-related is imported lazily: `climax_deploy.runtime` imports without
torch and without TensorRT. Code valid only on TensorRT 11 sits behind `TensorRTVersion` checks.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from climax_deploy.errors import BadInputError, InferenceError, MissingBackendError, ModelFileError
from climax_deploy.manifest import EngineManifest, GpuRecord, read_engine_manifest
from climax_deploy.optional import POLYGRAPHY, TENSORRT, TENSORRT_DISPATCH, TENSORRT_LEAN, OptionalDependency
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


def import_tensorrt() -> ModuleType:
    """The full TensorRT Python module; MissingBackendError with the install line when absent."""
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


# Version-compatible plans run on later TensorRT releases of the same major and, across majors, only
# where TensorRT documents it: 8 -> 9 and 10 (TensorRT 10.16 docs, "Version Compatibility"), 9 -> 10
# (same page: TensorRT 8 or 9 engines with TensorRT 10), 10 -> 11 (TensorRT 11.1 docs, "Engine
# Compatibility"). A major not listed runs its own major only; version compatibility starts at 8.6.
VERSION_COMPATIBLE_MAJORS: dict[int, tuple[int, ...]] = {8: (8, 9, 10), 9: (9, 10), 10: (10, 11)}
VERSION_COMPATIBLE_SINCE = TensorRTVersion(8, 6)
# Python modules that can run a plan, in order of preference (see select_runtime).
RUNTIME_MODULES: dict[str, OptionalDependency] = {
    "tensorrt_dispatch": TENSORRT_DISPATCH,
    "tensorrt": TENSORRT,
    "tensorrt_lean": TENSORRT_LEAN,
}


def runtime_candidates(manifest: EngineManifest) -> tuple[str, ...]:
    """The TensorRT modules that may run this plan, best first.

    A version-compatible plan carries its lean runtime unless built with --exclude-lean-runtime: the
    dispatch runtime loads it, and the full runtime does when host code is allowed (NVIDIA's sample
    samples/python/engine_refit_onnx_bidaf, v10.13.0: tensorrt_dispatch, else tensorrt with
    engine_host_code_allowed). The lean runtime runs version-compatible plans of its own version only.
    Any other plan needs the full runtime of the version that built it.
    """
    if manifest.version_compatible and not manifest.exclude_lean_runtime:
        return ("tensorrt_dispatch", "tensorrt", "tensorrt_lean")
    if manifest.version_compatible:
        return ("tensorrt", "tensorrt_lean")
    return ("tensorrt",)


def check_engine_compatibility(
    manifest: EngineManifest, installed: TensorRTVersion, gpu: GpuRecord | None, module: str = "tensorrt"
) -> None:
    """Refuse an engine that `module` of version `installed` or this GPU cannot run; the message says what to do."""
    built = TensorRTVersion.parse(manifest.tensorrt_version)
    rebuild = "rebuild it here with build-engine"
    carries_lean = manifest.version_compatible and not manifest.exclude_lean_runtime
    if carries_lean and module != "tensorrt_lean":
        if built < VERSION_COMPATIBLE_SINCE:
            raise ModelFileError(f"engine built with TensorRT {built}: version compatibility needs >= 8.6; {rebuild}")
        if installed < built:
            raise ModelFileError(
                f"engine is version-compatible from TensorRT {built} onwards, but {installed} is installed "
                f"(compatibility is forward only); upgrade TensorRT or {rebuild}"
            )
        majors = VERSION_COMPATIBLE_MAJORS.get(built.major, (built.major,))
        if installed.major not in majors:
            raise ModelFileError(
                f"engine built with TensorRT {built} runs on TensorRT {' or '.join(map(str, majors))}.x, "
                f"not {installed}; {rebuild}"
            )
    elif installed != built:
        why = {
            "tensorrt_lean": "the lean runtime runs only plans built by its own version",
            "tensorrt": "--exclude-lean-runtime plans carry no runtime of their own"
            if manifest.version_compatible
            else "build with --version-compatible to run on later releases",
        }[module]
        raise ModelFileError(f"engine built with TensorRT {built} but {module} {installed} is installed ({why}); {rebuild}")
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


@dataclass(frozen=True)
class RuntimeChoice:
    """The TensorRT module that runs a plan, its version, and whether the plan's host code must be allowed."""

    module: str
    version: TensorRTVersion
    host_code: bool


def select_runtime(manifest: EngineManifest, installed: Mapping[str, TensorRTVersion]) -> RuntimeChoice:
    """The first of runtime_candidates that is installed (`installed`: module -> version) and may run the plan.

    MissingBackendError when none of them is installed, else the first candidate's ModelFileError.
    """
    candidates = runtime_candidates(manifest)
    refusals: list[ModelFileError] = []
    for module in candidates:
        version = installed.get(module)
        if version is None:
            continue
        try:
            check_engine_compatibility(manifest, version, None, module)
        except ModelFileError as exc:
            refusals.append(exc)
            continue
        host_code = manifest.version_compatible and not manifest.exclude_lean_runtime and module == "tensorrt"
        return RuntimeChoice(module, version, host_code)
    if refusals:
        raise refusals[0]
    raise MissingBackendError(
        f"this engine runs on one of {', '.join(candidates)}, none of which is installed: {TENSORRT.install}"
    )


def installed_runtimes(modules: tuple[str, ...]) -> dict[str, TensorRTVersion]:
    """Versions of the TensorRT runtime modules among `modules` that import here."""
    found: dict[str, TensorRTVersion] = {}
    for name in modules:
        dependency = RUNTIME_MODULES[name]
        if dependency.available():
            found[name] = TensorRTVersion.parse(str(dependency.load().__version__))
    return found


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise ModelFileError(f"compute capability {text!r} is not of the form 'major.minor'") from None


# -- per-thread resources (pure: tested without TensorRT) -----------------------------------------

T = TypeVar("T")


class PerThread(Generic[T]):
    """One resource per live thread, made on the thread's first call and freed once the thread has ended.

    A serving process that spawns threads would otherwise keep an execution context, a stream and
    device buffers for every thread it ever ran. Dead threads' resources are freed on the next call
    from any thread (and all of them by close()); a thread id the OS reuses gets a fresh resource.
    """

    def __init__(self, make: Callable[[], T], free: Callable[[T], None]) -> None:
        self._make, self._free = make, free
        self._items: dict[int, tuple[weakref.ref[threading.Thread], T]] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        """This thread's resource (made now if it has none)."""
        thread = threading.current_thread()
        with self._lock:
            self._reap()
            entry = self._items.get(thread.ident or 0)
            if entry is None:
                entry = (weakref.ref(thread), self._make())
                self._items[thread.ident or 0] = entry
            return entry[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _reap(self) -> None:
        for key, (ref, item) in list(self._items.items()):
            owner = ref()
            if owner is None or not owner.is_alive():
                del self._items[key]
                self._free(item)

    def close(self) -> None:
        """Free every thread's resource."""
        with self._lock:
            items = [item for _, item in self._items.values()]
            self._items.clear()
        for item in items:
            self._free(item)


# -- the forecaster -------------------------------------------------------------------------------


def _import_cuda() -> Any:
    """Polygraphy's CUDA wrapper (ctypes over libcudart): device arrays and streams."""
    POLYGRAPHY.load()
    from polygraphy import cuda

    return cuda


def _set_device(cuda: Any, index: int) -> None:
    """Make CUDA device `index` current for this thread (the CUDA runtime's current device is per thread)."""
    status = cuda.wrapper().handle.cudaSetDevice(ctypes.c_int(index))
    if status != 0:
        raise InferenceError(f"cudaSetDevice({index}) failed with CUDA error {status}; is device {index} visible?")


@dataclass(frozen=True)
class TensorRTOptions:
    """How to run a TensorRT engine."""

    device: int = 0  # CUDA device index: the engine, contexts, streams and buffers all live there
    verify: bool = True  # check the manifest's sha256 before deserialising
    # Registers the ElevationAttention plugin before a plugin engine is deserialised, e.g.
    # climax_deploy.kernels.trt_plugin.register_elevation_attention_plugin; None relies on the
    # kernel the engine embeds.
    register_plugins: Callable[[], object] | None = None

    def __post_init__(self) -> None:
        if self.device < 0:
            raise BadInputError(f"device must be a CUDA device index >= 0, got {self.device}")


class _ThreadState:
    """One execution context, stream and set of device buffers per thread."""

    def __init__(self, engine: trt.ICudaEngine, cuda: Any, device: int) -> None:
        _set_device(cuda, device)
        context = engine.create_execution_context()
        if context is None:
            raise InferenceError("TensorRT could not create an execution context (out of GPU memory?)")
        self.context: trt.IExecutionContext = context
        self.cuda, self.device = cuda, device
        self.stream = cuda.Stream()
        self.buffers: dict[str, Any] = {}

    def buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        array = self.buffers.get(name)
        if array is None:
            array = self.cuda.DeviceArray(shape=shape, dtype=dtype)
            self.buffers[name] = array
        elif tuple(array.shape) != shape:
            array.resize(shape)
        return array

    def free(self) -> None:
        _set_device(self.cuda, self.device)  # may run on another thread than the one that made it
        for array in self.buffers.values():
            array.free()
        self.buffers.clear()
        self.stream.free()
        del self.context  # TensorRT destroys the context with its last reference


_NUMPY_DTYPES: dict[str, Any] = {"FLOAT": np.float32, "HALF": np.float16}  # the model's I/O types


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
        try:
            choice = select_runtime(manifest, installed_runtimes(runtime_candidates(manifest)))
            self.gpu = gpu_info(options.device)
            check_engine_compatibility(manifest, choice.version, self.gpu, choice.module)
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: {exc}") from exc
        module = RUNTIME_MODULES[choice.module].load()
        self.runtime_module = choice.module
        super().__init__(ModelSpec.from_manifest(manifest), manifest)
        self.path, self.options, self.tensorrt = path, options, str(choice.version)
        if manifest.attention == "plugin":
            if options.register_plugins is not None:
                options.register_plugins()
            else:
                log.info("plugin engine: relying on the ElevationAttention kernel embedded in the engine")
        self._cuda = _import_cuda()
        _set_device(self._cuda, options.device)  # the engine's memory goes to the chosen device
        self._engine: trt.ICudaEngine | None = self._deserialize(module, path, choice.host_code)
        self._states: PerThread[_ThreadState] = PerThread(
            lambda: _ThreadState(self._live_engine(), self._cuda, options.device), _ThreadState.free
        )

    @staticmethod
    def _deserialize(module: ModuleType, path: Path, host_code: bool) -> trt.ICudaEngine:
        logger = module.Logger(module.Logger.WARNING)
        runtime = module.Runtime(logger)
        if host_code:
            # The full runtime runs a version-compatible plan through the lean runtime it carries, as host
            # code; only load trusted plans (the manifest's sha256 was checked).
            runtime.engine_host_code_allowed = True
        engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelFileError(f"{path}: TensorRT could not deserialize the engine (see its log above)")
        return engine

    def _live_engine(self) -> trt.ICudaEngine:
        if self._engine is None:
            raise BadInputError(f"this {self.backend} runner was closed; load the engine again")
        return self._engine

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        self._live_engine()
        state = self._states.get()
        _set_device(self._cuda, self.options.device)  # this thread may have switched devices since
        context, stream = state.context, state.stream
        feeds = {INPUT_NAME: x, LEAD_TIMES_NAME: lead_times}
        for name, host in feeds.items():
            dtype = np.dtype(self._np_dtype(name))
            host = np.ascontiguousarray(host.astype(dtype, copy=False))
            if not context.set_input_shape(name, host.shape):
                raise BadInputError(f"TensorRT rejected input {name} of shape {host.shape} (outside the engine's profile)")
            device = state.buffer(name, host.shape, dtype)
            device.copy_from(host, stream)
            context.set_tensor_address(name, int(device.ptr))
        dims = context.get_tensor_shape(OUTPUT_NAME)
        out_shape = tuple(int(dims[i]) for i in range(len(dims)))
        out_dtype = np.dtype(self._np_dtype(OUTPUT_NAME))
        out_device = state.buffer(OUTPUT_NAME, out_shape, out_dtype)
        context.set_tensor_address(OUTPUT_NAME, int(out_device.ptr))
        if not context.execute_async_v3(stream.ptr):
            raise InferenceError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        out = np.empty(out_shape, dtype=out_dtype)
        out_device.copy_to(out, stream)
        stream.synchronize()
        return out.astype(np.float32, copy=False)

    def _np_dtype(self, name: str) -> Any:
        """numpy dtype of an I/O tensor, by TensorRT's DataType name (the dispatch and lean modules
        are not documented to carry the full module's `nptype` helper)."""
        dtype = self._live_engine().get_tensor_dtype(name)
        try:
            return _NUMPY_DTYPES[dtype.name]
        except KeyError:
            raise ModelFileError(f"{self.path}: tensor {name} has TensorRT type {dtype.name}; expected FLOAT or HALF") from None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": str(self.path),
            "tensorrt": self.tensorrt,
            "runtime": self.runtime_module,
            "device": self.options.device,
            "gpu": dataclasses.asdict(self.gpu),
            "attention": self.manifest.attention,
            "build_path": self.manifest.build_path,
        }

    def _close_impl(self) -> None:
        self._states.close()
        self._engine = None  # TensorRT frees the engine with its last reference


__all__ = [
    "PerThread",
    "RuntimeChoice",
    "TensorRTOptions",
    "TensorRTRunner",
    "TensorRTVersion",
    "check_engine_compatibility",
    "gpu_info",
    "import_tensorrt",
    "installed_runtimes",
    "runtime_candidates",
    "select_runtime",
    "tensorrt_available",
    "tensorrt_version",
]
