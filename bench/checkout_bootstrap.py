"""Make `climax_deploy` importable from a plain checkout, without pip install (for `python bench/gpu_check.py`).

pyproject.toml maps each top-level folder to a subpackage (`package-dir`: model/ is climax_deploy.model,
...), so a checkout on sys.path alone does not import as climax_deploy.*. This builds that layout out
of symbolic links in a temporary folder, puts it first on sys.path and on PYTHONPATH (child processes,
such as climax-bench-attention's, import the same code), and removes it at exit. Standard library only.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE = "climax_deploy"


def package_dirs(root: Path) -> dict[str, str]:
    """pyproject.toml's [tool.setuptools] package-dir: {"climax_deploy.model": "model", ...}."""
    text = (root / "pyproject.toml").read_text()
    match = re.search(r"^package-dir\s*=\s*\{(.*)\}\s*$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{root / 'pyproject.toml'}: no one-line package-dir = {{...}} under [tool.setuptools]")
    return dict(re.findall(r'"([\w.]+)"\s*=\s*"([^"]+)"', match.group(1)))


def bootstrap_checkout(root: Path) -> Path:
    """Link the checkout at `root` into a temporary `climax_deploy` package; return the folder put on sys.path."""
    mapping = package_dirs(root)
    top = Path(tempfile.mkdtemp(prefix="climax_deploy_checkout_"))
    atexit.register(shutil.rmtree, top, True)
    package = top / PACKAGE
    package.mkdir()
    core = root / mapping.pop(PACKAGE, PACKAGE)
    for entry in core.iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in mapping.items():
        (package / name.split(".", 1)[1]).symlink_to(root / folder, target_is_directory=True)
    script_dir = str(Path(sys.argv[0]).resolve().parent) if sys.argv and sys.argv[0] else None
    sys.path[:] = [p for p in sys.path if p != script_dir]  # the script's folder would shadow top-level names
    sys.path.insert(0, str(top))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(top), os.environ.get("PYTHONPATH", "")]))
    return top
