"""`--offline`: client commands answered from the transcripts, without a daemon.

The reference is a real daemon on the same files (conftest's `daemon_on`),
started after the files are written so that it, too, only ever caught up.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest
from conftest import daemon_on, write_history

from claude_usaged.offline import answer
from claude_usaged.settings import load_settings

ENC = "-home-dev-api"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def history(root: Path) -> None:
    """Two days, two sessions, two models, in one project (test_client's history)."""
    write_history(root)


async def offline(tmp_path: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m claude_usaged ARGS --offline` with the roots and zone from the environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLAUDE_USAGED_", "XDG_", "NO_COLOR", "COLUMNS"))
    }
    env.update(
        CLAUDE_CONFIG_DIR=str(root),
        CLAUDE_USAGED_TZ="UTC",
        HOME=str(tmp_path / "home"),
        TMPDIR=str(tmp_path / "tmp"),
        TZ="UTC",
    )
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "claude_usaged", *args, "--offline"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["stats"], "/stats"),
        (["daily"], "/daily"),
        (
            ["daily", "--since", "2025-09-04", "--tz", "Asia/Kolkata"],
            "/daily?since=2025-09-04&tz=Asia%2FKolkata",
        ),
        (["blocks"], "/blocks"),
        (["blocks", "--limit", "1"], "/blocks?limit=1"),
        (["sessions"], "/sessions"),
        (["sessions", "--project", "/home/dev/api"], "/sessions?project=%2Fhome%2Fdev%2Fapi"),
        (["projects"], "/projects"),
    ],
)
async def test_offline_json_equals_what_a_running_daemon_prints(
    tmp_path: Path, claude_root: Path, args: list[str], path: str
) -> None:
    """`--offline --json` prints the body a daemon on the same files answers, byte for byte,
    and leaves no temporary database behind."""
    history(claude_root)
    async with (
        daemon_on(claude_root, tmp_path / "data" / "usage.sqlite3") as running,
        aiohttp.ClientSession() as http,
        http.get(running.url + path) as resp,
    ):
        expected = await resp.text()
    proc = await offline(tmp_path, claude_root, *args, "--json")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == expected + "\n"
    assert os.listdir(tmp_path / "tmp") == []


async def test_offline_table_is_the_daemons_table(tmp_path: Path, claude_root: Path) -> None:
    """`daily --offline` prints the same table as `daily` against a daemon."""
    history(claude_root)
    proc = await offline(tmp_path, claude_root, "daily")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (FIXTURES / "daily_table.txt").read_text()


async def test_offline_refuses_what_the_api_refuses(tmp_path: Path, claude_root: Path) -> None:
    """A bad --since is reported in the API's words with exit status 2, offline too."""
    proc = await offline(tmp_path, claude_root, "daily", "--since", "soon")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "claude-usaged: since must be a date like 2026-11-26, got 'soon'\n"


async def test_offline_with_a_bad_setting_exits_3(tmp_path: Path, claude_root: Path) -> None:
    """--offline reads the settings (here a config file naming no price file): one line, exit 3."""
    config = tmp_path / "c.toml"
    config.write_text('prices = "/nonexistent/prices.json"\n')
    proc = await offline(tmp_path, claude_root, "stats", "--config", str(config))
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr == (
        f"claude-usaged: bad setting prices (from config file {config}): "
        "no such file: /nonexistent/prices.json\n"
    )


async def test_a_long_catch_up_reports_progress_then_a_summary(
    tmp_path: Path, claude_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the catch-up runs, progress lines go to the given stream; then one summary line,
    and the temporary database is gone."""
    history(claude_root)
    size = sum(p.stat().st_size for p in claude_root.rglob("*.jsonl"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    settings = load_settings({"claude_dirs": [claude_root], "tz": "UTC"}, env={})
    out = io.StringIO()
    body = await answer(settings, "/projects", out, every=0)
    assert '"project": "/home/dev/api"' in body
    *progress, summary = out.getvalue().splitlines()
    # bytes are counted as each batch is stored: this history is one batch of 0.0 MB
    assert progress
    assert set(progress) == {"claude-usaged: reading transcripts: 0.0 of 0.0 MB"}
    assert summary == f"claude-usaged: caught up: 2 files, {size / 1e6:.1f} MB"
    assert os.listdir(tmp_path / "tmp") == []
