"""Shared fixtures: transcript line builders and a real daemon on a temp dir."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from claude_usaged import fastpath, parser
from claude_usaged.daemon import Daemon
from claude_usaged.settings import load_settings
from claude_usaged.store import Store
from claude_usaged.usage import dedupe

REAL_SAMPLE = Path(__file__).resolve().parent / "fixtures" / "real-sample"


def assistant(
    msg_id: str | None,
    req_id: str | None,
    ts: str,
    *,
    model: str = "claude-sonnet-4-5-20250929",
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_creation: int = 0,
    cache_read: int = 0,
    session: str = "s1",
    cwd: str = "/home/dev/api",
    sidechain: bool = False,
    text: str = "ok",
    extra_usage: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An assistant line shaped like Claude Code's."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    usage.update(extra_usage or {})
    message: dict[str, Any] = {
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "usage": usage,
    }
    if msg_id is not None:
        message["id"] = msg_id
    line: dict[str, Any] = {
        "parentUuid": None,
        "isSidechain": sidechain,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session,
        "version": "2.0.37",
        "type": "assistant",
        "message": message,
        "timestamp": ts,
    }
    if req_id is not None:
        line["requestId"] = req_id
    line.update(fields)
    return line


def user(ts: str, text: str = "hello", session: str = "s1") -> dict[str, Any]:
    return {
        "type": "user",
        "sessionId": session,
        "cwd": "/home/dev/api",
        "message": {"role": "user", "content": text},
        "timestamp": ts,
    }


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def write_lines(path: Path, lines: list[dict[str, Any] | str], mode: str = "a") -> None:
    """Append lines (dicts become compact JSON; strings are written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode, encoding="utf-8") as f:
        for line in lines:
            f.write((dumps(line) if isinstance(line, dict) else line) + "\n")


@dataclass
class RunningDaemon:
    """A daemon started in this event loop, with its URL and a session."""

    daemon: Daemon
    url: str
    root: Path
    db: Path
    http: aiohttp.ClientSession

    @property
    def projects(self) -> Path:
        return self.root / "projects"

    async def get(self, path: str, status: int = 200) -> Any:
        async with self.http.get(self.url + path) as resp:
            assert resp.status == status, await resp.text()
            return await resp.json()

    async def refresh(self) -> Any:
        async with self.http.post(self.url + "/refresh") as resp:
            assert resp.status == 200
            return await resp.json()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll /stats until predicate holds (events are asynchronous by nature)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            stats: dict[str, Any] = await self.get("/stats")
            if predicate(stats):
                return stats
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; last /stats: {stats}")
            await asyncio.sleep(0.02)


async def start_daemon(root: Path, db: Path, **flags: Any) -> Daemon:
    settings = load_settings(
        {"claude_dirs": [root], "db": db, "port": 0, "tz": "UTC", **flags}, env={}
    )
    daemon = Daemon(settings)
    await daemon.startup()
    return daemon


@asynccontextmanager
async def daemon_on(root: Path, db: Path, **flags: Any) -> AsyncIterator[RunningDaemon]:
    """A daemon with non-default settings, caught up before it is handed out."""
    daemon = await start_daemon(root, db, **flags)
    assert daemon.address is not None
    host, port = daemon.address
    try:
        async with aiohttp.ClientSession() as http:
            rd = RunningDaemon(daemon, f"http://{host}:{port}", root, db, http)
            await rd.wait_for(lambda s: s["ingest"]["caught_up"])
            yield rd
    finally:
        await daemon.shutdown()


async def stop_watcher(running: RunningDaemon) -> None:
    """Stop the observer thread: from now on only a rescan can see a change."""
    watcher = running.daemon._watcher
    assert watcher is not None
    await asyncio.to_thread(watcher.stop)
    assert (await running.get("/health"))["watcher"]["state"] == "stopped"


@pytest.fixture
def claude_root(tmp_path: Path) -> Path:
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    return root


@pytest.fixture
async def running(claude_root: Path, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    db = tmp_path / "data" / "usage.sqlite3"
    daemon = await start_daemon(claude_root, db)
    assert daemon.address is not None
    host, port = daemon.address
    async with aiohttp.ClientSession() as http:
        rd = RunningDaemon(daemon, f"http://{host}:{port}", claude_root, db, http)
        await rd.wait_for(lambda s: s["ingest"]["caught_up"])
        yield rd
    await daemon.shutdown()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.fixture(scope="session", autouse=True)
def _fastscan_cross_check() -> Iterator[None]:
    """Every parse_lines call of the suite through the C scanner is also run in Python.

    The pure-Python parser is the specification: any difference fails the run
    (at its end, since a daemon may parse in a thread). See test_fastscan.py.
    """
    if not fastpath.enabled():
        yield
        return
    scanned = parser._parse_scanned
    differences: list[bytes] = []

    def checked(
        scan: fastpath.Scan,
        buf: bytes,
        session: str,
        project: str,
        intern: Any,
        max_line: int,
        deduped: bool = False,
    ) -> parser.ParseResult:
        fast = scanned(scan, buf, session, project, intern, max_line, deduped)
        pure = parser._parse_python(buf, session, project, intern, max_line)
        fast_records: Any = fast.records
        pure_records: Any = pure.records
        if deduped:  # the scanner left out records that cannot win: compare the winners
            fast_records, pure_records = dedupe(fast_records), dedupe(pure_records)
        if (fast_records, fast.lines, fast.skipped) != (pure_records, pure.lines, pure.skipped):
            differences.append(bytes(buf[:500]))
        return fast

    parser._parse_scanned = checked  # type: ignore[assignment]
    try:
        yield
    finally:
        parser._parse_scanned = scanned  # type: ignore[assignment]
    assert not differences, f"C and Python parsers differ on: {differences[:3]}"


@pytest.fixture(autouse=True)
def _no_store_left_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test that fails before closing its store would leave aiosqlite's worker thread
    running, and pytest would hang at exit instead of reporting: stop such threads."""
    opened: list[Store] = []
    open_store = Store.open.__func__  # type: ignore[attr-defined]

    async def recording(cls: type[Store], *args: Any, **kwargs: Any) -> Store:
        store: Store = await open_store(cls, *args, **kwargs)
        opened.append(store)
        return store

    monkeypatch.setattr(Store, "open", classmethod(recording))
    yield
    for store in opened:
        if store._db._connection is not None:
            store._db.stop()


@pytest.fixture(autouse=True)
def _no_personal_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep a developer's own ~/.config/claude-usaged/config.toml out of every test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("CLAUDE_USAGED_CONFIG", raising=False)


def write_history(root: Path, enc: str = "-home-dev-api") -> None:
    """Two days, two sessions, two models, in one project (client and offline tests)."""
    write_lines(
        root / "projects" / enc / "s1.jsonl",
        [
            assistant("m1", "r1", "2025-09-03T10:00:00.000Z", input_tokens=1000, output_tokens=500),
            assistant(
                "m2",
                "r2",
                "2025-09-03T11:30:00.000Z",
                model="claude-opus-4-1-20250805",
                input_tokens=20,
                output_tokens=3000,
                cache_read=120000,
            ),
        ],
    )
    write_lines(
        root / "projects" / enc / "s2.jsonl",
        [
            assistant(
                "m3",
                "r3",
                "2025-09-04T08:15:00.000Z",
                session="s2",
                input_tokens=7,
                output_tokens=42000,
                cache_creation=9000,
            )
        ],
    )
