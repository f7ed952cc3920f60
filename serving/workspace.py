"""The server's work folder (pytriton's workspace with its copy of tritonserver, the gate's model
repository), locked while the server lives, so the next start can remove what a killed one left.

Folders live under one root, one per server: `ROOT/<pid>-<random>/`, holding `lock`, which the
server keeps flock()ed. The kernel drops the lock when the process dies however it dies (SIGKILL
included), so a folder whose lock can be taken belongs to no live server and is removed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

log = logging.getLogger(__name__)

LOCK_NAME = "lock"
FRESH_S = 60.0


def folder_name_length() -> int:
    """How long this process's folder name will be: '<pid>-' and mkdtemp's 8 characters."""
    return len(str(os.getpid())) + 1 + 8


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / f"climax-serve-{os.getuid()}"


def remove_stale(root: Path) -> list[Path]:
    """Remove the folders under `root` that no live server holds; return them."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.is_symlink():
            continue
        if not (folder / LOCK_NAME).exists() and time.time() - folder.stat().st_mtime < FRESH_S:
            continue  # a server between creating its folder and locking it
        try:
            with open(folder / LOCK_NAME, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)  # still holding the lock: no server takes it meanwhile
        except BlockingIOError:
            continue  # a live server's folder
        except OSError as exc:
            log.warning("cannot remove stale work folder %s: %s", folder, exc)
            continue
        log.warning("removed the work folder of a server that did not stop cleanly: %s", folder)
        removed.append(folder)
    return removed


class WorkFolder:
    """`with WorkFolder(root) as work: work.path` -> a fresh locked folder, removed on exit."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.path = Path()
        self._lock: IO[str] | None = None

    def __enter__(self) -> WorkFolder:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_stale(self.root)
        self.path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.root))
        self._lock = open(self.path / LOCK_NAME, "w")  # noqa: SIM115 - closed in __exit__
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
