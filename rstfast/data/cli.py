"""Command-line plumbing shared by ``rstfast.data``, ``rstfast.train`` and ``rstfast.reproduce``:
a user error (bad flag value, missing or conflicting data) is one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from .errors import DataError, UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (``prog: error: ...``) without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def guarded(prog: str, main: Callable[[Optional[Sequence[str]]], int],
            argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main(argv)``; a :class:`UsageError` or :class:`DataError` becomes one line and 2."""
    try:
        return main(argv)
    except (UsageError, DataError) as exc:
        message = " ".join(str(exc).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
