"""The embedded runtime: loading, options, provider reporting, input checks, bad files, threads, no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from climax_deploy.errors import BadInputError, MissingBackendError, ModelFileError
from climax_deploy.runtime import load
from climax_deploy.runtime.onnxruntime_backend import OnnxRuntimeOptions, choose_providers


@pytest.fixture(scope="module")
def runner(small_onnx: Path):
    with load(small_onnx) as r:
        yield r


def test_predict_contract(runner, small_inputs) -> None:
    x, lt = small_inputs
    y = runner.predict(x, lt)
    assert y.shape == (2, 6, 32, 64) and y.dtype == np.float32 and np.isfinite(y).all()
    # list lead times and integer hours are fine; batch 1 vs 2 differs only by GEMM blocking (fp32 rounding)
    np.testing.assert_allclose(runner.predict(x[:1], [24]), y[:1], atol=1e-5, rtol=0)


def test_providers_are_reported(runner) -> None:
    info = runner.describe()
    assert "CPUExecutionProvider" in info["providers_available"]
    assert info["providers_used"][0] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", both) == both
    with pytest.raises(MissingBackendError, match=r"onnxruntime-gpu"):
        choose_providers("cuda", ["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda x, lt: (x[0], lt), r"4 dimensions"),
        (lambda x, lt: (x[:, :14], lt), r"14 variables on axis 1, expected 15 .*u, v, temp"),
        (lambda x, lt: (x[..., :32], lt), r"32 x 32 grid, the model expects 32 x 64"),
        (lambda x, lt: (x.astype(np.float64), lt), r"float32, got float64"),
        (lambda x, lt: (x.tolist(), lt), r"numpy.ndarray"),
        (lambda x, lt: (x, lt[:1]), r"shape \(2,\) to match the batch"),
        (lambda x, lt: (x, 24.0), r"scalar"),
        (lambda x, lt: (x, np.array([24.0, np.nan])), r"NaN"),
        (lambda x, lt: (x, np.array([-6.0, 24.0])), r">= 0 hours"),
    ],
)
def test_bad_input_is_named(runner, small_inputs, mutate, message) -> None:
    x, lt = small_inputs
    with pytest.raises(BadInputError, match=message):
        runner.predict(*mutate(x, lt))


def test_nan_names_variable_and_count(runner, small_inputs) -> None:
    x, lt = small_inputs
    x = x.copy()
    x[1, 13, :3, 0] = np.nan
    x[0, 0, 0, 0] = np.inf
    with pytest.raises(BadInputError, match=r"u \(1 values\), elevation \(3 values\)"):
        runner.predict(x, lt)


def test_thread_safe(runner, small_inputs) -> None:
    x, lt = small_inputs
    expected = runner.predict(x, lt)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: runner.predict(x, lt), range(8)))
    assert all(np.array_equal(r, expected) for r in results)


def _copy(small_onnx: Path, tmp_path: Path) -> Path:
    dst = tmp_path / small_onnx.name
    shutil.copy(small_onnx, dst)
    shutil.copy(str(small_onnx) + ".manifest.json", str(dst) + ".manifest.json")
    return dst


def test_truncated_file_is_refused(small_onnx: Path, tmp_path: Path) -> None:
    path = _copy(small_onnx, tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load(path)
    with pytest.raises(ModelFileError, match="cannot load"):
        load(path, verify=False)


def test_missing_manifest_and_foreign_files(small_onnx: Path, tmp_path: Path) -> None:
    path = _copy(small_onnx, tmp_path)
    Path(str(path) + ".manifest.json").unlink()
    with pytest.raises(ModelFileError, match="no manifest"):
        load(path)
    with pytest.raises(ModelFileError, match="does not exist"):
        load(tmp_path / "absent.onnx")
    with pytest.raises(BadInputError, match="unknown model type"):
        load(tmp_path / "model.pt")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00" * 64)
    Path(str(junk) + ".manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelFileError, match="manifest format"):
        load(junk)


def test_manifest_must_agree_with_the_file(small_onnx: Path, tmp_path: Path) -> None:
    path = _copy(small_onnx, tmp_path)
    manifest_file = Path(str(path) + ".manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest["model"]["grid"] = [64, 128]
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="manifest was edited"):
        load(path)
    manifest["model"]["grid"] = json.loads(Path(str(small_onnx) + ".manifest.json").read_text())["model"]["grid"]
    manifest["batch"] = {"min": 2, "opt": 2, "max": 2}
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="batch=.*disagrees"):
        load(path, verify=False)


def test_edited_standardisation_is_refused(small_onnx: Path, tmp_path: Path) -> None:
    """The stats drive every forecast: an edited sidecar fails its content checksum and the embedded copy."""
    path = _copy(small_onnx, tmp_path)
    manifest_file = Path(str(path) + ".manifest.json")
    manifest = json.loads(manifest_file.read_text())
    variable = manifest["model"]["variables"][0]
    manifest["model"]["standardisation"][variable] = [123.0, 4.0]
    manifest_file.write_text(json.dumps(manifest, indent=2))
    with pytest.raises(ModelFileError, match="manifest was edited after export"):
        load(path)
    with pytest.raises(ModelFileError, match="model.standardisation.* disagrees with the manifest embedded"):
        load(path, verify=False)


def test_reserialised_model_loads_with_verify_false(small_onnx: Path, small_inputs, tmp_path: Path) -> None:
    """onnxsim, polygraphy sanitize or onnx_ir keep the embedded manifest but change the bytes."""
    import onnx

    path = _copy(small_onnx, tmp_path)
    model = onnx.load(path)
    model.producer_name = "onnx-reserialised"
    onnx.save(model, path)
    assert path.read_bytes() != small_onnx.read_bytes()
    with pytest.raises(ModelFileError, match=r"verify=False\) accepts a re-serialised model whose embedded manifest agrees"):
        load(path)
    x, lt = small_inputs
    with load(path, verify=False, providers="cpu") as runner, load(small_onnx, providers="cpu") as original:
        np.testing.assert_array_equal(runner.predict(x, lt), original.predict(x, lt))


def test_runtime_imports_without_torch(small_onnx: Path, small_inputs, tmp_path: Path) -> None:
    """A forecast system embeds the runtime with numpy and onnxruntime only."""
    x, lt = small_inputs
    np.save(tmp_path / "x.npy", x)
    script = f"""
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnxscript", "triton"):
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
import numpy as np
from climax_deploy.runtime import load
y = load({str(small_onnx)!r}).predict(np.load({str(tmp_path / 'x.npy')!r}), [24, 48])
assert y.shape == (2, 6, 32, 64)
assert not any(m.split(".")[0] == "torch" for m in sys.modules)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_load_options_are_typed(small_onnx: Path) -> None:
    with load(small_onnx, OnnxRuntimeOptions(providers="cpu", threads=1)) as r:
        assert r.options == OnnxRuntimeOptions(providers="cpu", threads=1)
        assert r.describe()["providers_used"] == ["CPUExecutionProvider"]
    with load(small_onnx, providers=["cpu"]) as r:  # keyword overrides set the same fields
        assert r.options.providers == ("cpu",)
    with pytest.raises(BadInputError, match=r"unknown load option\(s\) \['thread'\].*threads"):
        load(small_onnx, thread=2)


def test_close_releases_the_session(small_onnx: Path, small_inputs) -> None:
    x, lt = small_inputs
    r = load(small_onnx, providers="cpu")
    r.predict(x, lt)
    r.close()
    assert r.closed and r.session is None
    r.close()  # idempotent
    with pytest.raises(BadInputError, match="closed"):
        r.predict(x, lt)
