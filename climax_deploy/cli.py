"""Helpers shared by the console scripts: one-line errors and exit codes.

Exit codes: 0 success, 1 a check failed (check-parity), 2 a user mistake or missing dependency.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from climax_deploy.errors import ClimaxDeployError
from climax_deploy.optional import missing_module_message


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the reason and the path(s) it concerns."""
    if not exc.strerror:
        return (str(exc).splitlines() or [type(exc).__name__])[0]
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    return f"{exc.strerror}: {paths}" if paths else exc.strerror

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class ArgParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run `main`; a ClimaxDeployError, an OSError (missing file, read-only disk) or a missing optional
    module (an install without its extra) becomes one stderr line and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format=f"{prog}: %(message)s")
    try:
        return main(argv)
    except ClimaxDeployError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a missing file, a read-only or full disk, a file where a folder should be
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:  # an optional dependency imported without an up-front check
        message = missing_module_message(exc)
        if message is None:  # not an optional dependency: a broken install or a bug, keep the traceback
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
