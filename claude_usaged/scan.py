"""Which transcripts exist, and which changed since their cursors (a rescan's stat pass)."""

from __future__ import annotations

import os
from collections.abc import Container, Iterable, Mapping
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


def changed_paths(
    roots: Iterable[Path], cursors: Mapping[str, Cursor], failing: Container[str] = ()
) -> list[str]:
    """Transcripts without a cursor, failing ones, and those whose inode, size or
    modification time differ from their cursor's (a vanished file is not listed)."""
    changed = []
    for path in transcript_paths(roots):
        cursor = cursors.get(path)
        if cursor is None or path in failing:
            changed.append(path)
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_ino, st.st_size, st.st_mtime_ns) != (cursor.ino, cursor.size, cursor.mtime_ns):
            changed.append(path)
    return changed
