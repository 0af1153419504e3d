"""The first catch-up's reading, started before the daemon's heavy imports.

`claude-usaged run` spends about 0.4 s importing aiohttp, structlog and the
rest, opening the store and binding its port before the ingest loop runs;
reading a large history takes about as long. So `run` starts this prefetch as
soon as the settings are known: a background thread reads the stored cursors
(read-only, plain sqlite3), stats the transcripts and reads what changed,
while the main thread imports and starts the daemon. The ingest loop's first
rescan then takes the outcomes from here instead of reading the files itself.

Nothing is written here: the single writer still applies every outcome. If
the cursors the store holds once the daemon owns the database differ from
the ones read here (another process wrote it in between), the prefetch is
dropped and the files are read again. A file that changes after it was read
is caught by the rescan that follows the first one, as it is without a
prefetch. Outcomes wait in a bounded queue, so a history much larger than
memory does not pile up records before the writer starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from claude_usaged.reading import ReadOutcome, read_all
from claude_usaged.scan import changed_paths
from claude_usaged.tailer import Cursor, TailResult

HELD_RECORDS = 100_000
"""Records read ahead of the writer at most (about 30 MB); readers wait beyond it."""

_DONE = object()


def stored_cursors(db: Path) -> dict[str, Cursor]:
    """The cursors in the database, read-only; none when it does not exist (yet)."""
    if not db.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute(
            "SELECT path, dev, ino, offset, head_len, head_hash, tail_hash, size, mtime_ns "
            "FROM cursors"
        ).fetchall()
    except sqlite3.Error:
        return {}  # no cursors table before the first migration
    finally:
        conn.close()
    return {row[0]: Cursor(*row) for row in rows}


class Prefetch:
    """Reads what changed since the stored cursors, in a thread, for the first rescan."""

    def __init__(self, roots: Sequence[Path], db: Path) -> None:
        self.roots = list(roots)
        self.db = db
        self.cursors: dict[str, Cursor] = {}
        self.paths: list[str] = []
        self._items: list[tuple[str, ReadOutcome] | object] = []
        self._held = 0
        self._cond = threading.Condition()
        self._listed = threading.Event()
        self._stopped = False
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)

    def start(self) -> Prefetch:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop reading (the daemon did not start, or the prefetch was dropped)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def matches(self, cursors: dict[str, Cursor]) -> bool:
        """Whether this prefetch read from the cursors the store holds now."""
        self._listed.wait()
        return self.error is None and self.cursors == cursors

    # -- the reading thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            self.cursors = stored_cursors(self.db)
            self.paths = changed_paths(self.roots, self.cursors)
        except Exception as exc:  # the ingest loop reads the files itself
            self.error = exc
        finally:
            self._listed.set()
        try:
            if self.error is None:
                asyncio.run(self._read())
        except Exception as exc:
            self.error = exc
        finally:
            self._put(_DONE, 0)

    async def _read(self) -> None:
        async for item in read_all(self.paths, self.cursors):
            outcome = item[1]
            records = len(outcome.parsed.records) if isinstance(outcome, TailResult) else 0
            if not await asyncio.to_thread(self._put, item, records):
                return

    def _put(self, item: tuple[str, ReadOutcome] | object, records: int) -> bool:
        with self._cond:
            while self._held and self._held + records > HELD_RECORDS and not self._stopped:
                self._cond.wait()
            if self._stopped and item is not _DONE:
                return False
            self._items.append(item)
            self._held += records
            self._cond.notify_all()
            return True

    # -- the ingest loop's side ---------------------------------------------------

    def _take(self) -> list[tuple[str, ReadOutcome] | object]:
        with self._cond:
            while not self._items:
                self._cond.wait()
            items, self._items = self._items, []
            self._held = 0
            self._cond.notify_all()
            return items

    async def outcomes(self) -> AsyncIterator[tuple[str, ReadOutcome]]:
        """Every (path, outcome) read, as they come; ends when the reading has ended."""
        try:
            while True:
                for item in await asyncio.to_thread(self._take):
                    if item is _DONE:
                        if self.error is not None:  # the supervisor logs it and rescans
                            raise RuntimeError(f"reading ahead failed: {self.error}")
                        return
                    yield item  # type: ignore[misc]
        finally:
            self.cancel()
            with contextlib.suppress(RuntimeError):
                await asyncio.to_thread(self._thread.join, 5)
