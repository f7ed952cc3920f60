"""Console scripts called in-process: `main(argv)` through run_cli, as their entry points call it.

An error path needs no new interpreter (seconds of imports each); stdout, stderr and the exit code
are captured as subprocess.run would. tests/test_package.py still starts each installed script once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from climax_deploy.cli import run_cli


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_main(
    prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[object], cwd: str | os.PathLike[str] | None = None
) -> Completed:
    """`prog argv...` in this process: run_cli(prog, main, argv) with argparse's exits turned into codes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        handler = logging.StreamHandler(err)  # what run_cli's logging.basicConfig would set up in a fresh process
        handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
        logging.getLogger().addHandler(handler)
        stack.callback(logging.getLogger().removeHandler, handler)
        try:
            code = run_cli(prog, main, [str(a) for a in argv])
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return Completed(code, out.getvalue(), err.getvalue())
