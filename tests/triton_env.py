"""A torch-free Python >= 3.12 environment for the Triton server tests, cached in `.venv-triton/`.

pytriton's Python backend fails under Python 3.11 (the project's venv), so the server runs from a
second venv: nvidia-pytriton, tritonclient, numpy < 2 (pytriton's bound; wheels exist for 3.12),
onnxruntime and this repository installed editable without dependencies, so torch is never there.
Run `python tests/triton_env.py` to build it by hand; it prints the environment's python.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-triton"
REQUIREMENTS = ["nvidia-pytriton==0.7.0", "tritonclient[grpc]==2.73.0", "numpy>=1.26,<2", "onnxruntime==1.32.0"]
MIN_VERSION = (3, 12)


def _version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=30, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def find_python() -> str | None:
    """A Python >= 3.12 interpreter: $CLIMAX_TRITON_PYTHON, python3.12/3.13 on PATH, or pyenv's.
    3.12 first: numpy < 2 (pytriton's requirement) has no wheels for 3.13."""
    candidates = [os.environ.get("CLIMAX_TRITON_PYTHON", "")]
    for minor in (12, 13, 14):
        candidates.append(shutil.which(f"python3.{minor}") or "")
        pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
        candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.{minor}.*/bin/python"), reverse=True)
    for python in filter(None, candidates):
        version = _version(python)
        if version is not None and version >= MIN_VERSION:
            return python
    return None


def _stamp(python: str) -> str:
    digest = hashlib.sha256()
    for part in (python, *REQUIREMENTS, (REPO / "pyproject.toml").read_text()):
        digest.update(part.encode())
    return digest.hexdigest()


def ensure_env(python: str, venv: Path = VENV) -> Path:
    """Create or reuse the environment; return its python. Safe against concurrent callers."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".venv-triton.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_file, target = venv / ".installed", venv / "bin" / "python"
        stamp = _stamp(python)
        if stamp_file.is_file() and stamp_file.read_text() == stamp and target.exists():
            return target
        subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        pip = [str(target), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--only-binary=:all:", *REQUIREMENTS], check=True, timeout=900)
        subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True, timeout=600)
        stamp_file.write_text(stamp)
        return target


if __name__ == "__main__":
    found = find_python()
    if found is None:
        sys.exit("no Python >= 3.12 found; set CLIMAX_TRITON_PYTHON")
    print(ensure_env(found))
