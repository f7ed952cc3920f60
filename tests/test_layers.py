"""Layer rules, checked by import-linter against the contracts in pyproject.toml.

The repository maps top-level folders (model/, runtime/, ...) into one package with setuptools'
package-dir, which import-linter cannot follow; so the package is assembled as one tree in a
temporary folder, from the same package-dir mapping, and lint-imports runs there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def assemble_package(dest: Path) -> Path:
    """Copy every package-dir folder to dest/climax_deploy/<area>; return dest."""
    mapping = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
        target = dest.joinpath(*package.split("."))
        shutil.copytree(ROOT / folder, target, ignore=ignore, dirs_exist_ok=True)
    return dest


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
    tree = assemble_package(tmp_path)
    mapping = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    folder, _, name = module.partition("/")
    package = next(p for p, f in mapping.items() if f == folder)
    path = tree.joinpath(*package.split("."), name)
    path.write_text(path.read_text() + f"\n{line}  # injected by the test\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert contract in result.stdout and "BROKEN" in result.stdout
