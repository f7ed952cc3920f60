"""Artifact plumbing shared by every writer: atomic writes, checksums, output checks. Torch-free.

Every file is written to a temporary beside its final path (`.<name>.<random>.tmp`, mode from the
umask) and renamed over it; a group of files (a model, its manifest, its external data) is renamed
together under an exclusive lock on `.<name>.lock`, so two writers never interleave. Temporaries
of a killed writer are removed by the next write of the same artifact once they are stale.

Artifacts may come from elsewhere, so what they name is untrusted: `inside_folder` keeps every file
a manifest names inside the artifact's folder, and `parse_json` refuses hostile JSON (deep nesting,
huge numbers, duplicate keys) with one line. Manifests are read and written by climax_deploy.manifest only.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Union

from climax_deploy.errors import BadInputError, LockTimeoutError

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
TMP_SUFFIX = ".tmp"
STALE_SECONDS = 300.0  # a temporary untouched this long belongs to a writer that died
MANIFEST_SUFFIX = ".manifest.json"  # the sidecar of an artifact
DATA_SUFFIX = ".data"  # external weights of an ONNX model
LOCK_TIMEOUT_SECONDS = 60.0  # the lock is held only while files are renamed: a minute means its holder is stuck
LOCK_REPORT_SECONDS = 1.0  # a writer still waiting after this long says who holds the lock
LOCK_POLL_SECONDS = 0.05
# The longest name derived from an output's: `.<name>.manifest.json.<8 random>.tmp` (a staged manifest).
NAME_OVERHEAD = len(".") + len(MANIFEST_SUFFIX) + len(".12345678") + len(TMP_SUFFIX)
# Hostile JSON: nesting and integer digits beyond these are refused (a manifest nests 4 deep).
JSON_MAX_DEPTH = 64
JSON_MAX_INT_DIGITS = 30

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


def lock_path(final: PathLike) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.lock"


@contextmanager
def artifact_lock(final: PathLike, timeout: float | None = None) -> Iterator[None]:
    """An exclusive lock on `.<name>.lock` beside `final`, held while a group of files is renamed.

    The holder writes its pid, host and command into the lock file; a writer kept waiting says who
    holds it (a warning after LOCK_REPORT_SECONDS) and gives up after `timeout` (LOCK_TIMEOUT_SECONDS)
    with LockTimeoutError.
    """
    lock = lock_path(final)
    timeout = LOCK_TIMEOUT_SECONDS if timeout is None else timeout
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, lock, timeout)
        holder = f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]}) since {time.strftime('%H:%M:%S')}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(errors="replace"), 0)
        except OSError:
            pass  # who holds it is a courtesy to other writers, not needed for the lock
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _acquire(fd: int, lock: Path, timeout: float) -> None:
    began, reported = time.monotonic(), False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        waited = time.monotonic() - began
        if waited >= timeout:
            raise LockTimeoutError(
                f"{lock} is still held by {_holder(fd)} after {timeout:g} s; expected it free within seconds "
                "(it is held only while files are renamed): stop that process, or remove the lock file if it is gone"
            )
        if not reported and waited >= min(LOCK_REPORT_SECONDS, timeout):
            log.warning("waiting for %s, held by %s (giving up after %g s)", lock, _holder(fd), timeout)
            reported = True
        time.sleep(LOCK_POLL_SECONDS)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process (it did not say which)"


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
        elif Path(tmp).is_file():  # written by a tool (onnx writes external data 0600): the umask decides
            os.chmod(tmp, 0o666 & ~current_umask())
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


# -- untrusted artifacts ---------------------------------------------------------------------------


def check_relative_name(name: str, what: str) -> None:
    """BadInputError unless `name` is a relative path that stays below its folder (no `..`, not absolute)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise BadInputError(f"{what} must be a file name, got {name!r}")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts or (len(parts[0]) > 1 and parts[0][1] == ":"):
        raise BadInputError(f"{what} must be a path inside the artifact's folder (relative, no '..'), got {name!r}")


def inside_folder(folder: PathLike, name: str, what: str) -> Path:
    """`folder / name` for a `name` an artifact's manifest gives; BadInputError unless it resolves inside
    `folder` (also through symlinks): the one check of every path an untrusted manifest names."""
    check_relative_name(name, what)
    path = Path(folder) / name
    if not _inside(path, Path(folder)):
        raise BadInputError(
            f"{what} {name!r} resolves to {os.path.realpath(path)}, outside the artifact's folder {Path(folder)} "
            "(a symlink leading out); expected a file inside it"
        )
    return path


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > JSON_MAX_INT_DIGITS:
        raise ValueError(f"an integer of {digits} digits (at most {JSON_MAX_INT_DIGITS})")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]}{'...' if len(text) > 20 else ''} overflows a float")
    return value


def _refuse_constant(text: str) -> float:
    raise ValueError(f"{text} (not JSON)")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _depth(text: str) -> int:
    """The deepest nesting of [ and {, strings skipped (regexes do the long scans)."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(data: bytes | str, source: str, error: type[Exception] = BadInputError) -> Any:
    """JSON from a file we did not write ourselves; `error` (one line naming `source`) on anything hostile:
    invalid UTF-8 or JSON, nesting deeper than JSON_MAX_DEPTH, integers longer than JSON_MAX_INT_DIGITS,
    floats that overflow, NaN/Infinity, duplicate keys."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if _depth(text) > JSON_MAX_DEPTH:
            raise ValueError(f"nested deeper than {JSON_MAX_DEPTH} levels")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_bounded_int,
                          parse_float=_finite_float, parse_constant=_refuse_constant)  # fmt: skip
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{source}: not valid JSON ({reason}); expected the JSON file as written") from None


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


def check_writable(*paths: PathLike | None, folder_ok: bool = False) -> None:
    """BadInputError unless each output could be created: a UTF-8 path whose name leaves room for the
    temporaries beside it, not an existing folder (unless `folder_ok`: a zarr store replaced whole), and
    whose nearest existing ancestor is a writable folder (a probe file is created and removed there,
    which also catches read-only mounts)."""
    for p in paths:
        if p is None:
            continue
        path = Path(p)
        check_path_text(path)
        if path.is_dir() and not folder_ok:
            raise BadInputError(f"cannot write {path}: it is a folder; expected a file path")
        _probe(path, _nearest_existing(path.parent))


def cache_folder(path: PathLike, what: str) -> Path:
    """`path` as an absolute folder, created if missing, for a cache of `what`; BadInputError naming it if it
    is a file, cannot be created or is not writable."""
    folder = Path(path).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"{what} {folder} is a file; expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"{what} {folder} cannot be created ({exc.strerror}); expected a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInputError(f"{what} {folder} is not writable; expected a writable folder")
    return folder


def check_writable_dir(*folders: PathLike | None) -> None:
    """BadInputError unless each folder exists writable or could be created."""
    for f in folders:
        if f is None:
            continue
        folder = Path(f)
        check_path_text(folder)
        if folder.exists() and not folder.is_dir():
            raise BadInputError(f"cannot write into {folder}: it is not a folder")
        _probe(folder, _nearest_existing(folder))


def check_path_text(path: Path) -> None:
    """BadInputError for an output path that is not UTF-8 (netCDF, HDF5 and JSON reports need it) or
    too long for the file system once temporaries add NAME_OVERHEAD bytes to its name."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", errors="backslashreplace")
        raise BadInputError(f"output path {shown} is not valid UTF-8; expected a UTF-8 file name") from None
    existing = _nearest_existing(path.parent if path.parent != path else path)
    name_max, path_max = _limit(existing, "PC_NAME_MAX", 255), _limit(existing, "PC_PATH_MAX", 4096)
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest + NAME_OVERHEAD > name_max:
        raise BadInputError(
            f"output path {text[:60]}... has a name of {longest} bytes; expected at most "
            f"{name_max - NAME_OVERHEAD} (the file system's {name_max}, less {NAME_OVERHEAD} for temporaries)"
        )
    full = len(os.fsencode(os.path.abspath(text))) + NAME_OVERHEAD
    if full > path_max:
        raise BadInputError(
            f"output path {text[:60]}... is {full - NAME_OVERHEAD} bytes long; expected at most {path_max - NAME_OVERHEAD}"
        )


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(folder, name))
    except (OSError, ValueError):
        return default


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
