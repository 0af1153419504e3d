"""`claude-usaged sync --once`: catch up, forward everything pending, exit.

For people who keep the setup guide's cron job. It reads the transcripts into
the database exactly as the daemon does (no HTTP server, no watcher), then
drains the outbox with the daemon's forwarder, and prints one line:
`✓ Sync successful: Synced N projects, M sessions, K snapshots`, or why not.
Exit status: 0 when nothing is left to send, 1 when something is still
pending, 3 when it cannot start (bad setting, no forward URL, database, a
daemon running on the same database).

cron mails whatever a job writes to stderr, so a successful run writes nothing
there: only warnings are logged (`--verbose`: everything from `info` up), and
a failed delivery is the one `✗ Sync failed` line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from claude_usaged.client import ApiError, DaemonDown, fetch
from claude_usaged.daemon import StartupError, forwarder_for
from claude_usaged.forwarder import DrainResult
from claude_usaged.ingest import Ingest, catch_up
from claude_usaged.instance import AlreadyRunning, InstanceLock
from claude_usaged.paths import address_file
from claude_usaged.pricing import PriceFileError, PriceTable
from claude_usaged.settings import Settings, SettingsError, load_settings
from claude_usaged.store import Store, StoreError

EXIT_PENDING = 1
EXIT_STARTUP = 3


def _running_daemon(settings: Settings) -> tuple[int, str] | None:
    """The pid and URL of a live daemon on this database (from its address file)."""
    try:
        found = json.loads(address_file(settings.db).read_text())
        pid = int(found["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid, str(found.get("url") or "")


def _daemon_forwards(url: str) -> bool:
    """Whether the daemon at `url` says (in `/health`) that it forwards; False when unsure."""
    try:
        return bool(fetch(url, "/health", timeout=2.0)["forwarding"]["enabled"])
    except (DaemonDown, ApiError, ValueError, KeyError, TypeError):
        return False


def daemon_running_message(pid: int, db: object, forwards: bool) -> str:
    """Why sync will not run beside a daemon, and what to do instead."""
    head = (
        f"a daemon (pid {pid}) is running on {db}, and two processes may not write one database; "
    )
    if forwards:
        return head + "it already forwards by itself, so this cron job is not needed"
    return head + (
        "stop it, or let it forward instead: give it --forward-url "
        "(or CLAUDE_USAGED_FORWARD_URL, or forward_url in the config file) and restart it"
    )


async def sync_once(settings: Settings) -> DrainResult:
    """Catch up, then deliver until the outbox is empty or a request fails."""
    running = _running_daemon(settings)
    if running is not None:
        pid, url = running
        forwards = bool(url) and await asyncio.to_thread(_daemon_forwards, url)
        raise StartupError(daemon_running_message(pid, settings.db, forwards))
    try:
        prices = PriceTable.load(settings.prices)
    except PriceFileError as exc:
        raise StartupError(f"bad price file: {exc}") from None
    # the daemon's lock: no daemon (or another sync) starts writing while this one does
    lock = InstanceLock(settings.db)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise StartupError(f"{exc}; try again when it has finished") from None
    except OSError as exc:
        raise StartupError(f"cannot open database {settings.db}: {exc}") from None
    try:
        try:
            store = await Store.open(settings.db, prices, forward_to=settings.forward_url)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        try:
            await catch_up(Ingest(store, settings.claude_dirs))
            forwarder = forwarder_for(settings, store)
            assert forwarder is not None
            return await forwarder.drain()
        finally:
            await store.close()
    finally:
        lock.release()


def summary(result: DrainResult) -> str:
    """The setup guide's line, or the error and what is left."""
    d = result.delivered
    if result.error is None and not result.pending:
        return (
            f"✓ Sync successful: Synced {len(d.projects)} projects, "
            f"{len(d.sessions)} sessions, {d.snapshots} snapshots"
        )
    reason = result.error or "a bulk load is still being settled"
    return (
        f"✗ Sync failed: {reason} (synced {d.snapshots} snapshots, "
        f"{result.pending} responses still pending)"
    )


def main(flags: Mapping[str, Any]) -> int:
    from claude_usaged.log import configure_logging

    try:
        settings = load_settings(flags)
    except SettingsError as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    if not settings.forward_url:
        print(
            "claude-usaged: sync needs somewhere to send to: --forward-url, "
            "CLAUDE_USAGED_FORWARD_URL or CLAUDE_USAGE_API_URL",
            file=sys.stderr,
        )
        return EXIT_STARTUP
    if flags.get("verbose"):
        level = "debug" if settings.log_level == "debug" else "info"
    else:
        level = "error" if settings.log_level == "error" else "warning"
    configure_logging(settings.log_format, level)
    try:
        result = asyncio.run(sync_once(settings))
    except StartupError as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    line = summary(result)
    ok = result.error is None and not result.pending
    print(line, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else EXIT_PENDING
