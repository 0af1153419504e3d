"""One daemon per database: an exclusive lock on a file beside it.

Two writers on one database would each keep their own cursors in memory and
overwrite each other's address file; the second one is refused at start.
The lock is an `flock`, so it is released by the kernel if the daemon dies.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from claude_usaged.paths import address_file


class AlreadyRunning(RuntimeError):
    """Another process holds the database's lock; the message names it."""


def lock_file(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class InstanceLock:
    """Held from start to stop of the process that owns the database."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.path = lock_file(db)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self._holder()) from None
        self._fd = fd

    def _holder(self) -> str:
        where = ""
        try:
            info = json.loads(address_file(self.db).read_text())
            where = f" (pid {info['pid']}, {info['url']})"
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return f"another claude-usaged is already running on {self.db}{where}"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
