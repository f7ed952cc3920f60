"""Optional dependencies, imported lazily, failing with one line that says what to install.

    ort = ONNXRUNTIME.load()          # the module, or MissingBackendError with the install hint
    if XARRAY.available(): ...

Every optional import in the toolkit goes through an OptionalDependency defined here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from climax_deploy.errors import MissingBackendError


@dataclass(frozen=True)
class OptionalDependency:
    """A module the toolkit imports only when a feature needs it."""

    module: str
    install: str  # what to run, e.g. "pip install 'climax-deploy[io]'"
    purpose: str  # what needs it, e.g. "forecast files"
    # Rejects a module that imports but is not the real thing (e.g. a stubs-only namespace package).
    is_real: Callable[[ModuleType], bool] | None = None

    def load(self) -> ModuleType:
        try:
            module = importlib.import_module(self.module)
        except (ImportError, RuntimeError) as exc:  # tritonclient.grpc without its extra raises RuntimeError
            raise MissingBackendError(self.missing_message()) from exc
        if self.is_real is not None and not self.is_real(module):
            raise MissingBackendError(self.missing_message())
        return module

    def missing_message(self) -> str:
        return f"{self.purpose} needs {self.module}, which is not installed: {self.install}"

    def available(self) -> bool:
        try:
            self.load()
        except MissingBackendError:
            return False
        return True


# The extra that installs each optional top-level module, for an import no CLI checked up front: it
# still becomes one line naming what to install (climax_deploy.cli.run_cli). onnx is also in `tensorrt`.
EXTRA_OF_MODULE = {
    "onnxruntime": "cpu", "torch": "export", "onnx": "export", "onnxscript": "export", "yaml": "export",
    "triton": "kernels", "polygraphy": "tensorrt", "xarray": "io", "netCDF4": "io", "zarr": "io", "pint": "io",
    "cf_xarray": "io", "pytriton": "serve", "tritonclient": "serve",
}  # fmt: skip


def missing_module_message(exc: ModuleNotFoundError) -> str | None:
    """'torch is not installed: pip install 'climax-deploy[export]'' for an optional module; None otherwise."""
    top = (exc.name or "").partition(".")[0]
    if top == "tensorrt":
        return f"TensorRT is not installed: {TENSORRT_HINT}"
    extra = EXTRA_OF_MODULE.get(top)
    return None if extra is None else f"{top} is not installed: pip install 'climax-deploy[{extra}]'"


def _is_real_tensorrt(module: ModuleType) -> bool:
    # `pip install tensorrt-stubs` leaves a `tensorrt` namespace package holding only .pyi files:
    # it imports, but has no Runtime and no version.
    return hasattr(module, "Runtime") and isinstance(getattr(module, "__version__", None), str)


TENSORRT_HINT = (
    "pip install tensorrt --extra-index-url https://pypi.nvidia.com (NVIDIA's Python index; PyPI's package "
    "only redirects there), or run inside NVIDIA's container nvcr.io/nvidia/tensorrt:<yy.mm>-py3"
)

ONNXRUNTIME = OptionalDependency(
    "onnxruntime", "pip install 'climax-deploy[cpu]' (or '[gpu]' for onnxruntime-gpu)", "the ONNX Runtime backend"
)
TORCH = OptionalDependency("torch", "pip install 'climax-deploy[export]'", "the PyTorch reference")
ONNX = OptionalDependency("onnx", "pip install 'climax-deploy[export]'", "ONNX export and graph passes")
OPENVINO = OptionalDependency("openvino", "pip install 'climax-deploy[openvino]'", "the OpenVINO backend")
# The OpenVINO backend's one-time conversion (inlining the export's model-local functions) needs onnx.
ONNX_FOR_OPENVINO = OptionalDependency(
    "onnx.inliner", "pip install 'climax-deploy[openvino]'", "reading an export into OpenVINO the first time"
)
TRITON = OptionalDependency("triton", "pip install 'climax-deploy[kernels]'", "the fused elevation-attention kernel")
YAML = OptionalDependency("yaml", "pip install pyyaml (part of 'climax-deploy[export]')", "YAML config files")
TENSORRT = OptionalDependency("tensorrt", TENSORRT_HINT, "TensorRT engines", _is_real_tensorrt)
TENSORRT_PLUGIN = OptionalDependency(
    "tensorrt.plugin", TENSORRT_HINT + " (TensorRT >= 10.9)", "the ElevationAttention TensorRT plugin"
)
TENSORRT_LEAN = OptionalDependency("tensorrt_lean", TENSORRT_HINT, "TensorRT's lean runtime", _is_real_tensorrt)
TENSORRT_DISPATCH = OptionalDependency(
    "tensorrt_dispatch", TENSORRT_HINT, "TensorRT's dispatch runtime", _is_real_tensorrt
)
# build-engine's ONNX parsing and rewriting: onnx comes with the `tensorrt` extra too.
ONNX_FOR_TENSORRT = OptionalDependency("onnx", "pip install 'climax-deploy[tensorrt]'", "TensorRT builds")
POLYGRAPHY = OptionalDependency("polygraphy", "pip install 'climax-deploy[tensorrt]'", "TensorRT builds and CUDA buffers")
XARRAY = OptionalDependency("xarray", "pip install 'climax-deploy[io]'", "forecast files")
NETCDF4 = OptionalDependency("netCDF4", "pip install 'climax-deploy[io]'", "NetCDF files")
ZARR = OptionalDependency("zarr", "pip install 'climax-deploy[io]'", "zarr stores")
PINT = OptionalDependency("pint", "pip install 'climax-deploy[io]'", "units of forecast files")
CF_XARRAY_UNITS = OptionalDependency("cf_xarray.units", "pip install 'climax-deploy[io]'", "CF units of forecast files")
PYTRITON = OptionalDependency(
    "pytriton", "pip install 'climax-deploy[serve,cpu]' in a Python 3.12 environment", "climax-serve"
)
MATPLOTLIB = OptionalDependency(
    "matplotlib", "pip install 'climax-deploy[plot]'", "pictures (check-parity --report, --quicklook, --plot)"
)
TRITONCLIENT_GRPC = OptionalDependency(
    "tritonclient.grpc", "pip install 'climax-deploy[serve]'", "the Triton gRPC client (climax-load-test)"
)
