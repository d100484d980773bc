"""Files that several processes share (results.yml, a run's checkpoint, a dataset folder): an
exclusive lock that the OS releases when its holder dies, and replacing a file in one step."""
from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["FileLock", "write_atomic"]


class FileLock:
    """An exclusive advisory lock (``flock``) on ``path``, released when the holder exits or is
    killed. The file keeps the holder's ``pid host`` for messages; it is never deleted (removing
    a lock file others wait on would let two holders in)."""

    def __init__(self, path):
        self.path = Path(path)
        self._handle = None

    def acquire(self, blocking: bool = True) -> bool:
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            import fcntl
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def holder(self) -> str:
        """``pid host`` of the last process that took the lock ('' if none)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def is_held_elsewhere(self) -> bool:
        """Whether another process holds the lock now."""
        if self._handle is not None:
            return False
        if not self.path.exists():
            return False
        if self.acquire(blocking=False):
            self.release()
            return False
        return True

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (temporary file beside it, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
