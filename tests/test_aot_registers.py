"""The TensorRT plugin's precompiled kernel under the assembler: shared memory, spills, occupancy.

For every head dim and dtype the AOT path accepts (tiling.AOT_HEAD_DIMS x tiling.DTYPES), the PTX
compile_ptx hands TensorRT is assembled by Triton's bundled ptxas (`ptxas -v`) for sm_80 and sm_90,
the two architectures the driver JIT-compiles it for first. Asserted per kernel and architecture:
- shared memory <= 47 KiB: --hardware-compat ampere+ caps the driver's reserved shared memory (1 KiB
  per block) plus the kernel's at 48 KiB (NvInfer.h v11.1, HardwareCompatibilityLevel::kAMPERE_PLUS);
- 0 bytes of spill stores and loads, and no stack frame;
- registers per thread leave room for >= 2 resident blocks per SM (64 K registers per SM on 8.0 and 9.0).
The PTX is compiled in a fresh process (this one may have Triton in interpreter mode). Needs Triton
and its bundled ptxas, not a GPU. The full sweep is `slow`; the issue's cases (16-bit at head dims
64 and 96: spilled, and one block per SM) run in every pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from climax_deploy.errors import BadInputError
from climax_deploy.kernels import tiling, trt_plugin

ARCHS = (80, 90)
QUICK = tuple((dtype, head_dim) for dtype in ("fp16", "bf16") for head_dim in (64, 96))
FULL = tuple((dtype, head_dim) for dtype in tiling.DTYPES for head_dim in tiling.AOT_HEAD_DIMS)

_ASSEMBLE = r"""
import json, os, re, subprocess, sys, tempfile
import triton
from climax_deploy.kernels import trt_plugin
ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
out = {}
with tempfile.TemporaryDirectory() as tmp:
    for dtype, head_dim in json.loads(sys.argv[1]):
        c = trt_plugin.compile_ptx(dtype, "fp32", "fp32", head_dim)
        path = os.path.join(tmp, f"{dtype}-{head_dim}.ptx")
        with open(path, "w") as f:
            f.write(c.ptx)
        for arch in json.loads(sys.argv[2]):
            done = subprocess.run([ptxas, "-v", f"-arch=sm_{arch}", path, "-o", os.devnull],
                                  capture_output=True, text=True, check=True)
            log = done.stderr + done.stdout
            spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
            out[f"{dtype}-{head_dim}-sm_{arch}"] = dict(
                registers=int(re.search(r"Used (\d+) registers", log)[1]),
                spill_stores=int(spill[1]), spill_loads=int(spill[2]),
                stack=int(re.search(r"(\d+) bytes stack frame", log)[1]),
                shared=c.shared_mem, warps=c.num_warps, log=log[-600:])
json.dump(out, sys.stdout)
"""


def _assemble(cases: tuple[tuple[str, int], ...]) -> dict[str, dict[str, Any]]:
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _ASSEMBLE, json.dumps(cases), json.dumps(ARCHS)], env=env,
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return result


def _check(info: dict[str, Any], key: str) -> None:
    assert info["shared"] <= 47 * 1024 == tiling.AOT_SHARED_MEM_LIMIT, f"{key}: {info['shared']} B of shared memory"
    assert (info["spill_stores"], info["spill_loads"], info["stack"]) == (0, 0, 0), f"{key}: spills\n{info['log']}"
    blocks = tiling.blocks_per_sm(info["registers"], info["warps"])
    assert blocks >= 2, f"{key}: {info['registers']} registers x {info['warps']} warps: {blocks} block(s) per SM"


@pytest.fixture(scope="module")
def quick() -> dict[str, dict[str, Any]]:
    return _assemble(QUICK)


@pytest.fixture(scope="module")
def full() -> dict[str, dict[str, Any]]:
    return _assemble(FULL)


@pytest.mark.parametrize("key", [f"{d}-{h}-sm_{a}" for d, h in QUICK for a in ARCHS])
def test_aot_kernel_16bit_head_dims_64_96_fit_without_spills(quick: dict[str, dict[str, Any]], key: str) -> None:
    _check(quick[key], key)


@pytest.mark.slow
@pytest.mark.parametrize("key", [f"{d}-{h}-sm_{a}" for d, h in FULL for a in ARCHS])
def test_every_aot_kernel_fits_without_spills(full: dict[str, dict[str, Any]], key: str) -> None:
    _check(full[key], key)


def test_blocks_per_sm_counts_registers_per_warp_in_units_of_256() -> None:
    assert tiling.blocks_per_sm(128, 8) == 2  # 4096 per warp x 8 warps = 32 K
    assert tiling.blocks_per_sm(129, 8) == 1  # 4128 -> 4352 per warp: 34 K
    assert tiling.blocks_per_sm(194, 8) == 1  # head dim 96 before: one block per SM
    assert tiling.blocks_per_sm(255, 4) == 2


@pytest.mark.parametrize("head_dim", [8, 72, 100, 144, 256])
def test_aot_path_refuses_head_dims_it_was_not_checked_for(head_dim: int) -> None:
    with pytest.raises(BadInputError, match="--attention inline or native"):
        tiling.aot_launch_config(head_dim, "fp16")
    with pytest.raises(BadInputError, match=f"got {head_dim}"):
        trt_plugin.compile_ptx("fp16", "fp32", "fp32", head_dim)
