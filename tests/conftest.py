"""Shared fixtures: the small preset exported once per run; skips for gpu/tensorrt markers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from climax_deploy.model import ClimaX, build_model


def _has_cuda() -> bool:
    return bool(torch.cuda.is_available())


if not _has_cuda():
    # Triton fixes interpreter mode at its first import: set it before any test module imports it,
    # so the kernel tests run the real kernel on CPU tensors.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _has_tensorrt() -> bool:
    """Real TensorRT, not the tensorrt-stubs package (which also makes `tensorrt` findable)."""
    from climax_deploy.tensorrt_version import tensorrt_available

    return tensorrt_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {
        "gpu": None if _has_cuda() else "needs a CUDA GPU; none on this machine",
        "tensorrt": None if _has_tensorrt() else "needs TensorRT (not installable from PyPI here)",
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def _openvino_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """OpenVINO's IR cache in the session's tmp folder, never the user's ~/.cache (subprocesses inherit it)."""
    os.environ["CLIMAX_DEPLOY_CACHE"] = str(tmp_path_factory.mktemp("climax-cache"))


@pytest.fixture(scope="session")
def small_model() -> ClimaX:
    return build_model("small", seed=0)


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory: pytest.TempPathFactory, small_model: ClimaX) -> Path:
    """The small preset exported once (dynamic batch); tests must not modify it."""
    from climax_deploy.export import ExportOptions, Provenance, export_onnx

    path = tmp_path_factory.mktemp("small") / "small.onnx"
    export_onnx(small_model, path, ExportOptions(), Provenance(preset="small", seed=0))
    return path


@pytest.fixture(scope="session")
def small_external_onnx(tmp_path_factory: pytest.TempPathFactory, small_model: ClimaX) -> Path:
    """The small preset exported with its weights in `small.onnx.data`, under umask 002 (so tests can check
    that every file's mode follows the umask); tests must not modify it."""
    from climax_deploy.export import ExportOptions, Provenance, export_onnx

    path = tmp_path_factory.mktemp("external") / "small.onnx"
    old = os.umask(0o002)
    try:
        export_onnx(small_model, path, ExportOptions(external_data_threshold=1000), Provenance(preset="small", seed=0))
    finally:
        os.umask(old)
    return path


@pytest.fixture(scope="session")
def small_wind_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small-wind preset (the smallest grid with the wind-following scan) exported in fp32 and fp16,
    once per run; tests must not modify them."""
    from climax_deploy.export import ExportOptions, Provenance, export_onnx

    model = build_model("small-wind", seed=0)
    folder = tmp_path_factory.mktemp("small_wind")
    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = folder / f"small_wind_{precision}.onnx"
        export_onnx(model, paths[precision], ExportOptions(precision=precision), Provenance(preset="small-wind", seed=0))
    return paths


@pytest.fixture
def small_inputs(small_model: ClimaX) -> tuple[np.ndarray, np.ndarray]:
    """A batch of two standardised samples (mountain, flat) and their lead times."""
    from climax_deploy.synthetic import synthetic_sample
    from climax_deploy.validate.terrain import make_terrain

    cfg = small_model.config
    x = np.stack([synthetic_sample(cfg.variables, make_terrain(t, cfg.img_size), seed=0) for t in ("mountain", "flat")])
    return x, np.array([24.0, 48.0], dtype=np.float32)
