"""Following transcripts with the real watchdog observer, and reconciliation behind it.

The default reconcile interval is 30 s, far beyond every wait here, so a
count that shows up within the wait came from a filesystem event, unless a
test says otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import RunningDaemon, assistant, daemon_on, dumps, stop_watcher, user, write_lines
from watchdog.events import FileSystemEvent

from claude_usaged import watcher as watcher_module
from claude_usaged.watcher import RESCAN, Watcher

ENC = "-home-dev-api"


def line(n: int, tokens: int, **fields: Any) -> dict[str, Any]:
    """Response number n (its own ids), at 09:00 + n minutes, with `tokens` input tokens."""
    return assistant(
        f"m_{n}", f"r_{n}", f"2025-11-20T09:{n:02d}:00.000Z", input_tokens=tokens, **fields
    )


async def wait_health(rd: RunningDaemon, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Poll /health until predicate holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        health: dict[str, Any] = await rd.get("/health")
        if predicate(health):
            return health
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out; last /health: {health}")
        await asyncio.sleep(0.02)


async def test_new_session_file_is_counted_without_refresh(running: RunningDaemon) -> None:
    """A session file created after start, in a new project folder, is counted from its events."""
    path = running.projects / ENC / "s-new.jsonl"
    write_lines(path, [user("2025-11-20T08:59:00.000Z"), line(1, 100)])
    stats = await running.wait_for(lambda s: s["total_tokens"] == 100)
    assert stats["ingest"]["files"] == 1
    # appends to it are followed too: 100 + 20 + 3 = 123
    write_lines(path, [line(2, 20), line(3, 3)])
    stats = await running.wait_for(lambda s: s["total_tokens"] == 123)
    assert stats["ingest"]["responses"] == 3


async def test_new_subagent_folder_is_counted_without_refresh(running: RunningDaemon) -> None:
    """A subagents/agent-x.jsonl in a folder created after start counts under its parent session."""
    write_lines(running.projects / ENC / "sess-1.jsonl", [line(1, 100, session="sess-1")])
    await running.wait_for(lambda s: s["total_tokens"] == 100)
    agent = running.projects / ENC / "sess-1" / "subagents" / "agent-x.jsonl"
    write_lines(agent, [line(2, 40, session="sess-1", sidechain=True)])
    # 100 from the session + 40 from its subagent
    stats = await running.wait_for(lambda s: s["total_tokens"] == 140)
    assert stats["ingest"]["files"] == 2
    (session,) = (await running.get("/sessions"))["sessions"]
    assert (session["session_id"], session["entries"], session["input_tokens"]) == (
        "sess-1",
        2,
        140,
    )
    # a second agent file in the now existing folder, then an append to the first
    write_lines(agent.with_name("agent-y.jsonl"), [line(3, 5, session="sess-1", sidechain=True)])
    write_lines(agent, [line(4, 1, session="sess-1", sidechain=True)])
    await running.wait_for(lambda s: s["total_tokens"] == 140 + 5 + 1)


async def test_projects_folder_created_after_start_is_picked_up(tmp_path: Path) -> None:
    """A root whose projects/ does not exist at start is watched as soon as it appears."""
    root = tmp_path / "claude"
    root.mkdir()
    async with daemon_on(root, tmp_path / "db" / "usage.sqlite3") as rd:
        health = await rd.get("/health")
        assert health["watcher"]["watched"] == [f"wait:{root}"]
        (root / "projects").mkdir()
        await wait_health(rd, lambda h: str(root / "projects") in h["watcher"]["watched"])
        path = root / "projects" / ENC / "s1.jsonl"
        write_lines(path, [line(1, 100)])
        await rd.wait_for(lambda s: s["total_tokens"] == 100)
        write_lines(path, [line(2, 11)])
        await rd.wait_for(lambda s: s["total_tokens"] == 111)


async def test_root_created_after_start_is_picked_up(tmp_path: Path) -> None:
    """A root that does not exist at start, created in one go with a transcript, is followed."""
    root = tmp_path / "later" / "claude"
    async with daemon_on(root, tmp_path / "db" / "usage.sqlite3") as rd:
        assert (await rd.get("/stats"))["total_tokens"] == 0
        path = root / "projects" / ENC / "s1.jsonl"
        write_lines(path, [line(1, 100)])  # creates later/claude/projects/ENC at once
        await rd.wait_for(lambda s: s["total_tokens"] == 100)
        await wait_health(rd, lambda h: h["watcher"]["watched"] == [str(root / "projects")])
        # now followed by events: an append and a new session file
        write_lines(path, [line(2, 20)])
        write_lines(path.with_name("s2.jsonl"), [line(3, 3)])
        await rd.wait_for(lambda s: s["total_tokens"] == 123)


async def test_two_roots_are_merged_and_copies_count_once(tmp_path: Path) -> None:
    """Both roots are followed; a session copied from one root into the other counts once."""
    first, second = tmp_path / "dot-claude", tmp_path / "config-claude"
    write_lines(first / "projects" / ENC / "s1.jsonl", [line(1, 100), line(2, 20)])
    db = tmp_path / "db" / "usage.sqlite3"
    async with daemon_on(first, db, claude_dirs=[first, second]) as rd:
        assert (await rd.get("/stats"))["total_tokens"] == 120
        # the second root appears later holding a resumed copy (same ids) plus a new response
        write_lines(
            second / "projects" / ENC / "s1-resumed.jsonl", [line(1, 100), line(2, 20), line(3, 3)]
        )
        stats = await rd.wait_for(lambda s: s["total_tokens"] == 123)  # 100 + 20 + 3
        assert (stats["ingest"]["files"], stats["ingest"]["responses"]) == (2, 3)
        health = await rd.get("/health")
        assert health["watcher"]["watched"] == sorted(
            [str(first / "projects"), str(second / "projects")]
        )


@pytest.mark.parametrize("removed", ["projects", "root"])
async def test_deleted_and_recreated_tree_is_followed_again(tmp_path: Path, removed: str) -> None:
    """After projects/ (or the whole root) is deleted and made again, its files are followed."""
    root = tmp_path / "claude"
    path = root / "projects" / ENC / "s1.jsonl"
    write_lines(path, [line(1, 100)])
    async with daemon_on(root, tmp_path / "db" / "usage.sqlite3") as rd:
        assert (await rd.get("/stats"))["total_tokens"] == 100
        shutil.rmtree(root / "projects" if removed == "projects" else root)
        await wait_health(rd, lambda h: str(root / "projects") not in h["watcher"]["watched"])
        write_lines(path, [line(2, 20)])
        # 100 counted before the deletion stays; 20 is new
        await rd.wait_for(lambda s: s["total_tokens"] == 120)
        await wait_health(rd, lambda h: h["watcher"]["watched"] == [str(root / "projects")])
        write_lines(path, [line(3, 3)])
        await rd.wait_for(lambda s: s["total_tokens"] == 123)


async def test_deleted_file_keeps_its_counted_usage(running: RunningDaemon) -> None:
    """Deleting a transcript (cleanupPeriodDays) leaves its usage counted."""
    old = running.projects / ENC / "old.jsonl"
    write_lines(old, [line(1, 100), line(2, 200)])
    await running.wait_for(lambda s: s["total_tokens"] == 300)
    old.unlink()
    # events are handled in order: once the next file is counted, the deletion was seen
    write_lines(running.projects / ENC / "new.jsonl", [line(3, 5)])
    await running.wait_for(lambda s: s["total_tokens"] == 305)
    await running.refresh()
    stats = await running.get("/stats")
    assert (stats["total_tokens"], stats["ingest"]["responses"]) == (305, 3)
    days = (await running.get("/daily"))["days"]
    assert [(d["date"], d["entries"], d["input_tokens"]) for d in days] == [("2025-11-20", 3, 305)]


async def test_file_replaced_by_rename_is_reread_and_counted_once(
    running: RunningDaemon,
) -> None:
    """A transcript replaced by os.replace is read again from byte 0; copied lines count once."""
    path = running.projects / ENC / "s1.jsonl"
    write_lines(path, [line(1, 100), line(2, 20)])
    await running.wait_for(lambda s: s["total_tokens"] == 120)
    tmp = path.with_name("s1.jsonl.tmp")
    # the new file repeats both lines (same ids) and adds a third: 100 + 20 + 3
    write_lines(tmp, [line(1, 100), line(2, 20), line(3, 3)])
    with structlog.testing.capture_logs() as logs:
        os.replace(tmp, path)
        await running.wait_for(lambda s: s["total_tokens"] == 123)
        await running.refresh()
    stats = await running.get("/stats")
    assert (stats["total_tokens"], stats["ingest"]["responses"]) == (123, 3)
    reread = [e for e in logs if e["event"] == "file.reread"]
    assert [(e["path"], e["reason"]) for e in reread] == [(str(path), "replaced")]


async def test_replacement_shorter_than_the_cursor_is_reread(running: RunningDaemon) -> None:
    """A replacement with fewer bytes than were read keeps the old lines and adds its new one."""
    path = running.projects / ENC / "s1.jsonl"
    write_lines(path, [line(1, 100), line(2, 20), user("2025-11-20T09:03:00.000Z", "x" * 500)])
    await running.wait_for(lambda s: s["total_tokens"] == 120)
    tmp = path.with_name("s1.jsonl.tmp")
    write_lines(tmp, [line(4, 4)])
    os.replace(tmp, path)
    # line 4 is new; 1 and 2 were counted before and stay: 100 + 20 + 4
    await running.wait_for(lambda s: s["total_tokens"] == 124)


async def test_refresh_counts_a_change_the_watcher_missed(running: RunningDaemon) -> None:
    """With the observer stopped, POST /refresh reconciles and counts the change at once."""
    path = running.projects / ENC / "s1.jsonl"
    write_lines(path, [line(1, 100)])
    await running.wait_for(lambda s: s["total_tokens"] == 100)
    await stop_watcher(running)
    write_lines(path, [line(2, 20)])  # an append...
    write_lines(running.projects / "-other" / "s2.jsonl", [line(3, 3)])  # ...and a new file
    await running.refresh()
    stats = await running.get("/stats")  # read once: the refresh answered after counting
    assert (stats["total_tokens"], stats["ingest"]["files"]) == (123, 2)


async def test_reconcile_timer_counts_a_change_the_watcher_missed(tmp_path: Path) -> None:
    """With the observer stopped, the reconcile timer alone picks up appends and new files."""
    root = tmp_path / "claude"
    path = root / "projects" / ENC / "s1.jsonl"
    write_lines(path, [line(1, 100)])
    async with daemon_on(root, tmp_path / "db" / "usage.sqlite3", reconcile_interval=0.2) as rd:
        assert (await rd.get("/stats"))["total_tokens"] == 100
        await stop_watcher(rd)
        write_lines(path, [line(2, 20)])
        write_lines(root / "projects" / "-other" / "s2.jsonl", [line(3, 3)])
        stats = await rd.wait_for(lambda s: s["total_tokens"] == 123, timeout=5)
        assert stats["ingest"]["files"] == 2


async def test_meta_json_and_other_files_are_ignored(running: RunningDaemon) -> None:
    """Only *.jsonl is read: agent .meta.json, .txt, .jsonl.bak and .tmp files never count."""
    valid = dumps(line(9, 1000))  # would count if any of these files were read
    agent_dir = running.projects / ENC / "sess-1" / "subagents"
    agent_dir.mkdir(parents=True)
    for name in ("agent-x.meta.json", "notes.txt", "s1.jsonl.bak", "s1.jsonl.tmp", "jsonl"):
        (agent_dir / name).write_text(valid + "\n")
        (running.projects / ENC / name).write_text(valid + "\n")
    # a real transcript written last: once it is counted, the others were seen
    write_lines(agent_dir / "agent-x.jsonl", [line(1, 7, session="sess-1", sidechain=True)])
    await running.wait_for(lambda s: s["total_tokens"] == 7)
    await running.refresh()
    stats = await running.get("/stats")
    assert (stats["total_tokens"], stats["ingest"]["files"], stats["ingest"]["lines"]) == (7, 1, 1)


async def test_reconcile_restarts_a_dead_watcher(tmp_path: Path) -> None:
    """A dead observer is restarted by the reconcile timer and live events flow again."""
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    async with daemon_on(root, tmp_path / "db" / "usage.sqlite3", reconcile_interval=0.2) as rd:
        with structlog.testing.capture_logs() as logs:
            await stop_watcher(rd)
            for _ in range(200):
                if (await rd.get("/health"))["watcher"]["state"] == "running":
                    break
                await asyncio.sleep(0.02)
        assert (await rd.get("/health"))["watcher"]["state"] == "running"
        assert any(e["event"] == "watch.restarted" for e in logs)
        # 11 + 4 = 15 tokens, seen through the restarted observer or the next rescan
        write_lines(
            root / "projects" / "-p" / "after.jsonl",
            [
                assistant(
                    "m_after",
                    "r_after",
                    "2025-11-20T10:00:00.000Z",
                    input_tokens=11,
                    output_tokens=4,
                )
            ],
        )
        await rd.wait_for(lambda s: s["total_tokens"] == 15)


async def test_an_inotify_overflow_triggers_a_rescan(running: RunningDaemon) -> None:
    """watchdog's overflow warning makes the daemon rescan at once, not at the next timer."""
    import logging

    await stop_watcher(running)  # no events: only a rescan can count the file
    watcher = running.daemon._watcher
    assert watcher is not None
    write_lines(
        running.projects / "-p" / "lost.jsonl",
        [assistant("m_lost", "r_lost", "2025-11-20T10:00:00.000Z", input_tokens=13)],
    )
    with structlog.testing.capture_logs() as logs:
        watcher._overflow.handle(
            logging.LogRecord(
                "watchdog.observers.inotify_c",
                logging.WARNING,
                __file__,
                1,
                "Inotify queue overflowed; filesystem events were lost",
                None,
                None,
            )
        )
        # the default reconcile timer is 30 s: only the overflow's rescan can count it
        await running.wait_for(lambda s: s["total_tokens"] == 13, timeout=5)
    assert watcher.overflows == 1
    assert any(e["event"] == "watch.overflow" for e in logs)


QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")


async def test_a_real_queue_overflow_loses_no_count(tmp_path: Path) -> None:
    """With a 16-event inotify queue, 300 files written at once are all counted."""
    try:
        old = QUEUE_LIMIT.read_text()
        QUEUE_LIMIT.write_text("16\n")
    except OSError:
        pytest.skip("cannot lower fs.inotify.max_queued_events here")
    try:
        root = tmp_path / "claude"
        (root / "projects" / "-p").mkdir(parents=True)
        async with daemon_on(root, tmp_path / "db" / "usage.sqlite3") as rd:
            for i in range(300):
                write_lines(
                    root / "projects" / "-p" / f"s{i}.jsonl",
                    [assistant(f"m{i}", f"r{i}", "2025-11-20T10:00:00.000Z", input_tokens=1)],
                )
            # 300 responses of 1 token each
            await rd.wait_for(lambda s: s["total_tokens"] == 300, timeout=20)
    finally:
        QUEUE_LIMIT.write_text(old)


async def test_a_file_name_that_is_not_utf8_is_counted_and_blocks_nothing(tmp_path: Path) -> None:
    """Such a name cannot be SQLite text: its cursor keeps the raw bytes, its fallback
    session and project show U+FFFD; it and the files beside it count, once."""
    root = tmp_path / "claude"
    folder = root / "projects" / ENC
    folder.mkdir(parents=True)
    odd = os.path.join(os.fsencode(folder), b"caf\xe9-\xff.jsonl")
    no_session = {**line(1, 100), "sessionId": None, "cwd": None}
    with open(odd, "w") as f:
        f.write(dumps(no_session) + "\n")
    write_lines(folder / "plain.jsonl", [line(2, 20)])
    db = tmp_path / "db" / "usage.sqlite3"
    async with daemon_on(root, db) as rd:
        stats = await rd.get("/stats")
        assert (stats["total_tokens"], stats["ingest"]["files"]) == (120, 2)
        sessions = {s["session_id"] for s in (await rd.get("/sessions"))["sessions"]}
        assert "caf\ufffd-\ufffd" in sessions
        with open(odd, "a") as f:
            f.write(dumps({**no_session, **line(3, 3), "sessionId": None, "cwd": None}) + "\n")
        await rd.wait_for(lambda s: s["total_tokens"] == 123)
    async with daemon_on(root, db) as rd:  # a restart reads nothing again
        stats = await rd.get("/stats")
        assert (stats["total_tokens"], stats["ingest"]["lines"]) == (123, 3)


async def test_a_file_the_store_refuses_is_set_aside_and_the_rest_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    """Data SQLite cannot take (here: a non-UTF-8 file name, as before its fix) must not
    stop ingest: the batch is split, the one file is logged and retried, the rest counts."""
    import claude_usaged.tailer as tailer

    monkeypatch.setattr(tailer, "_printable", lambda name: name)  # the bug, back
    root = tmp_path / "claude"
    folder = root / "projects" / ENC
    folder.mkdir(parents=True)
    odd = os.path.join(os.fsencode(folder), b"\xff.jsonl")
    with open(odd, "w") as f:
        f.write(dumps({**line(1, 100), "sessionId": None}) + "\n")
    for n in range(2, 5):
        write_lines(folder / f"s{n}.jsonl", [line(n, 10 * n)])
    async with daemon_on(root, tmp_path / "db" / "usage.sqlite3") as rd:
        stats = await rd.get("/stats")
        assert (stats["total_tokens"], stats["ingest"]["unreadable_files"]) == (90, 1)
        await rd.refresh()  # retried at every rescan, logged once
        refused = [e for e in logs if e["event"] == "file.unstorable"]
        assert len(refused) == 1 and "UnicodeEncodeError" in refused[0]["error"]
        monkeypatch.undo()  # fixed: the next rescan stores it
        await rd.refresh()
        stats = await rd.get("/stats")
        assert (stats["total_tokens"], stats["ingest"]["unreadable_files"]) == (190, 0)
        assert [e["event"] for e in logs].count("file.stored_again") == 1


async def test_a_fifo_named_like_a_transcript_blocks_nothing(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: it is opened without waiting,
    reported as unreadable, and the real transcripts beside it are counted."""
    root = tmp_path / "claude"
    folder = root / "projects" / ENC
    folder.mkdir(parents=True)
    os.mkfifo(folder / "pipe.jsonl")
    write_lines(folder / "s1.jsonl", [line(1, 100)])
    async with daemon_on(root, tmp_path / "db" / "usage.sqlite3") as rd:
        stats = await rd.get("/stats")
        assert (stats["total_tokens"], stats["ingest"]["unreadable_files"]) == (100, 1)
        write_lines(folder / "s2.jsonl", [line(2, 20)])
        await rd.wait_for(lambda s: s["total_tokens"] == 120)


async def test_reading_transcripts_sends_the_watcher_no_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Programs that only read the transcripts (a catch-up, ccusage, grep) wake nothing:
    the kernel is asked for changes only, not for opens and closes after reading."""
    path = tmp_path / "claude" / "projects" / ENC / "s.jsonl"
    write_lines(path, [line(1, 100)])
    seen: list[str] = []
    handle = watcher_module._Handler.on_any_event

    def spy(self: watcher_module._Handler, event: FileSystemEvent) -> None:
        seen.append(event.event_type)
        handle(self, event)

    monkeypatch.setattr(watcher_module._Handler, "on_any_event", spy)
    watcher = Watcher([tmp_path / "claude"], debounce=0.01)
    await watcher.start()
    try:
        batches = watcher.batches()
        assert await asyncio.wait_for(anext(batches), 5) == {RESCAN}  # the new watch
        for _ in range(3):
            path.read_bytes()
        write_lines(path, [line(2, 5)])
        # events arrive in order: the reads' would have come before the append's
        assert await asyncio.wait_for(anext(batches), 5) == {str(path)}
    finally:
        watcher.stop()
    assert "modified" in seen
    assert not {"opened", "closed_no_write"} & set(seen), seen
