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

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class ArgParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run `main`; a ClimaxDeployError or a missing file becomes one stderr line and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format=f"{prog}: %(message)s")
    try:
        return main(argv)
    except ClimaxDeployError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
