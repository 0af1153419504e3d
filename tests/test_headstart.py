"""The head start: `run`'s first catch-up in a forked child (claude_usaged/headstart.py).

The child only saves time: the totals are the same with it and without it, a
stop while it works ends both processes cleanly, and a child killed mid-way
loses nothing, because the daemon's own rescan reads what it did not commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assistant, write_lines
from test_process import (
    ENC,
    STOP_TIMEOUT,
    Proc,
    clean_env,
    command,
    launch,
    log_events,
    poll,
    run_failing,
)

from claude_usaged import __version__, headstart
from claude_usaged.headstart import HeadStart
from claude_usaged.instance import InstanceLock
from claude_usaged.schema import RESPONSE_INDEXES

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork: no head start")

T0 = "2025-11-20T09:00:00.000Z"


def history(root: Path) -> int:
    """Streamed responses, a copy across files and a subagent file; returns the total."""
    project = root / "projects" / ENC
    write_lines(
        project / "s1.jsonl",
        [
            assistant("m1", "r1", T0, input_tokens=100, output_tokens=1),
            assistant("m1", "r1", "2025-11-20T09:00:01.000Z", input_tokens=100, output_tokens=50),
            assistant("m2", "r2", "2025-11-20T10:00:00.000Z", cache_read=1000, output_tokens=7),
        ],
    )
    # a resumed session copies m2 into its own file: counted once
    write_lines(
        project / "s2.jsonl",
        [
            assistant("m2", "r2", "2025-11-20T10:00:00.000Z", cache_read=1000, output_tokens=7),
            assistant("m3", "r3", "2025-11-21T09:00:00.000Z", input_tokens=5, cache_creation=300),
        ],
    )
    write_lines(
        project / "s1" / "subagents" / "agent-a.jsonl",
        [assistant("m4", "r4", "2025-11-20T09:30:00.000Z", output_tokens=40, sidechain=True)],
    )
    return (100 + 50) + (1000 + 7) + (5 + 300) + 40


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for popen in procs:
        if popen.poll() is None:
            popen.kill()
            popen.communicate()
        for pipe in (popen.stdout, popen.stderr):  # left open by a test that only waited
            if pipe is not None:
                pipe.close()


def answers(proc: Proc) -> dict[str, Any]:
    return {path: proc.get(path) for path in ("/daily?tz=UTC", "/blocks", "/sessions", "/projects")}


def test_head_start_and_none_give_the_same_answers(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """With the child and without it: the same totals, days, blocks, sessions, projects."""
    root = tmp_path / "claude"
    total = history(root)
    home = tmp_path / "home"
    with_child = launch(tmp_path / "a" / "u.sqlite3", root, home, started)
    without = launch(
        tmp_path / "b" / "u.sqlite3", root, home, started, CLAUDE_USAGED_HEAD_START="0"
    )
    for proc in (with_child, without):
        stats = proc.get("/stats")
        assert (stats["total_tokens"], stats["ingest"]["responses"]) == (total, 4)
        assert stats["ingest"]["lines"] == 6
    assert answers(with_child) == answers(without)
    # the child did the reading; the daemon's own first rescan found nothing new
    events = {}
    for name, proc in (("with", with_child), ("without", without)):
        status, stderr = proc.stop(signal.SIGTERM)
        assert status == 0
        events[name] = log_events(stderr)
    (done,) = [e for e in events["with"] if e["event"] == "head_start.done"]
    assert done["exit_status"] == 0
    caught = [e for e in events["with"] if e["event"] == "ingest.caught_up"]
    assert [(e.get("process"), e["lines"]) for e in caught] == [("head_start", 6), (None, 6)]
    assert not [e for e in events["without"] if e["event"].startswith("head_start")]
    # the indexes a bulk load leaves out are built once the daemon serves
    for proc in (with_child, without):
        assert index_names(proc.db) >= set(RESPONSE_INDEXES) | {"responses_key"}


def index_names(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {name for (name,) in rows}


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def _state(pid: int) -> str:
    """A process's state letter in /proc (R, S, T stopped, Z...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@contextlib.contextmanager
def _locked_database(db: Path) -> Iterator[None]:
    """The daemon's database with a write transaction held open by this test meanwhile."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        conn.close()  # rolls the transaction back


def _assert_lock_free(db: Path) -> None:
    """Nobody holds the database's instance lock any more (no child left on it)."""
    lock = InstanceLock(db)
    lock.acquire()
    lock.release()


def _spawn(db: Path, root: Path, home: Path, started: list[subprocess.Popen[str]]) -> Any:
    popen = subprocess.Popen(
        command(db),
        env=clean_env(root, home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(popen)
    return popen


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="finds the child through /proc"
)


@needs_proc
def test_a_stop_while_the_child_works_ends_both_with_exit_0(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """SIGTERM while the parent waits for its child: exit 0, no traceback, no child left."""
    root = tmp_path / "claude"
    history(root)
    db = tmp_path / "data" / "u.sqlite3"
    with _locked_database(db):  # the child blocks on it, so it is still working
        popen = _spawn(db, root, tmp_path / "home", started)
        (child,) = poll(lambda: _children(popen.pid), 10.0, "the head start child")
        time.sleep(1.0)  # the parent has imported the server and waits for the child
        popen.send_signal(signal.SIGTERM)
        _out, stderr = popen.communicate(timeout=STOP_TIMEOUT)
    assert popen.returncode == 0, stderr
    assert "Traceback" not in stderr
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # reaped, not left running
    _assert_lock_free(db)


@needs_proc
def test_a_child_killed_mid_way_loses_nothing(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """SIGKILL the child: the daemon logs its status and its own rescan counts everything."""
    root = tmp_path / "claude"
    total = history(root)
    db = tmp_path / "data" / "u.sqlite3"
    with _locked_database(db):
        popen = _spawn(db, root, tmp_path / "home", started)
        (child,) = poll(lambda: _children(popen.pid), 10.0, "the head start child")
        # written while the child waits: the daemon's own scan must count it
        write_lines(
            root / "projects" / ENC / "s3.jsonl",
            [assistant("m5", "r5", "2025-11-22T09:00:00.000Z", output_tokens=9)],
        )
        os.kill(child, signal.SIGKILL)
    addr = db.with_name(db.name + ".addr")
    poll(addr.exists, 15.0, "the address file")
    proc = Proc(popen, json.loads(addr.read_text())["url"], db)
    poll(lambda: proc.get("/health")["caught_up"], 10.0, "the catch-up")
    stats = proc.get("/stats")
    assert (stats["total_tokens"], stats["ingest"]["responses"]) == (total + 9, 5)
    assert proc.get("/health")["head_start"]["exit_status"] == -signal.SIGKILL
    status, stderr = proc.stop(signal.SIGTERM)
    assert status == 0
    events = log_events(stderr)
    (done,) = [e for e in events if e["event"] == "head_start.done"]
    assert done["exit_status"] == -signal.SIGKILL
    caught = [e for e in events if e["event"] == "ingest.caught_up"]
    assert [(e.get("process"), e["lines"]) for e in caught] == [(None, 7)]


def test_turned_off_there_is_no_child(tmp_path: Path) -> None:
    """CLAUDE_USAGED_HEAD_START=0: `run` forks nothing (checked before any import of ours)."""
    code = (
        "import os, sys; from claude_usaged import headstart; "
        "from claude_usaged.settings import load_settings; "
        "s = load_settings({'db': sys.argv[1], 'port': 0}); "
        "print(headstart.wanted(s))"
    )
    db = str(tmp_path / "u.sqlite3")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGED_")}
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
    on = run([sys.executable, "-c", code, db], env=env, capture_output=True, text=True)
    off = run(
        [sys.executable, "-c", code, db],
        env={**env, "CLAUDE_USAGED_HEAD_START": "0"},
        capture_output=True,
        text=True,
    )
    assert (on.stdout.strip(), off.stdout.strip()) == ("True", "False"), on.stderr + off.stderr


@needs_proc
def test_a_daemon_killed_outright_leaves_no_child_behind(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """SIGKILL of the daemon cannot pass a stop on: the child notices and ends itself."""
    root = tmp_path / "claude"
    history(root)
    db = tmp_path / "data" / "u.sqlite3"
    with _locked_database(db):
        popen = _spawn(db, root, tmp_path / "home", started)
        (child,) = poll(lambda: _children(popen.pid), 10.0, "the head start child")
        popen.kill()
        popen.wait()  # not communicate(): the child holds the same pipes

        def gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            # an exited orphan is a zombie until init reaps it: that counts as gone
            return _state(child) == "Z"

        poll(gone, 2.0, "the orphaned child to end")  # it would wait 5 s for the lock
    _assert_lock_free(db)


def _processes_naming(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@needs_proc
@pytest.mark.parametrize("bad", ["setting", "port"])
def test_a_daemon_that_cannot_start_leaves_no_child_and_no_database(
    tmp_path: Path, bad: str
) -> None:
    """Bad settings or a taken port: exit 3 as before; the child got no job, read
    nothing and is gone."""
    root = tmp_path / "claude"
    history(root)
    db = tmp_path / "data" / "u.sqlite3"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        args = ["--tz", "Mars/Olympus"] if bad == "setting" else []
        port = str(sock.getsockname()[1]) if bad == "port" else "0"
        status, stderr = run_failing(tmp_path, root, "--port", port, *args, db=db)
    assert status == 3, stderr
    assert "Traceback" not in stderr
    if bad == "setting":
        assert not db.exists()
    else:  # the daemon opens its database before it binds (as without a head start)
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM responses").fetchone() == (0,)
    assert _processes_naming(str(db)) == []


@needs_proc
def test_a_usage_error_exits_2_and_leaves_no_child(tmp_path: Path) -> None:
    """The child is forked before the command line is read: a wrong flag still exits 2
    with argparse's message, and the child, which got no job, is gone."""
    root = tmp_path / "claude"
    history(root)
    db = tmp_path / "data" / "u.sqlite3"
    status, stderr = run_failing(tmp_path, root, "--no-such-flag", db=db)
    assert status == 2, stderr
    assert "unrecognized arguments: --no-such-flag" in stderr
    assert "Traceback" not in stderr
    assert not db.exists()
    assert _processes_naming(str(db)) == []


@needs_proc
def test_while_the_child_works_the_address_answers_starting(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """The address file comes at once: `/health` says starting, other paths 503 with a
    reason; then the real API answers on the same address."""
    root = tmp_path / "claude"
    total = history(root)
    db = tmp_path / "data" / "u.sqlite3"
    addr = db.with_name(db.name + ".addr")
    with _locked_database(db):  # the child holds the instance lock, then waits on it
        popen = _spawn(db, root, tmp_path / "home", started)
        poll(addr.exists, 10.0, "the address file")
        url = json.loads(addr.read_text())["url"]
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            assert json.loads(resp.read()) == {
                "status": "starting", "version": __version__, "caught_up": False
            }  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/stats", timeout=5)
        assert refused.value.code == 503
        assert "first time" in json.loads(refused.value.read())["error"]
    proc = Proc(popen, url, db)
    poll(lambda: proc.get("/health")["caught_up"], 10.0, "the real API")
    assert json.loads(addr.read_text())["url"] == url
    assert proc.get("/stats")["total_tokens"] == total
    status, stderr = proc.stop(signal.SIGTERM)
    assert status == 0
    events = [e["event"] for e in log_events(stderr)]
    assert events.index("daemon.starting") < events.index("head_start.done")
    assert events.index("head_start.done") < events.index("daemon.listening")


def test_a_bad_switch_value_is_one_line_and_exit_3(tmp_path: Path) -> None:
    """CLAUDE_USAGED_HEAD_START takes on or off (1/0, true/false, yes/no, on/off)."""
    root = tmp_path / "claude"
    history(root)
    status, stderr = run_failing(
        tmp_path, root, db=tmp_path / "u.sqlite3", CLAUDE_USAGED_HEAD_START="maybe"
    )
    assert status == 3
    assert stderr == (
        "claude-usaged: bad environment variable CLAUDE_USAGED_HEAD_START='maybe': "
        "use 1 to start the first catch-up in a child (the default) or 0 not to\n"
    )


@needs_proc
def test_a_stopped_child_does_not_hold_up_a_stop(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """A child stopped with SIGSTOP ignores SIGTERM: the daemon kills it after a grace."""
    root = tmp_path / "claude"
    history(root)
    db = tmp_path / "data" / "u.sqlite3"
    with _locked_database(db):
        popen = _spawn(db, root, tmp_path / "home", started)
        (child,) = poll(lambda: _children(popen.pid), 10.0, "the head start child")
        poll(db.with_name(db.name + ".addr").exists, 10.0, "the address file")
        os.kill(child, signal.SIGSTOP)
        poll(lambda: _state(child) == "T", 5.0, "the child to stop")  # else SIGTERM wins
        popen.send_signal(signal.SIGTERM)
        _out, stderr = popen.communicate(timeout=STOP_TIMEOUT)
    assert popen.returncode == 0, stderr
    (done,) = [e for e in log_events(stderr) if e["event"] == "head_start.done"]
    assert done["exit_status"] == -signal.SIGKILL


PROBE = """
import os, threading
tid = threading.get_native_id()
nice = os.getpriority(os.PRIO_PROCESS, tid)
thread = threading.current_thread().name
"""


@pytest.fixture
def probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """Modules that note, as they are imported, which thread imports them at what niceness."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def probe(name: str, code: str = PROBE) -> Any:
        (tmp_path / f"{name}.py").write_text(code)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return probe


@pytest.fixture
def running_child() -> Iterator[HeadStart]:
    """A head start whose child still runs (a process that sleeps), ended after the test."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield HeadStart(proc.pid)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own niceness is Linux's")
def test_the_daemon_imports_behind_a_running_child(
    probes: Callable[[str], Any], running_child: HeadStart
) -> None:
    """While the child catches up, each module is imported by a thread of its own at a
    lower priority; this thread's priority is unchanged."""
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    names = [probes("probe_a"), probes("probe_b")]
    headstart.import_behind(running_child, names)
    a, b = (sys.modules[n] for n in names)
    assert a.thread == b.thread == "import" and a.tid != b.tid  # a thread each
    assert a.nice == b.nice == min(19, own + headstart.YIELD_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


def test_without_a_running_child_the_daemon_imports_at_full_priority(
    probes: Callable[[str], Any],
) -> None:
    """No head start, or its child done: imported here, as any import."""
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    # a bare pid (no Popen object, which would warn that HeadStart reaped it)
    done = HeadStart(os.posix_spawnp("true", ["true"], os.environ))
    while done.poll() is None:
        time.sleep(0.01)
    for head in (None, done):
        name = probes(f"probe_{'none' if head is None else 'done'}")
        headstart.import_behind(head, [name])
        probe = sys.modules[name]
        assert (probe.thread, probe.nice) == ("MainThread", own)


def test_an_import_that_fails_behind_the_child_fails_here(
    probes: Callable[[str], Any], running_child: HeadStart
) -> None:
    name = probes("probe_broken", "raise ImportError('no such library')\n")
    with pytest.raises(ImportError, match="no such library"):
        headstart.import_behind(running_child, [name])
