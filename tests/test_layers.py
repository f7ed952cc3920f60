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
from package_tree import PYPROJECT, assemble_package, module_file  # tests/ is on sys.path

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


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("runtime/onnxruntime_backend.py", "import torch", "runtime/ embeds numpy and ONNX Runtime only"),
        ("model/config.py", "import climax_deploy.runtime", "model/ does not import runtime/"),
        ("climax_deploy/manifest.py", "import climax_deploy.export", "the core imports no area"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = assemble_package(tmp_path, copy=True)
    path = module_file(tree, module)
    path.write_text(path.read_text() + f"\n{line}  # injected by the test\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert contract in result.stdout and "BROKEN" in result.stdout
