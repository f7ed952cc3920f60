"""TensorRT plugin `climax::ElevationAttention` version 1: the fused kernel, compiled ahead of time.

TensorRT's Python plugin API (tensorrt.plugin, TensorRT >= 10.9 for AOT) describes the op; its
`aot_impl` compiles the Triton kernel (triton_attention.py) to PTX at engine-build time and hands
TensorRT the kernel name, PTX, launch parameters and integer arguments. The engine embeds the PTX,
so it runs without Python. Call `register_elevation_attention_plugin()` before parsing an ONNX file
whose climax::ElevationAttention node carries `plugin_namespace = "climax"`.

Typing: tensorrt-stubs 10.13 has no stubs for the `tensorrt.plugin` module, so that module is `Any`
here; everything taken from `tensorrt` itself is checked against the stubs. The parts that need no
TensorRT (dtype rules, kernel signature, integer arguments, grid, PTX compilation) are plain
functions tested on CPU-only machines.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from climax_deploy.errors import BadInputError
from climax_deploy.kernels.tiling import LaunchConfig, launch_config
from climax_deploy.optional import TENSORRT_PLUGIN
from climax_deploy.schema import CUSTOM_DOMAIN, CUSTOM_OP, CUSTOM_OP_VERSION

if TYPE_CHECKING:
    import tensorrt as trt

logger = logging.getLogger(__name__)

PLUGIN_NAMESPACE = CUSTOM_DOMAIN  # "climax": the node's plugin_namespace attribute
PLUGIN_NAME = CUSTOM_OP  # "ElevationAttention": the ONNX op type
PLUGIN_VERSION = str(CUSTOM_OP_VERSION)  # "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
# Kernel argument order (the AOT ABI): tensor inputs, then the integer arguments, then the output.
TENSOR_INPUTS = ("Q", "K", "V", "E", "BETA")
INT_ARGS = (
    "seq_len", "num_heads",
    "stride_qb", "stride_qh", "stride_qn",
    "stride_kb", "stride_kh", "stride_kn",
    "stride_vb", "stride_vh", "stride_vn",
    "stride_ob", "stride_oh", "stride_on",
    "stride_eb", "stride_en",
)  # fmt: skip
TENSOR_OUTPUTS = ("OUT",)
QKV_TYPES = ("fp16", "bf16", "fp32")
# Type rule: q, k, v and the output share one type; elevation and beta are fp32 or q's type.
# As TensorRT autotune strings (alternatives index-wise across the 6 positions q, k, v, e, beta, out):
AUTOTUNE_TYPES = (
    "FP16|BF16|FP32, FP16|BF16|FP32, FP16|BF16|FP32, FP32|FP32|FP32, FP32|FP32|FP32, FP16|BF16|FP32",
    "FP16|BF16, FP16|BF16, FP16|BF16, FP16|BF16, FP16|BF16, FP16|BF16",
)


def trt_type_name(dtype: trt.DataType) -> str:
    """TensorRT data type -> Triton's name ("fp16", "bf16", "fp32"); BadInputError otherwise."""
    import tensorrt as trt

    names = {trt.DataType.HALF: "fp16", trt.DataType.BF16: "bf16", trt.DataType.FLOAT: "fp32"}
    try:
        return names[dtype]
    except KeyError:
        raise BadInputError(f"{PLUGIN_ID}: unsupported tensor type {dtype}; expected FLOAT, HALF or BF16") from None


def check_types(qkv: Sequence[str], elevation: str, beta: str, out: str) -> None:
    """The plugin's type rule, on Triton type names."""
    if len(set(qkv)) != 1 or qkv[0] not in QKV_TYPES:
        raise BadInputError(f"{PLUGIN_ID}: q, k, v must share one of {QKV_TYPES}, got {tuple(qkv)}")
    for name, t in (("elevation", elevation), ("beta", beta)):
        if t not in ("fp32", qkv[0]):
            raise BadInputError(f"{PLUGIN_ID}: {name} must be fp32 or q's type {qkv[0]}, got {t}")
    if out != qkv[0]:
        raise BadInputError(f"{PLUGIN_ID}: output type must be q's type {qkv[0]}, got {out}")


def kernel_signature(qkv: str, elevation: str, beta: str, cfg: LaunchConfig) -> tuple[dict[str, str], dict[str, Any]]:
    """Triton signature and constexprs for ahead-of-time compilation (pointer types, i32 integers)."""
    signature = {"Q": f"*{qkv}", "K": f"*{qkv}", "V": f"*{qkv}", "E": f"*{elevation}", "BETA": f"*{beta}"}
    signature.update({name: "i32" for name in INT_ARGS})
    signature["OUT"] = f"*{qkv}"
    constexprs = cfg.constexprs()
    signature.update({name: "constexpr" for name in constexprs})
    return signature, constexprs


def int_args(heads: Any, seq_len: Any, head_dim: int) -> list[Any]:
    """The integer arguments, in kernel order, for contiguous q/k/v/out [B, H, N, D] and elevation [B, N].

    `heads` and `seq_len` are ints or TensorRT's symbolic shape expressions (tensorrt.plugin, untyped
    in the stubs); both multiply, so one function serves the tests and the engine build.
    """
    strides_4d = [heads * seq_len * head_dim, seq_len * head_dim, head_dim]  # batch, head, row
    return [seq_len, heads, *strides_4d, *strides_4d, *strides_4d, *strides_4d, seq_len, 1]


@dataclass(frozen=True)
class CompiledKernel:
    """PTX and what TensorRT needs to launch it."""

    name: str
    ptx: str
    num_warps: int
    shared_mem: int
    global_scratch: int
    config: LaunchConfig


def compile_ptx(qkv: str, elevation: str, beta: str, head_dim: int, arch: int) -> CompiledKernel:
    """Compile the kernel to PTX for compute capability `arch` (e.g. 90); needs Triton, not a GPU."""
    return _compile_ptx_cached(qkv, elevation, beta, head_dim, arch)


@functools.cache
def _compile_ptx_cached(qkv: str, elevation: str, beta: str, head_dim: int, arch: int) -> CompiledKernel:
    import triton
    from triton.backends.compiler import GPUTarget

    from climax_deploy.kernels.triton_attention import compiled_kernel

    check_types((qkv, qkv, qkv), elevation, beta, qkv)
    cfg = launch_config(1, 1, 1, head_dim, qkv)  # tiles depend on dtype and head dim only
    signature, constexprs = kernel_signature(qkv, elevation, beta, cfg)
    source = triton.compiler.ASTSource(fn=compiled_kernel(), signature=signature, constexprs=constexprs)
    options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    meta = kernel.metadata
    scratch = int(getattr(meta, "global_scratch_size", 0) or 0) + int(getattr(meta, "profile_scratch_size", 0) or 0)
    if scratch:
        # TensorRT passes only inputs, integer arguments and outputs; a kernel needing scratch cannot run.
        raise BadInputError(f"{PLUGIN_ID}: compiled kernel needs {scratch} bytes of global scratch; unsupported")
    return CompiledKernel(meta.name, kernel.asm["ptx"], meta.num_warps, meta.shared, scratch, cfg)


def _device_arch() -> int:
    """Compute capability of the GPU building the engine, as 10 * major + minor."""
    from triton.runtime import driver

    target = driver.active.get_current_target()
    return int(target.arch)


def _trtp() -> Any:
    return TENSORRT_PLUGIN.load()


@functools.cache
def register_elevation_attention_plugin() -> str:
    """Register `climax::ElevationAttention` v1 with TensorRT (once per process); returns the plugin id."""
    trtp = _trtp()
    import tensorrt as trt

    def _desc(
        q: Any, k: Any, v: Any, elevation: Any, beta: Any
    ) -> Any:  # (TensorDesc, ...) -> TensorDesc; annotations for TensorRT are set below
        return q.like()

    def _autotune(q: Any, k: Any, v: Any, elevation: Any, beta: Any, outputs: Any) -> list[Any]:
        return [trtp.AutoTuneCombination(types, "LINEAR") for types in AUTOTUNE_TYPES]

    def _aot_impl(
        q: Any, k: Any, v: Any, elevation: Any, beta: Any, outputs: Any, tactic: int
    ) -> tuple[str, str, Any, Any]:
        qkv_t = trt_type_name(q.dtype)
        check_types(
            (qkv_t, trt_type_name(k.dtype), trt_type_name(v.dtype)),
            trt_type_name(elevation.dtype),
            trt_type_name(beta.dtype),
            trt_type_name(outputs[0].dtype),
        )
        head_expr = q.shape_expr[3]
        if head_expr.is_fake or not head_expr.is_constant:
            raise BadInputError(f"{PLUGIN_ID}: the head dim must be a build-time constant")
        head_dim = int(head_expr.constant_value())
        compiled = compile_ptx(
            qkv_t, trt_type_name(elevation.dtype), trt_type_name(beta.dtype), head_dim, _device_arch()
        )
        batch, heads, seq_len = q.shape_expr[0], q.shape_expr[1], q.shape_expr[2]
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.cdiv(seq_len, compiled.config.block_m)
        params.grid_y = batch * heads
        params.grid_z = 1
        params.block_x = compiled.num_warps * 32
        params.shared_mem = compiled.shared_mem
        values = int_args(heads, seq_len, head_dim)
        extra = trtp.SymIntExprs(len(values))
        for i, value in enumerate(values):
            extra[i] = trtp.SymInt32(value)
        return compiled.name, compiled.ptx, params, extra

    tensor_desc = trtp.TensorDesc
    _desc.__annotations__ = {name: tensor_desc for name in ("q", "k", "v", "elevation", "beta")}
    _desc.__annotations__["return"] = tensor_desc
    trtp.register(PLUGIN_ID)(_desc)
    trtp.autotune(PLUGIN_ID)(_autotune)
    trtp.aot_impl(PLUGIN_ID)(_aot_impl)
    logger.info("registered TensorRT plugin %s version %s (AOT Triton), TensorRT %s", PLUGIN_ID, PLUGIN_VERSION, trt.__version__)
    return PLUGIN_ID


def plugin_creator_registered() -> bool:
    """Whether TensorRT's registry holds climax::ElevationAttention v1 (after registration)."""
    import tensorrt as trt

    registry: trt.IPluginRegistry = trt.get_plugin_registry()
    return registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None


