"""The plugin's PTX launched the way TensorRT's AOT path launches it, on a GPU (marker `gpu`).

TensorRT JIT-loads the PTX `aot_impl` returns and launches it with (tensor inputs, extra_args,
outputs): here the CUDA driver does the same through ctypes (cuModuleLoadData, cuLaunchKernel with
exactly 22 arguments, the grid/block/shared memory compile_ptx reports), with no TensorRT, and the
output is compared with the float64 bias form. It checks what PTX inspection cannot: that the sm_80,
ISA 7.8 PTX JIT-compiles on this GPU and computes the right thing with TensorRT's argument list.
Runs in a fresh process: the kernel tests put Triton into interpreter mode in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_LAUNCH = r"""
import ctypes, json, math, sys
import torch
sys.path.insert(0, sys.argv[1])
from attention_cases import exact, inputs
from climax_deploy.kernels import trt_plugin
from climax_deploy.kernels.tiling import cdiv

cuda = ctypes.CDLL("libcuda.so.1")
def check(status, what):
    if status != 0:
        raise RuntimeError(f"{what} failed with CUDA error {status}")

results = {}
for dtype, head_dim, n in (("fp16", 128, 1000), ("fp16", 96, 129), ("bf16", 64, 257), ("fp32", 128, 65)):
    tdtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    q, k, v, e = inputs(2, 3, n, head_dim, tdtype, "random", seed=7)
    beta = torch.tensor(50.0)
    ref = exact(q, k, v, e, 50.0)
    q, k, v, e, beta = (t.cuda().contiguous() for t in (q, k, v, e, beta))
    out = torch.empty_like(q)
    compiled = trt_plugin.compile_ptx(dtype, "fp32", "fp32", head_dim)
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    check(cuda.cuModuleLoadData(ctypes.byref(module), compiled.ptx.encode() + b"\0"), "cuModuleLoadData (PTX JIT)")
    check(cuda.cuModuleGetFunction(ctypes.byref(function), module, compiled.name.encode()), "cuModuleGetFunction")
    B, H, N, D = q.shape
    args = [ctypes.c_uint64(t.data_ptr()) for t in (q, k, v, e, beta)]
    args += [ctypes.c_int32(int(x)) for x in trt_plugin.int_args(H, N, D)]
    args += [ctypes.c_uint64(out.data_ptr())]
    assert len(args) == trt_plugin.AOT_PARAM_COUNT
    params = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
    stream = torch.cuda.current_stream().cuda_stream
    check(cuda.cuLaunchKernel(function, cdiv(N, compiled.config.block_m), B * H, 1, compiled.num_warps * 32, 1, 1,
                              compiled.shared_mem, ctypes.c_void_p(stream), params, None), "cuLaunchKernel")
    torch.cuda.synchronize()
    rounded = ref.to(tdtype).double()
    floor = (rounded - ref).abs().max().item()
    error = (out.cpu().double() - ref).abs().max().item()
    results[f"{dtype}-{head_dim}-{n}"] = {"error": error, "floor": floor, "gpu": torch.cuda.get_device_name()}
    check(cuda.cuModuleUnload(module), "cuModuleUnload")
json.dump(results, sys.stdout)
"""


@pytest.mark.gpu
def test_plugin_ptx_runs_with_tensorrts_argument_list() -> None:
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    tests_dir = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", _LAUNCH, tests_dir], env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    for case, r in json.loads(done.stdout).items():
        # fp32: IEEE dots, tight; 16-bit: within a few roundings of the output dtype (see test_kernels)
        bound = 2e-5 if case.startswith("fp32") else 4 * r["floor"]
        assert r["error"] <= bound, f"{case} on {r['gpu']}: error {r['error']:.2e} > {bound:.2e}"
