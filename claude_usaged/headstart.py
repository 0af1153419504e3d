"""A head start: the first catch-up runs in a child process while the daemon starts.

Before it can serve, `claude-usaged run` spends about 0.5 s of CPU reading its
settings (pydantic) and importing its HTTP server, forwarder and watcher, and
reading a cold 500 MB history takes longer than that again; in one process all
of it holds the same GIL. So `run` forks first thing (no thread exists yet):
the child imports what a catch-up needs while the parent reads its settings,
gets its `Job` on a pipe, and does `sync --once`'s catch-up (the same `Ingest`,
transactions, cursors and outbox) while the parent imports the rest at a lower
priority (`import_behind`): the catch-up is what the user waits for.
The parent waits for the child before it takes the database's lock.

The child only saves time, it decides nothing: whatever it did not finish (it
was killed, it failed, a file changed meanwhile) the daemon's own first rescan
reads, exactly as after any restart. It takes the instance lock like every
writer, so beside a running daemon it does nothing and the parent reports the
lock as before. With bad settings, a port already taken or a team server that
may not start, the child gets no job and ends at once, and the parent's error
comes as before. It ends itself, too, if the daemon dies. `CLAUDE_USAGED_HEAD_START=0`
turns it off.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from claude_usaged import starting

if TYPE_CHECKING:  # the child must not import pydantic: it gets a Job
    from claude_usaged.settings import Settings

ENV = "CLAUDE_USAGED_HEAD_START"

LOCKED = b"L"
"""What the child writes on its status pipe once it holds the database's lock."""

STOP_GRACE = 2.0
"""Seconds a stopping daemon gives its child to end on SIGTERM before SIGKILL."""

POLL_SECONDS = 0.005
"""How often the parent looks for the child's exit where there is no pidfd (macOS)."""

YIELD_NICE = 10
"""Added to the niceness of the thread that imports the daemon while the child catches
up (measured: 10 and 19 alike take ~0.05 s off a 500 MB cold catch-up, 5 half that)."""

DAEMON_IMPORTS = ("aiohttp.web", "watchdog.observers", "aiosqlite", "claude_usaged.daemon")
"""The daemon's imports, biggest first, in the steps `import_behind` takes them."""


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

    def __init__(self, pid: int, status_fd: int | None = None) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.outcome: Outcome | None = None
        self._status_fd = status_fd

    async def holds_lock(self) -> bool:
        """Wait until the child has the database's lock (True), or will never have it:
        it found the lock taken, failed or ended first (False)."""
        fd, self._status_fd = self._status_fd, None
        if fd is None:
            return False
        try:
            await _readable(fd)
            return os.read(fd, 1) == LOCKED
        finally:
            os.close(fd)

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
        import asyncio  # not at the top: `run` imports this module before it forks

        if self.outcome is not None:
            return self.outcome  # reaped already: its pid may be another process's now
        fd = _pidfd(self.pid)
        if fd is not None:
            try:
                await _readable(fd)  # a pidfd becomes readable when the process exits
            finally:
                os.close(fd)
            return self.wait()
        while (outcome := self.poll()) is None:
            await asyncio.sleep(POLL_SECONDS)
        return outcome

    def terminate(self) -> None:
        """Ask a running child to stop (the daemon is stopping); its transaction rolls back."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """End a child that did not stop (a stopped process ignores SIGTERM until resumed)."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.outcome is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self) -> Outcome:
        """terminate, and kill after STOP_GRACE seconds; reaps the child (blocking)."""
        self.terminate()
        deadline = time.monotonic() + STOP_GRACE
        while (outcome := self.poll()) is None:
            if time.monotonic() > deadline:
                self.kill()
                return self.wait()
            time.sleep(POLL_SECONDS)
        return outcome

    def _ended(self, status: int, usage: object) -> None:
        maxrss = getattr(usage, "ru_maxrss", 0)
        self.outcome = Outcome(
            exit_status=os.waitstatus_to_exitcode(status),
            seconds=round(time.monotonic() - self.started, 3),
            peak_rss_mb=round(maxrss / (1 << 20 if sys.platform == "darwin" else 1024), 1),
        )


async def _readable(fd: int) -> None:
    """Wait until `fd` is readable, on the running event loop (no thread)."""
    import asyncio

    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def import_behind(head: HeadStart | None, modules: Sequence[str] = DAEMON_IMPORTS) -> None:
    """Import the daemon's modules (0.25 s of CPU: aiohttp alone loads the system's
    certificates) without taking a core from the child while it catches up: what the
    user waits for is the catch-up, and the daemon needs its modules only once the
    child is done. Each module is imported in a thread of its own at a lower priority
    (Linux: a thread's niceness is its own; it cannot be raised again), so once the
    child has exited the rest are imported here, at full priority: on a busy machine,
    a niced import delays the start by one module at most."""
    for module in modules:
        if sys.platform == "linux" and head is not None and head.poll() is None:
            _import_niced(module)
        importlib.import_module(module)  # at once when the thread imported it


def _import_niced(module: str) -> None:
    """Import `module` in a thread at YIELD_NICE; an error is left to the caller's
    own import of it, which raises it again."""

    def work() -> None:
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):
            os.setpriority(
                os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + YIELD_NICE)
            )
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    thread = threading.Thread(target=work, name="import", daemon=True)
    thread.start()
    thread.join()


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:  # an old kernel: poll instead
        return None


def _port_free(host: str, port: int) -> bool:
    """Whether the API could bind host:port (bound as the daemon binds, then let go)."""
    if port == 0:
        return True
    try:
        sockets = starting.bind(host, port)
    except OSError:
        return False
    for sock in sockets:
        sock.close()
    return True


_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


class BadSwitch(ValueError):
    """CLAUDE_USAGED_HEAD_START holds something else than on or off."""


def enabled() -> bool:
    """Whether `run` forks a head start at all (`fork` exists and it is not turned off).

    Raises BadSwitch for a value of CLAUDE_USAGED_HEAD_START that is neither on nor off."""
    value = os.environ.get(ENV, "1").strip().lower()
    if value not in _ON + _OFF:
        raise BadSwitch(
            f"bad environment variable {ENV}={os.environ[ENV]!r}: "
            f"use 1 to start the first catch-up in a child (the default) or 0 not to"
        )
    return hasattr(os, "fork") and value in _ON


def wanted(settings: Settings) -> bool:
    """Fork only where it can help: never when the daemon is about to refuse to start."""
    if not enabled():
        return False
    return settings.team_problem() is None and _port_free(settings.host, settings.port)


@dataclass(frozen=True, slots=True)
class Job:
    """What the child needs of the settings (sent as JSON: the child imports no pydantic)."""

    db: str
    claude_dirs: list[str]
    prices: str | None
    forward_target: str | None
    log_format: str
    log_level: str

    @classmethod
    def of(cls, settings: Settings) -> Job:
        return cls(
            db=str(settings.db),
            claude_dirs=[str(d) for d in settings.claude_dirs],
            prices=None if settings.prices is None else str(settings.prices),
            forward_target=settings.forward_target,
            log_format=settings.log_format,
            log_level=settings.log_level,
        )


class Pending:
    """A child forked before the settings were read, waiting for its job on a pipe."""

    def __init__(self, pid: int, job_fd: int, status_fd: int) -> None:
        self.pid = pid
        self._fd: int | None = job_fd
        self._status_fd = status_fd

    def go(self, settings: Settings) -> HeadStart | None:
        """Send the job; or, when a head start cannot help, end the child (None)."""
        if not wanted(settings):
            self.cancel()
            return None
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            os.write(fd, json.dumps(asdict(Job.of(settings))).encode())
        except OSError:
            pass  # the child is gone already: the daemon reads its status and does the work
        finally:
            os.close(fd)
        return HeadStart(self.pid, self._status_fd)

    @property
    def waiting(self) -> bool:
        """True until the job is sent or the child is cancelled."""
        return self._fd is not None

    def cancel(self) -> None:
        """No job: the child reads end-of-file and exits; reaped here."""
        if self._fd is not None:
            os.close(self._fd)
            os.close(self._status_fd)
            self._fd = None
            os.waitpid(self.pid, 0)


def fork_early() -> Pending | None:
    """Fork before the settings are read (call it before any thread starts).

    The child imports what the catch-up needs while the parent reads its settings
    (pydantic) and sets up logging; then `Pending.go` sends it the job. None when
    head starts are turned off or there is no `fork`.
    """
    if not enabled():
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    job_read, job_write = os.pipe()
    status_read, status_write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(job_read)
        os.close(status_write)
        return Pending(pid, job_write, status_read)
    os.close(job_write)
    os.close(status_read)
    status = 1
    try:
        status = _child(job_read, status_write, parent)
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


def _child(job_fd: int, status_fd: int, parent: int) -> int:
    # the parent answers Ctrl-C and systemd's stop; the child just ends (SQLite rolls back)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_end_if_orphaned, args=(parent,), daemon=True).start()
    # imported while the parent reads its settings. Not rich: structlog imports it
    # only to draw tracebacks on a terminal, the child logs a few plain events, and
    # rich's imports (80 ms) would outlast the parent's settings
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    import structlog

    from claude_usaged import ingest, instance, limits, pricing, store  # noqa: F401
    from claude_usaged.log import configure_logging

    with os.fdopen(job_fd, "rb") as pipe:
        data = pipe.read()
    if not data:
        return 0  # cancelled: the daemon will not start, or will not need it
    job = Job(**json.loads(data))
    configure_logging(job.log_format, job.log_level)  # type: ignore[arg-type]
    log = structlog.get_logger(__name__)
    structlog.contextvars.bind_contextvars(process="head_start")
    try:
        return _catch_up(job, status_fd)
    except Exception as exc:
        log.warning("head_start.failed", error=f"{type(exc).__name__}: {exc}")
        return 1


_UNCLOSED: list[object] = []
"""The child's store, left open on purpose until `os._exit`."""


def _catch_up(job: Job, status_fd: int) -> int:
    from claude_usaged.ingest import Ingest, catch_up
    from claude_usaged.instance import AlreadyRunning, InstanceLock
    from claude_usaged.limits import limit_malloc_arenas
    from claude_usaged.pricing import PriceFileError, PriceTable
    from claude_usaged.store import Store, StoreError

    limit_malloc_arenas()
    # a short-lived process whose objects all live to its end: collecting finds nothing
    gc.disable()
    try:
        prices = PriceTable.load(None if job.prices is None else Path(job.prices))
    except PriceFileError:
        return 2  # the parent says what is wrong with the file
    db = Path(job.db)
    lock = InstanceLock(db)
    try:
        lock.acquire()
    except (AlreadyRunning, OSError):
        return 2  # the parent reports the lock
    # the daemon may now say where it listens: no other daemon owns this database
    os.write(status_fd, LOCKED)
    os.close(status_fd)

    async def run() -> None:
        # deferred: the daemon writes the staged rows, builds the secondary indexes and
        # merges the WAL once it serves
        store = await Store.open(db, prices, forward_to=job.forward_target, deferred=True)
        try:
            await catch_up(Ingest(store, [Path(d) for d in job.claude_dirs]))
        except BaseException:
            await store.close()
            raise
        # not closed: closing the last connection merges the WAL into the database
        # (and fsyncs it) while the daemon waits; os._exit leaves it as a crash would,
        # every transaction committed, and the daemon checkpoints once it serves.
        # Kept referenced until then: collected, aiosqlite would warn and stop its
        # thread, which then reports the closed event loop on the daemon's stderr.
        _UNCLOSED.append(store)

    import asyncio

    try:
        asyncio.run(run())
    except StoreError:
        return 2  # the parent reports the database
    finally:
        lock.release()
    return 0
