"""climax-gpu-check's launch of the plugin's AOT PTX: TensorRT's 22 arguments and the check's plan.

The packing (types, order, values, grid, block, shared memory) is checked against the .entry
declaration of PTX compiled by trt_plugin.compile_ptx (Triton, no GPU); the launch itself needs a
GPU and cuda-python or CuPy (climax-gpu-check's aot rows, tests/test_trt_ptx_launch.py).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from climax_deploy.bench import gpu_check
from climax_deploy.bench.gpu_check import Plan, PlannedRow, Row, build_parser, plan_checks, run_checks
from climax_deploy.errors import BadInputError
from climax_deploy.kernels import aot_launch, tiling, trt_plugin

CONFIGS = (("fp16", 96), ("bf16", 64), ("fp32", 128))
_COMPILE = """
import json, sys
from climax_deploy.kernels import trt_plugin
out = {}
for dtype, head_dim in CONFIGS:
    c = trt_plugin.compile_ptx(dtype, "fp32", "fp32", head_dim)
    out[f"{dtype}-{head_dim}"] = dict(name=c.name, ptx=c.ptx, num_warps=c.num_warps, shared=c.shared_mem)
json.dump(out, sys.stdout)
""".replace("CONFIGS", repr(CONFIGS))
POINTERS = {"Q": 0x7F0000001000, "K": 0x7F0000002000, "V": 0x7F0000003000, "E": 0x7F0000004000,
            "BETA": 0x7F0000005000, "OUT": 0x7F0000006000}  # fmt: skip


@pytest.fixture(scope="module")
def kernels() -> dict[str, trt_plugin.CompiledKernel]:
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    out = {}
    for key, c in json.loads(done.stdout).items():
        dtype, head_dim = key.split("-")
        cfg = tiling.aot_launch_config(int(head_dim), dtype)
        out[key] = trt_plugin.CompiledKernel(c["name"], c["ptx"], c["num_warps"], c["shared"], cfg)
    return out


@pytest.mark.parametrize("key", [f"{d}-{h}" for d, h in CONFIGS])
def test_packed_arguments_match_the_ptx_entry(kernels: dict[str, trt_plugin.CompiledKernel], key: str) -> None:
    c = kernels[key]
    B, H, N, D = 2, 3, 1000, c.config.head.head_dim
    launch = aot_launch.pack_launch(c, POINTERS, (B, H, N, D))
    aot_launch.check_against_ptx(launch, c.ptx)  # raises on any type or count mismatch
    params = aot_launch.entry_param_types(c.ptx)
    assert [t for t, _ in params] == [".u64"] * 5 + [".u32"] * 16 + [".u64"]
    assert [a.name for a in launch.args] == list(trt_plugin.runtime_arg_names())
    assert [a.kind for a in launch.args] == ["u64"] * 5 + ["i32"] * 16 + ["u64"]
    # values: pointers in TensorRT's order (inputs, output last), then N, H and element strides
    assert [a.value for a in launch.args[:5]] == [POINTERS[n] for n in ("Q", "K", "V", "E", "BETA")]
    assert launch.args[-1].value == POINTERS["OUT"]
    ints = {a.name: a.value for a in launch.args[5:21]}
    assert ints["seq_len"] == N and ints["num_heads"] == H
    for t in "qkvo":
        assert (ints[f"stride_{t}b"], ints[f"stride_{t}h"], ints[f"stride_{t}n"]) == (H * N * D, N * D, D)
    assert (ints["stride_eb"], ints["stride_en"]) == (N, 1)
    # no scale argument: the kernel takes 1/sqrt(D) from its HEAD_DIM constexpr, so no float parameter
    assert not any(t.startswith(".f") for t, _ in params)
    # grid / block / shared memory: what aot_impl puts in KernelLaunchParams
    assert launch.grid == (tiling.cdiv(N, c.config.block_m), B * H, 1)
    assert launch.block == (c.num_warps * 32, 1, 1) and c.num_warps == c.config.num_warps
    assert 0 < launch.shared_mem == c.shared_mem <= tiling.AOT_SHARED_MEM_LIMIT


def test_a_wrong_argument_list_is_refused(kernels: dict[str, trt_plugin.CompiledKernel]) -> None:
    c = kernels["fp16-96"]
    launch = aot_launch.pack_launch(c, POINTERS, (1, 2, 65, 96))
    args = list(launch.args)
    swapped = dataclasses.replace(launch, args=(args[-1], *args[:-1]))  # output first: BETA lands where N goes
    with pytest.raises(BadInputError, match=r"argument 5 \(BETA\)"):
        aot_launch.check_against_ptx(swapped, c.ptx)
    with pytest.raises(BadInputError, match="21 arguments"):
        aot_launch.check_against_ptx(dataclasses.replace(launch, args=tuple(args[:-1])), c.ptx)
    with pytest.raises(BadInputError, match="head dim"):
        aot_launch.pack_launch(c, POINTERS, (1, 2, 65, 64))
    with pytest.raises(BadInputError, match="OUT"):
        aot_launch.pack_launch(c, {k: v for k, v in POINTERS.items() if k != "OUT"}, (1, 2, 65, 96))


def test_driver_parameter_tuples(kernels: dict[str, trt_plugin.CompiledKernel]) -> None:
    launch = aot_launch.pack_launch(kernels["bf16-64"], POINTERS, (2, 8, 129, 64))
    values, types = aot_launch.cuda_python_params(launch)
    assert len(values) == len(types) == 22
    assert types == (ctypes.c_void_p,) * 5 + (ctypes.c_int32,) * 16 + (ctypes.c_void_p,)
    assert values == tuple(a.value for a in launch.args)
    np = pytest.importorskip("numpy")
    cupy = aot_launch.cupy_args(launch)
    assert [type(a) for a in cupy] == [np.uint64] * 5 + [np.int32] * 16 + [np.uint64]
    assert [int(a) for a in cupy] == list(values)


# --- the plan ------------------------------------------------------------------------------------


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_default_plan_fits_the_budget_and_says_what_it_leaves_out() -> None:
    plan = plan_checks(args(), "cuda", missing={})
    assert plan.budget_s == gpu_check.BUDGET_S == 480
    assert plan.estimate_s <= plan.budget_s
    ran = {(r.group, r.name) for r in plan.rows}
    groups = {g for g, _ in ran}
    assert {"kernel", "aot", "reference", "bench", "tensorrt"} <= groups
    assert sum(g == "aot" for g, _ in ran) == len(gpu_check.AOT_CASES)
    assert ("tensorrt", "small fp16 engine (plugin)") in ran
    skipped = {r.name: r.detail for r in plan.skipped}
    assert all(r.status == "skip" for r in plan.skipped)
    # the full preset's engines do not fit 8 minutes after the rest: skipped, with the reason
    assert "full fp16 engine (inline)" in skipped
    assert "s of the 480 s budget left" in skipped["full fp16 engine (inline)"]
    text = plan.describe()
    assert "not running" in text and "full fp16 engine (inline)" in text


def test_plan_skips_absent_dependencies_with_their_reason() -> None:
    missing = {"launcher": "neither cuda-python (cuda.bindings.driver) nor CuPy imports",
               "tensorrt": "TensorRT does not import here"}  # fmt: skip
    plan = plan_checks(args(), "cuda", missing=missing)
    assert not any(r.group in ("aot", "tensorrt") for r in plan.rows)
    reasons = {r.group: r.detail for r in plan.skipped}
    assert reasons["aot"] == missing["launcher"] and reasons["tensorrt"] == missing["tensorrt"]
    assert plan_checks(args("--skip", "aot", "tensorrt"), "cuda", missing=missing).skipped == []


def test_a_bigger_budget_runs_everything() -> None:
    plan = plan_checks(args("--budget-s", "100000"), "cuda", missing={})
    assert plan.skipped == [] and any(r.name == "full fp16 engine (native)" for r in plan.rows)


def test_on_cpu_the_aot_rows_are_skipped() -> None:
    reason = gpu_check.missing_dependencies("cpu")["launcher"]
    assert "CUDA device" in reason


def test_rows_past_the_spent_budget_are_skipped_at_run_time(capsys: pytest.CaptureFixture[str]) -> None:
    def slow() -> Row:
        time.sleep(0.3)
        return Row("kernel", "slow", "pass")

    ran: list[str] = []

    def quick() -> Row:
        ran.append("quick")
        return Row("kernel", "quick", "pass")

    plan = Plan([PlannedRow("kernel", "slow", 0.1, slow), PlannedRow("kernel", "big", 0.8, quick),
                 PlannedRow("kernel", "quick", 0.1, quick)], [Row("tensorrt", "x", "skip", "absent")], 1.0)  # fmt: skip
    rows = run_checks(args(), "cpu", plan)
    by: dict[str, Any] = {r.name: r for r in rows}
    assert by["slow"].status == "pass" and by["quick"].status == "pass" and ran == ["quick"]
    assert by["big"].status == "skip" and by["big"].detail.startswith("budget spent")
    assert by["x"].detail == "absent"
    assert "not running (1)" in capsys.readouterr().out
