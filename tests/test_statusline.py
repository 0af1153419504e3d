"""`claude-usaged statusline`: the line, against a real daemon, a stopped one, and its imports."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from conftest import RunningDaemon, assistant, write_lines

from claude_usaged.client import address_path, default_data_dir
from claude_usaged.paths import address_file
from claude_usaged.statusline import FALLBACK, format_line

# what Claude Code sends a status-line command (trimmed)
CLAUDE_CODE_JSON = json.dumps(
    {
        "session_id": "abc",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/home/dev/api",
        "model": {"id": "claude-sonnet-4-5", "display_name": "Sonnet 4.5"},
        "workspace": {"current_dir": "/home/dev/api", "project_dir": "/home/dev/api"},
    }
)
HEAVY = ("aiohttp", "pydantic", "structlog", "watchdog", "aiosqlite", "msgspec", "rich")


def statusline(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGED_")}
    return subprocess.run(
        [sys.executable, "-m", "claude_usaged", "statusline", "--db", str(db), *args],
        input=CLAUDE_CODE_JSON,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


WINDOW_STATS: dict[str, Any] = {
    "time_until_reset_seconds": 7980,
    "current_window": {
        "total_tokens": 1_234_567,
        "cost_usd": 4.1249,
        "burn_rate_tokens_per_minute": 42_123.4,
    },
    "today": {"cost_usd": 18.4},
}


def test_line_for_an_active_window() -> None:
    """Time left, window tokens and cost, today's cost and the burn rate, in one short line."""
    assert format_line(WINDOW_STATS) == (
        "⏱ 2h13m left · 1.2M tok · $4.12 window · $18.40 today · 🔥 42.1k/min"
    )


def test_line_without_an_active_window() -> None:
    """With no window only today's cost is shown."""
    assert format_line({"current_window": None, "today": {"cost_usd": 0.0}}) == (
        "⏱ no active window · $0.00 today"
    )


def test_line_for_a_window_with_one_response_and_an_unpriced_model() -> None:
    """No burn rate yet (one response) drops that part; an unknown cost shows as $?."""
    stats = {
        "time_until_reset_seconds": 59,
        "current_window": {"total_tokens": 999, "cost_usd": None},
        "today": {"cost_usd": None},
    }
    assert format_line(stats) == "⏱ 0h00m left · 999 tok · $? window · $? today"


async def test_statusline_process_for_an_active_window(running: RunningDaemon) -> None:
    """Against a running daemon the process prints the line for its /stats and exits 0."""
    now = datetime.now(UTC)
    write_lines(
        running.projects / "-home-dev-api" / "s1.jsonl",
        [
            assistant("m1", "r1", iso(now - timedelta(minutes=20)), cache_read=1_000_000),
            assistant("m2", "r2", iso(now - timedelta(minutes=10)), output_tokens=200_000),
        ],
    )
    await running.refresh()
    before = format_line(await running.get("/stats"))
    proc = await asyncio.to_thread(statusline, running.db)
    after = format_line(await running.get("/stats"))
    assert (proc.returncode, proc.stderr) == (0, "")
    # 1.2M tokens over the 10 minutes between the two responses
    assert " · 1.2M tok · " in before
    assert before.endswith(" · 🔥 120k/min")
    assert proc.stdout in (before + "\n", after + "\n")


async def test_statusline_process_without_an_active_window(running: RunningDaemon) -> None:
    """Old history only: the daemon answers and the line says there is no window."""
    write_lines(
        running.projects / "-home-dev-api" / "s1.jsonl",
        [assistant("m1", "r1", "2025-09-03T10:00:00.000Z", output_tokens=10)],
    )
    await running.refresh()
    proc = await asyncio.to_thread(statusline, running.db)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        "⏱ no active window · $0.00 today\n",
        "",
    )


def test_statusline_with_the_daemon_stopped(tmp_path: Path) -> None:
    """No address file, or one left by a killed daemon, gives the fallback line and exit 0."""
    db = tmp_path / "usage.sqlite3"
    assert statusline(db).stdout == FALLBACK + "\n"
    address_file(db).write_text(json.dumps({"url": "http://127.0.0.1:9"}))
    proc = statusline(db)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, FALLBACK + "\n", "")


def test_statusline_imports_nothing_heavy(tmp_path: Path) -> None:
    """The statusline path loads none of the daemon's libraries, nor rich, argparse or urllib."""
    code = (
        "import sys; from claude_usaged.cli import main; "
        f"main(['statusline', '--db', {str(tmp_path / 'x.sqlite3')!r}]); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} "
        "or m in ('urllib.request', 'argparse')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input="{}",
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, FALLBACK + "\n[]\n", "")


@pytest.mark.parametrize("xdg", ["", "/tmp/xdg-data"])
def test_address_is_found_where_the_daemon_writes_it(
    xdg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The light lookup agrees with platformdirs and paths.address_file."""
    monkeypatch.setenv("XDG_DATA_HOME", xdg)
    assert default_data_dir() == platformdirs.user_data_dir("claude-usaged")
    db = Path(default_data_dir()) / "usage.sqlite3"
    assert address_path() == str(address_file(db))
