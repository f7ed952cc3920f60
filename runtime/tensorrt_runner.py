"""TensorRT runner: `load("model.engine")` -> the same predict(x, lead_times) contract as ONNX Runtime.

Loading checks the engine's manifest against the installed TensorRT modules and the GPU
(runtime/tensorrt_compat.py), then deserialises the plan with the module chosen. Each thread runs
its own execution context, stream and buffers (runtime/tensorrt_contexts.py); close() waits for
predicts in flight before freeing them and the engine.

Everything TensorRT- or CUDA-related is imported lazily: `climax_deploy.runtime` imports without
torch and without TensorRT.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from climax_deploy.cuda_driver import gpu_info
from climax_deploy.errors import BadInputError, InferenceError, ModelFileError
from climax_deploy.manifest import EngineManifest, read_engine_manifest
from climax_deploy.runner import ModelSpec, Runner
from climax_deploy.runtime.tensorrt_compat import (
    RUNTIME_MODULES,
    check_engine_compatibility,
    installed_runtimes,
    runtime_candidates,
    select_runtime,
)
from climax_deploy.runtime.tensorrt_contexts import (
    ActivationBlock,
    Bounded,
    InFlight,
    PerThread,
    ThreadState,
    import_cuda,
    set_device,
)
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorRTOptions:
    """How to run a TensorRT engine."""

    device: int = 0  # CUDA device index: the engine, contexts, streams and buffers all live there
    verify: bool = True  # check the manifest's sha256 before deserialising
    # Registers the ElevationAttention plugin before a plugin engine is deserialised, e.g.
    # climax_deploy.kernels.trt_plugin.register_elevation_attention_plugin; None relies on the
    # kernel the engine embeds.
    register_plugins: Callable[[], object] | None = None
    # Activation blocks shared by all threads' contexts, each engine.device_memory_size_v2 bytes (the largest
    # profile's need): at most this many predicts run on the GPU at once, the others wait (docs/memory.md).
    activation_blocks: int = 1

    def __post_init__(self) -> None:
        if self.device < 0:
            raise BadInputError(f"device must be a CUDA device index >= 0, got {self.device}")
        if self.activation_blocks < 1:
            raise BadInputError(f"activation_blocks must be >= 1, got {self.activation_blocks}")


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
        if manifest.build.attention == "plugin":
            if options.register_plugins is not None:
                options.register_plugins()
            else:
                log.info("plugin engine: relying on the ElevationAttention kernel embedded in the engine")
        cuda = import_cuda()
        set_device(cuda, options.device)  # the engine's memory goes to the chosen device
        self._open(self._deserialize(module, path, choice.host_code), cuda, module.ExecutionContextAllocationStrategy.USER_MANAGED)

    def _open(self, engine: trt.ICudaEngine, cuda: Any, strategy: Any) -> None:
        """Serve `engine`: contexts made per thread on first use, activation blocks shared, and the count
        close() waits on."""
        self._cuda = cuda
        self._engine: trt.ICudaEngine | None = engine
        device = self.options.device
        self._states: PerThread[ThreadState] = PerThread(
            lambda: ThreadState(self._live_engine(), self._cuda, device, strategy), ThreadState.free
        )
        self.activation_bytes = int(engine.device_memory_size_v2)  # the largest profile's need
        self._activations: Bounded[ActivationBlock] = Bounded(
            lambda: ActivationBlock(self._cuda, device, self.activation_bytes), ActivationBlock.free,
            self.options.activation_blocks,
        )
        self._in_flight = InFlight(f"{self.backend} runner")

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
        with self._in_flight.enter():  # close() waits for this call before freeing its context
            return self._run(x, lead_times)

    def _run(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        self._live_engine()
        state = self._states.get()
        set_device(self._cuda, self.options.device)  # this thread may have switched devices since
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
        out = np.empty(out_shape, dtype=out_dtype)
        with self._activations.borrow() as block:  # held until the stream has finished with it
            context.set_device_memory(block.ptr, block.size)
            if not context.execute_async_v3(stream.ptr):
                stream.synchronize()
                raise InferenceError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
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
            "attention": self.manifest.build.attention,
            "build_path": self.manifest.build_path,
            "activation_bytes": self.activation_bytes,
            "activation_blocks": self.options.activation_blocks,
        }

    def _close_impl(self) -> None:
        self._in_flight.close()  # refuse new predicts, wait for those running
        self._states.close()
        self._activations.close()
        self._engine = None  # TensorRT frees the engine with its last reference


__all__ = ["TensorRTOptions", "TensorRTRunner"]
