"""watchdog's observer thread -> an async iterator of batched sets of changed paths.

Each root's `projects/` tree is watched recursively. A root that does not
exist yet is waited for by watching its nearest existing ancestor (not
recursively), and picked up as soon as it appears. Events are debounced into
sets; a `None` in the stream means "something may have been missed, rescan".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

log = structlog.get_logger(__name__)

WANTED = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
"""The events asked of the kernel (watchdog turns this list into the inotify mask):
changes, and the close of a file opened for writing. Not opens nor closes after
reading: every program that reads the transcripts (a catch-up, ccusage, grep) would
wake the observer thread twice per file, for nothing to count; a reading catch-up of
1,450 files cost the daemon 0.15 s of CPU in watchdog's Python."""

RESCAN = "<rescan>"
"""Put in a batch when whole directories appeared: the ingest rescans them."""


def _as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, key: str) -> None:
        self._watcher = watcher
        self._key = key

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [_as_str(event.src_path)]
        if isinstance(event, DirDeletedEvent) and paths[0] == self._key:
            # the watched projects/ itself is gone (its emitter has stopped)
            self._watcher.lost(self._key)
            return
        if getattr(event, "dest_path", ""):
            paths.append(_as_str(event.dest_path))
        if isinstance(event, DirCreatedEvent | DirMovedEvent):
            self._watcher.push({RESCAN})
            return
        wanted = {p for p in paths if p.endswith(".jsonl")}
        if wanted:
            self._watcher.push(wanted)


class _RootHandler(FileSystemEventHandler):
    """Watches an ancestor of a missing root; any change there re-checks the roots."""

    def __init__(self, watcher: Watcher, key: str, anchor: str) -> None:
        self._watcher = watcher
        self._key = key
        self._anchor = anchor

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirDeletedEvent) and _as_str(event.src_path) == self._anchor:
            self._watcher.lost(self._key)  # the ancestor itself is gone: wait higher up
            return
        self._watcher.schedule_roots()


_WATCHDOG_LOG = logging.getLogger("watchdog.observers.inotify_c")
"""watchdog reports a kernel queue overflow only as a warning on this logger."""


class _OverflowHandler(logging.Handler):
    """Turns watchdog's overflow warning into a rescan: lost events, not lost counts."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__(level=logging.WARNING)
        self._watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._watcher.overflows += 1
            log.warning("watch.overflow", action="rescan")
            self._watcher.push({RESCAN})


class Watcher:
    """Owns the observer; `batches()` yields debounced sets of changed paths."""

    def __init__(self, roots: Sequence[Path], debounce: float = 0.05) -> None:
        self.roots = list(roots)
        self.debounce = debounce
        self._observer: BaseObserver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[set[str]] = asyncio.Queue()
        self._lock = threading.Lock()
        self._watches: dict[str, ObservedWatch] = {}
        self.error: str | None = None
        self._overflow = _OverflowHandler(self)
        self.overflows = 0

    @property
    def state(self) -> str:
        if self.error:
            return "error"
        if self._observer is None:
            return "stopped"
        return "running" if self._observer.is_alive() else "stopped"

    @property
    def watched(self) -> list[str]:
        return sorted(self._watches)

    async def start(self) -> None:
        """Start the observer; adding recursive watches runs in a thread (it walks trees)."""
        self._loop = asyncio.get_running_loop()
        _WATCHDOG_LOG.addHandler(self._overflow)
        self._observer = Observer()
        self._observer.start()
        await asyncio.to_thread(self.schedule_roots)

    def ensure_running(self) -> bool:
        """Restart a dead observer thread (it dies on inotify errors); True if it did."""
        if self._observer is None or self._observer.is_alive():
            if self._observer is not None:
                self.schedule_roots()  # a root whose creation event was missed
            return False
        log.warning("watch.restarted", error=self.error)
        with self._lock:
            self._watches.clear()
        self.error = None
        self._observer = Observer()
        self._observer.start()
        self.schedule_roots()
        return True

    def stop(self) -> None:
        _WATCHDOG_LOG.removeHandler(self._overflow)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)

    def push(self, paths: set[str]) -> None:
        """Called from the observer thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, paths)

    def schedule_roots(self) -> None:
        """Watch every existing `projects/` tree; wait for the missing ones."""
        observer = self._observer
        if observer is None:
            return
        appeared = False
        with self._lock:
            waiting = True
            while waiting:
                # A folder made while a wait watch was being added sent no event
                # to it: look again until no new wait watch is needed.
                waiting = False
                for root in self.roots:
                    projects = root / "projects"
                    if projects.is_dir():
                        key = str(projects)
                        if key not in self._watches:
                            appeared = True
                            self._watch(observer, key, _Handler(self, key), recursive=True)
                            self._unwatch_waiting(projects)
                        continue
                    anchor = projects
                    while not anchor.exists() and anchor != anchor.parent:
                        anchor = anchor.parent
                    key = f"wait:{anchor}"
                    if anchor.is_dir() and key not in self._watches:
                        handler = _RootHandler(self, key, str(anchor))
                        self._watch(observer, key, handler, recursive=False, path=anchor)
                        if key in self._watches:
                            waiting = True
        if appeared:
            self.push({RESCAN})

    def lost(self, key: str) -> None:
        """A watched folder was deleted: drop its watch and wait for `projects/` to reappear."""
        with self._lock:
            watch = self._watches.pop(key, None)
            if watch is not None and self._observer is not None:
                with contextlib.suppress(KeyError, OSError):
                    self._observer.unschedule(watch)
        log.info("watch.lost", path=key)
        self.schedule_roots()

    def _watch(
        self,
        observer: BaseObserver,
        key: str,
        handler: FileSystemEventHandler,
        recursive: bool,
        path: Path | None = None,
    ) -> None:
        target = str(path) if path is not None else key
        try:
            self._watches[key] = observer.schedule(
                handler, target, recursive=recursive, event_filter=WANTED
            )
            log.info("watch.added", path=target, recursive=recursive)
        except OSError as exc:
            self.error = f"{target}: {exc}"
            log.warning("watch.failed", path=target, error=str(exc))

    def _unwatch_waiting(self, projects: Path) -> None:
        for key in [k for k in self._watches if k.startswith("wait:")]:
            anchor = Path(key[5:])
            if projects.is_relative_to(anchor) and not any(
                (r / "projects").is_relative_to(anchor) and not (r / "projects").is_dir()
                for r in self.roots
            ):
                watch = self._watches.pop(key)
                if self._observer is not None:
                    with contextlib.suppress(KeyError, OSError):
                        self._observer.unschedule(watch)

    async def batches(self) -> AsyncIterator[set[str]]:
        """Debounced sets of changed `.jsonl` paths (and RESCAN markers)."""
        while True:
            batch = set(await self._queue.get())
            await asyncio.sleep(self.debounce)
            while not self._queue.empty():
                batch |= self._queue.get_nowait()
            yield batch
