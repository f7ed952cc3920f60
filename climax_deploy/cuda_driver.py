"""The GPU's identity through the CUDA driver API (ctypes over libcuda: no extra package).

An engine's manifest records the GPU it was built on (export) and is checked against the GPU it runs
on (runtime).
"""

from __future__ import annotations

import ctypes

from climax_deploy.errors import MissingBackendError
from climax_deploy.manifest import GpuRecord

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


__all__ = ["gpu_info"]
