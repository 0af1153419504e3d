"""Client commands (`stats`, `blocks`, `daily`, `sessions`, `projects`) against a real daemon.

Each command runs as its own process, as a user runs it, and finds the daemon
through the address file beside the database (`--db`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, daemon_on, write_history

ENC = "-home-dev-api"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGED_")}
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)
    env.update(TZ="UTC", **extra)
    return env


async def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m claude_usaged ARGS` without blocking the daemon's event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "claude_usaged", *args],
        env=cli_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


async def raw(running: RunningDaemon, path: str) -> str:
    async with running.http.get(running.url + path) as resp:
        return await resp.text()


@pytest.fixture
async def history(claude_root: Path, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    """Two days, two sessions, two models, in one project, written before the daemon
    starts: no watcher event can arrive later and change `last_event_at` between the
    two answers a test compares byte for byte."""
    write_history(claude_root)
    async with daemon_on(claude_root, tmp_path / "data" / "usage.sqlite3") as running:
        yield running


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["daily"], "/daily"),
        (
            ["daily", "--since", "2025-09-04", "--tz", "Asia/Kolkata"],
            "/daily?since=2025-09-04&tz=Asia%2FKolkata",
        ),
        (["stats", "--tz", "Asia/Tokyo"], "/stats?tz=Asia%2FTokyo"),
        (["blocks", "--until", "2025-09-04"], "/blocks?until=2025-09-04"),
        (["blocks", "--limit", "1"], "/blocks?limit=1"),
        (["sessions", "--project", "/home/dev/api"], "/sessions?project=%2Fhome%2Fdev%2Fapi"),
        (["projects"], "/projects"),
    ],
)
async def test_json_prints_exactly_what_the_api_answers(
    history: RunningDaemon, args: list[str], path: str
) -> None:
    """--json prints the API's body byte for byte, with the filters passed through."""
    proc = await cli(*args, "--json", "--db", str(history.db))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == await raw(history, path) + "\n"


async def test_daily_table_looks_like_ccusage(history: RunningDaemon) -> None:
    """`daily` prints one row per day with short model names, thousands separators and a total."""
    proc = await cli("daily", "--db", str(history.db))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (FIXTURES / "daily_table.txt").read_text()


async def test_no_daemon_says_so_and_how_to_start_it(tmp_path: Path) -> None:
    """Without a daemon a client command says how to start one or to use --offline, exit 4."""
    db = tmp_path / "usage.sqlite3"
    proc = await cli("stats", "--db", str(db))
    assert (proc.returncode, proc.stdout) == (4, "")
    assert proc.stderr == (
        f"claude-usaged: no daemon is running (no address file at {db}.addr).\n"
        "Start it with `claude-usaged run`, or once for good with "
        "`claude-usaged service install`; or read the transcripts once with --offline.\n"
    )


async def test_a_value_the_api_refuses_exits_2_with_its_message(running: RunningDaemon) -> None:
    """A bad --since is reported with the API's own words and exit status 2."""
    proc = await cli("daily", "--since", "soon", "--db", str(running.db))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "claude-usaged: since must be a date like 2026-11-26, got 'soon'\n"


async def test_the_database_named_in_the_config_file_leads_to_the_daemon(
    running: RunningDaemon, tmp_path: Path
) -> None:
    """With `db` only in config.toml, client commands still find the running daemon."""
    config_home = tmp_path / "xdg-config"
    (config_home / "claude-usaged").mkdir(parents=True)
    (config_home / "claude-usaged" / "config.toml").write_text(f'db = "{running.db}"\n')
    done = await cli("stats", "--json", XDG_CONFIG_HOME=str(config_home))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(await raw(running, "/stats"))
    named = tmp_path / "named.toml"
    named.write_text(f'db = "{running.db}"\n')
    done = await cli("stats", "--json", "--config", str(named))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(await raw(running, "/stats"))
    # and without it: no daemon at the default place
    done = await cli("stats", "--json")
    assert done.returncode == 4


def test_the_light_config_lookup_agrees_with_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's config path without platformdirs is the one `run` reads."""
    from claude_usaged.client import default_config_path
    from claude_usaged.settings import default_config_file

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path(os.environ) == str(default_config_file())
