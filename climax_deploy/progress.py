"""Stage-by-stage progress on stderr for long jobs (full-size exports, parity runs, engine builds)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Progress:
    """Prints `[tag] stage ...` then `done in 1.2 s`; silent when disabled."""

    def __init__(self, tag: str, enabled: bool = True) -> None:
        self.tag = tag
        self.enabled = enabled
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, what: str) -> Iterator[None]:
        if self.enabled:
            print(f"[{self.tag}] {what} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.timings[what] = elapsed
        if self.enabled:
            print(f"[{self.tag}] {what}: done in {elapsed:.1f} s", file=sys.stderr, flush=True)
