"""Third-party ONNX readers on both precisions of the small preset, each against ONNX Runtime on the default export.

- onnx.reference (onnx's own evaluator) reads the default export: it runs model-local functions. fp32
  exports hold attention in a query-block Loop whose scan output both readers put in the same order
  (export/attention_layout.py); before, onnx.reference failed on them (onnx/onnx#3122).
- OpenVINO reads `export-onnx --standard-ops` files (functions inlined, no custom domain): its ONNX
  frontend refuses model-local functions of a custom domain.

Tolerances: fp32 is the same float32 function in another implementation (measured max abs difference
<= 1.3e-6 on outputs of magnitude ~2): atol 5e-6. fp16: two fp16 implementations, each measured within
2.8e-4 rel L2 of PyTorch fp16 (tests/test_fp16.py): rel L2 1e-3 against ONNX Runtime's fp16.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino
import pytest
from onnx.reference import ReferenceEvaluator

from climax_deploy.errors import BadInputError
from climax_deploy.export.cli import main as export_main
from climax_deploy.export.passes import all_nodes
from climax_deploy.export.standard_ops import InlineStandardOps, nonstandard_domains
from climax_deploy.export.tensorrt_build import read_source
from climax_deploy.manifest import METADATA_KEY, BuildOptions, from_json, read_onnx_manifest, to_json
from climax_deploy.runtime import load
from cli_run import run_main  # tests/ is on sys.path under pytest

PRECISIONS = ("fp32", "fp16")
FP32_ATOL = 5e-6
FP16_REL_L2 = 1e-3


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, small_onnx: Path) -> dict[tuple[str, bool], Path]:
    """{(precision, standard_ops): path} of the small preset, seed 0; the --standard-ops ones via the CLI."""
    out = tmp_path_factory.mktemp("readers")
    paths = {("fp32", False): small_onnx}
    for precision, standard in (("fp16", False), ("fp32", True), ("fp16", True)):
        path = out / f"small_{precision}{'_std' if standard else ''}.onnx"
        argv = ["--preset", "small", "--precision", precision, "-o", path, "-q"] + (["--standard-ops"] if standard else [])
        done = run_main("export-onnx", export_main, argv)
        assert done.returncode == 0, done.stderr
        paths[(precision, standard)] = path
    return paths


@pytest.fixture(scope="module")
def feeds() -> dict[str, np.ndarray]:
    from climax_deploy.model import build_model
    from climax_deploy.synthetic import synthetic_sample
    from climax_deploy.validate.terrain import make_terrain

    cfg = build_model("small", seed=0).config
    x = np.stack([synthetic_sample(cfg.variables, make_terrain(t, cfg.img_size), seed=0) for t in ("mountain", "flat")])
    return {"x": x, "lead_times": np.array([24.0, 48.0], dtype=np.float32)}


def onnx_runtime(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def assert_matches(got: np.ndarray, want: np.ndarray, precision: str) -> None:
    assert got.shape == want.shape and np.isfinite(got).all()
    if precision == "fp32":
        np.testing.assert_allclose(got, want, atol=FP32_ATOL, rtol=0)
    else:
        rel = np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want)
        assert rel < FP16_REL_L2, f"rel L2 {rel:.2e}"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_standard_ops_file_has_standard_ops_only(exports, feeds, precision: str) -> None:
    """No function, no custom domain, no `climax` opset import; the manifest says so; the runtime runs it
    and ONNX Runtime computes what it computes on the default export."""
    path, default = exports[(precision, True)], exports[(precision, False)]
    model = onnx.load(path)
    assert not model.functions and not nonstandard_domains(model)
    assert [e.domain for e in model.opset_import] == [""]
    assert all(n.domain == "" for n in all_nodes(model.graph))
    onnx.checker.check_model(model, full_check=True)
    kept = onnx.load(default)  # the default export keeps its custom nodes
    assert {"climax", "climax.shapes"} <= nonstandard_domains(kept) and any(n.domain == "climax" for n in kept.graph.node)

    manifest = read_onnx_manifest(path)
    assert manifest.custom_op is None and read_onnx_manifest(default).custom_op == ("climax", "ElevationAttention", 1)
    assert json.loads(path.with_name(path.name + ".manifest.json").read_text())["custom_op"] is None
    meta = {p.key: p.value for p in model.metadata_props}
    assert from_json(json.loads(meta[METADATA_KEY]), "embedded").custom_op is None
    with load(path) as runner:
        got = runner.predict(feeds["x"], feeds["lead_times"])
    # Inlining changes no arithmetic: ONNX Runtime gives the same numbers up to its own fusions.
    assert_matches(got, onnx_runtime(default, feeds), precision)


def test_manifest_custom_op_is_required_even_when_null(exports) -> None:
    """`custom_op: null` marks a --standard-ops file; a manifest without the field is still refused."""
    obj = to_json(read_onnx_manifest(exports[("fp32", True)]))
    assert obj["custom_op"] is None and from_json(obj).custom_op is None
    del obj["custom_op"]
    with pytest.raises(Exception, match="custom_op"):
        from_json(obj)


def test_build_engine_refuses_a_standard_ops_file(exports) -> None:
    with pytest.raises(BadInputError, match="--standard-ops"):
        read_source(exports[("fp16", True)], BuildOptions())


def test_inlining_pass_leaves_a_standard_model_alone() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["a"], ["b"])], "g",
        [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2])],
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    assert not InlineStandardOps()(model).modified


@pytest.mark.parametrize("precision", PRECISIONS)
def test_onnx_reference_matches_onnx_runtime(exports, feeds, precision: str) -> None:
    """onnx.reference on the default export (it runs model-local functions and the fp32 query-block Loop)."""
    path = exports[(precision, False)]
    (got,) = ReferenceEvaluator(onnx.load(path)).run(None, feeds)
    assert_matches(got, onnx_runtime(path, feeds), precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_openvino_reads_the_standard_ops_file(exports, feeds, precision: str) -> None:
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(str(exports[(precision, True)])), "CPU")
    got = compiled(feeds)[0]
    assert_matches(got, onnx_runtime(exports[(precision, False)], feeds), precision)
