"""TensorRT's contracts for the ElevationAttention plugin, encoded without TensorRT.

Each test states a rule of TensorRT's Python plugin layer or AOT launch (sources: NVIDIA/TensorRT
python/packaging/bindings_wheel/tensorrt/plugin/_validate.py and _lib.py, identical from v10.13.0 to
v11.1; see docs/tensorrt.md) and checks our code against it:
- annotations are class objects (TensorRT calls issubclass() on them), parameter names follow its
  schema, aot_impl's return annotation is the documented one;
- the PTX's .entry has exactly the parameters TensorRT passes (inputs, integer args, outputs): 22;
- PTX ISA and target keep --hardware-compat ampere+'s promise (sm_80, ISA 7.8, never sm_90a);
- loads vectorise (divisibility hints) and shared memory fits 47 KiB (ampere+: 48 KiB with the driver's 1 KiB).
The PTX is compiled once per run in a fresh process (this one may have Triton in interpreter mode).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import types
import typing
from typing import Any

import pytest

from climax_deploy.errors import BadInputError
from climax_deploy.kernels import tiling, trt_plugin


class TensorDesc: ...


class KernelLaunchParams: ...


class SymExprs: ...


class SymIntExprs(SymExprs): ...


class AutoTuneCombination: ...


# Classes standing in for tensorrt.plugin's: the rules below concern what our annotations are built
# from (these objects), not TensorRT's behaviour, which docs/tensorrt.md records as checked by
# running NVIDIA's own tensorrt.plugin validation.
TRTP = types.SimpleNamespace(
    TensorDesc=TensorDesc,
    KernelLaunchParams=KernelLaunchParams,
    SymExprs=SymExprs,
    SymIntExprs=SymIntExprs,
    AutoTuneCombination=AutoTuneCombination,
)
INPUTS = "q, k, v, elevation, beta"
SCHEMAS = {  # _validate.py: expected_schema of register / autotune / aot_impl (no plugin attributes)
    "describe": f"({INPUTS})",
    "autotune": f"({INPUTS}, outputs)",
    "aot_impl": f"({INPUTS}, outputs, tactic)",
}


def _classes_in(annotation: Any) -> list[Any]:
    """The objects TensorRT passes to issubclass() for one annotation (generic args, or itself)."""
    if typing.get_origin(annotation) in (tuple, list):
        return list(typing.get_args(annotation))
    return [annotation]


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    return trt_plugin.plugin_functions(TRTP)


@pytest.mark.parametrize("role", sorted(SCHEMAS))
def test_plugin_parameters_follow_tensorrt_schema(functions: dict[str, Any], role: str) -> None:
    sig = inspect.signature(functions[role])
    assert f"({', '.join(sig.parameters)})" == SCHEMAS[role]
    for name, param in sig.parameters.items():
        for cls in _classes_in(param.annotation):
            assert inspect.isclass(cls), f"{role}({name}): annotation {cls!r} is not a class; issubclass() would raise"
        expected = {"outputs": [TensorDesc], "tactic": [int]}.get(name, [TensorDesc])
        assert _classes_in(param.annotation) == expected, (role, name)


def test_aot_impl_return_annotation_is_the_documented_one(functions: dict[str, Any]) -> None:
    """tuple[str | bytes, str | bytes, KernelLaunchParams, SymIntExprs]: mandatory, checked field by field."""
    ret = inspect.signature(functions["aot_impl"]).return_annotation
    assert typing.get_origin(ret) is tuple
    name, ptx, launch, extra = typing.get_args(ret)
    for field in (name, ptx):
        assert typing.get_origin(field) in (typing.Union, types.UnionType)
        assert set(typing.get_args(field)) == {str, bytes}
    assert launch is KernelLaunchParams
    assert inspect.isclass(extra) and issubclass(extra, SymExprs)


def test_describe_and_autotune_return_annotations(functions: dict[str, Any]) -> None:
    assert inspect.signature(functions["describe"]).return_annotation is TensorDesc
    ret = inspect.signature(functions["autotune"]).return_annotation
    assert typing.get_origin(ret) is list and typing.get_args(ret) == (AutoTuneCombination,)


def test_module_annotations_are_not_what_tensorrt_sees() -> None:
    """The trap this guards against: under `from __future__ import annotations` a def's annotations
    are strings, which TensorRT's issubclass() rejects; plugin_functions must replace them all."""

    def plain(q: TensorDesc) -> TensorDesc:
        return q

    assert isinstance(inspect.signature(plain).parameters["q"].annotation, str)
    annotated = trt_plugin.plugin_functions(TRTP)["describe"]
    assert not any(isinstance(a, str) for a in annotated.__annotations__.values())


# --- the PTX TensorRT embeds ---------------------------------------------------------------------

PTX_CONFIGS = (("fp16", 128), ("fp16", 96), ("bf16", 64), ("fp32", 128))
_COMPILE = """
import json, re, sys
from climax_deploy.kernels import trt_plugin
out = {}
for dtype, head_dim in CONFIGS:
    c = trt_plugin.compile_ptx(dtype, "fp32", "fp32", head_dim)
    ptx = c.ptx
    out[f"{dtype}-{head_dim}"] = dict(
        name=c.name, params=trt_plugin.entry_params(ptx), version=trt_plugin.ptx_directive(ptx, ".version"),
        target=trt_plugin.ptx_directive(ptx, ".target"), shared=c.shared_mem, warps=c.num_warps,
        cfg_warps=c.config.num_warps, block_m=c.config.block_m,
        scalar_b16=len(re.findall(r"ld\\.global\\.(?:nc\\.)?b16", ptx)),
        vector=len(re.findall(r"ld\\.global\\.(?:nc\\.)?v[24]", ptx)) + len(re.findall(r"cp\\.async\\.c", ptx)))
json.dump(out, sys.stdout)
""".replace("CONFIGS", repr(PTX_CONFIGS))


@pytest.fixture(scope="module")
def compiled() -> dict[str, dict[str, Any]]:
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("key", [f"{d}-{h}" for d, h in PTX_CONFIGS])
def test_ptx_entry_has_exactly_the_parameters_tensorrt_passes(compiled: dict[str, dict[str, Any]], key: str) -> None:
    info = compiled[key]
    assert len(info["params"]) == trt_plugin.AOT_PARAM_COUNT == 22, info["params"]
    assert info["params"] == [f"{info['name']}_param_{i}" for i in range(22)]


@pytest.mark.parametrize("key", [f"{d}-{h}" for d, h in PTX_CONFIGS])
def test_ptx_version_and_target_keep_the_ampere_plus_promise(compiled: dict[str, dict[str, Any]], key: str) -> None:
    """sm_80 PTX JIT-compiles on every compute capability >= 8.0; sm_90a would run on 9.0 only, and
    an ISA newer than the driver's is refused. 7.8 is CUDA 11.8's ISA."""
    info = compiled[key]
    assert (info["version"], info["target"]) == ("7.8", "sm_80")
    assert trt_plugin.PTX_PROMISE.startswith("PTX ISA 7.8, sm_80")


@pytest.mark.parametrize("key", [f"{d}-{h}" for d, h in PTX_CONFIGS])
def test_ptx_loads_vectorise_and_shared_memory_needs_no_opt_in(compiled: dict[str, dict[str, Any]], key: str) -> None:
    info = compiled[key]
    assert info["scalar_b16"] == 0, f"{key}: {info['scalar_b16']} scalar 16-bit global loads"
    assert info["vector"] > 0, f"{key}: no vector loads or cp.async"
    assert 0 < info["shared"] <= tiling.AOT_SHARED_MEM_LIMIT == 47 * 1024
    assert info["warps"] == info["cfg_warps"]


def test_aot_tiles_are_what_tensorrt_grid_uses() -> None:
    """aot_impl sets grid_x = cdiv(seq_len, block_m) from the same config the PTX was compiled with."""
    for dtype in tiling.DTYPES:
        for head_dim in tiling.AOT_HEAD_DIMS:
            cfg = tiling.aot_launch_config(head_dim, dtype)
            assert (cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages) == tiling.aot_tile_sizes(head_dim, dtype)
            assert not cfg.upcast_dot and cfg.dot_precision == ("ieee" if dtype == "fp32" else "tf32")


def test_divisibility_hints_cover_qkv_pointers_and_strides_only() -> None:
    names = trt_plugin.runtime_arg_names()
    hinted = {names[i] for (i,) in trt_plugin.divisibility_hints(96)}
    assert hinted == {"Q", "K", "V", "OUT", *(n for n in trt_plugin.INT_ARGS if n.startswith("stride_") and "_e" not in n)}
    assert trt_plugin.divisibility_hints(100) == {}  # rows of 100 elements: strides are not multiples of 16


_PTX = """.version 9.4
.target sm_90a
.visible .entry kern(
	.param .u64 .ptr .global .align 1 kern_param_0,
	.param .u32 kern_param_1,
	.param .u64 .ptr .global .align 1 kern_param_2
)
{
	ld.param.u64 %rd1, [kern_param_0];
	ld.param.u32 %r1, [kern_param_1];
	BODY
}
"""


def test_drop_unused_params_removes_only_unused_trailing_parameters() -> None:
    ptx = trt_plugin.drop_unused_params(_PTX.replace("BODY", ""), keep=2)
    assert trt_plugin.entry_params(ptx) == ["kern_param_0", "kern_param_1"]
    assert "ld.param.u32 %r1, [kern_param_1];" in ptx
    with pytest.raises(BadInputError, match="kern_param_2 is used"):
        trt_plugin.drop_unused_params(_PTX.replace("BODY", "ld.param.u64 %rd2, [kern_param_2];"), keep=2)
    with pytest.raises(BadInputError, match="expected at least 4"):
        trt_plugin.drop_unused_params(_PTX.replace("BODY", ""), keep=4)
    assert trt_plugin.ptx_directive(_PTX, ".target") == "sm_90a"
