"""Layer rules, checked by import-linter against the contracts in pyproject.toml.

import-linter cannot follow setuptools' package-dir mapping, so it runs on the package assembled
as one tree (tests/package_tree.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from package_tree import PYPROJECT, assemble_package, module_file, package_dirs  # tests/ is on sys.path

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(PYPROJECT), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return assemble_package(tmp_path_factory.mktemp("layers"))


def test_layer_contracts_hold(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.split("Contracts:")[-1].split("kept")[0]


def _contracts() -> dict[str, dict]:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    return {c["name"]: c for c in contracts}


def test_every_area_is_a_layer_and_protected_from_the_core() -> None:
    """A new area (a package-dir folder) must be placed in the layers; the core is everything else."""
    areas = {package.removeprefix("climax_deploy.") for package in package_dirs() if package != "climax_deploy"}
    contracts = _contracts()
    layered = {name.strip() for layer in contracts["layers"]["layers"] for name in layer.split("|")}
    assert layered == areas
    protected = contracts["the core imports no area"]
    assert set(protected["protected_modules"]) == set(protected["allowed_importers"]) == {f"climax_deploy.{a}" for a in areas}


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("runtime/onnxruntime_backend.py", "import torch", "runtime/ embeds numpy and ONNX Runtime only"),
        ("runtime/new_module.py", "import onnx", "runtime/ embeds numpy and ONNX Runtime only"),
        ("serving/new_module.py", "import torch", "forecast/ and serving/ run deployed artifacts without torch"),
        ("runtime/new_module.py", "import matplotlib.figure", "runtime/ embeds numpy and ONNX Runtime only"),
        ("serving/new_module.py", "import climax_deploy.figures", "serving/ draws no pictures"),
        ("model/config.py", "import climax_deploy.runtime", "layers"),  # siblings are independent
        ("forecast/new_module.py", "import climax_deploy.serving", "layers"),
        ("export/new_module.py", "import climax_deploy.validate", "layers"),  # a lower layer imports a higher one
        ("gridded/new_module.py", "import climax_deploy.forecast", "layers"),
        ("climax_deploy/manifest.py", "import climax_deploy.export", "the core imports no area"),
        ("climax_deploy/new_module.py", "import climax_deploy.kernels.tiling", "the core imports no area"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    """Existing and new modules alike: a new module of any area, or of the core, is covered by default."""
    tree = assemble_package(tmp_path, copy=True)
    path = module_file(tree, module)
    text = path.read_text() if path.exists() else ""
    path.write_text(text + f"\n{line}  # injected by the test\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout, result.stdout[-3000:]
