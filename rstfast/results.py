"""``results.yml``: one line per finished training run, in the original's format
(``- {model: '...', acc: ..., <other keys sorted>}``), written by :mod:`rstfast.train` and read by
:mod:`rstfast.reproduce` and :mod:`rstfast.plot`.

Writes are safe with any number of processes on one file: :func:`append` holds an exclusive lock
(:class:`rstfast.files.FileLock`, ``<results>.lock``) while it reads the file, checks that it is a YAML list of
runs (a file that is not is never written to), leaves out a run already there (same ``run_id``),
and replaces the file by a complete new copy (temporary file, ``fsync``, ``os.replace``): a
process killed at any moment leaves the old file or the new one, never a half line.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import List, Optional

from .cli import UsageError, one_line
from .files import FileLock, write_atomic

__all__ = ["append", "check_writable", "entry_line", "load", "lock_of", "yaml_value"]


def yaml_value(value) -> str:
    """The original's serialisation: None -> null, bools lower case, strings single-quoted, numbers
    by ``str``, lists as ``[a, b]``; added here: dicts as ``{'k': v}``, floats with an exponent
    always with a dot (``5.0e-05``: YAML 1.1 reads ``5e-05`` as a string), non-finite floats as
    ``.nan`` / ``.inf``, strings with line breaks or control characters double-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if any(ord(c) < 32 or c == "\x7f" for c in value):
            return json.dumps(value)
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        text = str(value)                       # YAML 1.1 reads 5e-05 as a string: 5.0e-05
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_value(str(k))}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def entry_line(entry: dict) -> str:
    """``- {model: '...', <other keys sorted>}`` on one line, ending with a newline."""
    keys = ["model"] + sorted(k for k in entry if k != "model")
    return "- {" + ", ".join(f"{k}: {yaml_value(entry[k])}" for k in keys if k in entry) + "}\n"


def _parse(text: str, path) -> List[dict]:
    import yaml
    try:
        runs = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UsageError(f"results: {path} is not YAML{at} ({one_line(exc).split(' in ')[0]}); "
                         f"expected lines '- {{model: ...}}' written by rstfast-train") from None
    runs = runs or []
    if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
        what = type(runs).__name__ if not isinstance(runs, list) else "a list with non-mapping items"
        raise UsageError(f"results: expected a YAML list of runs in {path}, got {what}")
    bad = [i + 1 for i, run in enumerate(runs) if not isinstance(run.get("model"), str)
           or isinstance(run.get("acc"), bool) or not isinstance(run.get("acc"), (int, float))]
    if bad:
        raise UsageError(f"results: runs {bad[:5]} of {path} lack a model name or a numeric acc "
                         f"(expected lines written by rstfast-train)")
    return runs


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"results: cannot read {path}: {one_line(exc)}") from None


def load(path, missing_ok: bool = False) -> List[dict]:
    """The runs of a results file (a YAML list of dicts); ``[]`` for a missing file when
    ``missing_ok``. A file that is not such a list is a :class:`UsageError`."""
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return []
        raise UsageError(f"results: {path} not found (expected a results.yml written by rstfast-train)")
    return _parse(_read(path), path)


def check_writable(path) -> None:
    """Fail now, not after training, when ``path`` cannot take a run: an existing file that is
    not a results list, a folder, or a parent that cannot be created."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"results: {path} is a folder, expected a results.yml file")
    if path.exists():
        load(path)
        if not os.access(path, os.W_OK):
            raise UsageError(f"results: {path} is not writable")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"results: cannot create the folder of {path}: {one_line(exc)}") from None


def lock_of(path) -> FileLock:
    """The lock that guards writes to ``path`` (``<path>.lock``)."""
    path = Path(path)
    return FileLock(path.with_name(path.name + ".lock"))


def append(path, entry: dict, log=print) -> bool:
    """Add ``entry`` as one line to the results file ``path`` (created if missing); False, with a
    line to ``log``, when a run with its ``run_id`` (or the identical line) is already there."""
    path = Path(path)
    line = entry_line(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock_of(path):
        text = _read(path) if path.exists() else ""
        runs = _parse(text, path)
        run_id: Optional[str] = entry.get("run_id")
        if (run_id is not None and any(run.get("run_id") == run_id for run in runs)) \
                or line in text.splitlines(keepends=True):
            log(f"this run is already in {path}: not appended again")
            return False
        if text and not text.endswith("\n"):
            text += "\n"
        write_atomic(path, text + line)
    return True
