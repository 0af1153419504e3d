"""The ingest loop: which files to read, reading them, storing what they hold.

One task owns all writing. Paths arrive from the watcher; a rescan (at start,
on a slow timer, after the watcher reports trouble, on `/refresh`) stats every
transcript and queues those whose size, time or inode differ from their
cursor, so a missed event delays a count but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from claude_usaged.reading import ReadOutcome, read_all
from claude_usaged.scan import changed_paths
from claude_usaged.store import Store
from claude_usaged.tailer import Cursor, TailResult
from claude_usaged.usage import UsageRecord

log = structlog.get_logger(__name__)

PROGRESS_EVERY = 2.0
"""Seconds between progress lines while a long catch-up runs."""

DATA_ERRORS = (UnicodeError, OverflowError, ValueError, TypeError, sqlite3.InterfaceError)
"""What binding a value raises: the data is at fault, not the database (disk full and
locked are sqlite3.OperationalError, which the supervisor retries)."""

BATCH_RECORDS = 20_000
"""Records held in memory before they are written (bounds RSS on big histories)."""


@dataclass(slots=True)
class IngestState:
    """Counters for `/stats` and `/health`."""

    caught_up: bool = False
    files: int = 0
    last_event_at: float | None = None
    last_scan_at: float | None = None
    bytes_read: int = 0
    unreadable: int = 0
    last_error: str | None = None
    """Why the last batch could not be stored (disk full, locked database), until one is."""


class Ingest:
    """Reads changed transcripts and applies them to the store, one batch at a time."""

    def __init__(self, store: Store, roots: Sequence[Path]) -> None:
        self.store = store
        self.roots = list(roots)
        self.state = IngestState()
        self.cursors: dict[str, Cursor] = {}
        self._pending: set[str] = set()
        self._rescan = False
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._failing: dict[str, str] = {}
        """Files that could not be read (permission denied...), with the reason."""
        self._refused: dict[str, str] = {}
        """Files whose data the store refused, with the error."""
        self.listeners: list[Callable[[list[UsageRecord]], None]] = []
        self.lines = 0
        self.skipped_lines = 0

    async def start(self) -> asyncio.Future[None]:
        """Load the cursors and ask for the first rescan; returns its future."""
        self.cursors = await self.store.load_cursors()
        counters = await self.store.counters()
        self.lines = counters.get("lines", 0)
        self.skipped_lines = counters.get("skipped_lines", 0)
        self.state.files = len(self.cursors)
        return self.request_rescan()

    # -- requests (any task) -----------------------------------------------------

    def submit(self, paths: Iterable[str]) -> None:
        self._pending.update(paths)
        self.state.last_event_at = time.time()
        self._wake.set()

    def request_rescan(self) -> asyncio.Future[None]:
        """Stat everything and read what changed; the future resolves when done."""
        self._rescan = True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return waiter

    # -- the loop (one task) -----------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            paths, self._pending = self._pending, set()
            rescan, self._rescan = self._rescan, False
            waiters, self._waiters = self._waiters, []
            started, bytes_before = time.monotonic(), self.state.bytes_read
            try:
                if rescan:
                    paths |= set(await asyncio.to_thread(self._changed_paths))
                    self.state.last_scan_at = time.time()
                await self._process(sorted(paths))
                await self.store.settle()
                self.state.last_error = None
            except Exception:
                # answered after the retry that the supervisor schedules
                self._waiters.extend(waiters)
                raise
            if rescan and not self.state.caught_up:
                self.state.caught_up = True
                seconds = time.monotonic() - started
                megabytes = (self.state.bytes_read - bytes_before) / 1e6
                log.info(
                    "ingest.caught_up",
                    files=self.state.files,
                    megabytes=round(megabytes, 1),
                    seconds=round(seconds, 3),
                    lines=self.lines,
                    skipped_lines=self.skipped_lines,
                )
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _changed_paths(self) -> list[str]:
        return changed_paths(self.roots, self.cursors, self._failing.keys() | self._refused.keys())

    async def _process(self, paths: Sequence[str]) -> None:
        batch: list[TailResult] = []
        held = done = 0
        next_report = time.monotonic() + PROGRESS_EVERY
        async for path, outcome in read_all(paths, self.cursors):
            done += 1
            if time.monotonic() >= next_report:
                next_report += PROGRESS_EVERY
                log.info(
                    "ingest.progress",
                    files_done=done,
                    files_total=len(paths),
                    megabytes=round(self.state.bytes_read / 1e6, 1),
                )
            result = self._checked(path, outcome)
            if result is None:
                continue
            batch.append(result)
            held += len(result.parsed.records)
            if held >= BATCH_RECORDS:
                await self._apply(batch)
                batch, held = [], 0
        if batch:
            await self._apply(batch)

    def _unstorable(self, path: str, exc: Exception) -> None:
        """A file whose data the store refused: logged once, retried at every rescan
        (its cursor stays where it was), and counted in `unreadable_files` meanwhile."""
        error = f"{type(exc).__name__}: {exc}"
        if self._refused.get(path) != error:
            log.error("file.unstorable", path=path, error=error)
        self._refused[path] = error
        self._count_unreadable()

    def _count_unreadable(self) -> None:
        self.state.unreadable = len(self._failing.keys() | self._refused.keys())

    def _checked(self, path: str, outcome: ReadOutcome) -> TailResult | None:
        """Log what a read met; None when there is nothing to apply."""
        if isinstance(outcome, FileNotFoundError):
            self._failing.pop(path, None)
            return None  # vanished: its counted usage stays
        if isinstance(outcome, OSError):
            if self._failing.get(path) != outcome.strerror:
                log.warning(
                    "file.unreadable", path=path, error=outcome.strerror, errno=outcome.errno
                )
            self._failing[path] = outcome.strerror or str(outcome)
            self._count_unreadable()
            return None
        result = outcome
        if self._failing.pop(path, None) is not None:
            log.info("file.readable_again", path=path)
            self._count_unreadable()
        if result.restarted:
            log.info("file.reread", path=path, reason=result.restarted)
        if result.parsed.skipped:
            log.warning(
                "lines.skipped",
                path=path,
                count=sum(result.parsed.skipped.values()),
                reasons=dict(result.parsed.skipped),
            )
        return result

    async def _apply(self, batch: list[TailResult]) -> None:
        try:
            outcome = await self.store.apply(batch)
        except DATA_ERRORS as exc:
            # a value SQLite cannot take (not a database problem, which the supervisor
            # retries): find the file that holds it and keep the rest
            if len(batch) > 1:
                for result in batch:
                    await self._apply([result])
                return
            self._unstorable(batch[0].path, exc)
            return
        for result in batch:
            if self._refused.pop(result.path, None) is not None:
                log.info("file.stored_again", path=result.path)
                self._count_unreadable()
        self.lines += outcome.lines
        self.skipped_lines += outcome.skipped
        for result in batch:
            if result.cursor is not None:
                self.cursors[result.path] = result.cursor
            self.state.bytes_read += result.bytes_read
        self.state.files = len(self.cursors)
        if outcome.changed:
            for listener in self.listeners:
                listener(outcome.changed)


async def catch_up(ingest: Ingest) -> None:
    """One rescan of every transcript, applied and settled (`sync --once`, `--offline`)."""
    done = await ingest.start()
    loop = asyncio.create_task(ingest.run(), name="ingest")
    try:
        await asyncio.wait({loop, done}, return_when=asyncio.FIRST_COMPLETED)
        if loop.done():
            loop.result()  # the loop failed: raise its error
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
