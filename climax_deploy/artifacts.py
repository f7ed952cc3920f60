"""Artifact plumbing shared by every writer: atomic writes, checksums, manifests. Torch-free."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from climax_deploy.errors import ModelFileError

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "climax-deploy/manifest/1"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """The sidecar manifest of an artifact: `model.onnx` -> `model.onnx.manifest.json`."""
    return Path(str(artifact) + MANIFEST_SUFFIX)


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    A crash or exception leaves any earlier `final` untouched and no half-written file behind.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(final: str | os.PathLike[str], obj: Any) -> None:
    write_bytes_atomic(final, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_manifest(artifact: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write the sidecar manifest, adding the format tag and the artifact's sha256."""
    artifact = Path(artifact)
    full = {"format": MANIFEST_FORMAT, **manifest, "file": artifact.name, "sha256": sha256_file(artifact)}
    path = manifest_path(artifact)
    write_json_atomic(path, full)
    return path


def read_manifest(artifact: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Read and check an artifact's sidecar manifest; with `verify`, compare the sha256 too."""
    artifact = Path(artifact)
    path = manifest_path(artifact)
    if not path.is_file():
        raise ModelFileError(f"{artifact}: no manifest at {path}; export the model with climax-deploy")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: manifest is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelFileError(f"{path}: expected manifest format {MANIFEST_FORMAT!r}, got {got!r}")
    if verify:
        check_checksums(artifact, manifest)
    return manifest


def check_checksums(artifact: Path, manifest: dict[str, Any]) -> None:
    actual = sha256_file(artifact)
    if actual != manifest.get("sha256"):
        raise ModelFileError(
            f"{artifact}: sha256 {actual[:12]}... does not match the manifest's "
            f"{str(manifest.get('sha256'))[:12]}...; the file is truncated or was changed after export"
        )
    for name, digest in manifest.get("external_data", {}).items():
        data = artifact.parent / name
        if not data.is_file():
            raise ModelFileError(f"{artifact}: external data file {data} is missing")
        if sha256_file(data) != digest:
            raise ModelFileError(f"{data}: sha256 does not match the manifest; the file is truncated or changed")

