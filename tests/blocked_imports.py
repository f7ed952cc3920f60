"""Run one console script as an install without some extras would: `python blocked_imports.py MODS SCRIPT ARGS`.

MODS (comma-separated top-level names) raise ModuleNotFoundError on import, as in an environment that
never installed them; the script is loaded from its console_scripts entry point, exactly as the wrapper
pip writes does (so import-time failures of the entry module count too).
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from importlib.metadata import entry_points
from types import ModuleType


class BlockedImports(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None  # let the normal finders look


if __name__ == "__main__":
    blocked, script, *args = sys.argv[1:]
    sys.meta_path.insert(0, BlockedImports(set(blocked.split(","))))
    (entry,) = entry_points(group="console_scripts", name=script)
    sys.argv = [script, *args]
    sys.exit(entry.load()())
