"""climax-bench and climax-bench-attention run end to end on CPU (no timing is asserted).

The commands run in-process (main(argv)); their workers are the processes they start, as in use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_run import run_main  # tests/ is on sys.path under pytest

from climax_deploy.bench.bench import main as bench_main


def test_climax_bench_command(small_onnx: Path, tmp_path: Path) -> None:
    """Every CPU backend runs in its own process and reports parity against PyTorch `literal`."""
    out = tmp_path / "bench.json"
    proc = run_main("climax-bench", bench_main, ["--model", small_onnx, "--runs", "1", "--warmup", "0", "--json", out,
                                                 "--profile"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    results = {r["backend"]: r for r in report["results"]}
    assert set(results) == {"torch-literal", "torch-fused", "onnxruntime"}
    assert results["torch-fused"]["ratio_vs_fused"] == 1.0
    for r in results.values():
        assert r["peak_rss_gb"] > 0 and r["parity_vs_literal"]["rel_l2"] < 1e-5
    assert results["onnxruntime"]["describe"]["providers_used"] == ["CPUExecutionProvider"]
    assert report["onnxruntime_profile"] and "onnxruntime" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "onnxruntime,tpu"], "expected some of torch-literal"),
        (["--backends", "tensorrt"], "the tensorrt backend needs an engine"),
        (["--runs", "0"], "expected runs >= 1"),
    ],
)
def test_climax_bench_refuses_bad_plans(argv: list[str], message: str, small_onnx: Path, capsys) -> None:
    from climax_deploy.cli import run_cli

    try:
        code = run_cli("climax-bench", bench_main, ["--model", str(small_onnx), *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_climax_bench_attention_cpu(tmp_path: Path) -> None:
    """Each CPU variant runs in its own process on a small problem; the table names every variant."""
    out = tmp_path / "attention.json"
    from climax_deploy.bench.bench_attention import main as bench_attention_main

    proc = run_main("climax-bench-attention", bench_attention_main, ["--device", "cpu", "--seq-len", "64", "--heads", "2",
                                                                     "--head-dim", "16", "--repeats", "1", "--json", out])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    results = {r["variant"]: r for r in run["results"]}
    assert set(results) == {"literal", "sdpa_bias", "op"} and not [r for r in results.values() if "error" in r]
    checksums = [r["checksum"] for r in results.values()]
    assert max(checksums) - min(checksums) < 1e-5 * max(checksums)  # the same attention, three ways
    assert "torch.ops.climax (blocked)" in proc.stdout and "1.00x" in proc.stdout


def test_climax_bench_failed_worker_exits_non_zero(small_onnx: Path, tmp_path: Path) -> None:
    """A worker that dies (here: the onnxruntime one, on a model whose bytes were changed) fails the run."""
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(small_onnx, model)
    shutil.copy(str(small_onnx) + ".manifest.json", str(model) + ".manifest.json")
    with open(model, "ab") as f:
        f.write(b"\0")
    proc = run_main("climax-bench", bench_main, ["--model", model, "--backends", "onnxruntime", "--runs", "1", "--warmup", "0"])
    assert proc.returncode == 1 and "onnxruntime" in proc.stdout and "worker exited" in proc.stdout, proc


def test_climax_bench_tensorrt_label_needs_an_engine_file(small_onnx: Path, capsys) -> None:
    """An .onnx given as --engine would be timed by ONNX Runtime under the tensorrt label."""
    from climax_deploy.cli import run_cli

    code = run_cli("climax-bench", bench_main, ["--model", str(small_onnx), "--backends", "tensorrt",
                                                "--engine", str(small_onnx)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and ".engine" in err, err


def test_profile_leaves_no_files_behind(small_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from climax_deploy.bench.bench import profile_onnxruntime

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path / "tmp")
    assert profile_onnxruntime(small_onnx, seed=0, threads=1)
    assert list(scratch.iterdir()) == []


def test_climax_bench_attention_cuda_without_cuda_is_one_line(capsys) -> None:
    import torch

    from climax_deploy.cli import run_cli
    from climax_deploy.bench.bench_attention import main as attention_main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = run_cli("climax-bench-attention", attention_main, ["--device", "cuda", "--seq-len", "64", "--heads", "2",
                                                              "--head-dim", "16", "--repeats", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cuda" in err.lower(), err


# --- climax-bench --config/--batch, --scaling, the FLOP floor and the TensorRT memory model -----------


def _seed_cache(small_onnx: Path, directory: Path, stem: str) -> Path:
    """Copy the small preset's export to DIRECTORY/STEM.onnx, as if climax-bench had exported it there."""
    import shutil

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.onnx"
    shutil.copy(small_onnx, path)
    shutil.copy(str(small_onnx) + ".manifest.json", str(path) + ".manifest.json")
    return path


def test_growth_exponent_fits_power_laws() -> None:
    from climax_deploy.bench.scaling import growth_exponent

    n = [2048, 8192, 32768]
    assert growth_exponent(n, [3e-9 * x**2 for x in n]) == pytest.approx(2.0, abs=1e-12)
    assert growth_exponent(n, [0.5 + 0 * x for x in n]) == pytest.approx(0.0, abs=1e-12)
    # Least squares over noisy points: +-10 % noise moves the slope of a linear law by at most ~0.1.
    assert growth_exponent(n, [1e-4 * x * f for x, f in zip(n, (1.1, 0.9, 1.1), strict=True)]) == pytest.approx(1.0, abs=0.1)
    assert growth_exponent([8192], [1.0]) is None and growth_exponent([8192, 8192], [1.0, 2.0]) is None


def test_patch_grids() -> None:
    from climax_deploy.errors import BadInputError
    from climax_deploy.bench.scaling import parse_patches, patch_grid

    assert [patch_grid(n) for n in (2048, 8192, 32768, 131072, 100, 7)] == [
        (32, 64), (64, 128), (128, 256), (256, 512), (5, 20), (1, 7)]  # fmt: skip
    assert parse_patches("32768, 2048,64x128,8192") == [(32, 64), (64, 128), (128, 256)]
    for bad in ("2048,abc", "0", "4x0", ""):
        with pytest.raises(BadInputError, match="--patches"):
            parse_patches(bad)


def _known_graph() -> tuple[object, int]:
    """A graph with every counted kind of node, and its matmul FLOPs at batch 2, counted by hand."""
    import onnx
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    body = helper.make_graph(  # Loop body: (iteration, cond, carried) -> (cond, carried); one [2,4]x[4,4] MatMul
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["carried", "w_loop"], ["carried_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried", f, [2, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("carried_out", f, [2, 4])],
    )  # fmt: skip
    function = helper.make_function(  # a model-local function, as ElevationAttention is: counted once inlined
        "test", "Project", ["a", "b"], ["c"], [helper.make_node("MatMul", ["a", "b"], ["c"])],
        [helper.make_opsetid("", 18)])  # fmt: skip
    nodes = [
        helper.make_node("Project", ["x", "w"], ["y"], domain="test"),  # [b,3,4] x [4,5]: 2*b*3*5*4
        helper.make_node("Gemm", ["g", "wg"], ["gy"], transB=1),  # [6,4] x [7,4]^T: 2*6*4*7
        helper.make_node("Conv", ["img", "wc"], ["conv"]),  # [b,2,5,5] * [3,2,3,3] -> [b,3,3,3]: 2*b*27*18
        helper.make_node("Constant", [], ["trips"], value=helper.make_tensor("t", TensorProto.INT64, [], [3])),
        helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["trips", "cond", "g0"], ["loop_out"], body=body),  # 3 x 2*2*4*4
    ]
    inits = [onnx.numpy_helper.from_array(np.ones(s, np.float32), n)
             for n, s in (("w", (4, 5)), ("wg", (7, 4)), ("wc", (3, 2, 3, 3)), ("w_loop", (4, 4)), ("g0", (2, 4)))]  # fmt: skip
    graph = helper.make_graph(
        nodes, "known",
        [helper.make_tensor_value_info("x", f, ["b", 3, 4]), helper.make_tensor_value_info("g", f, [6, 4]),
         helper.make_tensor_value_info("img", f, ["b", 2, 5, 5])],
        [helper.make_tensor_value_info(n, f, None) for n in ("y", "gy", "conv", "loop_out")], inits)  # fmt: skip
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("test", 1)])  # fmt: skip
    b = 2
    return model, 2 * b * 3 * 5 * 4 + 2 * 6 * 4 * 7 + 2 * b * 27 * 18 + 3 * 2 * 2 * 4 * 4


def test_flop_count_is_exact_on_a_known_graph() -> None:
    from climax_deploy.bench.flops import count_flops

    model, expected = _known_graph()
    count = count_flops(model, batch=2)
    assert count.total == expected and not count.unresolved, count
    assert count.by_op["Gemm"] == 336 and count.by_op["Conv"] == 2 * 2 * 27 * 18


@pytest.mark.parametrize("stages", [1, 10])
def test_flop_count_follows_loops_sized_in_the_graph(stages: int) -> None:
    """Queries in blocks, as the fp32 export runs attention: each stage's trip count and rows are computed in
    the graph from its q's shape (rows = 64 // N = 6 of N = 10, 2 blocks over 12 zero-padded queries), and
    each q comes out of the stage before, so a stage's shapes are known only once the previous Loop's are
    (10 stages, like the full preset's 8 blocks, failed to resolve with a fixed number of inference rounds)."""
    import onnx
    from onnx import TensorProto, helper

    from climax_deploy.bench.flops import count_flops

    i64, f = TensorProto.INT64, TensorProto.FLOAT
    n = helper.make_node

    def const(name: str, values: list[int]) -> onnx.NodeProto:
        return n("Constant", [], [name], value=helper.make_tensor(name, i64, [len(values)], values))

    def stage(p: str, q: str, out: str) -> list[onnx.NodeProto]:
        body = helper.make_graph(
            [n("Identity", [f"{p}cond_in"], [f"{p}cond_out"]), const(f"{p}zero_b", [0]), const(f"{p}axis", [1]),
             n("Unsqueeze", [f"{p}iter", f"{p}zero_b"], [f"{p}iter1"]), n("Mul", [f"{p}iter1", f"{p}rows"], [f"{p}start"]),
             n("Add", [f"{p}start", f"{p}rows"], [f"{p}end"]),
             n("Slice", [f"{p}q_padded", f"{p}start", f"{p}end", f"{p}axis"], [f"{p}q_block"]),
             n("MatMul", [f"{p}q_block", "k_t"], [f"{p}scores"]),  # [B,6,4] x [B,4,10]
             n("MatMul", [f"{p}scores", "v"], [f"{p}out"])],  # [B,6,10] x [B,10,4]
            f"{p}blocks",
            [helper.make_tensor_value_info(f"{p}iter", i64, []), helper.make_tensor_value_info(f"{p}cond_in", TensorProto.BOOL, [])],
            [helper.make_tensor_value_info(f"{p}cond_out", TensorProto.BOOL, []), helper.make_empty_tensor_value_info(f"{p}out")],
        )  # fmt: skip
        return [
            const(f"{p}budget", [64]), const(f"{p}one", [1]), const(f"{p}zero", [0]), const(f"{p}n", [10]),
            n("Shape", [q], [f"{p}tokens"], start=1, end=2), n("Div", [f"{p}budget", f"{p}tokens"], [f"{p}rows_floor"]),
            n("Max", [f"{p}rows_floor", f"{p}one"], [f"{p}rows_some"]), n("Min", [f"{p}rows_some", f"{p}tokens"], [f"{p}rows"]),
            n("Add", [f"{p}tokens", f"{p}rows"], [f"{p}t_plus"]), n("Sub", [f"{p}t_plus", f"{p}one"], [f"{p}t_ceil"]),
            n("Div", [f"{p}t_ceil", f"{p}rows"], [f"{p}blocks"]), n("Mul", [f"{p}blocks", f"{p}rows"], [f"{p}padded"]),
            n("Sub", [f"{p}padded", f"{p}tokens"], [f"{p}pad"]), n("Squeeze", [f"{p}blocks"], [f"{p}trips"]),
            n("Concat", [f"{p}zero", f"{p}zero", f"{p}zero", f"{p}zero", f"{p}pad", f"{p}zero"], [f"{p}pads"], axis=0),
            n("Pad", [q, f"{p}pads"], [f"{p}q_padded"]),
            n("Loop", [f"{p}trips", ""], [f"{p}blocks_out"], body=body),  # [2, B, 6, 4]
            n("Transpose", [f"{p}blocks_out"], [f"{p}in_order"], perm=[1, 0, 2, 3]),  # [B, 2, 6, 4]
            const(f"{p}shape", [0, -1, 4]), n("Reshape", [f"{p}in_order", f"{p}shape"], [f"{p}all_rows"]),  # [B, 12, 4]
            n("Slice", [f"{p}all_rows", f"{p}zero", f"{p}n", f"{p}one"], [out]),  # [B, 10, 4]: the next stage's q
        ]  # fmt: skip

    nodes = [n("Transpose", ["k"], ["k_t"], perm=[0, 2, 1])]
    for i in range(stages):
        nodes += stage(f"s{i}/", "q" if i == 0 else f"s{i - 1}/out", f"s{i}/out")
    nodes.append(n("MatMul", [f"s{stages - 1}/out", "w"], ["y"]))  # after the Loops: [B, 10, 4] x [4, 3]
    graph = helper.make_graph(nodes, "blocked", [helper.make_tensor_value_info(x, f, ["b", 10, 4]) for x in "qkv"],
                              [helper.make_tensor_value_info("y", f, None)],
                              [onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "w")])  # fmt: skip
    count = count_flops(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), batch=1)
    assert not count.unresolved, count
    assert count.total == stages * 2 * (2 * 6 * 10 * 4 + 2 * 6 * 4 * 10) + 2 * 10 * 4 * 3


def test_flop_count_of_the_small_model(small_onnx: Path) -> None:
    """Every matmul resolves; the count covers the blocks' by-hand FLOPs and grows with the batch."""
    from climax_deploy.bench.flops import count_flops

    one, two = count_flops(small_onnx, 1), count_flops(small_onnx, 2)
    n, d, depth = 512, 128, 2  # the small preset: 16 x 32 patches, width 128, depth 2, MLP ratio 4
    blocks = depth * (2 * n * d * (3 * d + d + 8 * d) + 2 * 2 * n * n * d)  # qkv, proj, MLP; scores and values
    assert not one.unresolved and blocks < one.total < 1.1 * blocks
    assert 1.99 * one.total < two.total <= 2 * one.total


def test_bench_worker_peak_rss_is_its_own(small_onnx: Path) -> None:
    """A worker's peak memory excludes its parent's: getrusage's ru_maxrss (used on 88dea79) survives exec."""
    from climax_deploy.bench.bench import peak_rss_bytes, run_bench

    ballast = np.ones(800 * 2**20 // 8)  # this process now holds >= 800 MiB more than an ONNX Runtime worker
    parent = peak_rss_bytes()
    report = run_bench(small_onnx, ["onnxruntime"], runs=1, warmup=0, threads=1)
    (result,) = report["results"]
    assert ballast[-1] == 1.0
    assert 0 < result["peak_rss_gb"] < parent / 1e9 - 0.5, (result, parent)
    assert 0 < result["rss_before_gb"] < result["peak_rss_gb"]


def test_export_cache_follows_config_and_seed(small_onnx: Path, tmp_path: Path) -> None:
    import dataclasses

    from climax_deploy.model.config import PRESETS
    from climax_deploy.bench.bench import _export_is_current

    path = _seed_cache(small_onnx, tmp_path, "small")
    small = PRESETS["small"]
    assert _export_is_current(path, small, seed=0)
    assert not _export_is_current(path, small, seed=1)
    assert not _export_is_current(path, dataclasses.replace(small, img_size=(16, 64)), seed=0)
    assert not _export_is_current(tmp_path / "absent.onnx", small, seed=0)


def test_climax_bench_config_and_batch(small_onnx: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """--config FILE benchmarks that architecture (here served from the cache) and --batch sets B."""
    from climax_deploy.model.config import PRESETS
    from climax_deploy.bench.scaling import write_config

    monkeypatch.chdir(tmp_path)
    config = write_config(PRESETS["small"], tmp_path / "configs")  # configs/small.json
    _seed_cache(small_onnx, tmp_path / "build" / "bench", "small")
    out = tmp_path / "bench.json"
    code = bench_main(["--config", str(config), "--batch", "3", "--backends", "onnxruntime", "--runs", "1",
                       "--warmup", "0", "--json", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["batch"] == 3 and report["results"][0]["batch"] == 3
    assert report["model"] == str(Path("build/bench/small.onnx")) and "B = 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scaling", "--model", "m.onnx"], "--scaling exports its own models"),
        (["--scaling", "--patches", "2048,lots"], "--patches: expected patch counts"),
        (["--batch", "0", "--model", "m.onnx"], "expected a batch of >= 1"),
    ],
)
def test_climax_bench_refuses_bad_scaling_plans(argv: list[str], message: str, capsys) -> None:
    from climax_deploy.cli import run_cli

    code = run_cli("climax-bench", bench_main, argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_climax_bench_scaling(small_onnx: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tiny grids (one exported here, one the cached small preset), two backends: the table, exponents, JSON."""
    import functools

    from climax_deploy.bench import flops

    monkeypatch.setattr(flops, "measure_matmul_rate", functools.partial(flops.measure_matmul_rate, size=256))
    workdir = tmp_path / "scaling"
    cached = _seed_cache(small_onnx, workdir, "w128-d2-h4-16x32")  # the small preset is the narrow model on 16 x 32
    mtime = cached.stat().st_mtime
    out = tmp_path / "scaling.json"
    code = bench_main(["--scaling", "--patches", "4x8,16x32", "--no-full", "--backends", "torch-literal,onnxruntime",
                       "--runs", "1", "--warmup", "0", "--threads", "1", "--workdir", str(workdir), "--json", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0, text
    report = json.loads(out.read_text())
    assert [row["patches"] for row in report["rows"]] == [32, 512] and cached.stat().st_mtime == mtime
    assert (workdir / "w128-d2-h4-4x8.json").is_file() and (workdir / "w128-d2-h4-4x8.onnx").is_file()
    for row in report["rows"]:
        assert {r["backend"] for r in row["results"]} == {"torch-literal", "onnxruntime"}
        assert row["flops"]["total"] > 0 and not row["flops"]["unresolved"] and row["floor_s"] > 0
        assert all(r["peak_rss_gb"] > r["rss_before_gb"] > 0 for r in row["results"])
    assert report["rows"][1]["flops"]["total"] > 16 * report["rows"][0]["flops"]["total"]  # attention is N^2
    for fit in report["exponents"].values():
        assert fit["patches"] == [32, 512] and fit["time"] is not None
    assert report["matmul_rate"]["flops_per_s"] > 1e8 and report["load_before"]["cores"]
    assert "| growth exponent, time / memory |" in text and "| 512 (16 x 32) |" in text
    assert "load average before" in text and "PyTorch literal" in text and "ORT / floor" in text


def test_parameter_counts_match_the_model(small_model) -> None:
    from climax_deploy.bench.memory_model import parameter_counts

    counts = parameter_counts(small_model.config)
    assert sum(counts.values()) == sum(p.numel() for p in small_model.parameters())


def test_tensorrt_memory_model() -> None:
    """N x N terms per mode, by hand at 8192 patches; the plugin is O(N); fits are ordered by mode."""
    from climax_deploy.model.config import PRESETS
    from climax_deploy.bench.memory_model import attention_extra, engine_memory, grid_config, largest_fit

    full = PRESETS["full"]
    n2 = 8192**2
    assert attention_extra("inline", 1, 8, 8192)[0] == 4 * n2 + 8 * n2 * (4 + 2)  # fp32 bias; fp32 scores, fp16 probs
    assert attention_extra("native", 1, 8, 8192)[0] == 2 * n2 + 8 * 8192 * 2 * 4  # fp16 mask; row statistics
    plugin = [engine_memory(grid_config(full, n), "plugin").activations for n in (32768, 131072)]
    assert plugin[1] / plugin[0] == pytest.approx(4, rel=0.05)  # linear in N
    inline = [engine_memory(grid_config(full, n), "inline").activations for n in (32768, 131072)]
    assert inline[1] / inline[0] == pytest.approx(16, rel=0.05)  # quadratic in N
    fits = {mode: largest_fit(full, mode) for mode in ("inline", "native", "plugin")}
    assert 32768 < fits["inline"] < fits["native"] < 131072 * 2 < fits["plugin"]


def test_climax_bench_memory_model_command(capsys) -> None:
    assert bench_main(["--memory-model"]) == 0
    text = capsys.readouterr().out
    for n in ("| 8192 (64 x 128) | inline |", "| 32768 (128 x 256) | native |", "| 131072 (256 x 512) | plugin |"):
        assert n in text
    assert "computed from shapes (not measured)" in text and "Largest r x 2r patch grid" in text


def test_scaling_runs_pytorch_literal_only_where_it_fits() -> None:
    from climax_deploy.bench.scaling import narrow_config, parse_patches, plan_backends, series_config

    small, large = (series_config(narrow_config(), g) for g in parse_patches("2048,32768"))
    backends = ["torch-literal", "torch-fused", "onnxruntime"]
    assert plan_backends(small, backends, 1, free=24 * 10**9) == (backends, {})
    run, skipped = plan_backends(large, backends, 1, free=24 * 10**9)  # 4 heads x 32768^2 fp32 is 17 GB each
    assert run == ["torch-fused", "onnxruntime"] and "needs ~60 GB" in skipped["torch-literal"]
