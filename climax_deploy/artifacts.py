"""Artifact plumbing shared by every writer: atomic writes, checksums, output checks. Torch-free.

Every file is written to a temporary beside its final path (`.<name>.<random>.tmp`, mode from the
umask) and renamed over it; a group of files (a model, its manifest, its external data) is renamed
together under an exclusive lock on `.<name>.lock`, so two writers never interleave. Temporaries
of a killed writer are removed by the next write of the same artifact once they are stale.

Manifests are read and written by climax_deploy.manifest only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Union

from climax_deploy.errors import BadInputError

PathLike = Union[str, "os.PathLike[str]"]
TMP_SUFFIX = ".tmp"
STALE_SECONDS = 300.0  # a temporary untouched this long belongs to a writer that died
MANIFEST_SUFFIX = ".manifest.json"  # the sidecar of an artifact
DATA_SUFFIX = ".data"  # external weights of an ONNX model

_umask_lock = threading.Lock()


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set-and-restore."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}."


def remove_stale_temporaries(final: PathLike, older_than: float = STALE_SECONDS) -> None:
    """Remove `.<name>.*.tmp` files or folders beside `final` untouched for `older_than` seconds."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    prefix, now = _tmp_prefix(final), time.time()
    for entry in final.parent.iterdir():
        if not (entry.name.startswith(prefix) and entry.name.endswith(TMP_SUFFIX)):
            continue
        try:
            if now - entry.lstat().st_mtime < older_than:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()
        except OSError:
            pass  # another writer removed it first, or it is not ours to remove


def make_temporary(final: PathLike, directory: bool = False) -> Path:
    """A new temporary file (or folder) beside `final`, mode from the umask; stale ones are cleared first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), suffix=TMP_SUFFIX, dir=final.parent))
        os.chmod(tmp, 0o777 & ~current_umask())
        return tmp
    fd, name = tempfile.mkstemp(prefix=_tmp_prefix(final), suffix=TMP_SUFFIX, dir=final.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 whatever the umask
    finally:
        os.close(fd)
    return Path(name)


def _discard(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


@contextmanager
def artifact_lock(final: PathLike) -> Iterator[None]:
    """An exclusive lock on `.<name>.lock` beside `final`, held while a group of files is renamed."""
    final = Path(final)
    lock = final.parent / f".{final.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class ArtifactWriter:
    """Stage files beside their final paths, then rename them all at once under the artifact's lock.

        with ArtifactWriter("m.onnx") as w:
            w.stage("m.onnx").write_bytes(model)
            w.stage("m.onnx.manifest.json").write_bytes(manifest)
        # both renamed on success; on an exception every temporary is removed, the old files stay

    `remove` lists final paths to delete in the same locked step (e.g. stale external data).
    """

    def __init__(self, artifact: PathLike) -> None:
        self.artifact = Path(artifact)
        self.staged: list[tuple[Path, Path]] = []
        self.remove: list[Path] = []
        self.temporaries: list[Path] = []

    def stage(self, final: PathLike, tmp: Path | None = None) -> Path:
        """A temporary for `final` (or register `tmp`, already written, to be renamed to `final`)."""
        if tmp is None:
            tmp = make_temporary(final)
            self.temporaries.append(tmp)
        self.staged.append((Path(tmp), Path(final)))
        return Path(tmp)

    def temporary_dir(self) -> Path:
        """A temporary folder beside the artifact (removed at the end) for tools that write several files."""
        tmp = make_temporary(self.artifact, directory=True)
        self.temporaries.append(tmp)
        return tmp

    def commit(self) -> None:
        with artifact_lock(self.artifact):
            for tmp, final in self.staged:
                os.replace(tmp, final)
            for path in self.remove:
                if path.exists():
                    path.unlink()
        self.staged.clear()

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            for tmp in self.temporaries:
                _discard(tmp)


@contextmanager
def atomic_path(final: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    A crash or exception leaves any earlier `final` untouched and no half-written file behind.
    """
    with ArtifactWriter(final) as writer:
        yield writer.stage(final)


def write_bytes_atomic(final: PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def json_bytes(obj: Any) -> bytes:
    """The toolkit's JSON files: sorted keys, indented, newline-terminated."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def write_json_atomic(final: PathLike, obj: Any) -> None:
    write_bytes_atomic(final, json_bytes(obj))


# -- output checks (cheap, before the long work) ----------------------------------------------------


def _companions(path: Path) -> list[Path]:
    """A path and the files that travel with it as an artifact: its manifest and external data."""
    return [path, Path(str(path) + MANIFEST_SUFFIX), Path(str(path) + DATA_SUFFIX)]


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
        return True
    except ValueError:
        return False


def check_outputs_distinct(
    inputs: Mapping[str, PathLike | None],
    outputs: Mapping[str, PathLike | None],
    replaced_dirs: Mapping[str, PathLike | None] | None = None,
) -> None:
    """BadInputError if an output would overwrite an input (or another output).

    Keys name the option (e.g. '--json'); None values are skipped. Each path is taken with its
    companions (`.manifest.json`, `.data`); paths are compared resolved and by inode. `replaced_dirs`
    are folders an output replaces whole: no input may lie inside one.
    """
    ins = [(k, Path(v)) for k, v in inputs.items() if v is not None]
    outs = [(k, Path(v)) for k, v in outputs.items() if v is not None]
    for out_name, out in outs:
        for in_name, inp in ins:
            for o in _companions(out):
                for i in _companions(inp):
                    if _same(o, i):
                        raise BadInputError(
                            f"{out_name} {out} would overwrite the input {i} ({in_name}); expected an output "
                            "path distinct from every input"
                        )
    for n, (a_name, a) in enumerate(outs):
        for b_name, b in outs[n + 1 :]:
            if _same(a, b):
                raise BadInputError(f"{a_name} and {b_name} are the same file {a}; expected distinct outputs")
    for dir_name, folder in ((k, Path(v)) for k, v in (replaced_dirs or {}).items() if v is not None):
        for in_name, inp in ins:
            if _inside(inp, folder):
                raise BadInputError(
                    f"{dir_name} {folder} would replace the input {inp} ({in_name}); expected an input outside it"
                )


def check_writable(*paths: PathLike | None) -> None:
    """BadInputError unless each output could be created: its nearest existing ancestor is a writable
    folder (a probe file is created and removed there, which also catches read-only mounts)."""
    for p in paths:
        if p is None:
            continue
        path = Path(p)  # may be a folder store (zarr) that is replaced whole
        _probe(path, _nearest_existing(path.parent))


def check_writable_dir(*folders: PathLike | None) -> None:
    """BadInputError unless each folder exists writable or could be created."""
    for f in folders:
        if f is None:
            continue
        folder = Path(f)
        if folder.exists() and not folder.is_dir():
            raise BadInputError(f"cannot write into {folder}: it is not a folder")
        _probe(folder, _nearest_existing(folder))


def _nearest_existing(path: Path) -> Path:
    """`path` if it exists, else its nearest existing ancestor (where creating it would start)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe(target: Path, existing: Path) -> None:
    if not existing.is_dir():
        raise BadInputError(f"cannot write {target}: {existing} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".climax-deploy-probe.", suffix=TMP_SUFFIX, dir=existing)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BadInputError(f"cannot write {target}: {existing} is not writable ({reason})") from None
    os.close(fd)
    os.unlink(name)
