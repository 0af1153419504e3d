"""Forwarding: outbox in the store's transaction, delivery to a receiver that fails on cue."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import assistant, daemon_on, user, write_lines
from receiver import RESET, slow, status, until
from receiver import serve as serve_receiver

from claude_usaged import forwarder as fwd
from claude_usaged import outbox
from claude_usaged.forwarder import backoff_delay, build_body, retry_after_seconds
from claude_usaged.pricing import PriceTable
from claude_usaged.settings import load_settings
from claude_usaged.store import Store
from claude_usaged.tailer import read_new

SECRET = "CONTENT-3f9a1c-never-forwarded"
ENC = "-home-dev-api"


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seconds-long waits of production become milliseconds."""
    monkeypatch.setattr(fwd, "BACKOFF_BASE", 0.02)
    monkeypatch.setattr(fwd, "BACKOFF_CAP", 0.2)
    monkeypatch.setattr(fwd, "REJECTED_RETRY", 0.1)
    monkeypatch.setattr(fwd, "DIRTY_POLL", 0.05)


def history(
    root: Path, responses: int, *, session: str = "s1", cwd: str = "/home/dev/api", start: int = 0
) -> None:
    """`responses` responses, each streamed as a smaller then a larger line, with content."""
    lines: list[dict[str, Any] | str] = []
    base = datetime(2025, 11, 20, 9, tzinfo=UTC)
    for i in range(start, start + responses):
        ts = (base + timedelta(seconds=7 * i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        lines.append(user(ts, text=f"{SECRET} prompt {i}", session=session))
        common = {"session": session, "cwd": cwd, "text": f"{SECRET} answer {i}"}
        lines.append(assistant(f"m{session}{i}", f"r{i}", ts, input_tokens=i, **common))
        lines.append(
            assistant(
                f"m{session}{i}",
                f"r{i}",
                ts,
                input_tokens=i,
                output_tokens=10 + i % 97,
                cache_read=1000 + i,
                cache_creation=i % 13,
                **common,
            )
        )
    write_lines(root / "projects" / ENC / f"{session}.jsonl", lines)


def sender_totals(db: Path) -> dict[str, tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT key, input, output, cache_creation, cache_read, web_search, cost "
            "FROM responses WHERE counted = 1"
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def outbox_rows(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT seq, key, batch FROM outbox ORDER BY seq").fetchall()


def assert_same_key_on_every_retry(attempts: dict[str, set[str | None]]) -> None:
    for batch_id, keys in attempts.items():
        assert keys == {f'"{batch_id}"'}, (batch_id, keys)


# -- pure parts ------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    """Retry-After in delay-seconds or as an HTTP date gives the seconds to wait."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert retry_after_seconds("Fri, 02 Jan 2026 03:04:00 GMT", now) == 0.0  # in the past
    assert retry_after_seconds("99999999", now) == fwd.RETRY_AFTER_CAP
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_backoff_is_full_jitter_doubling_from_one_second_to_five_minutes() -> None:
    """The n-th failure waits uniformly in [0, min(300, 2**(n-1))] seconds."""
    ceilings = [backoff_delay(n, 1.0, 300.0, lambda lo, hi: hi) for n in range(1, 12)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff_delay(5, 1.0, 300.0, lambda lo, hi: lo) == 0.0


def test_the_payload_carries_metadata_only_and_matches_the_schema() -> None:
    """A body lists snapshot fields, the batch's projects and sessions, and the agent."""
    from receiver import VALIDATOR

    rows = [
        ("m1:r1", 1_763_629_200_000, "claude-sonnet-4-5", "s1", "/p", 0, 1, 2, 3, 4, 0, 0.5,
         "m1", 1, None, None),
        ("m2:r2", 1_763_629_260_500, "claude-sonnet-4-5", "s2", "/p", 1, 5, 6, 7, 8, 1, None,
         "m1", 0, "fast", "us"),
    ]  # fmt: skip
    agent = {"machine_id": "0" * 32, "hostname": "h", "version": "0.1.0"}
    body = json.loads(build_body(agent, "5f0c8e54-8e49-4f43-a4a4-1a2b3c4d5e6f", 0, rows))
    assert not list(VALIDATOR.iter_errors(body))
    assert body["projects"] == [
        {
            "project": "/p",
            "first_at": "2025-11-20T09:00:00Z",
            "last_at": "2025-11-20T09:01:00.500Z",
            "snapshots": 2,
        }
    ]
    assert [s["session_id"] for s in body["sessions"]] == ["s1", "s2"]
    assert body["snapshots"][1]["is_sidechain"] is True
    assert body["snapshots"][1]["cost_usd"] is None
    # what a receiver needs to apply the replay rule and price 1-hour cache writes
    assert [
        (s["message_id"], s["cache_creation_1h_tokens"], s["speed"], s["inference_geo"])
        for s in body["snapshots"]
    ] == [("m1", 1, None, None), ("m1", 0, "fast", "us")]


# -- the outbox in the store -----------------------------------------------------------


async def test_outbox_rows_are_written_in_the_transaction_that_stores_responses(
    tmp_path: Path, claude_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If queueing fails the responses are not stored either; once it works, one row per key."""
    history(claude_root, 5)
    path = str(claude_root / "projects" / ENC / "s1.jsonl")
    db = tmp_path / "usage.sqlite3"
    store = await Store.open(db, PriceTable.load(None), forward_to="http://127.0.0.1:9/x")
    try:

        async def broken(*_args: Any) -> int:
            raise RuntimeError("disk full")

        with monkeypatch.context() as m:
            m.setattr(outbox, "enqueue", broken)
            with pytest.raises(RuntimeError):
                await store.apply([read_new(path, None)])
        assert sender_totals(db) == {} and outbox_rows(db) == []
        await store.apply([read_new(path, None)])
        assert sorted(r[1] for r in outbox_rows(db)) == sorted(sender_totals(db))
        assert store.outbox_pending == 5
    finally:
        await store.close()


async def test_a_later_larger_line_replaces_the_pending_snapshot(
    tmp_path: Path, claude_root: Path
) -> None:
    """A streamed response that grows keeps one pending row, and the batch has the larger line."""
    path = claude_root / "projects" / ENC / "s1.jsonl"
    ts = "2025-11-20T09:00:00.000Z"
    write_lines(path, [assistant("m1", "r1", ts, input_tokens=10, output_tokens=1)])
    db = tmp_path / "usage.sqlite3"
    store = await Store.open(db, PriceTable.load(None), forward_to="http://127.0.0.1:9/x")
    try:
        first = read_new(str(path), None)
        await store.apply([first])
        write_lines(path, [assistant("m1", "r1", ts, input_tokens=10, output_tokens=500)])
        second = read_new(str(path), first.cursor)
        await store.apply([second])
        assert [r[1] for r in outbox_rows(db)] == ["m1:r1"]

        def build(batch_id: str, created: int, rows: Any) -> bytes:
            return build_body(
                {"machine_id": "0" * 32, "hostname": "h", "version": "v"}, batch_id, created, rows
            )

        batch = await store.write(
            lambda conn: outbox.next_batch(conn, build, 500, 1_000_000, fwd.BodySizer())
        )
        assert batch is not None
        (snap,) = json.loads(batch.body)["snapshots"]
        assert (snap["input_tokens"], snap["output_tokens"]) == (10, 500)
        # a change while the batch is in flight queues a new row beside it
        write_lines(path, [assistant("m1", "r1", ts, input_tokens=10, output_tokens=900)])
        await store.apply([read_new(str(path), second.cursor)])
        assert [(r[1], r[2] is None) for r in outbox_rows(db)] == [
            ("m1:r1", False),
            ("m1:r1", True),
        ]
    finally:
        await store.close()


async def test_forwarding_disabled_writes_no_outbox_and_says_disabled(
    tmp_path: Path, claude_root: Path
) -> None:
    """Without a forward URL nothing is queued, and /health and /stats say `disabled`."""
    history(claude_root, 3)
    db = tmp_path / "usage.sqlite3"
    async with daemon_on(claude_root, db) as rd:
        disabled = {
            "enabled": False,
            "state": "disabled",
            "pending": 0,
            "last_success_at": None,
            "last_error": None,
        }
        assert (await rd.get("/health"))["forwarding"] == disabled
        assert (await rd.get("/stats"))["forwarding"] == disabled
    assert outbox_rows(db) == []


# -- delivery ----------------------------------------------------------------------------


async def test_every_response_arrives_exactly_despite_500s_resets_and_timeouts(
    tmp_path: Path, claude_root: Path
) -> None:
    """After 5xx, a reset mid-body and answers past the timeout, the receiver's per-key
    totals equal the sender's, each batch kept one Idempotency-Key, and no content left."""
    history(claude_root, 1200)
    db = tmp_path / "usage.sqlite3"
    async with serve_receiver() as rec:
        rec.script = [status(500), status(502), RESET, slow(0.6), status(500), RESET, slow(0.6)]
        async with daemon_on(claude_root, db, forward_url=rec.url, forward_timeout=0.25) as rd:
            expected = sender_totals(db)
            assert len(expected) == 1200
            await until(lambda: rec.totals() == expected, 20, "every response delivered")
            # more usage while running: a new response, and a larger line of an old one
            history(claude_root, 1, start=5000)
            write_lines(
                claude_root / "projects" / ENC / "s1.jsonl",
                [assistant("ms110", "r10", "2025-11-20T09:01:10.000Z", output_tokens=99_999)],
            )
            stats = await rd.wait_for(
                lambda s: s["forwarding"]["pending"] == 0 and s["ingest"]["responses"] == 1201
            )
            expected = sender_totals(db)
            await until(lambda: rec.totals() == expected, 10, "the change delivered")
            assert rec.totals()["ms110:r10"][1] == 99_999
            stats = await rd.wait_for(lambda s: s["forwarding"]["pending"] == 0)
            assert stats["forwarding"]["state"] == "ok"
            assert stats["forwarding"]["last_success_at"] is not None
    assert rec.schema_errors == []
    assert_same_key_on_every_retry(rec.keys_by_batch())
    kinds = [a.action for a in rec.attempts]
    assert kinds[:7] == ["500", "502", "reset", "slow", "500", "reset", "slow"]
    assert SECRET.encode() not in rec.raw()
    assert all(len(a.body) <= fwd.MAX_BYTES for a in rec.attempts)
    assert max(len(json.loads(a.body)["snapshots"]) for a in rec.attempts if a.body) == 500


async def test_429_and_503_wait_for_retry_after_in_seconds_and_as_a_date(
    tmp_path: Path, claude_root: Path
) -> None:
    """A 429 with `Retry-After: 1` and a 503 with an HTTP date delay the retry that long."""
    history(claude_root, 3)
    db = tmp_path / "usage.sqlite3"
    async with serve_receiver() as rec:

        def date_in(seconds: int) -> str:
            return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)

        rec.script = [status(429, Retry_After="1")]
        async with daemon_on(claude_root, db, forward_url=rec.url) as rd:
            await until(lambda: len(rec.accepted_batches) == 1, 10, "delivery after 429")
            assert rec.attempts[1].at - rec.attempts[0].at >= 0.95
            # the date is whole seconds: 3 s ahead is between 2 and 3 s from now
            rec.script = [status(503, Retry_After=date_in(3))]
            history(claude_root, 1, start=100)
            await until(lambda: len(rec.accepted_batches) == 2, 10, "delivery after 503")
            assert rec.attempts[3].at - rec.attempts[2].at >= 1.5
            await rd.wait_for(lambda s: s["forwarding"]["pending"] == 0)
            assert rec.totals() == sender_totals(db)
    assert_same_key_on_every_retry(rec.keys_by_batch())


async def test_401_is_shown_logged_once_retried_slowly_and_recovers(
    tmp_path: Path, claude_root: Path, logs: list[dict[str, Any]]
) -> None:
    """A rejected token makes the state `failing` with a hint, one log line, then recovery."""
    history(claude_root, 3)
    db = tmp_path / "usage.sqlite3"
    token = "tok-SECRET-6d1f0aa2"
    async with serve_receiver() as rec:
        rec.fallback = status(401, body="bad token")
        async with daemon_on(claude_root, db, forward_url=rec.url, forward_token=token) as rd:
            await until(lambda: len(rec.attempts) >= 3, 10, "three attempts")
            health = await rd.get("/health")
            forwarding = health["forwarding"]
            assert forwarding["state"] == "failing"
            # daemon_on passes the token as a flag: the hint names the flag
            assert forwarding["last_error"] == "401 Unauthorized — check --forward-token"
            assert forwarding["pending"] == 3
            failed = [e for e in logs if e["event"] == "forward.failed"]
            assert len(failed) == 1 and failed[0]["log_level"] == "error"
            assert failed[0]["error"] == forwarding["last_error"]
            rec.fallback = fwd_ok()
            stats = await rd.wait_for(lambda s: s["forwarding"]["pending"] == 0)
            assert stats["forwarding"]["state"] == "ok"
            assert stats["forwarding"]["last_error"] is None
    assert rec.totals() == sender_totals(db)
    assert {a.authorization for a in rec.attempts} == {f"Bearer {token}"}
    assert_same_key_on_every_retry(rec.keys_by_batch())


def fwd_ok() -> Any:
    from receiver import OK

    return OK


async def test_tokens_never_appear_in_health_stats_logs_or_errors(
    tmp_path: Path, claude_root: Path, logs: list[dict[str, Any]]
) -> None:
    """A receiver that echoes the token back still never gets it shown by us."""
    history(claude_root, 2)
    db = tmp_path / "usage.sqlite3"
    token = "tok-SECRET-91b7e3"
    async with serve_receiver() as rec:
        rec.fallback = status(422, body=f"rejected Authorization: Bearer {token}")
        async with daemon_on(claude_root, db, forward_url=rec.url, forward_token=token) as rd:
            await until(lambda: len(rec.attempts) >= 2, 10, "attempts")
            health = await rd.get("/health")
            stats = await rd.get("/stats")
            assert "rejected the payload" in health["forwarding"]["last_error"]
            shown = json.dumps([health, stats, [str(e) for e in logs]])
            settings = rd.daemon.settings
            shown += repr(settings) + str(settings) + settings.model_dump_json()
    assert token not in shown
    assert "***" in health["forwarding"]["last_error"]
    settings = load_settings(
        {}, env={"CLAUDE_USAGE_API_URL": "https://x", "CLAUDE_USAGE_API_TOKEN": token}
    )
    assert token not in repr(settings) + str(settings)


async def test_batches_hold_at_most_500_responses_and_1_mb(
    tmp_path: Path, claude_root: Path
) -> None:
    """1,200 responses go as 500 + 500 + 200; long project paths make smaller batches under 1 MB."""
    history(claude_root, 1200)
    history(claude_root, 400, session="long", cwd="/home/" + "x" * 4000, start=2000)
    db = tmp_path / "usage.sqlite3"
    async with serve_receiver() as rec, daemon_on(claude_root, db, forward_url=rec.url) as rd:
        await rd.wait_for(lambda s: s["forwarding"]["pending"] == 0)
    sizes = [len(json.loads(a.body)["snapshots"]) for a in rec.attempts]
    assert sum(sizes) == 1600 and max(sizes) == 500
    assert all(len(a.body) <= fwd.MAX_BYTES for a in rec.attempts)
    assert any(len(a.body) > fwd.MAX_BYTES * 0.8 for a in rec.attempts)
    assert rec.totals() == sender_totals(db)


async def test_a_restart_sends_the_unacknowledged_batch_again_with_the_same_key(
    tmp_path: Path, claude_root: Path
) -> None:
    """A batch that failed before a restart is sent after it byte for byte, same key."""
    history(claude_root, 10)
    db = tmp_path / "usage.sqlite3"
    async with serve_receiver() as rec:
        rec.fallback = status(500)
        async with daemon_on(claude_root, db, forward_url=rec.url):
            await until(lambda: len(rec.attempts) >= 2, 10, "failed attempts")
        rec.fallback = fwd_ok()
        failed = rec.attempts[0]
        async with daemon_on(claude_root, db, forward_url=rec.url) as rd:
            await rd.wait_for(lambda s: s["forwarding"]["pending"] == 0)
    delivered = rec.attempts[-1]
    assert (delivered.idempotency_key, delivered.body) == (failed.idempotency_key, failed.body)
    assert rec.accepted_batches == [failed.batch_id]
    assert rec.totals() == sender_totals(db)


async def test_history_is_queued_once_when_forwarding_is_turned_on(
    tmp_path: Path, claude_root: Path
) -> None:
    """Usage counted before forwarding was enabled is sent once; the machine id stays."""
    history(claude_root, 20)
    db = tmp_path / "usage.sqlite3"
    async with daemon_on(claude_root, db):
        pass
    async with serve_receiver() as rec:
        for _ in range(2):
            async with daemon_on(claude_root, db, forward_url=rec.url) as rd:
                await rd.wait_for(lambda s: s["forwarding"]["pending"] == 0)
        assert len(rec.accepted_batches) == 1
        assert rec.totals() == sender_totals(db)
        machines = {json.loads(a.body)["agent"]["machine_id"] for a in rec.attempts}
        assert len(machines) == 1


async def test_a_price_change_forwards_the_new_costs(tmp_path: Path, claude_root: Path) -> None:
    """A receiver that keeps the sender's cost_usd gets the repriced ones after a restart."""
    history(claude_root, 6)
    db = tmp_path / "usage.sqlite3"
    prices = tmp_path / "prices.json"

    def price_file(output_per_mtok: float) -> Path:
        row = {"input": 0, "output": output_per_mtok, "cache_write_5m": 0, "cache_write_1h": 0}
        model = {"ids": ["claude-sonnet-4-5"], "rows": [{**row, "cache_read": 0}]}
        prices.write_text(json.dumps({"models": [model]}))
        return prices

    async with serve_receiver() as rec:
        async with daemon_on(claude_root, db, forward_url=rec.url, prices=price_file(1e6)) as rd:
            await rd.wait_for(lambda s: s["forwarding"]["pending"] == 0)
        # output tokens are 10 + i for response i: $1 a token, then $2
        assert sorted(v[-1] for v in rec.totals().values()) == [10, 11, 12, 13, 14, 15]
        async with daemon_on(claude_root, db, forward_url=rec.url, prices=price_file(2e6)) as rd:
            await rd.wait_for(lambda s: s["forwarding"]["pending"] == 0)
        assert sorted(v[-1] for v in rec.totals().values()) == [20, 22, 24, 26, 28, 30]
        assert rec.totals() == sender_totals(db)


# -- SIGKILL of a sending daemon process ---------------------------------------------------


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def _spawn(root: Path, db: Path, url: str, tmp: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGE")}
    env.update(CLAUDE_CONFIG_DIR=str(root), HOME=str(tmp / "home"))
    cmd = [sys.executable, "-m", "claude_usaged", "run", "--db", str(db), "--port", "0"]
    cmd += ["--forward-url", url, "--forward-timeout", "5", "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_sigkill_while_batches_are_in_flight_then_restart_delivers_exactly(
    tmp_path: Path, claude_root: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Killed (SIGKILL) with a batch in flight and started again, the daemon gets the
    receiver to exactly the sender's totals."""
    history(claude_root, 3000)
    db = tmp_path / "data" / "usage.sqlite3"
    async with serve_receiver() as rec:
        rec.fallback = slow(0.3)  # each batch in flight for 0.3 s (accepted, answered late)
        proc = _spawn(claude_root, db, rec.url, tmp_path)
        procs.append(proc)
        await until(lambda: len(rec.attempts) >= 3, 20, "batches in flight")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 0 < len(rec.accepted_batches) < 6
        rec.fallback = fwd_ok()
        proc = _spawn(claude_root, db, rec.url, tmp_path)
        procs.append(proc)
        await until(lambda: outbox_empty(db) and len(rec.totals()) == 3000, 20, "drained")
        assert rec.totals() == sender_totals(db)
        # the batch in flight at the kill was sent again after the restart, and counted once
        assert len(rec.accepted_batches) > len(set(rec.accepted_batches))
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    assert_same_key_on_every_retry(rec.keys_by_batch())


def outbox_empty(db: Path) -> bool:
    try:
        with closing(sqlite3.connect(db, timeout=1)) as conn:
            return conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    except sqlite3.OperationalError:
        return False
