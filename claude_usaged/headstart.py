"""A head start: the first catch-up runs in a child process while the daemon starts.

Before it can serve, `claude-usaged run` spends about 0.3 s of CPU importing its
HTTP server, forwarder and watcher, and reading a cold 500 MB history takes
longer than that again; in one process both hold the same GIL. So `run` forks
(before any thread exists) and the child does `sync --once`'s catch-up (the same
`Ingest`, transactions, cursors and outbox) on the other core while the parent
imports. The parent waits for the child before it takes the database's lock.

The child only saves time, it decides nothing: whatever it did not finish (it
was killed, it failed, a file changed meanwhile) the daemon's own first rescan
reads, exactly as after any restart. It takes the instance lock like every
writer, so beside a running daemon it does nothing and the parent reports the
lock as before; with a port already taken or a team server that may not start,
there is no child and the parent's error comes at once. `CLAUDE_USAGED_HEAD_START=0`
turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from claude_usaged.settings import Settings

ENV = "CLAUDE_USAGED_HEAD_START"

POLL_SECONDS = 0.005
"""How often the parent looks for the child's exit where there is no pidfd (macOS)."""


@dataclass(slots=True)
class Outcome:
    """How the child ended, for the log and `/health`."""

    exit_status: int
    """0 when it caught up; otherwise the daemon's own rescan does the rest."""
    seconds: float
    peak_rss_mb: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "exit_status": self.exit_status,
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
        }


class HeadStart:
    """The forked child, seen from the parent. Reap it with exactly one waiter."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.outcome: Outcome | None = None

    def poll(self) -> Outcome | None:
        """The outcome if the child has exited (reaping it), else None."""
        if self.outcome is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self._ended(status, usage)
        return self.outcome

    def wait(self) -> Outcome:
        """Block until the child has exited."""
        if self.outcome is None:
            _pid, status, usage = os.wait4(self.pid, 0)
            self._ended(status, usage)
        assert self.outcome is not None
        return self.outcome

    async def finished(self) -> Outcome:
        """Wait for the child's exit without blocking the event loop or a thread."""
        fd = _pidfd(self.pid)
        if fd is not None:
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(fd, readable)
            try:
                await exited
            finally:
                loop.remove_reader(fd)
                os.close(fd)
            return self.wait()
        while (outcome := self.poll()) is None:
            await asyncio.sleep(POLL_SECONDS)
        return outcome

    def terminate(self) -> None:
        """Ask a running child to stop (the daemon is stopping); its transaction rolls back."""
        if self.outcome is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def _ended(self, status: int, usage: object) -> None:
        maxrss = getattr(usage, "ru_maxrss", 0)
        self.outcome = Outcome(
            exit_status=os.waitstatus_to_exitcode(status),
            seconds=round(time.monotonic() - self.started, 3),
            peak_rss_mb=round(maxrss / (1 << 20 if sys.platform == "darwin" else 1024), 1),
        )


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:  # an old kernel: poll instead
        return None


def _port_free(host: str, port: int) -> bool:
    """Whether the API could bind (as asyncio binds: every address, SO_REUSEADDR)."""
    if port == 0:
        return True
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False
    for family, kind, proto, _name, address in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
        except OSError:
            return False
    return True


def wanted(settings: Settings) -> bool:
    """Fork only where it can help: never when the daemon is about to refuse to start."""
    if not hasattr(os, "fork") or os.environ.get(ENV, "1").lower() in ("0", "false", "no"):
        return False
    return settings.team_problem() is None and _port_free(settings.host, settings.port)


def start(settings: Settings) -> HeadStart | None:
    """Fork the child; call it before any thread starts. None when not wanted."""
    if not wanted(settings):
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return HeadStart(pid)
    status = 1
    try:
        status = _child(settings, parent)
    finally:
        os._exit(status)


ORPHAN_POLL = 0.05
"""How often the child checks that the daemon that forked it still runs."""


def _end_if_orphaned(parent: int) -> None:
    """A thread of the child: a daemon killed outright (SIGKILL, OOM) cannot stop its
    child, so the child stops itself once its parent is gone."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL)
    os._exit(3)


def _child(settings: Settings, parent: int) -> int:
    # the parent answers Ctrl-C and systemd's stop; the child just ends (SQLite rolls back)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_end_if_orphaned, args=(parent,), daemon=True).start()
    import structlog

    log = structlog.get_logger(__name__)
    structlog.contextvars.bind_contextvars(process="head_start")
    try:
        return _catch_up(settings)
    except Exception as exc:
        log.warning("head_start.failed", error=f"{type(exc).__name__}: {exc}")
        return 1


def _catch_up(settings: Settings) -> int:
    from claude_usaged.ingest import Ingest, catch_up
    from claude_usaged.instance import AlreadyRunning, InstanceLock
    from claude_usaged.limits import limit_malloc_arenas
    from claude_usaged.pricing import PriceFileError, PriceTable
    from claude_usaged.store import Store, StoreError

    limit_malloc_arenas()
    # a short-lived process whose objects all live to its end: collecting finds nothing
    gc.disable()
    try:
        prices = PriceTable.load(settings.prices)
    except PriceFileError:
        return 2  # the parent says what is wrong with the file
    lock = InstanceLock(settings.db)
    try:
        lock.acquire()
    except (AlreadyRunning, OSError):
        return 2  # the parent reports the lock

    async def run() -> None:
        # the daemon builds the secondary indexes and checkpoints once it serves
        store = await Store.open(
            settings.db, prices, forward_to=settings.forward_target, defer_indexes=True
        )
        await store.defer_checkpoints()
        try:
            await catch_up(Ingest(store, settings.claude_dirs))
        except BaseException:
            await store.close()
            raise
        # not closed: closing the last connection merges the WAL into the database
        # (and fsyncs it) while the daemon waits; os._exit leaves it as a crash would,
        # every transaction committed, and the daemon checkpoints once it serves

    try:
        asyncio.run(run())
    except StoreError:
        return 2  # the parent reports the database
    finally:
        lock.release()
    return 0
