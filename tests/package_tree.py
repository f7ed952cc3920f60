"""The package as one tree on disk, for tools that cannot follow setuptools' package-dir mapping.

The repository maps top-level folders (model/, runtime/, ...) into `climax_deploy`; mypy and
import-linter look for a package's files under one directory, so tests assemble that directory
(symlinks, or copies where a test edits files) from the mapping in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def package_dirs() -> dict[str, str]:
    """{dotted package: repository folder}, from [tool.setuptools] package-dir."""
    return dict(tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"])


def assemble_package(dest: Path, *, copy: bool = False) -> Path:
    """Recreate the package under dest/ (symlinked, or copied with `copy`); return dest."""
    for package, folder in sorted(package_dirs().items(), key=lambda item: item[0].count(".")):
        target = dest.joinpath(*package.split("."))
        source = ROOT / folder
        if package.count(".") == 0:  # the core: its modules only, the areas are added beside them
            target.mkdir(parents=True, exist_ok=True)
            for module in source.glob("*.py"):
                if copy:
                    shutil.copy(module, target / module.name)
                else:
                    (target / module.name).symlink_to(module)
        elif copy:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.symlink_to(source, target_is_directory=True)
    return dest


def module_file(tree: Path, repository_path: str) -> Path:
    """Where a repository file (e.g. 'runtime/onnxruntime_backend.py') lies in an assembled tree."""
    folder, _, name = repository_path.partition("/")
    package = next(p for p, f in package_dirs().items() if f == folder)
    return tree.joinpath(*package.split("."), name)
