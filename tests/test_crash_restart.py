"""SIGKILL the real daemon at random moments of its catch-up; nothing is lost or doubled.

`python -m claude_usaged run` reads a generated history of ~3,300 responses in
~100 files (streamed lines, resumed copies, subagents, /btw replays, corrupt
lines). It is killed with SIGKILL at random moments, lines are appended
between and during runs (some cut mid-line), and it is restarted each time.
The final per-day, per-block, per-session and per-project totals from the API
must equal a clean single run on the same files and the independent `Oracle`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from test_store import Line, Oracle, all_lines, encode_lines, make_corpus, ms

KILLS = 10
READY_TIMEOUT = 20.0


class Daemon:
    """One `claude-usaged run` process with its own log file."""

    def __init__(self, claude_dir: Path, db: Path, log: Path) -> None:
        self.db = db
        self.log = log
        self.addr = Path(str(db) + ".addr")
        self.addr.unlink(missing_ok=True)  # a killed daemon leaves its own behind
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE")}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "claude_usaged",
                    "run",
                    "--claude-dir",
                    str(claude_dir),
                    "--db",
                    str(db),
                    "--port",
                    "0",
                    "--tz",
                    "UTC",
                    "--log-format",
                    "json",
                    "--reconcile-interval",
                    "0.5",
                ],
                stdout=out,
                stderr=out,
                env=env,
            )

    def _fail(self, why: str) -> AssertionError:
        return AssertionError(f"{why}; log tail:\n{self.log.read_text()[-3000:]}")

    def wait_for_first_log_line(self) -> None:
        """Until the first log line: imports done, the store open, the catch-up starting."""
        deadline = time.monotonic() + READY_TIMEOUT
        while self.log.stat().st_size == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise self._fail("the daemon never logged")
            time.sleep(0.005)

    def url(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                data = json.loads(self.addr.read_text())
                if data["pid"] == self.proc.pid:
                    return str(data["url"])
            except (OSError, ValueError, KeyError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise self._fail("no address file")
            time.sleep(0.01)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url() + path, timeout=10) as resp:
            return json.loads(resp.read())

    def wait_caught_up(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.get("/health")["caught_up"]:
            if time.monotonic() > deadline:
                raise self._fail("never caught up")
            time.sleep(0.02)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


Sums = tuple[int, int, int, int, int]


def _sums(item: dict[str, Any]) -> Sums:
    return (
        item["entries"],
        item["input_tokens"],
        item["output_tokens"],
        item["cache_creation_tokens"],
        item["cache_read_tokens"],
    )


def totals(daemon: Daemon) -> dict[str, Any]:
    """Per day, block, session and project from the API, shaped like the oracle's."""
    days = daemon.get("/daily?tz=UTC")
    return {
        "days": {d["date"]: _sums(d) for d in days["days"]},
        "blocks": [(ms(b["start"]), _sums(b)) for b in daemon.get("/blocks")["blocks"]],
        "sessions": {s["session_id"]: _sums(s) for s in daemon.get("/sessions")["sessions"]},
        "projects": {p["project"]: _sums(p) for p in daemon.get("/projects")["projects"]},
        "cost": days["totals"]["cost_usd"],
    }


def expected(oracle: Oracle) -> dict[str, Any]:
    return {
        "days": oracle.days(),
        "blocks": [(ms(start), sums) for start, sums in oracle.blocks()],
        "sessions": oracle.sessions(),
        "projects": oracle.projects(),
    }


class Writer:
    """Holds back part of every file and appends it in random slices (lines may be cut)."""

    def __init__(self, root: Path, corpus: dict[str, list[Line]], rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.pending: dict[str, bytes] = {}
        for name, lines in sorted(corpus.items()):
            data = encode_lines(lines)
            cut = 0 if rng.random() < 0.1 else rng.randrange(len(data) * 2 // 3, len(data) + 1)
            self._append(name, data[:cut])
            if cut < len(data):
                self.pending[name] = data[cut:]

    def _append(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:
            f.write(data)

    def some(self) -> None:
        for name in self.rng.sample(sorted(self.pending), len(self.pending) // 3):
            data = self.pending.pop(name)
            step = self.rng.randrange(1, len(data) + 1)
            self._append(name, data[:step])
            if step < len(data):
                self.pending[name] = data[step:]

    def rest(self) -> None:
        for name, data in sorted(self.pending.items()):
            self._append(name, data)
        self.pending.clear()


def test_sigkill_during_catch_up_and_restart_counts_every_response_exactly_once(
    tmp_path: Path,
) -> None:
    """Killed at random moments and restarted, the daemon ends with the clean run's totals."""
    corpus = make_corpus(seed=7, sessions=30, per_session=100)
    oracle = Oracle.of(all_lines(corpus))
    assert oracle.entries() > 3000
    want = expected(oracle)
    claude = tmp_path / "claude"
    rng = random.Random(2026)
    writer = Writer(claude / "projects", corpus, rng)
    db = tmp_path / "crashy" / "usage.sqlite3"
    db.parent.mkdir()

    before_caught_up = 0
    started: list[Daemon] = []
    try:
        for round_no in range(KILLS):
            daemon = Daemon(claude, db, tmp_path / f"run-{round_no}.log")
            started.append(daemon)
            if round_no % 3 == 0:
                time.sleep(rng.uniform(0.05, 1.0))  # anywhere from start-up on
            else:
                daemon.wait_for_first_log_line()
                writer.some()  # appended while it runs
                time.sleep(rng.uniform(0.0, 0.2))  # inside the catch-up, mostly
            daemon.kill()
            before_caught_up += b"ingest.caught_up" not in daemon.log.read_bytes()
            writer.some()  # appended while it is down

        writer.rest()
        final = Daemon(claude, db, tmp_path / "final.log")
        clean = Daemon(claude, tmp_path / "clean" / "usage.sqlite3", tmp_path / "clean.log")
        started += [final, clean]
        final.wait_caught_up()
        clean.wait_caught_up()
        got, reference = totals(final), totals(clean)
        assert final.stop() == 0
        assert clean.stop() == 0
    finally:
        for daemon in started:
            if daemon.proc.poll() is None:
                daemon.kill()

    assert {k: v for k, v in reference.items() if k != "cost"} == want
    assert got["days"] == want["days"]
    assert got["blocks"] == want["blocks"]
    assert got["sessions"] == want["sessions"]
    assert got["projects"] == want["projects"]
    assert abs(got["cost"] - reference["cost"]) < 1e-6
    print(f"{before_caught_up} of {KILLS} kills landed before the catch-up finished")
