"""`claude-usaged sync --once` as a real process against a real receiver."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from conftest import RunningDaemon
from receiver import OK, serve, status
from test_forwarder import SECRET, history, sender_totals

from claude_usaged.instance import InstanceLock
from claude_usaged.sync import daemon_running_message

TIMEOUT = 30.0


@dataclass
class Done:
    code: int
    out: str
    err: str


async def sync(root: Path, db: Path, *args: str, **env: str) -> Done:
    """Run `python -m claude_usaged sync --once` with only the given settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGE")}
    clean.update(CLAUDE_CONFIG_DIR=str(root), HOME=str(db.parent / "home"), **env)
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "claude_usaged", "sync", "--once", "--db", str(db)),
        *args,
        env=clean,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


def pending(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


async def test_sync_once_delivers_everything_and_prints_the_summary(
    tmp_path: Path, claude_root: Path
) -> None:
    """It catches up, sends every response and prints the setup guide's line; a second
    run has nothing left to send."""
    history(claude_root, 700)
    history(claude_root, 5, session="s2", cwd="/home/dev/web", start=900)
    db = tmp_path / "usage.sqlite3"
    async with serve() as rec:
        done = await sync(claude_root, db, "--forward-url", rec.url, "--forward-token", "t0k")
        assert (done.code, done.out, done.err) == (
            0,
            "✓ Sync successful: Synced 2 projects, 2 sessions, 705 snapshots\n",
            "",
        )
        assert rec.totals() == sender_totals(db) and len(rec.totals()) == 705
        assert {a.authorization for a in rec.attempts} == {"Bearer t0k"}
        assert SECRET.encode() not in rec.raw()
        again = await sync(claude_root, db, "--forward-url", rec.url)
        assert (again.code, again.out) == (
            0,
            "✓ Sync successful: Synced 0 projects, 0 sessions, 0 snapshots\n",
        )
        assert len(rec.accepted_batches) == 2
    assert pending(db) == 0


async def test_sync_once_reports_a_rejection_and_exits_non_zero_until_it_works(
    tmp_path: Path, claude_root: Path
) -> None:
    """A 401 is printed with its hint (never the token), the exit is 1 with the usage still
    pending; the next run after the fix delivers it with the same batch."""
    history(claude_root, 3)
    db = tmp_path / "usage.sqlite3"
    token = "tok-SECRET-sync-42"
    async with serve() as rec:
        rec.fallback = status(401, body=token)
        done = await sync(claude_root, db, "--forward-url", rec.url, "--forward-token", token)
        assert done.code == 1
        assert done.out == ""
        # the token came from the flag: the hint names the flag
        assert "✗ Sync failed: 401 Unauthorized — check --forward-token " in done.err
        assert "3 responses still pending" in done.err
        assert token not in done.err + done.out
        assert pending(db) == 3
        rec.fallback = OK
        done = await sync(claude_root, db, "--forward-url", rec.url, "--forward-token", token)
        assert done.code == 0, done.err
        assert done.out.startswith("✓ Sync successful: Synced 1 projects, 1 sessions, 3 snapshots")
        assert rec.attempts[0].idempotency_key == rec.attempts[-1].idempotency_key
    assert pending(db) == 0


async def test_sync_once_uses_the_setup_guide_variables(tmp_path: Path, claude_root: Path) -> None:
    """CLAUDE_USAGE_API_URL and CLAUDE_USAGE_API_TOKEN post to /app/claude-usage/agent-sync/."""
    history(claude_root, 4)
    db = tmp_path / "usage.sqlite3"
    async with serve("/app/claude-usage/agent-sync/") as rec:
        base = rec.url.removesuffix("/app/claude-usage/agent-sync/")
        done = await sync(
            claude_root, db, CLAUDE_USAGE_API_URL=base, CLAUDE_USAGE_API_TOKEN="jwt-token"
        )
        assert done.code == 0, done.err
        assert {(a.path, a.authorization) for a in rec.attempts} == {
            ("/app/claude-usage/agent-sync/", "Bearer jwt-token")
        }
        assert rec.totals() == sender_totals(db)


async def test_sync_once_with_an_unreachable_receiver_fails_with_pending_work(
    tmp_path: Path, claude_root: Path
) -> None:
    """Nothing listening: one line saying why, exit 1, the outbox keeps everything."""
    history(claude_root, 2)
    db = tmp_path / "usage.sqlite3"
    async with serve() as rec:
        url = rec.url
    done = await sync(claude_root, db, "--forward-url", url, "--forward-timeout", "2")
    assert done.code == 1
    host_port = url.split("/")[2]
    assert done.err == (
        f"✗ Sync failed: ClientConnectorError: Cannot connect to host {host_port} "
        f"[Connect call failed ('127.0.0.1', {host_port.split(':')[1]})] "
        "(synced 0 snapshots, 2 responses still pending)\n"
    )
    assert pending(db) == 2


async def test_a_successful_sync_logs_progress_only_with_verbose(
    tmp_path: Path, claude_root: Path
) -> None:
    """--verbose adds the info log lines on stderr that a plain (cron) run leaves out."""
    history(claude_root, 2)
    db = tmp_path / "usage.sqlite3"
    async with serve() as rec:
        done = await sync(claude_root, db, "--forward-url", rec.url, "--verbose")
    assert done.code == 0
    events = [json.loads(line)["event"] for line in done.err.splitlines()]
    assert set(events) == {"store.migrated", "ingest.caught_up"}
    assert {json.loads(line)["level"] for line in done.err.splitlines()} == {"info"}


def test_the_message_beside_a_forwarding_daemon_says_cron_is_not_needed() -> None:
    """Beside a daemon that forwards, the reason given is that it already forwards."""
    assert daemon_running_message(42, "/d/usage.sqlite3", forwards=True) == (
        "a daemon (pid 42) is running on /d/usage.sqlite3, and two processes may not write "
        "one database; it already forwards by itself, so this cron job is not needed"
    )


async def test_sync_beside_a_daemon_that_does_not_forward_says_why_it_will_not_run(
    running: RunningDaemon, tmp_path: Path
) -> None:
    """A daemon without forwarding on the same database: exit 3, two writers are not
    allowed, stop it or give it the forwarding settings (not "it forwards by itself")."""
    done = await sync(running.root, running.db, "--forward-url", "http://127.0.0.1:9/x")
    assert (done.code, done.out) == (3, "")
    assert done.err == (
        f"claude-usaged: a daemon (pid {os.getpid()}) is running on {running.db}, and two "
        "processes may not write one database; stop it, or let it forward instead: give it "
        "--forward-url (or CLAUDE_USAGED_FORWARD_URL, or forward_url in the config file) "
        "and restart it\n"
    )


async def test_sync_without_a_forward_url_is_a_startup_error(
    tmp_path: Path, claude_root: Path
) -> None:
    """Without anywhere to send to, it says which settings to set and exits 3."""
    done = await sync(claude_root, tmp_path / "usage.sqlite3")
    assert done.code == 3
    assert "--forward-url, CLAUDE_USAGED_FORWARD_URL or CLAUDE_USAGE_API_URL" in done.err


async def test_sync_waits_for_no_one_while_another_writer_holds_the_database(
    tmp_path: Path, claude_root: Path
) -> None:
    """While another process holds the database's lock (a starting daemon, another sync),
    sync refuses with one line and exit 3 instead of writing beside it."""
    db = tmp_path / "usage.sqlite3"
    lock = InstanceLock(db)
    lock.acquire()
    try:
        done = await sync(claude_root, db, "--forward-url", "http://127.0.0.1:9/x")
    finally:
        lock.release()
    assert (done.code, done.out, done.err) == (
        3,
        "",
        f"claude-usaged: another claude-usaged is already running on {db}; "
        "try again when it has finished\n",
    )
