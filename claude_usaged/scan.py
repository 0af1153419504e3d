"""Which transcripts exist, and which changed since their cursors (a rescan's stat pass)."""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterable, Mapping
from pathlib import Path

from claude_usaged.tailer import Cursor


def transcript_paths(roots: Iterable[Path]) -> list[str]:
    """Every `projects/**/*.jsonl` under the roots, sorted."""
    found: list[str] = []
    for root in roots:
        projects = root / "projects"
        if not projects.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(projects, followlinks=False):
            found.extend(os.path.join(dirpath, f) for f in files if f.endswith(".jsonl"))
    return sorted(set(found))


Listing = dict[str, tuple[int, int, int] | None]
"""Each transcript's (inode, size, modification time in ns) by path, None where it
could not be stat'ed (it vanished)."""


def list_transcripts(roots: Iterable[Path]) -> Listing:
    """`transcript_paths` with each file's stat, taken now: a rescan's stat pass done
    ahead, while the database opens (`changed_paths(listing=...)`)."""
    return {path: _stat(path) for path in transcript_paths(roots)}


def changed_paths(
    roots: Iterable[Path],
    cursors: Mapping[str, Cursor],
    failing: Container[str] = (),
    listing: Listing | None = None,
) -> list[str]:
    """Transcripts without a cursor, failing ones, and those whose inode, size or
    modification time differ from their cursor's (a vanished file is not listed).
    With a `listing` the files and their stats are its own, not looked up now."""
    stat: Callable[[str], tuple[int, int, int] | None] = _stat
    if listing is None:
        listing = dict.fromkeys(transcript_paths(roots))
    else:
        stat = listing.__getitem__
    changed = []
    for path in listing:
        cursor = cursors.get(path)
        if cursor is None or path in failing:
            changed.append(path)
            continue
        st = stat(path)
        if st is not None and st != (cursor.ino, cursor.size, cursor.mtime_ns):
            changed.append(path)
    return changed


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
