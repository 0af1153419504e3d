"""Process limits the daemon adjusts at start: malloc arenas and open files."""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys

MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas (one per thread by default) before threads start.

    Reader threads, SQLite's thread and watchdog's each get an arena of their own,
    and memory freed in one is not reused by another: on a 477 MB catch-up this
    cap lowers the peak RSS by about 5 MB at no measured cost. A no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, MALLOC_ARENAS)


OPEN_FILES = 65_536


def raise_open_files_limit(want: int = OPEN_FILES) -> int:
    """Lift the soft limit on open files toward the hard one; returns the soft limit.

    A team server keeps two connections (and their WAL files) per machine open:
    the common default of 1,024 would run out at about 150 machines.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft
