"""The OpenVINO backend: load(backend=...), the inlined-IR cache, bf16 only where the CPU has it, missing extras,
check-parity --backend openvino, climax-bench's OpenVINO peers and the CLIs' --backend options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from climax_deploy.errors import BadInputError, MissingBackendError
from climax_deploy.runtime import load


def _cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_matches_onnx_runtime_and_caches_its_ir(small_onnx: Path, small_inputs, tmp_path: Path) -> None:
    x, lt = small_inputs
    cache = tmp_path / "cache"
    with load(small_onnx, backend="openvino", cache_dir=cache) as first, load(small_onnx, providers="cpu") as ort:
        assert first.backend == "openvino" and not first.cache_hit
        y, expected = first.predict(x, lt), ort.predict(x, lt)
        described = first.describe()
    assert np.linalg.norm(y - expected) / np.linalg.norm(expected) < 1e-5
    assert described["inference_precision"] == "f32" and described["precision"] == "fp32"
    ir = Path(described["ir_cache"])
    assert ir.parent == cache and ir.name.startswith(json.loads(Path(f"{small_onnx}.manifest.json").read_text())["sha256"])
    assert sorted(p.name for p in ir.iterdir()) == ["model.bin", "model.xml"]
    with load(small_onnx, backend="openvino", cache_dir=cache) as second:
        assert second.cache_hit
        np.testing.assert_array_equal(second.predict(x, lt), y)


def test_a_cached_ir_loads_without_onnx_or_torch(small_onnx: Path, small_inputs, tmp_path: Path) -> None:
    """Once converted, the OpenVINO runner needs neither onnx nor torch (a forecast system's environment)."""
    x, lt = small_inputs
    load(small_onnx, backend="openvino", cache_dir=tmp_path).close()
    np.save(tmp_path / "x.npy", x)
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "onnxscript", "triton"):
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np
from climax_deploy.runtime import load
with load({str(small_onnx)!r}, backend="openvino", cache_dir={str(tmp_path)!r}) as r:
    assert r.cache_hit
    y = r.predict(np.load({str(tmp_path / 'x.npy')!r}), [24, 48])
assert y.shape == (2, 6, 32, 64)
assert not any(m.split(".")[0] in ("torch", "onnx") for m in sys.modules)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_openvino_runner_is_thread_safe(small_onnx: Path, small_inputs) -> None:
    """Concurrent predicts on one runner (one infer request each) give the single-threaded answer."""
    from concurrent.futures import ThreadPoolExecutor

    x, lt = small_inputs
    with load(small_onnx, backend="openvino") as runner:
        expected = runner.predict(x, lt)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: runner.predict(x[i % 2 : i % 2 + 1], lt[i % 2 : i % 2 + 1]), range(8)))
    for i, y in enumerate(results):
        np.testing.assert_allclose(y, expected[i % 2 : i % 2 + 1], atol=1e-5, rtol=0)


def test_missing_openvino_is_one_line_with_the_install_hint(small_onnx: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingBackendError, match=r"^the OpenVINO backend needs openvino.*pip install 'climax-deploy\[openvino\]'$"):
        load(small_onnx, backend="openvino")


def test_a_cold_cache_without_onnx_says_what_to_install(small_onnx: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx.inliner", None)
    with pytest.raises(MissingBackendError, match=r"needs onnx.inliner.*pip install 'climax-deploy\[openvino\]'"):
        load(small_onnx, backend="openvino", cache_dir=tmp_path / "cold")


def test_bf16_runs_only_where_the_cpu_has_it(small_onnx: Path, small_inputs) -> None:
    """OpenVINO silently runs f32 on a CPU without AVX512-BF16/AMX: the runner refuses there, runs bf16 elsewhere."""
    x, lt = small_inputs
    if not _cpu_has_bf16():
        with pytest.raises(MissingBackendError, match=r"bf16 needs a CPU with AVX512-BF16 or AMX.*would run f32"):
            load(small_onnx, backend="openvino", precision="bf16")
        return
    with load(small_onnx, backend="openvino", precision="bf16") as r, load(small_onnx, backend="openvino") as f32:
        assert r.describe()["inference_precision"] == "bf16" and r.spec.precision == "bf16"
        y, ref = r.predict(x, lt), f32.predict(x, lt)
    err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert 1e-5 < err < 5e-2  # really bf16, and still the model


@pytest.mark.parametrize(
    ("path_suffix", "kwargs", "message"),
    [
        (".onnx", {"backend": "onnx-runtime"}, r"backend must be one of \['auto', 'onnxruntime', 'openvino', 'tensorrt'\]"),
        (".engine", {"backend": "openvino"}, r"backend openvino runs \.onnx files, got \.engine"),
        (".onnx", {"backend": "tensorrt"}, r"backend tensorrt runs \.engine files, got \.onnx"),
        (".onnx", {"backend": "openvino", "precision": "fp16"}, r"OpenVINO precision must be one of \['fp32', 'bf16'\]"),
        (".onnx", {"backend": "openvino", "providers": "cpu"}, r"unknown load option\(s\) \['providers'\] for OpenVinoOptions"),
    ],
)
def test_load_backend_keyword_refuses_mismatches(small_onnx: Path, path_suffix: str, kwargs: dict, message: str) -> None:
    path = small_onnx if path_suffix == ".onnx" else small_onnx.with_suffix(".engine")
    with pytest.raises(BadInputError, match=message):
        load(path, **kwargs)


def test_check_parity_backend_openvino_passes_fp32(small_onnx: Path, tmp_path: Path, capsys) -> None:
    from climax_deploy.validate.cli import main as check_parity

    report_file = tmp_path / "ov.json"
    assert check_parity([str(small_onnx), "--backend", "openvino", "--no-mixed-batch", "--json", str(report_file), "-q"]) == 0
    report = json.loads(report_file.read_text())
    assert report["backend"]["backend"] == "openvino" and report["precision"] == "fp32"
    assert report["passed"] and all(0.25 < r["ratio"] < 4 for r in report["rows"])
    assert "PASS" in capsys.readouterr().out


def test_check_parity_openvino_refuses_providers_and_fp16(small_onnx: Path) -> None:
    from cli_run import run_main  # tests/ is on sys.path under pytest

    from climax_deploy.validate.cli import main

    done = run_main("check-parity", main, [str(small_onnx), "--backend", "openvino", "--providers", "cuda", "-q"])
    assert done.returncode == 2 and "--providers cuda is an ONNX Runtime option" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = run_main("check-parity", main, [str(small_onnx), "--backend", "openvino", "--precision", "fp16", "-q"])
    assert done.returncode == 2 and "runs fp32 exports in fp32 or bf16" in done.stderr


def test_bf16_is_graded_against_pytorch_bf16(small_onnx: Path) -> None:
    """The bf16 yardstick is PyTorch CPU autocast bf16: ~1e-3 off the truth on the outputs, and the terrain
    signal 5-25 % off: bf16 cannot resolve a signal of ~1 % of the outputs (docs/runtime.md)."""
    from climax_deploy.validate import run_parity
    from climax_deploy.validate.metrics import tolerance

    report = run_parity(small_onnx, backend_name="torch", precision="bf16", mixed_batch=False)
    assert report.passed and report.precision == "bf16" and "bf16" in report.same_precision
    assert all(5e-4 < r.torch_rel_l2 < 1e-2 for r in report.rows)
    assert all(0.03 < s.torch_fidelity < 0.3 for s in report.signal)
    assert report.tolerances[""] == tolerance("bf16")


def test_bench_runs_the_openvino_peers_side_by_side(small_onnx: Path) -> None:
    from climax_deploy.bench.bench import format_bench, run_bench

    report = run_bench(small_onnx, ["onnxruntime", "openvino", "openvino-hand"], runs=1, warmup=0, floor=True)
    results = {r["backend"]: r for r in report["results"]}
    assert set(results) == {"onnxruntime", "openvino", "openvino-hand"}
    assert all("median_s" in r and r["ratio_vs_floor"] > 1 for r in results.values()), results
    assert results["openvino"]["describe"]["inference_precision"] == "f32"
    assert report["floor"]["floor_s"] > 0 and report["load_before"]["load_average"]
    assert "openvino-hand" in format_bench(report) and "FLOP floor" in format_bench(report)


def test_bench_parses_the_new_backends() -> None:
    from climax_deploy.bench.bench import parse_backends

    assert parse_backends("openvino,openvino-bf16,openvino-hand,torch-compile") == [
        "openvino", "openvino-bf16", "openvino-hand", "torch-compile"]  # fmt: skip


def test_forecast_and_serve_take_a_backend() -> None:
    from climax_deploy.forecast.cli import build_parser as forecast_parser
    from climax_deploy.serving.server import build_parser as serve_parser

    args = forecast_parser().parse_args(["--model", "m.onnx", "--analysis", "a.nc", "-o", "f.nc", "--backend", "openvino"])
    assert args.backend == "openvino"
    assert serve_parser().parse_args(["m.onnx", "--backend", "openvino"]).backend == "openvino"
