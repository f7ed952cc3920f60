"""TensorRT plugin `climax::ElevationAttention` version 1: the fused kernel, compiled ahead of time.

TensorRT's Python plugin API (tensorrt.plugin, TensorRT >= 10.9 for AOT) describes the op; its
`aot_impl` compiles the Triton kernel (triton_attention.py) to PTX at engine-build time and hands
TensorRT the kernel name, PTX, launch parameters and integer arguments. The engine embeds the PTX,
so it runs without Python. Call `register_elevation_attention_plugin()` before parsing an ONNX file
whose climax::ElevationAttention node carries `plugin_namespace = "climax"`.

What TensorRT checks or relies on, each encoded in tests/test_trt_plugin_contract.py: the plugin
functions' annotations are classes (TensorRT validates them with issubclass(), so this module's
string annotations are replaced, plugin_functions); the PTX declares exactly the 22 parameters
TensorRT's AOT launch passes, targets sm_80 at PTX ISA 7.8 (true to --hardware-compat ampere+),
vectorises its loads and fits 47 KiB of shared memory (compile_ptx; ampere+ leaves 48 KiB with the driver's 1 KiB). Sources: docs/tensorrt.md.

Typing: tensorrt-stubs 10.13 has no stubs for the `tensorrt.plugin` module, so that module is `Any`
here; everything taken from `tensorrt` itself is checked against the stubs. The parts that need no
TensorRT (dtype rules, kernel signature, integer arguments, grid, PTX compilation) are plain
functions tested on CPU-only machines.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from climax_deploy.errors import BadInputError
from climax_deploy.kernels.tiling import AOT_SHARED_MEM_LIMIT, LaunchConfig, aot_launch_config
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
PLUGIN_INPUTS = ("q", "k", "v", "elevation", "beta")  # the plugin functions' parameter names (TensorRT's schema)
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


# -- ahead-of-time PTX: what TensorRT's AOT launch and the engine's promises require -------------
# TensorRT launches the PTX with exactly (tensor inputs, extra_args, outputs): tensorrt.plugin's
# aot_impl docstring, tensorrt/plugin/_lib.py, identical v10.13.0-v11.1. Triton >= 3.3 appends a
# global_scratch pointer and >= 3.5 a profile_scratch pointer after them; the kernel uses neither
# (sizes 0), so compile_ptx removes them from the .entry list and the PTX declares exactly what
# TensorRT passes (surplus launch arguments, if a TensorRT passes any, are ignored by cuLaunchKernel).
AOT_PARAM_COUNT = len(TENSOR_INPUTS) + len(INT_ARGS) + len(TENSOR_OUTPUTS)  # 22
# Plain sm_80 PTX (never sm_90a: that runs on compute capability 9.0 only) at PTX ISA 7.8 (CUDA 11.8's):
# the driver JIT-compiles it for any GPU of compute capability >= 8.0 with a driver >= R520, which is
# what --hardware-compat ampere+ promises. Triton's default would be its bundled ptxas's newest ISA.
PTX_TARGET_ARCH = 80
PTX_ISA = 78
PTX_PROMISE = f"PTX ISA {PTX_ISA // 10}.{PTX_ISA % 10}, sm_{PTX_TARGET_ARCH} (JIT to compute capability >= 8.0)"
ALIGN = 16  # Triton's divisibility unit (bytes for pointers, elements for integers)

_ENTRY = re.compile(r"\.entry\s+(\w+)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class CompiledKernel:
    """PTX and what TensorRT needs to launch it."""

    name: str
    ptx: str
    num_warps: int
    shared_mem: int
    config: LaunchConfig


def runtime_arg_names() -> tuple[str, ...]:
    """The kernel's non-constexpr arguments in launch order: inputs, integer arguments, output."""
    return (*TENSOR_INPUTS, *INT_ARGS, *TENSOR_OUTPUTS)


def divisibility_hints(head_dim: int) -> dict[tuple[int], list[list[Any]]]:
    """Triton `attrs` telling the compiler which arguments are multiples of 16, so loads vectorise.

    Integers: the q/k/v/out strides of contiguous [B, H, N, D] tensors are multiples of D (true
    multiples of 16 when 16 divides D). Pointers: engine I/O is >= 256-byte aligned (TensorRT's
    IExecutionContext::setTensorAddress, NvInferRuntime.h v10.13.0) and TensorRT's activation memory
    comes from cudaMalloc-aligned pools; offsets into it are whole rows of D elements. Elevation and
    beta get no hints (per-token loads; their strides include 1). Without hints Triton loads q/k/v one
    16-bit element at a time.
    """
    if head_dim % ALIGN:
        return {}
    names = runtime_arg_names()
    hinted = [n for n in names if n in ("Q", "K", "V", "OUT") or (n.startswith("stride_") and not n.startswith("stride_e"))]
    return {(names.index(n),): [["tt.divisibility", ALIGN]] for n in hinted}


def entry_params(ptx: str) -> list[str]:
    """The parameter names of the PTX's kernel entry, in order."""
    match = _ENTRY.search(ptx)
    if match is None:
        raise BadInputError(f"{PLUGIN_ID}: no .entry in the compiled PTX")
    return [decl.split()[-1] for decl in match[2].split(",") if decl.strip()]


def ptx_directive(ptx: str, directive: str) -> str:
    """The value of a PTX module directive such as `.version` or `.target`."""
    match = re.search(rf"^\s*\{directive}\s+(\S+)", ptx, re.MULTILINE)
    if match is None:
        raise BadInputError(f"{PLUGIN_ID}: the compiled PTX has no {directive} directive")
    return match[1]


def drop_unused_params(ptx: str, keep: int) -> str:
    """Remove the .entry parameters after the first `keep`; each must be unused in the kernel body."""
    match = _ENTRY.search(ptx)
    if match is None:
        raise BadInputError(f"{PLUGIN_ID}: no .entry in the compiled PTX")
    decls = [d.strip() for d in match[2].split(",") if d.strip()]
    if len(decls) < keep:
        raise BadInputError(f"{PLUGIN_ID}: the kernel has {len(decls)} parameters, expected at least {keep}")
    body = ptx[match.end() :]
    for decl in decls[keep:]:
        name = decl.split()[-1]
        if re.search(rf"\b{re.escape(name)}\b", body):
            raise BadInputError(f"{PLUGIN_ID}: trailing kernel parameter {name} is used; TensorRT would not pass it")
    params = ",\n\t".join(decls[:keep])
    return f"{ptx[: match.start(2)]}\n\t{params}\n{ptx[match.end(2) :]}"


def compile_ptx(qkv: str, elevation: str, beta: str, head_dim: int) -> CompiledKernel:
    """Compile the kernel to TensorRT-ready PTX (sm_80, ISA 7.8, 22 parameters); needs Triton, not a GPU.

    BadInputError when the result would break a promise: scratch memory, a parameter list other than
    AOT_PARAM_COUNT, another ISA or target, or shared memory above tiling.AOT_SHARED_MEM_LIMIT.
    """
    return _compile_ptx_cached(qkv, elevation, beta, head_dim)


@functools.cache
def _compile_ptx_cached(qkv: str, elevation: str, beta: str, head_dim: int) -> CompiledKernel:
    import triton
    from triton.backends.compiler import GPUTarget

    from climax_deploy.kernels.triton_attention import compiled_kernel

    check_types((qkv, qkv, qkv), elevation, beta, qkv)
    cfg = aot_launch_config(head_dim, qkv)
    signature, constexprs = kernel_signature(qkv, elevation, beta, cfg)
    source = triton.compiler.ASTSource(
        fn=compiled_kernel(), signature=signature, constexprs=constexprs, attrs=divisibility_hints(head_dim)
    )
    options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, "ptx_version": PTX_ISA}
    kernel = triton.compile(source, target=GPUTarget("cuda", PTX_TARGET_ARCH, 32), options=options)
    meta = kernel.metadata
    scratch = int(getattr(meta, "global_scratch_size", 0) or 0) + int(getattr(meta, "profile_scratch_size", 0) or 0)
    if scratch:
        raise BadInputError(f"{PLUGIN_ID}: compiled kernel needs {scratch} bytes of global scratch; TensorRT passes none")
    if meta.shared > AOT_SHARED_MEM_LIMIT:
        raise BadInputError(
            f"{PLUGIN_ID}: kernel for head dim {head_dim} ({qkv}) needs {meta.shared} bytes of shared memory, "
            f"expected <= {AOT_SHARED_MEM_LIMIT} (TensorRT's AOT launch does not opt in to more)"
        )
    ptx = drop_unused_params(kernel.asm["ptx"], AOT_PARAM_COUNT)
    promised = (ptx_directive(ptx, ".version"), ptx_directive(ptx, ".target"))
    if promised != (f"{PTX_ISA // 10}.{PTX_ISA % 10}", f"sm_{PTX_TARGET_ARCH}"):
        raise BadInputError(f"{PLUGIN_ID}: PTX is {promised}, expected {PTX_PROMISE}")
    return CompiledKernel(meta.name, ptx, meta.num_warps, meta.shared, cfg)


def _trtp() -> Any:
    return TENSORRT_PLUGIN.load()


def plugin_annotations(trtp: Any) -> dict[str, dict[str, Any]]:
    """Annotations of the three plugin functions as TensorRT's plugin layer validates them: classes.

    tensorrt/plugin/_validate.py (v10.13.0-v11.1) calls issubclass() on every parameter annotation
    and on the arguments of tuple/list annotations, so they must be class objects, never the strings
    that `from __future__ import annotations` leaves; aot_impl's return annotation is mandatory and
    must be tuple[str | bytes, str | bytes, KernelLaunchParams, SymIntExprs] (its documented schema).
    """
    desc = trtp.TensorDesc
    inputs = {name: desc for name in PLUGIN_INPUTS}
    return {
        "describe": {**inputs, "return": desc},
        "autotune": {**inputs, "outputs": tuple[trtp.TensorDesc], "return": list[trtp.AutoTuneCombination]},
        "aot_impl": {
            **inputs,
            "outputs": tuple[trtp.TensorDesc],
            "tactic": int,
            "return": tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs],
        },
    }


def plugin_functions(trtp: Any) -> dict[str, Callable[..., Any]]:
    """The plugin's describe, autotune and aot_impl functions, annotated for TensorRT (not registered)."""

    def describe(q: Any, k: Any, v: Any, elevation: Any, beta: Any) -> Any:
        return q.like()

    def autotune(q: Any, k: Any, v: Any, elevation: Any, beta: Any, outputs: Any) -> Any:
        return [trtp.AutoTuneCombination(types, "LINEAR") for types in AUTOTUNE_TYPES]

    def aot_impl(q: Any, k: Any, v: Any, elevation: Any, beta: Any, outputs: Any, tactic: int) -> Any:
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
        compiled = compile_ptx(qkv_t, trt_type_name(elevation.dtype), trt_type_name(beta.dtype), head_dim)
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

    functions: dict[str, Callable[..., Any]] = {"describe": describe, "autotune": autotune, "aot_impl": aot_impl}
    for role, hints in plugin_annotations(trtp).items():
        functions[role].__annotations__ = hints
    return functions


@functools.cache
def register_elevation_attention_plugin() -> str:
    """Register `climax::ElevationAttention` v1 with TensorRT (once per process); returns the plugin id."""
    trtp = _trtp()
    import tensorrt as trt

    functions = plugin_functions(trtp)
    trtp.register(PLUGIN_ID)(functions["describe"])
    trtp.autotune(PLUGIN_ID)(functions["autotune"])
    trtp.aot_impl(PLUGIN_ID)(functions["aot_impl"])
    logger.info("registered TensorRT plugin %s version %s (AOT Triton, %s), TensorRT %s",
                PLUGIN_ID, PLUGIN_VERSION, PTX_PROMISE, trt.__version__)  # fmt: skip
    return PLUGIN_ID


def plugin_creator_registered() -> bool:
    """Whether TensorRT's registry holds climax::ElevationAttention v1 (after registration)."""
    import tensorrt as trt

    registry: trt.IPluginRegistry = trt.get_plugin_registry()
    return registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None


