"""Launch the TensorRT plugin's ahead-of-time PTX the way TensorRT does, without TensorRT.

TensorRT's AOT path (tensorrt.plugin aot_impl, tensorrt/plugin/_lib.py v10.13.0-v11.1) loads the PTX
that aot_impl returns and launches it with (tensor inputs, extra_args, outputs): here 5 device
pointers (Q, K, V, E, BETA), the 16 int32 extra arguments of trt_plugin.int_args, and the output
pointer, 22 in all; grid (cdiv(N, block_m), B x H, 1), block (num_warps x 32), shared memory as
compile_ptx reports. The softmax scale is not an argument: the kernel derives it from its HEAD_DIM
constexpr, so the PTX takes no float parameter.

`pack_launch` builds that list (pure Python, tested on CPU against the PTX's .entry declaration);
`launch` hands it to the CUDA driver through cuda-python (`cuda.bindings.driver`) or, where that
does not import, CuPy. climax-gpu-check uses it to compare the AOT kernel with the JIT kernel.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from climax_deploy.errors import BadInputError, MissingBackendError
from climax_deploy.kernels.tiling import cdiv
from climax_deploy.kernels.trt_plugin import (
    AOT_PARAM_COUNT,
    INT_ARGS,
    TENSOR_INPUTS,
    TENSOR_OUTPUTS,
    CompiledKernel,
    int_args,
)

POINTER = "u64"  # a 64-bit device address (Triton declares pointer parameters .u64)
INT32 = "i32"  # Triton declares i32 arguments .u32 in PTX (same 4 bytes)
_PTX_TYPES = {POINTER: ".u64", INT32: ".u32"}
_ENTRY = re.compile(r"\.entry\s+(\w+)\s*\(([^)]*)\)")
LAUNCHERS = ("cuda-python", "cupy")


@dataclass(frozen=True)
class Arg:
    """One kernel argument: its name in the kernel signature, its kind (POINTER or INT32) and value."""

    name: str
    kind: str
    value: int


@dataclass(frozen=True)
class AotLaunch:
    """Everything cuLaunchKernel takes besides the function and stream."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    args: tuple[Arg, ...]


def pack_launch(compiled: CompiledKernel, pointers: Mapping[str, int], shape: tuple[int, int, int, int]) -> AotLaunch:
    """TensorRT's 22 arguments for contiguous q/k/v/out [B, H, N, D] and elevation [B, N].

    pointers: device addresses by kernel name (Q, K, V, E, BETA, OUT). The order and values are what
    trt_plugin's aot_impl hands TensorRT (inputs, SymIntExprs extra args, output); grid and block
    are what it sets in KernelLaunchParams.
    """
    batch, heads, seq_len, head_dim = shape
    if head_dim != compiled.config.head.head_dim:
        raise BadInputError(f"tensors have head dim {head_dim}; the PTX was compiled for {compiled.config.head.head_dim}")
    missing = set(TENSOR_INPUTS + TENSOR_OUTPUTS) - set(pointers)
    if missing:
        raise BadInputError(f"no device pointer for {sorted(missing)}")
    args = [Arg(name, POINTER, int(pointers[name])) for name in TENSOR_INPUTS]
    args += [Arg(name, INT32, int(v)) for name, v in zip(INT_ARGS, int_args(heads, seq_len, head_dim), strict=True)]
    args += [Arg(name, POINTER, int(pointers[name])) for name in TENSOR_OUTPUTS]
    for a in args:
        if a.kind == INT32 and not -(2**31) <= a.value < 2**31:
            raise BadInputError(f"{a.name} = {a.value} does not fit the kernel's int32")
    return AotLaunch(
        grid=(cdiv(seq_len, compiled.config.block_m), batch * heads, 1),
        block=(compiled.num_warps * 32, 1, 1),
        shared_mem=compiled.shared_mem,
        args=tuple(args),
    )


def entry_param_types(ptx: str) -> list[tuple[str, str]]:
    """(PTX type, name) of each parameter of the PTX's kernel entry, in order, e.g. ('.u64', 'k_param_0')."""
    match = _ENTRY.search(ptx)
    if match is None:
        raise BadInputError("no .entry in the PTX")
    out = []
    for decl in (d.split() for d in match[2].split(",") if d.strip()):
        if decl[0] != ".param":
            raise BadInputError(f"unexpected PTX parameter declaration {' '.join(decl)!r}")
        out.append((decl[1], decl[-1]))
    return out


def check_against_ptx(launch: AotLaunch, ptx: str) -> None:
    """BadInputError unless the packed arguments match the PTX's .entry parameters one for one."""
    params = entry_param_types(ptx)
    if len(launch.args) != len(params) or len(params) != AOT_PARAM_COUNT:
        raise BadInputError(f"{len(launch.args)} arguments for a PTX entry of {len(params)} parameters")
    for i, (arg, (ptx_type, name)) in enumerate(zip(launch.args, params, strict=True)):
        if _PTX_TYPES[arg.kind] != ptx_type:
            raise BadInputError(f"argument {i} ({arg.name}) is {arg.kind}; the PTX declares {name} {ptx_type}")


def cuda_python_params(launch: AotLaunch) -> tuple[tuple[int, ...], tuple[Any, ...]]:
    """kernelParams for cuda.bindings.driver.cuLaunchKernel: (values, ctypes types)."""
    types = {POINTER: ctypes.c_void_p, INT32: ctypes.c_int32}
    return tuple(a.value for a in launch.args), tuple(types[a.kind] for a in launch.args)


def cupy_args(launch: AotLaunch) -> tuple[Any, ...]:
    """Arguments for a CuPy RawKernel call: numpy scalars of the PTX's widths."""
    import numpy as np

    types = {POINTER: np.uint64, INT32: np.int32}
    return tuple(types[a.kind](a.value) for a in launch.args)


def available_launcher() -> str:
    """'cuda-python' or 'cupy', whichever imports first; MissingBackendError where neither does."""
    try:
        from cuda.bindings import driver  # noqa: F401

        return "cuda-python"
    except ImportError:
        pass
    try:
        import cupy  # noqa: F401

        return "cupy"
    except ImportError:
        pass
    raise MissingBackendError("neither cuda-python (cuda.bindings.driver) nor CuPy imports")


def _cu(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"{what} failed with CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


def launch(compiled: CompiledKernel, aot: AotLaunch, stream: int, launcher: str | None = None) -> str:
    """Load the PTX and launch it on `stream` (a CUDA stream handle) with `aot`; returns the launcher used."""
    check_against_ptx(aot, compiled.ptx)
    launcher = launcher or available_launcher()
    if launcher == "cuda-python":
        from cuda.bindings import driver

        module = _cu(driver.cuModuleLoadData(compiled.ptx.encode() + b"\0"), "cuModuleLoadData (PTX JIT)")
        try:
            function = _cu(driver.cuModuleGetFunction(module, compiled.name.encode()), "cuModuleGetFunction")
            _cu(driver.cuLaunchKernel(function, *aot.grid, *aot.block, aot.shared_mem, driver.CUstream(stream),
                                      cuda_python_params(aot), 0), "cuLaunchKernel")  # fmt: skip
            _cu(driver.cuStreamSynchronize(driver.CUstream(stream)), "cuStreamSynchronize")
        finally:
            _cu(driver.cuModuleUnload(module), "cuModuleUnload")
    elif launcher == "cupy":
        import cupy

        # RawModule(code=...) compiles CUDA C with NVRTC; PTX goes through cuModuleLoadData via Module.load.
        module = cupy.cuda.function.Module()
        module.load(compiled.ptx.encode())
        function = module.get_function(compiled.name)
        ext = cupy.cuda.ExternalStream(stream)
        function(aot.grid, aot.block, cupy_args(aot), shared_mem=aot.shared_mem, stream=ext)
        ext.synchronize()
    else:
        raise BadInputError(f"unknown launcher {launcher!r}; expected one of {LAUNCHERS}")
    return launcher
