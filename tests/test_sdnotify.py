"""systemd's notify protocol: datagrams to $NOTIFY_SOCKET, from the module and the daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_process import clean_env

from claude_usaged.sdnotify import notify, watchdog_interval


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd (short path: sun_path is 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sdn-", dir="/tmp") as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        try:
            yield sock, path
        finally:
            sock.close()


def test_notify_sends_all_fields_in_one_datagram(listener: tuple[socket.socket, str]) -> None:
    """The fields arrive as one message, one `KEY=value` per line."""
    sock, path = listener
    assert notify("READY=1", "STATUS=caught up", env={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=caught up"


def test_notify_reaches_an_abstract_socket() -> None:
    """A socket address starting with `@` is an abstract one."""
    name = f"claude-usaged-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_without_systemd_is_a_no_op(tmp_path: Path) -> None:
    """No $NOTIFY_SOCKET, or nobody listening there, sends nothing and raises nothing."""
    assert notify("READY=1", env={}) is False
    assert notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    """Pings come at half the timeout, and only from the process the watchdog is for."""
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_daemon_process_says_ready_status_watchdog_and_stopping(
    listener: tuple[socket.socket, str], tmp_path: Path
) -> None:
    """Run as a notify service, the daemon sends READY=1 once it listens, STATUS= once caught
    up, WATCHDOG=1 at half of WATCHDOG_USEC, and STOPPING=1 on SIGTERM before exiting 0."""
    sock, path = listener
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    db = tmp_path / "data" / "usage.sqlite3"
    env = clean_env(root, tmp_path / "home", NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
    popen = subprocess.Popen(
        [sys.executable, "-m", "claude_usaged", "run", "--db", str(db), "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        messages = [sock.recv(4096).decode()]
        url = json.loads(db.with_name(db.name + ".addr").read_text())["url"]
        assert messages[0] == f"READY=1\nSTATUS=listening on {url}; catching up"
        status = f"STATUS=serving {url}; 0 files, 0 lines read"
        deadline = time.monotonic() + 10
        while not (status in messages and messages.count("WATCHDOG=1") >= 2):
            assert time.monotonic() < deadline, messages
            messages.append(sock.recv(4096).decode())
        popen.send_signal(signal.SIGTERM)
        while messages[-1] != "STOPPING=1":
            messages.append(sock.recv(4096).decode())
        assert popen.wait(timeout=5) == 0
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.communicate()
