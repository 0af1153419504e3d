"""Reading ahead at start (`run` starts a Prefetch before its heavy imports).

Real daemons on temp dirs: the totals with a prefetch must be exactly those
without one, whatever happened to the files or the database in between.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import RunningDaemon, assistant, daemon_on, write_history, write_lines

from claude_usaged import prefetch as prefetch_module
from claude_usaged.daemon import Daemon
from claude_usaged.prefetch import Prefetch, stored_cursors
from claude_usaged.settings import load_settings

ENC = "-home-dev-api"
# write_history: 1500 + 123020 + 51007 tokens in three responses
HISTORY_TOKENS = 1500 + 123_020 + 51_007


@asynccontextmanager
async def daemon_with_prefetch(root: Path, db: Path, prefetch: Prefetch) -> AsyncIterator[Any]:
    settings = load_settings({"claude_dirs": [root], "db": db, "port": 0, "tz": "UTC"}, env={})
    daemon = Daemon(settings, prefetch)
    await daemon.startup()
    assert daemon.address is not None
    host, port = daemon.address
    try:
        async with aiohttp.ClientSession() as http:
            running = RunningDaemon(daemon, f"http://{host}:{port}", root, db, http)
            await running.wait_for(lambda s: s["ingest"]["caught_up"])
            yield running
    finally:
        await daemon.shutdown()


async def test_a_first_start_with_a_prefetch_counts_exactly(
    claude_root: Path, tmp_path: Path
) -> None:
    write_history(claude_root)
    db = tmp_path / "usage.sqlite3"
    prefetch = Prefetch([claude_root], db).start()
    async with daemon_with_prefetch(claude_root, db, prefetch) as running:
        stats = await running.get("/stats")
        assert stats["total_tokens"] == HISTORY_TOKENS
        assert (stats["ingest"]["files"], stats["ingest"]["lines"]) == (2, 3)
    assert prefetch.paths == sorted(str(p) for p in (claude_root / "projects").rglob("*.jsonl"))


async def test_a_restart_reads_ahead_only_what_changed(claude_root: Path, tmp_path: Path) -> None:
    write_history(claude_root)
    db = tmp_path / "usage.sqlite3"
    async with daemon_on(claude_root, db):
        pass
    write_lines(
        claude_root / "projects" / ENC / "s2.jsonl",
        [assistant("m9", "r9", "2025-09-05T08:00:00.000Z", input_tokens=5, output_tokens=6)],
    )
    prefetch = Prefetch([claude_root], db).start()
    async with daemon_with_prefetch(claude_root, db, prefetch) as running:
        stats = await running.get("/stats")
        assert stats["total_tokens"] == HISTORY_TOKENS + 11
        assert stats["ingest"]["lines"] == 4  # the old lines were not read again
    assert prefetch.paths == [str(claude_root / "projects" / ENC / "s2.jsonl")]
    assert len(stored_cursors(db)) == 2


async def test_a_prefetch_from_cursors_that_changed_since_is_dropped(
    claude_root: Path, tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    """Another process wrote the database after the prefetch read its cursors."""
    write_history(claude_root)
    db = tmp_path / "usage.sqlite3"
    stale = Prefetch([claude_root], db).start()
    stale.matches({})  # it has read the (empty) cursors and listed the files
    async with daemon_on(claude_root, db):
        pass  # ...and this daemon has counted everything since
    async with daemon_with_prefetch(claude_root, db, stale) as running:
        stats = await running.get("/stats")
        assert (stats["total_tokens"], stats["ingest"]["lines"]) == (HISTORY_TOKENS, 3)
    assert [e["event"] for e in logs].count("ingest.prefetch_dropped") == 1


async def test_lines_appended_after_the_prefetch_read_them_are_counted(
    claude_root: Path, tmp_path: Path
) -> None:
    write_history(claude_root)
    db = tmp_path / "usage.sqlite3"
    prefetch = Prefetch([claude_root], db).start()
    prefetch.matches({})
    prefetch._thread.join(10)  # everything read ahead...
    write_lines(  # ...before this append, and before any watch exists
        claude_root / "projects" / ENC / "s1.jsonl",
        [assistant("m8", "r8", "2025-09-05T09:00:00.000Z", input_tokens=100, output_tokens=1)],
    )
    async with daemon_with_prefetch(claude_root, db, prefetch) as running:
        await running.wait_for(lambda s: s["total_tokens"] == HISTORY_TOKENS + 101)
        assert (await running.get("/stats"))["ingest"]["lines"] == 4


async def test_readers_wait_when_the_writer_has_not_started(
    claude_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most HELD_RECORDS records wait in memory; the rest are read as they are taken."""
    monkeypatch.setattr(prefetch_module, "HELD_RECORDS", 3)
    for i in range(40):
        write_lines(
            claude_root / "projects" / ENC / f"s{i}.jsonl",
            [
                assistant(f"m{i}-{j}", "r", f"2025-09-03T10:{j:02d}:00.000Z", input_tokens=i + j)
                for j in range(2)
            ],
        )
    db = tmp_path / "usage.sqlite3"
    prefetch = Prefetch([claude_root], db).start()
    prefetch.matches({})
    assert prefetch._thread.is_alive()  # blocked on the bound, not done
    with prefetch._cond:
        assert prefetch._held <= 4
    async with daemon_with_prefetch(claude_root, db, prefetch) as running:
        stats = await running.get("/stats")
        assert stats["total_tokens"] == sum(2 * i + 1 for i in range(40))
        assert stats["ingest"]["files"] == 40


def test_a_missing_or_unreadable_database_has_no_cursors(tmp_path: Path) -> None:
    assert stored_cursors(tmp_path / "none.sqlite3") == {}
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    assert stored_cursors(junk) == {}


async def test_a_daemon_that_cannot_start_stops_its_prefetch(
    claude_root: Path, tmp_path: Path, running: RunningDaemon
) -> None:
    """The same database is taken: startup fails, and the reading thread ends."""
    from claude_usaged.daemon import StartupError

    write_history(claude_root)
    prefetch = Prefetch([claude_root], running.db).start()
    settings = load_settings({"claude_dirs": [claude_root], "db": running.db, "port": 0}, env={})
    daemon = Daemon(settings, prefetch)
    with pytest.raises(StartupError):
        await daemon.startup()
    await daemon.shutdown()
    prefetch._thread.join(10)
    assert not prefetch._thread.is_alive()
