"""Starts the parts in order, waits on one stop event, stops them in reverse.

Startup: prices, store, read model, ingest, watcher, HTTP API, address file.
Signal handlers only set the stop event. A part that cannot start raises
`StartupError`, which the CLI turns into one line and exit status 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiohttp import web

from claude_usaged import outbox, sdnotify, starting
from claude_usaged.api import ApiContext, make_app
from claude_usaged.forwarder import Forwarder
from claude_usaged.headstart import STOP_GRACE, HeadStart
from claude_usaged.ingest import Ingest
from claude_usaged.instance import AlreadyRunning, InstanceLock
from claude_usaged.limits import limit_malloc_arenas, raise_open_files_limit
from claude_usaged.paths import address_file
from claude_usaged.pricing import PriceFileError, PriceTable
from claude_usaged.settings import Settings
from claude_usaged.stats import ReadModel
from claude_usaged.store import Store, StoreError
from claude_usaged.team import Team
from claude_usaged.watcher import RESCAN, Watcher

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

SHUTDOWN_GRACE = 4.0


class StartupError(RuntimeError):
    """A part could not start; the message is the one line the user sees."""


def http_url(host: str, port: int) -> str:
    """`http://host:port`, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_address(path: Path, host: str, port: int) -> None:
    """Atomically write where the API listens, for the CLI and tests to find."""
    data = {"url": http_url(host, port), "host": host, "port": port, "pid": os.getpid()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def _feed(watcher: Watcher, ingest: Ingest) -> None:
    async for batch in watcher.batches():
        if RESCAN in batch:
            batch.discard(RESCAN)
            ingest.request_rescan()
        if batch:
            ingest.submit(batch)


async def _reconcile(ingest: Ingest, watcher: Watcher, interval: float) -> None:
    """The slow timer: restart a dead watcher, then stat everything.

    watchdog drops inotify's queue overflow without a word (its issue #654),
    so this rescan is what turns a missed event into a late count, not a loss.
    """
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(watcher.ensure_running)
        ingest.request_rescan()


async def _notify_caught_up(caught_up: asyncio.Future[None], ingest: Ingest, url: str) -> None:
    """Tell systemd (STATUS=) what the daemon serves once the first full rescan is done."""
    await caught_up
    state = ingest.state
    sdnotify.notify(f"STATUS=serving {url}; {state.files} files, {ingest.lines} lines read")


async def _once_caught_up(
    caught_up: asyncio.Future[None], then: Callable[[], Awaitable[None]]
) -> None:
    """`then()` once the first full rescan is done (and the daemon serves its result)."""
    await caught_up
    await then()


async def _watchdog(interval: float) -> None:
    """Ping systemd's watchdog from the event loop, so a stuck loop gets the daemon restarted."""
    while True:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def _supervise_ingest(ingest: Ingest) -> None:
    """Run the ingest loop; on a failure (disk full, locked database) log loudly and retry."""
    delay = 1.0
    while True:
        try:
            await ingest.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if ingest.state.last_error is None:
                delay = 1.0  # it had recovered since the last failure
            ingest.state.last_error = str(exc)
            log.error("ingest.failed", error=str(exc), retry_in_seconds=delay, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
            ingest.request_rescan()


def _check_team(settings: Settings) -> None:
    problem = settings.team_problem()
    if problem is not None:
        raise StartupError(problem)


def _listen_error(host: str, port: int, exc: OSError) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"cannot listen on {host}:{port}: the port is already in use "
            "(choose another with --port, or --port 0 for any free one)"
        )
    return StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def forwarder_for(settings: Settings, store: Store) -> Forwarder | None:
    """The outbox's delivery loop when a forward URL is set (`run` and `sync --once`)."""
    if not settings.forward_url:
        return None
    token = settings.forward_token.get_secret_value() if settings.forward_token else None
    return Forwarder(
        store,
        settings.forward_url,
        token,
        timeout=settings.forward_timeout,
        token_hint=settings.where_to_set("forward_token"),
        url_hint=settings.where_to_set("forward_url"),
    )


def _loopback_of(host: str) -> str:
    """An address of this host for a bound one (`0.0.0.0` is not one to connect to)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


class Daemon:
    """The running daemon; `await Daemon(settings).run()` until stopped."""

    def __init__(self, settings: Settings, head_start: HeadStart | None = None) -> None:
        self.settings = settings
        self.head_start = head_start
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._store: Store | None = None
        self._read: ReadModel | None = None
        self._watcher: Watcher | None = None
        self._runner: web.AppRunner | None = None
        self.forwarder: Forwarder | None = None
        self.address: tuple[str, int] | None = None
        self._lock: InstanceLock | None = None
        self._team: Team | None = None
        self._starting: web.AppRunner | None = None
        self._sockets: list[socket.socket] = []
        """Bound before the head start's child is done (starting.py), served after."""

    async def _until_stopped(self, work: Coroutine[Any, Any, _T]) -> asyncio.Future[_T]:
        """Run `work` until it is done or a stop comes; returns it, done or still running."""
        running = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self.stop_event.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        return running

    async def _after_head_start(self) -> bool:
        """Wait for the head start's child to finish its catch-up; False if a stop came first."""
        head = self.head_start
        if head is None:
            return True
        finished = await self._until_stopped(head.finished())
        if not finished.done():
            head.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(finished), STOP_GRACE)
            except TimeoutError:
                head.kill()  # stopped (SIGSTOP), or stuck: SIGKILL ends it anyway
        outcome = await finished
        log.info("head_start.done", **outcome.to_json())
        return not self.stop_event.is_set()

    async def _child_holds_lock(self) -> bool:
        """Whether the head start's child got the database's lock (before that, the
        address file may still belong to another daemon on this database)."""
        assert self.head_start is not None
        locked = await self._until_stopped(self.head_start.holds_lock())
        if not locked.done():
            locked.cancel()
            return False
        return locked.result()

    async def _listen_while_starting(self) -> None:
        """Answer on the daemon's address while the child works (starting.py)."""
        s = self.settings
        try:
            self._sockets = starting.bind(s.host, s.port)
        except OSError as exc:
            raise _listen_error(s.host, s.port, exc) from None
        self._starting = await starting.serve(self._sockets)
        host, port = self._sockets[0].getsockname()[:2]
        self.address = (host, port)
        write_address(address_file(s.db), host, port)
        url = http_url(host, port)
        log.info("daemon.starting", url=url, reason="head start: first catch-up in a child")
        sdnotify.notify("READY=1", f"STATUS=listening on {url}; catching up")

    async def startup(self) -> None:
        s = self.settings
        _check_team(s)
        self._watcher = Watcher(s.claude_dirs)
        if self.head_start is not None:
            # idle until the child is done: add the watches meanwhile (events queue up)
            await self._watcher.start()
            # a stand-in only while the child still works (a small history: it is done)
            if await self._child_holds_lock() and self.head_start.poll() is None:
                await self._listen_while_starting()
        if not await self._after_head_start():
            return
        try:
            prices = PriceTable.load(s.prices)
        except PriceFileError as exc:
            raise StartupError(f"bad price file: {exc}") from None
        self._lock = InstanceLock(s.db)
        try:
            self._lock.acquire()
        except AlreadyRunning as exc:
            self._lock = None
            raise StartupError(str(exc)) from None
        except OSError as exc:
            self._lock = None
            raise StartupError(f"cannot open database {s.db}: {exc}") from None
        try:
            self._store = await Store.open(s.db, prices, forward_to=s.forward_target, deferred=True)
            if s.accept_forwarded:
                raise_open_files_limit()
                self._team = await Team.open(s.db, prices, s.zone)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:  # the team directory beside the database
            raise StartupError(f"cannot create the team databases: {exc}") from None
        store = self._store
        ingest = Ingest(store, s.claude_dirs)
        first_scan = await ingest.start()
        self.forwarder = forwarder_for(s, store)
        if self.forwarder is not None:
            ingest.listeners.append(self.forwarder.wake)
        self._read = await ReadModel.open(s.db, s.zone, lambda: store.generation)
        ctx = ApiContext(
            read=self._read,
            ingest=ingest,
            watcher=self._watcher,
            db_path=str(s.db),
            started_at=time.time(),
            forwarder=self.forwarder,
            machine_id=await store.write(outbox.machine_id, responses=False),
            team=self._team,
            ingest_token=s.ingest_token.get_secret_value() if s.ingest_token else None,
            head_start=head.outcome.to_json()
            if (head := self.head_start) and head.outcome
            else None,
        )
        # listen first: a taken port fails before any reading starts
        self._runner = web.AppRunner(make_app(ctx), access_log=None, handle_signals=False)
        await self._runner.setup()
        if self._starting is not None:
            # take over the stand-in's sockets: what connected meanwhile waits for us
            await self._starting.cleanup()
            self._starting = None
        if self._sockets:
            for sock in self._sockets:
                await web.SockSite(self._runner, sock).start()
        else:
            try:
                await web.TCPSite(self._runner, s.host, s.port, reuse_address=True).start()
            except OSError as exc:
                raise _listen_error(s.host, s.port, exc) from None
        host, port = self._runner.addresses[0][:2]
        if self._team is not None and self.forwarder is None:
            # the team's view includes this machine's own transcripts: forward them to itself
            self.forwarder = ctx.forwarder = Forwarder(
                store, http_url(_loopback_of(host), port) + "/v1/ingest", ctx.ingest_token
            )
            ingest.listeners.append(self.forwarder.wake)
        self._tasks.append(asyncio.create_task(_supervise_ingest(ingest), name="ingest"))
        if self.head_start is None:
            await self._watcher.start()
            # a change made while the watches were being added sent no event: look once more
            caught_up = ingest.request_rescan()
        else:
            caught_up = first_scan  # the watches were in place before it began
        self._tasks.append(asyncio.create_task(_feed(self._watcher, ingest), name="watch"))
        self._tasks.append(
            asyncio.create_task(
                _reconcile(ingest, self._watcher, s.reconcile_interval), name="reconcile"
            )
        )
        if self.forwarder is not None:
            # last started, first stopped: an unacknowledged batch is simply sent again.
            # From the end of the first catch-up: a batch frozen before it would write a
            # cold catch-up's staged rows into `responses` (again at each batch as the
            # load goes on) and hold up the catch-up it waits for
            forwarding = _once_caught_up(caught_up, self.forwarder.run)
            self._tasks.append(asyncio.create_task(forwarding, name="forward"))
        self.address = (host, port)
        write_address(address_file(s.db), host, port)
        log.info(
            "daemon.listening",
            url=http_url(host, port),
            db=str(s.db),
            roots=[str(r) for r in s.claude_dirs],
            tz=s.tz,
            prices=prices.version,
        )
        for root in s.claude_dirs:
            if not (root / "projects").is_dir():
                # normal for one of the two default roots; a typo otherwise
                log.info("root.waiting", path=str(root / "projects"), reason="does not exist yet")
        url = http_url(host, port)
        sdnotify.notify("READY=1", f"STATUS=listening on {url}; catching up")
        self._tasks.append(
            asyncio.create_task(_notify_caught_up(caught_up, ingest, url), name="notify")
        )
        # the rows the first catch-up staged, the indexes it left, the WAL merged
        self._tasks.append(
            asyncio.create_task(_once_caught_up(caught_up, store.finish), name="finish")
        )
        interval = sdnotify.watchdog_interval()
        if interval is not None:
            self._tasks.append(asyncio.create_task(_watchdog(interval), name="watchdog"))

    async def shutdown(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, SHUTDOWN_GRACE)
        if self._starting is not None:
            await self._starting.cleanup()
        if self._runner is not None:
            await self._runner.cleanup()
        for sock in self._sockets:
            sock.close()  # if the API never took them over (a stop while starting)
        if self.address is not None:  # only the daemon that wrote it removes it
            with contextlib.suppress(OSError):
                address_file(self.settings.db).unlink()
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
        if self._read is not None:
            await self._read.close()
        if self._team is not None:
            await self._team.close()
        if self._store is not None:
            await self._store.close()
        if self._lock is not None:
            self._lock.release()
        if self.address is not None:
            log.info("daemon.stopped")

    async def run(self) -> None:
        limit_malloc_arenas()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        try:
            await self.startup()
            await self.stop_event.wait()
            log.info("daemon.stopping")
            sdnotify.notify("STOPPING=1")
        finally:
            await self.shutdown()
