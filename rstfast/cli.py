"""Command-line plumbing of every rstfast tool (``rstfast.train``, ``rstfast.reproduce``,
``rstfast.data``, ``rstfast.plot``, ``rstfast.equivariance``): a user error (bad flag value,
missing or broken data, a file in the way) is one line ``prog: error: ...`` on stderr and exit
code 2, never a traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Type


class UsageError(ValueError):
    """A flag or argument value that cannot work; the message names it and what was expected."""


class DataError(Exception):
    """A data problem the user can fix (missing or broken files, a dataset folder in the way)."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (``prog: error: ...``) without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def guarded(prog: str, main: Callable[[Optional[Sequence[str]]], int],
            argv: Optional[Sequence[str]] = None,
            user_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Run ``main(argv)``; a :class:`UsageError`, a :class:`DataError` or one of ``user_errors``
    becomes one line on stderr and exit code 2; Ctrl-C one line and 130."""
    try:
        return main(argv)
    except (UsageError, DataError) + tuple(user_errors) as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def check_backend(value: str, flag: str = "--backend") -> str:
    """``value`` if it is one of ``rstfast.backends.names()`` (registered backends included),
    else a :class:`UsageError` naming ``flag``."""
    from . import backends
    try:
        return backends.check_backend_name(value)
    except ValueError as exc:  # "backend: expected one of (...), got 'x'": named after the flag
        message = one_line(exc)
        raise UsageError(f"{flag}: {message[len('backend: '):] if message.startswith('backend: ') else message}") from None


def check_device(value: str, flag: str = "--device"):
    """``torch.device(value)`` if this machine has it, else a :class:`UsageError` naming
    ``flag`` (an unknown device string, CUDA without a GPU, a GPU index past the last one)."""
    import torch
    try:
        device = torch.device(value)
    except RuntimeError:
        raise UsageError(f"{flag}: expected a device such as cpu, cuda or cuda:1, got {value!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"{flag} {value}: no CUDA GPU here (torch {torch.__version__}, "
                             f"torch.cuda.is_available() is False); use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"{flag} {value}: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}")
    else:
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as exc:
            raise UsageError(f"{flag} {value}: not usable here ({one_line(exc)})") from None
    return device


def blocking_file(folder) -> Optional[Path]:
    """The file (``folder`` itself or one of its parents) that keeps ``folder`` from being a
    folder, None if it is one or can be created."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def check_output_folder(value, flag: str = "--out") -> Path:
    """``Path(value)`` if it is a folder or can be created, else a :class:`UsageError`."""
    blocking = blocking_file(value)
    if blocking is not None:
        raise UsageError(f"{flag} {value}: {blocking} is a file, expected a folder")
    return Path(value)
