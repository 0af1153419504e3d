"""End to end: `python -m claude_usaged run` as a real process on a temp dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import assistant, dumps, user, write_lines

from claude_usaged import __version__
from claude_usaged.settings import SOURCES

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
ENC = "-home-dev-api"


def clean_env(root: Path, home: Path, **extra: str) -> dict[str, str]:
    """The parent's environment without our settings, HOME and the roots in temp dirs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CLAUDE_USAGED_") and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(CLAUDE_CONFIG_DIR=str(root), HOME=str(home), COLUMNS="200", **extra)
    return env


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call check until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Proc:
    """A running daemon process and where it answers."""

    popen: subprocess.Popen[str]
    url: str
    db: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            assert resp.status == 200
            return json.loads(resp.read())

    def wait_stats(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> bool:
            nonlocal last
            last = self.get("/stats")
            return predicate(last)

        poll(check, 10.0, "/stats")
        return last

    def stop(self, sig: int) -> tuple[int, str]:
        """Send sig; return the exit status and everything written on stderr."""
        self.popen.send_signal(sig)
        try:
            _out, err = self.popen.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()
            raise AssertionError(f"still running {STOP_TIMEOUT} s after signal {sig}") from None
        return self.popen.returncode, err


def command(db: Path, *args: str, port: bool = True) -> list[str]:
    """`run` on db; on port 0 unless port is False (a flag would hide CLAUDE_USAGED_PORT)."""
    return [
        *(sys.executable, "-m", "claude_usaged", "run", "--db", str(db)),
        *(("--port", "0") if port else ()),
        *args,
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    return root


def launch(
    db: Path,
    root: Path,
    home: Path,
    started: list[subprocess.Popen[str]],
    *args: str,
    **env: str,
) -> Proc:
    """Start `run` on db and root; wait (bounded) until /health says caught up."""
    popen = subprocess.Popen(
        command(db, *args),
        env=clean_env(root, home, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(popen)
    addr = db.with_name(db.name + ".addr")

    def ready() -> str | None:
        assert popen.poll() is None, popen.communicate()[1]
        if not addr.exists():
            return None
        url = str(json.loads(addr.read_text())["url"])
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                health = json.loads(resp.read())
        except (urllib.error.URLError, ConnectionError):
            return None
        return url if health["caught_up"] else None

    url = poll(ready, STARTUP_TIMEOUT, "the daemon to answer")
    return Proc(popen, url, db)


@pytest.fixture
def start(tmp_path: Path, root: Path) -> Iterator[Callable[..., Proc]]:
    """Start the daemon process; wait (bounded) for its address file and /health."""
    started: list[subprocess.Popen[str]] = []

    def _start(*args: str) -> Proc:
        return launch(tmp_path / "data" / "usage.sqlite3", root, tmp_path / "home", started, *args)

    yield _start
    for popen in started:
        if popen.poll() is None:
            popen.kill()
            popen.communicate()


def log_events(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line must be a JSON object (stderr is a pipe, not a TTY)."""
    events = [json.loads(text) for text in stderr.splitlines()]
    assert all(isinstance(e, dict) and "event" in e for e in events)
    return events


def test_appended_lines_show_in_stats_and_sigterm_stops_cleanly(
    start: Callable[..., Proc], root: Path
) -> None:
    """The daemon counts appended lines, and SIGTERM stops it with exit 0 within 5 s."""
    path = root / "projects" / ENC / "s1.jsonl"
    write_lines(path, [assistant("m1", "r1", "2025-11-20T09:00:00.000Z", input_tokens=100)])
    proc = start()
    assert proc.get("/stats")["total_tokens"] == 100  # caught up at start
    # appended while running: a streamed response (2 lines, the larger counts) and another
    write_lines(
        path,
        [
            assistant("m2", "r2", "2025-11-20T09:01:00.000Z", input_tokens=10, output_tokens=1),
            assistant("m2", "r2", "2025-11-20T09:01:01.000Z", input_tokens=10, output_tokens=90),
            assistant("m3", "r3", "2025-11-20T09:02:00.000Z", cache_read=1000),
        ],
    )
    # 100 + (10 + 90) + 1000
    stats = proc.wait_stats(lambda s: s["total_tokens"] == 1200)
    assert stats["ingest"]["responses"] == 3
    assert stats["ingest"]["lines"] == 4
    assert proc.get("/app/claude-usage/stats/")["total_tokens"] == 1200
    status, stderr = proc.stop(signal.SIGTERM)
    assert status == 0
    events = [e["event"] for e in log_events(stderr)]
    assert "daemon.listening" in events
    assert events[-1] == "daemon.stopped"
    assert not proc.db.with_name(proc.db.name + ".addr").exists()


def test_sigint_stops_cleanly_and_a_restart_keeps_the_totals(
    start: Callable[..., Proc], root: Path
) -> None:
    """SIGINT stops the daemon with exit 0; started again it has the same totals."""
    write_lines(
        root / "projects" / ENC / "s1.jsonl",
        [assistant("m1", "r1", "2025-11-20T09:00:00.000Z", input_tokens=7, output_tokens=5)],
    )
    proc = start()
    assert proc.get("/stats")["total_tokens"] == 12  # 7 + 5
    status, stderr = proc.stop(signal.SIGINT)
    assert status == 0
    assert "Traceback" not in stderr
    proc = start()
    stats = proc.get("/stats")
    assert (stats["total_tokens"], stats["ingest"]["responses"]) == (12, 1)
    assert proc.stop(signal.SIGTERM)[0] == 0


def test_logs_are_json_lines_when_stderr_is_not_a_tty(start: Callable[..., Proc]) -> None:
    """With stderr on a pipe every log line is a JSON event; the bound URL is logged."""
    proc = start()
    status, stderr = proc.stop(signal.SIGTERM)
    assert status == 0
    events = log_events(stderr)
    (listening,) = [e for e in events if e["event"] == "daemon.listening"]
    assert listening["url"] == proc.url
    assert listening["level"] == "info"
    assert listening["timestamp"].endswith("Z")


# -- startup failures ----------------------------------------------------------------


def run_failing(
    tmp_path: Path, root: Path, *args: str, db: Path | None = None, **env: str
) -> tuple[int, str]:
    db = db or tmp_path / "data" / "usage.sqlite3"
    done = subprocess.run(
        command(db, *args, port="--port" not in args and "CLAUDE_USAGED_PORT" not in env),
        env=clean_env(root, tmp_path / "home", **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    return done.returncode, done.stderr


def the_one_line(stderr: str) -> str:
    """The single line that is not a JSON log event, with no traceback anywhere."""
    assert "Traceback" not in stderr
    plain = []
    for text in stderr.splitlines():
        try:
            json.loads(text)
        except ValueError:
            plain.append(text)
    assert len(plain) == 1, stderr
    return plain[0]


def test_port_taken_is_one_line_and_exit_3(tmp_path: Path, root: Path) -> None:
    """When the port is taken the daemon prints one line naming it and exits 3."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        status, stderr = run_failing(tmp_path, root, "--port", str(port))
    assert status == 3
    line = the_one_line(stderr)
    assert line.startswith("claude-usaged: ")
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line.lower()


def unusable_db(tmp_path: Path, kind: str) -> Path:
    if kind == "parent is a file":
        (tmp_path / "not-a-dir").write_text("")
        return tmp_path / "not-a-dir" / "usage.sqlite3"
    if kind == "is a directory":
        (tmp_path / "dir.sqlite3").mkdir()
        return tmp_path / "dir.sqlite3"
    (tmp_path / "junk.sqlite3").write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 8)
    return tmp_path / "junk.sqlite3"


@pytest.mark.parametrize("kind", ["parent is a file", "is a directory", "not a database"])
def test_unusable_database_is_one_line_and_exit_3(tmp_path: Path, root: Path, kind: str) -> None:
    """A database that cannot be created or used is reported in one line naming it, exit 3."""
    db = unusable_db(tmp_path, kind)
    status, stderr = run_failing(tmp_path, root, db=db)
    assert status == 3
    line = the_one_line(stderr)
    assert line.startswith("claude-usaged: ")
    assert str(db) in line
    assert not db.with_name(db.name + ".addr").exists()


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--tz", "Mars/Olympus_Mons"], {}, ["tz", "--tz", "Mars/Olympus_Mons"]),
        ([], {"CLAUDE_USAGED_TZ": "Nowhere/Land"}, ["tz", "CLAUDE_USAGED_TZ"]),
        (["--port", "70000"], {}, ["port", "--port"]),
        (["--port", "http"], {}, ["port", "--port"]),
        ([], {"CLAUDE_USAGED_PORT": "http"}, ["port", "CLAUDE_USAGED_PORT"]),
        (["--prices", "/nonexistent/prices.json"], {}, ["prices", "/nonexistent/prices.json"]),
        (["--reconcile-interval", "0"], {}, ["reconcile_interval"]),
        (["--reconcile-interval", "soon"], {}, ["reconcile_interval"]),
    ],
)
def test_bad_setting_is_one_line_and_exit_3(
    tmp_path: Path, root: Path, args: list[str], env: dict[str, str], names: list[str]
) -> None:
    """A bad setting, from a flag or the environment, is one line naming it, exit 3."""
    status, stderr = run_failing(tmp_path, root, *args, **env)
    assert status == 3, stderr
    line = the_one_line(stderr)
    assert stderr.strip() == line  # the daemon's stack never started: no log lines
    assert line.startswith("claude-usaged: ")
    for name in names:
        assert name in line


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", ["not valid JSON"]),
        ('{"models": [{"ids": ["claude-x"], "rows": [{"input": -1}]}]}', ["models[0]"]),
        ('{"modles": []}', ["modles"]),
    ],
)
def test_bad_price_file_is_one_line_and_exit_3(
    tmp_path: Path, root: Path, content: str, words: list[str]
) -> None:
    """A price file that is not valid is reported in one line naming the file, exit 3."""
    prices = tmp_path / "prices.json"
    prices.write_text(content)
    status, stderr = run_failing(tmp_path, root, "--prices", str(prices))
    assert status == 3
    line = the_one_line(stderr)
    assert line.startswith("claude-usaged: bad price file")
    assert str(prices) in line
    for word in words:
        assert word in line


# -- privacy -----------------------------------------------------------------------


SECRET = "zq7-PRIVATE-4c1e9b-do-not-store"


def secret_lines() -> list[dict[str, Any] | str]:
    thinking = assistant("m_t", "r_t", "2025-11-20T09:00:01.000Z", input_tokens=10, output_tokens=1)
    thinking["message"]["content"] = [
        {"type": "thinking", "thinking": f"think {SECRET}", "signature": SECRET}
    ]
    tool = assistant("m_t", "r_t", "2025-11-20T09:00:02.000Z", input_tokens=10, output_tokens=20)
    tool["message"]["content"] = [
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": SECRET}}
    ]
    result = user("2025-11-20T09:00:03.000Z")
    result["message"]["content"] = [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"out {SECRET}"}
    ]
    return [
        user("2025-11-20T09:00:00.000Z", text=f"please {SECRET}"),
        thinking,
        tool,
        result,
        assistant(
            "m_x", "r_x", "2025-11-20T09:00:04.000Z", output_tokens=300, text=f"answer {SECRET}"
        ),
        {"type": "summary", "summary": SECRET, "leafUuid": "u1"},
        # corrupt lines carrying the secret: skipped, and never echoed in a log
        '{"type":"assistant","message":{"usage":' + json.dumps(SECRET),
        f"garbage {SECRET}",
        dumps(assistant("m_bad", "r_bad", f"not-a-time {SECRET}", input_tokens=1, text=SECRET)),
    ]


def test_message_content_is_never_stored_or_logged(start: Callable[..., Proc], root: Path) -> None:
    """A string in text, thinking, tool input and prompts is in no database file or log."""
    path = root / "projects" / ENC / "s1.jsonl"
    write_lines(path, secret_lines()[:4])  # read at start
    proc = start("--log-level", "debug")
    write_lines(path, secret_lines()[4:])  # read from an event
    # m_t: 10 + 20 (its larger line); m_x: 300
    stats = proc.wait_stats(lambda s: s["total_tokens"] == 330)
    assert stats["ingest"]["skipped_lines"] == 3  # two corrupt lines, one bad timestamp
    db_files = [proc.db.with_name(proc.db.name + s) for s in ("", "-wal", "-shm")]
    secret = SECRET.encode()
    while_running = {p.name: p.read_bytes() for p in db_files if p.exists()}
    assert set(while_running) == {p.name for p in db_files}
    for name, data in while_running.items():
        assert secret not in data, name
    status, stderr = proc.stop(signal.SIGTERM)
    assert status == 0
    for p in db_files:
        if p.exists():
            assert secret not in p.read_bytes(), p.name
    assert SECRET not in stderr
    assert any(e["event"] == "lines.skipped" for e in log_events(stderr))
    # and the database does hold the counted responses, without content
    with sqlite3.connect(f"file:{proc.db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT key, input + output FROM responses ORDER BY key").fetchall()
    assert rows == [("m_t:r_t", 30), ("m_x:r_x", 300)]


# -- help and version --------------------------------------------------------------


def test_run_help_names_every_setting_flag_and_environment_variable(tmp_path: Path) -> None:
    """`run --help` lists each setting's flag and environment variable."""
    done = subprocess.run(
        [sys.executable, "-m", "claude_usaged", "run", "--help"],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=True,
    )
    for name, (flag, var) in SOURCES.items():
        assert flag in done.stdout, name
        assert var in done.stdout, name


def test_version_prints_the_version() -> None:
    """`--version` prints the package version and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "claude_usaged", "--version"],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"claude-usaged {__version__}"


def test_a_second_daemon_on_the_same_database_is_refused_and_harms_nothing(
    tmp_path: Path, root: Path, start: Callable[..., Proc]
) -> None:
    """A second `run` on one database exits 3 naming the first, whose address file stays."""
    first = start()
    addr = first.db.with_name(first.db.name + ".addr")
    before = addr.read_text()
    status, stderr = run_failing(tmp_path, root, db=first.db)
    assert status == 3
    line = the_one_line(stderr)
    pid = json.loads(before)["pid"]
    assert line == (
        f"claude-usaged: another claude-usaged is already running on {first.db} "
        f"(pid {pid}, {first.url})"
    )
    assert addr.read_text() == before
    assert first.get("/health")["caught_up"] is True
    status, _ = first.stop(signal.SIGTERM)
    assert status == 0
    assert not addr.exists()


def test_a_taken_port_leaves_the_running_daemons_address_file(
    tmp_path: Path, root: Path, start: Callable[..., Proc]
) -> None:
    """A daemon that fails to bind (other database, same port) removes no address file."""
    first = start()
    port = json.loads(first.db.with_name(first.db.name + ".addr").read_text())["port"]
    other_db = tmp_path / "other" / "usage.sqlite3"
    status, stderr = run_failing(tmp_path, root, "--port", str(port), db=other_db)
    assert status == 3
    assert "already in use" in the_one_line(stderr)
    assert not other_db.with_name(other_db.name + ".addr").exists()
    assert first.db.with_name(first.db.name + ".addr").exists()
