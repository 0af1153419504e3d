"""The store on a real SQLite file: global dedupe, sidechain replays, blocks, bulk, privacy.

Expected numbers come from hand arithmetic or from `Oracle`, a small independent
implementation of FORMAT.md's counting rules over the generated line dicts (it
never calls the parser, the store or `build_blocks`). `make_corpus` and `Oracle`
are also used by test_crash_restart.py.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import pickle
import random
import sqlite3
import stat
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from conftest import RunningDaemon, assistant, dumps, user, write_lines

from claude_usaged import outbox
from claude_usaged import store as store_module
from claude_usaged.pricing import PriceTable
from claude_usaged.schema import RESPONSE_INDEXES
from claude_usaged.store import Store
from claude_usaged.tailer import Cursor, read_new
from claude_usaged.usage import UsageRecord
from claude_usaged.windows import build_blocks

H = 3_600_000
DAY = 24 * H
WINDOW = 5 * H

Line = dict[str, Any] | str


def ms(iso: str) -> int:
    """ISO-8601 -> epoch ms via datetime (independent of the parser)."""
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def iso(ts_ms: int) -> str:
    """Epoch ms -> Claude Code's `2025-11-20T09:14:05.602Z`."""
    dt = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def utc_date(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date().isoformat()


# -- an independent model of the counting rules --------------------------------------------

Sums = tuple[int, int, int, int, int]
"""(entries, input, output, cache_creation, cache_read)."""


@dataclass
class Oracle:
    """FORMAT.md's rules 1-5 and the block rules, computed from line dicts directly."""

    kept: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, lines: Iterable[Line]) -> Oracle:
        best: dict[str, tuple[int, int, dict[str, Any]]] = {}
        for d in lines:
            if not isinstance(d, dict) or d.get("type") != "assistant":
                continue
            msg = d["message"]
            if msg.get("model") == "<synthetic>":
                continue
            u = msg["usage"]
            split = u.get("cache_creation") or {}
            cc = max(
                u.get("cache_creation_input_tokens") or 0,
                (split.get("ephemeral_5m_input_tokens") or 0)
                + (split.get("ephemeral_1h_input_tokens") or 0),
            )
            row = {
                "message_id": msg.get("id") or dumps(d),
                "ts": ms(d["timestamp"]),
                "session": d["sessionId"],
                "project": d["cwd"],
                "sidechain": bool(d.get("isSidechain")),
                "model": msg["model"],
                "tokens": (
                    u.get("input_tokens") or 0,
                    u.get("output_tokens") or 0,
                    cc,
                    u.get("cache_read_input_tokens") or 0,
                ),
            }
            if "id" not in msg:
                key = dumps(d)  # the line's bytes identify it
            elif d.get("requestId"):
                key = f"{msg['id']}:{d['requestId']}"
            else:
                key = f"{d['sessionId']}:{msg['id']}"
            row["key"] = key
            total = sum(row["tokens"])
            old = best.get(key)
            if old is None or total > old[0] or (total == old[0] and row["ts"] < old[1]):
                best[key] = (total, row["ts"], row)
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for _total, _ts, row in best.values():
            groups[row["message_id"]].append(row)
        kept = []
        for rows in groups.values():
            if not any(r["sidechain"] for r in rows):
                kept.extend(rows)
            elif any(not r["sidechain"] for r in rows):
                kept.extend(r for r in rows if not r["sidechain"])
            else:
                kept.append(min(rows, key=lambda r: (r["ts"], r["key"])))
        return cls(sorted(kept, key=lambda r: (r["ts"], r["key"])))

    @staticmethod
    def _add(acc: list[int], row: dict[str, Any]) -> None:
        acc[0] += 1
        for i, v in enumerate(row["tokens"]):
            acc[i + 1] += v

    def _by(self, name: str) -> dict[str, Sums]:
        acc: dict[str, list[int]] = defaultdict(lambda: [0] * 5)
        for row in self.kept:
            self._add(acc[row[name]], row)
        return {k: tuple(v) for k, v in sorted(acc.items())}  # type: ignore[misc]

    def days(self) -> dict[str, Sums]:
        acc: dict[str, list[int]] = defaultdict(lambda: [0] * 5)
        for row in self.kept:
            self._add(acc[utc_date(row["ts"])], row)
        return {k: tuple(v) for k, v in sorted(acc.items())}  # type: ignore[misc]

    def sessions(self) -> dict[str, Sums]:
        return self._by("session")

    def projects(self) -> dict[str, Sums]:
        return self._by("project")

    def blocks(self) -> list[tuple[str, Sums]]:
        """(start, sums) per 5-hour block: floor to the UTC hour, strict `>` 5 h rules."""
        out: list[tuple[int, list[int]]] = []
        last = 0
        for row in self.kept:
            ts = row["ts"]
            if not out or ts - out[-1][0] > WINDOW or ts - last > WINDOW:
                out.append((ts - ts % H, [0] * 5))
            self._add(out[-1][1], row)
            last = ts
        return [(iso(start), tuple(s)) for start, s in out]  # type: ignore[misc]

    def entries(self) -> int:
        return len(self.kept)


# -- a generated history shaped like Claude Code's -----------------------------------------

MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-5-20251101", "claude-haiku-4-5-20251001")
BASE = ms("2025-11-17T20:00:00.000Z")


def make_corpus(seed: int, sessions: int, per_session: int) -> dict[str, list[Line]]:
    """Relative path -> lines: streamed responses, resumed copies, subagents, /btw replays,
    responses without requestId or message.id, synthetic, progress and corrupt lines."""
    rng = random.Random(seed)
    counter = itertools.count(1)
    files: dict[str, list[Line]] = {}
    for s in range(sessions):
        cwd, enc, sid = f"/home/dev/p{s % 3}", f"-home-dev-p{s % 3}", f"sess-{s:03d}"
        t = BASE + rng.randrange(0, 3 * DAY)
        main: list[Line] = []
        sub: list[Line] = []
        btw: list[Line] = []
        for _ in range(per_session):
            gap = rng.randrange(4 * H, 7 * H) if rng.random() < 0.04 else rng.randrange(500, H // 3)
            t += gap
            n = next(counter)
            main.append(user(iso(t), text=f"prompt {n}", session=sid))
            msg, req = f"msg_{n:05d}", (None if rng.random() < 0.05 else f"req_{n:05d}")
            model = rng.choice(MODELS)
            base = {
                "model": model,
                "input_tokens": rng.randrange(1, 60),
                "cache_creation": rng.choice([0, rng.randrange(1, 6000)]),
                "cache_read": rng.randrange(0, 60000),
                "session": sid,
                "cwd": cwd,
            }
            out = 0
            for _ in range(rng.choice([1, 1, 2, 3])):  # streamed: output grows
                out += rng.randrange(1, 500)
                t += rng.randrange(100, 4000)
                main.append(assistant(msg, req, iso(t), output_tokens=out, **base))
            if rng.random() < 0.02:  # a larger copy hours later: the response moves
                late = t + rng.randrange(H, 9 * H)
                main.append(assistant(msg, req, iso(late), output_tokens=out + 1, **base))
            roll = rng.random()
            if roll < 0.07:  # /btw side question replaying this response
                replay = {**base, "cache_read": base["cache_read"] + 1000}
                ts = t + rng.randrange(-60_000, 600_000)
                btw.append(
                    assistant(
                        msg, f"req_btw_{n:05d}", iso(ts), output_tokens=9, sidechain=True, **replay
                    )
                )
            elif roll < 0.14:  # a subagent's own response, sometimes replayed again
                m = next(counter)
                ts = t + rng.randrange(1000, 60_000)
                sub_msg = f"msg_{m:05d}"
                sub.append(
                    assistant(
                        sub_msg, f"req_{m:05d}", iso(ts), output_tokens=77, sidechain=True, **base
                    )
                )
                if rng.random() < 0.5:
                    ts += rng.randrange(-30_000, 300_000)
                    btw.append(
                        assistant(
                            sub_msg,
                            f"req_btw_{m:05d}",
                            iso(ts),
                            output_tokens=5,
                            sidechain=True,
                            **base,
                        )
                    )
            elif roll < 0.17:
                main.append(
                    assistant(f"msg_syn_{n}", None, iso(t + 1), model="<synthetic>", session=sid)
                )
            elif roll < 0.20:
                inner = assistant(f"msg_sub_{n}", "req_x", iso(t), output_tokens=999, **base)
                main.append({"type": "progress", "sessionId": sid, "data": {"message": inner}})
            elif roll < 0.22:  # no message.id: the line's bytes are its key
                main.append(assistant(None, None, iso(t + 2), output_tokens=3, **base))
            elif roll < 0.23:  # a crash left half a line
                main.append('{"type":"assistant","message":{"usage":{"input_tokens":')
        files[f"{enc}/{sid}.jsonl"] = main
        if sub:
            files[f"{enc}/{sid}/subagents/agent-a{s}.jsonl"] = sub
        if btw:
            files[f"{enc}/{sid}/subagents/agent-btw{s}.jsonl"] = btw
    mains = sorted(p for p in files if "/subagents/" not in p)
    for k in range(max(1, sessions // 4)):  # resumed sessions start with a copy
        src = rng.choice(mains)
        copied = files[src][: rng.randrange(1, len(files[src]) + 1)]
        extra: list[Line] = []
        for _ in range(3):
            n = next(counter)
            extra.append(
                assistant(
                    f"msg_{n:05d}",
                    f"req_{n:05d}",
                    iso(BASE + 4 * DAY + n * 1000),
                    input_tokens=n % 50,
                    output_tokens=11,
                    session=f"resumed-{k}",
                    cwd="/home/dev/p0",
                )
            )
        files[f"{src.split('/')[0]}/resumed-{k}.jsonl"] = list(copied) + extra
    return files


def encode_lines(lines: Iterable[Line]) -> bytes:
    return b"".join((dumps(x) if isinstance(x, dict) else x).encode() + b"\n" for x in lines)


def all_lines(corpus: dict[str, list[Line]]) -> list[Line]:
    return [line for lines in corpus.values() for line in lines]


# -- reading what the store holds ----------------------------------------------------------

AGG_TABLES = {
    "agg_bucket": "bucket, model",
    "agg_session": "session_id, model",
    "agg_project": "project, model",
    "blocks": "start",
}


def connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every derived table, ordered; costs rounded (float sums depend on order)."""
    con = connect(db)
    try:
        out = {}
        for table, order in AGG_TABLES.items():
            rows = con.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
            out[table] = [
                tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows
            ]
        out["responses"] = con.execute(
            "SELECT key, ts, input, output, cache_creation, cache_read, is_sidechain, counted "
            "FROM responses ORDER BY key"
        ).fetchall()
        return out
    finally:
        con.close()


def days(db: Path) -> dict[str, Sums]:
    """Per UTC day from the 15-minute buckets."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0] * 5)
    with connect(db) as con:
        for bucket, *sums in con.execute(
            "SELECT bucket, entries, input, output, cache_creation, cache_read FROM agg_bucket"
        ):
            day = acc[utc_date(bucket * 15 * 60_000)]
            for i, v in enumerate(sums):
                day[i] += v
    return {k: tuple(v) for k, v in sorted(acc.items())}  # type: ignore[misc]


def blocks(db: Path) -> list[tuple[str, Sums]]:
    with connect(db) as con:
        rows = con.execute(
            "SELECT start, entries, input, output, cache_creation, cache_read FROM blocks "
            "ORDER BY start"
        ).fetchall()
    return [(iso(start), tuple(sums)) for start, *sums in rows]  # type: ignore[misc]


def keyed(db: Path, table: str, column: str) -> dict[str, Sums]:
    with connect(db) as con:
        rows = con.execute(
            f"SELECT {column}, sum(entries), sum(input), sum(output), sum(cache_creation), "
            f"sum(cache_read) FROM {table} GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {k: tuple(v) for k, *v in rows}  # type: ignore[misc]


def meta(db: Path, name: str) -> str | None:
    with connect(db) as con:
        row = con.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def assert_matches_oracle(db: Path, oracle: Oracle) -> None:
    assert days(db) == oracle.days()
    assert blocks(db) == oracle.blocks()
    assert keyed(db, "agg_session", "session_id") == oracle.sessions()
    assert keyed(db, "agg_project", "project") == oracle.projects()


# -- fixtures and feeding ------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "usage.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(db_path, PriceTable.load())
    yield s
    await s.close()


class Feeder:
    """Reads files with their own cursors and applies them to a store."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root
        self.cursors: dict[str, Cursor] = {}

    async def apply(self, *names: str) -> None:
        results = []
        for name in names:
            path = str(self.root / name)
            results.append(read_new(path, self.cursors.get(path)))
        await self.store.apply(results)
        for r in results:
            assert r.cursor is not None
            self.cursors[r.path] = r.cursor


def a(msg: str, req: str | None, ts: str, **kw: Any) -> dict[str, Any]:
    return assistant(msg, req, ts, **kw)


async def disk_full(self: Store, name: str, delta: int) -> None:
    """Store._bump_counter failing: it runs after the responses and cursors were written,
    inside the transaction."""
    raise OSError(28, "No space left on device")


# -- global dedupe -------------------------------------------------------------------------


async def test_response_moved_past_later_blocks_leaves_its_old_block(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    """A larger line dated after other blocks moves the response out of its first block."""
    feeder = Feeder(store, tmp_path)
    write_lines(
        tmp_path / "s.jsonl",
        [
            a("A", "r", "2025-11-20T10:00:00.000Z", input_tokens=1),
            a("B", "r", "2025-11-20T11:00:00.000Z", input_tokens=2, output_tokens=1),
            a("C", "r", "2025-11-20T16:00:00.000Z", input_tokens=4),
        ],
    )
    await feeder.apply("s.jsonl")
    assert blocks(db_path) == [
        ("2025-11-20T10:00:00.000Z", (2, 3, 1, 0, 0)),
        ("2025-11-20T16:00:00.000Z", (1, 4, 0, 0, 0)),
    ]
    write_lines(
        tmp_path / "s.jsonl",
        [a("B", "r", "2025-11-20T17:30:00.000Z", input_tokens=2, output_tokens=9)],
    )
    await feeder.apply("s.jsonl")
    # B now 2 + 9 at 17:30, inside C's block (16:00-21:00); A alone in 10:00
    assert blocks(db_path) == [
        ("2025-11-20T10:00:00.000Z", (1, 1, 0, 0, 0)),
        ("2025-11-20T16:00:00.000Z", (2, 6, 9, 0, 0)),
    ]


@pytest.mark.parametrize("order", ["a_then_b", "b_then_a", "one_batch"])
async def test_copies_of_a_response_in_two_files_count_once(
    store: Store, db_path: Path, tmp_path: Path, order: str
) -> None:
    """A response copied into a resumed session's file counts once, in any order."""
    m1 = a("m1", "r1", "2025-11-20T10:00:00.000Z", input_tokens=100, output_tokens=10)
    write_lines(
        tmp_path / "a.jsonl",
        [m1, a("m2", "r2", "2025-11-20T10:01:00.000Z", input_tokens=200, output_tokens=20)],
    )
    write_lines(
        tmp_path / "b.jsonl",
        [m1, a("m3", "r3", "2025-11-20T10:02:00.000Z", input_tokens=300, output_tokens=30)],
    )
    feeder = Feeder(store, tmp_path)
    if order == "a_then_b":
        await feeder.apply("a.jsonl")
        await feeder.apply("b.jsonl")
    elif order == "b_then_a":
        await feeder.apply("b.jsonl")
        await feeder.apply("a.jsonl")
    else:
        await feeder.apply("a.jsonl", "b.jsonl")
    # m1 + m2 + m3: in 100+200+300 = 600, out 10+20+30 = 60
    assert days(db_path) == {"2025-11-20": (3, 600, 60, 0, 0)}
    assert blocks(db_path) == [("2025-11-20T10:00:00.000Z", (3, 600, 60, 0, 0))]


async def test_tied_copies_are_attributed_the_same_whatever_the_read_order(
    tmp_path: Path,
) -> None:
    """Copies tied on total and time land in the same session and project in any order."""
    original = a("m1", "r1", "2025-11-20T10:00:00.000Z", input_tokens=9, session="old", cwd="/a")
    resumed = a("m1", "r1", "2025-11-20T10:00:00.000Z", input_tokens=9, session="new", cwd="/b")
    write_lines(tmp_path / "old.jsonl", [original])
    write_lines(tmp_path / "new.jsonl", [resumed])
    seen = []
    for order in (["old.jsonl", "new.jsonl"], ["new.jsonl", "old.jsonl"]):
        db = tmp_path / "-".join(order) / "usage.sqlite3"
        s = await Store.open(db, PriceTable.load())
        feeder = Feeder(s, tmp_path)
        for name in order:
            await feeder.apply(name)
        await s.close()
        seen.append((keyed(db, "agg_session", "session_id"), keyed(db, "agg_project", "project")))
    assert seen[0] == seen[1]


async def test_later_larger_line_moves_the_response_to_its_day_and_block(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    """A response's larger later line replaces it, moving it across a day and block edge."""
    path = tmp_path / "s.jsonl"
    feeder = Feeder(store, tmp_path)
    common = {"input_tokens": 10}
    write_lines(path, [a("m0", "r0", "2025-11-20T19:00:00.000Z", input_tokens=100)])
    write_lines(path, [a("m1", "r1", "2025-11-20T23:59:59.999Z", output_tokens=1, **common)])
    await feeder.apply("s.jsonl")
    # step 1: m0 100 + m1 (10 + 1) in one block 19:00 (m1 is 4h59m59.999 after its start)
    assert days(db_path) == {"2025-11-20": (2, 110, 1, 0, 0)}
    assert blocks(db_path) == [("2025-11-20T19:00:00.000Z", (2, 110, 1, 0, 0))]

    write_lines(path, [a("m1", "r1", "2025-11-21T00:00:00.001Z", output_tokens=500, **common)])
    await feeder.apply("s.jsonl")
    # step 2: m1 is now 10 + 500 at 00:00:00.001, 5 h + 1 ms after 19:00: next day, new block
    assert days(db_path) == {"2025-11-20": (1, 100, 0, 0, 0), "2025-11-21": (1, 10, 500, 0, 0)}
    assert blocks(db_path) == [
        ("2025-11-20T19:00:00.000Z", (1, 100, 0, 0, 0)),
        ("2025-11-21T00:00:00.000Z", (1, 10, 500, 0, 0)),
    ]

    write_lines(
        tmp_path / "copy.jsonl",
        [a("m1", "r1", "2025-11-20T23:59:59.999Z", output_tokens=1, **common)],
    )
    await feeder.apply("copy.jsonl")
    # step 3: a stale smaller copy (a resumed file) changes nothing
    assert days(db_path) == {"2025-11-20": (1, 100, 0, 0, 0), "2025-11-21": (1, 10, 500, 0, 0)}
    assert len(blocks(db_path)) == 2


async def test_response_cost_is_priced_at_its_model_rate(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    """A Sonnet 4.5 response's stored cost is 1000 x $3 + 2000 x $15 per million = $0.033."""
    write_lines(
        tmp_path / "s.jsonl",
        [a("m", "r", "2025-11-20T10:00:00.000Z", input_tokens=1000, output_tokens=2000)],
    )
    await Feeder(store, tmp_path).apply("s.jsonl")
    with connect(db_path) as con:
        (cost,) = con.execute("SELECT cost FROM blocks").fetchone()
    assert cost == pytest.approx(0.033, abs=1e-12)


# -- sidechain replays ---------------------------------------------------------------------

PARENT = a(
    "msg_P",
    "req_parent",
    "2025-11-20T10:00:00.000Z",
    input_tokens=5,
    output_tokens=50,
    cache_read=1000,
    session="sess-main",
)
REPLAY = a(
    "msg_P",
    "req_btw",
    "2025-11-20T09:59:00.000Z",
    input_tokens=5,
    output_tokens=7,
    cache_read=99_000,
    session="sess-btw",
    sidechain=True,
)


@pytest.mark.parametrize("bulk", [False, True])
async def test_speed_and_geo_are_stored_as_read_and_null_when_absent(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bulk: bool
) -> None:
    """`fast`/`us` are stored as text, an absent value as NULL, in both write paths; a
    larger later line replaces them (here: with none)."""
    if bulk:
        monkeypatch.setattr(store_module, "BULK_THRESHOLD", 1)
    fast_us = {"speed": "fast", "inference_geo": "us"}
    write_lines(
        tmp_path / "s.jsonl",
        [
            a("m1", "r1", "2025-11-20T10:00:00.000Z", input_tokens=5, extra_usage=fast_us),
            a("m2", "r2", "2025-11-20T10:01:00.000Z", input_tokens=5),
            a("m3", "r3", "2025-11-20T10:02:00.000Z", input_tokens=5, extra_usage=fast_us),
            a("m3", "r3", "2025-11-20T10:02:01.000Z", input_tokens=5, output_tokens=2),
            a("m4", "r4", "2025-11-20T10:03:00.000Z", extra_usage={"inference_geo": "us"}),
        ],
    )
    s = await Store.open(db_path, PriceTable.load())
    try:
        await Feeder(s, tmp_path).apply("s.jsonl")
        await s.settle()
    finally:
        await s.close()
    with connect(db_path) as con:
        rows = con.execute(
            "SELECT message_id, speed, geo, typeof(speed), typeof(geo) FROM responses "
            "ORDER BY message_id"
        ).fetchall()
    assert rows == [
        ("m1", "fast", "us", "text", "text"),
        ("m2", None, None, "null", "null"),
        ("m3", None, None, "null", "null"),
        ("m4", None, "us", "null", "text"),
    ]


@pytest.mark.parametrize("order", ["parent_first", "replay_first", "one_batch"])
async def test_btw_replay_is_dropped_and_the_parent_kept_in_any_order(
    store: Store, db_path: Path, tmp_path: Path, order: str
) -> None:
    """A /btw replay (same message.id, other requestId, sidechain) never counts."""
    write_lines(tmp_path / "main.jsonl", [PARENT])
    write_lines(tmp_path / "btw.jsonl", [REPLAY])
    feeder = Feeder(store, tmp_path)
    if order == "parent_first":
        await feeder.apply("main.jsonl")
        await feeder.apply("btw.jsonl")
    elif order == "replay_first":
        await feeder.apply("btw.jsonl")
        # alone, the replay is the earliest of an all-sidechain group: it counts for now
        assert days(db_path) == {"2025-11-20": (1, 5, 7, 0, 99_000)}
        assert keyed(db_path, "agg_session", "session_id") == {"sess-btw": (1, 5, 7, 0, 99_000)}
        await feeder.apply("main.jsonl")
    else:
        await feeder.apply("btw.jsonl", "main.jsonl")
    # only the parent: 5 + 50 + 1000
    assert days(db_path) == {"2025-11-20": (1, 5, 50, 0, 1000)}
    assert blocks(db_path) == [("2025-11-20T10:00:00.000Z", (1, 5, 50, 0, 1000))]
    assert keyed(db_path, "agg_session", "session_id") == {"sess-main": (1, 5, 50, 0, 1000)}


@pytest.mark.parametrize("order", ["early_first", "late_first"])
async def test_all_sidechain_group_keeps_the_earliest(
    store: Store, db_path: Path, tmp_path: Path, order: str
) -> None:
    """When every copy is a sidechain, the earliest one counts and the others do not."""
    early = a(
        "msg_S",
        "req_1",
        "2025-11-20T10:00:00.000Z",
        input_tokens=3,
        output_tokens=30,
        sidechain=True,
    )
    late = a(
        "msg_S",
        "req_2",
        "2025-11-20T10:30:00.000Z",
        input_tokens=3,
        output_tokens=400,
        sidechain=True,
    )
    write_lines(tmp_path / "early.jsonl", [early])
    write_lines(tmp_path / "late.jsonl", [late])
    feeder = Feeder(store, tmp_path)
    names = ["early.jsonl", "late.jsonl"]
    for name in names if order == "early_first" else reversed(names):
        await feeder.apply(name)
    assert days(db_path) == {"2025-11-20": (1, 3, 30, 0, 0)}
    assert blocks(db_path) == [("2025-11-20T10:00:00.000Z", (1, 3, 30, 0, 0))]


async def test_distinct_sidechain_responses_all_count(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    """Subagent responses with their own message ids count like any other."""
    write_lines(
        tmp_path / "agent.jsonl",
        [
            a("msg_A1", "req_A1", "2025-11-20T10:00:00.000Z", input_tokens=1, sidechain=True),
            a("msg_A2", "req_A2", "2025-11-20T10:01:00.000Z", input_tokens=2, sidechain=True),
        ],
    )
    write_lines(
        tmp_path / "main.jsonl", [a("msg_M", "req_M", "2025-11-20T10:02:00.000Z", input_tokens=4)]
    )
    await Feeder(store, tmp_path).apply("agent.jsonl", "main.jsonl")
    assert days(db_path) == {"2025-11-20": (3, 1 + 2 + 4, 0, 0, 0)}


# -- out-of-order arrival ----------------------------------------------------------------------


async def test_backfilled_older_response_recomputes_later_blocks(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    """A response older than the newest one moves the block edges after it."""
    feeder = Feeder(store, tmp_path)
    write_lines(
        tmp_path / "s.jsonl",
        [
            a("A", "r", "2025-11-20T10:20:00.000Z", input_tokens=1),
            a("B", "r", "2025-11-20T14:50:00.000Z", input_tokens=10),
            a("C", "r", "2025-11-20T15:10:00.000Z", input_tokens=100),
        ],
    )
    await feeder.apply("s.jsonl")
    # A opens 10:00; B 4h50 after -> same; C 5h10 after 10:00 -> new block 15:00
    assert blocks(db_path) == [
        ("2025-11-20T10:00:00.000Z", (2, 11, 0, 0, 0)),
        ("2025-11-20T15:00:00.000Z", (1, 100, 0, 0, 0)),
    ]
    write_lines(
        tmp_path / "late.jsonl", [a("X", "r", "2025-11-20T09:00:00.000Z", input_tokens=1000)]
    )
    await feeder.apply("late.jsonl")
    # X opens 09:00; A joins; B is 5h50 after 09:00 -> new block 14:00; C 1h10 after -> joins
    expected = [
        ("2025-11-20T09:00:00.000Z", (2, 1001, 0, 0, 0)),
        ("2025-11-20T14:00:00.000Z", (2, 110, 0, 0, 0)),
    ]
    assert blocks(db_path) == expected
    with connect(db_path) as con:
        rows = con.execute(
            "SELECT ts, model, input, output, cache_creation, cache_read, cost FROM responses "
            "WHERE counted = 1 ORDER BY ts"
        ).fetchall()
    # the same blocks from scratch, over all rows: build_blocks and the oracle
    fresh = build_blocks(rows)
    assert [(iso(b.start_ms), (b.entries, b.input_tokens, 0, 0, 0)) for b in fresh] == expected
    lines = [a(f"k{i}", "r", iso(r[0]), input_tokens=r[2]) for i, r in enumerate(rows)]
    assert Oracle.of(lines).blocks() == expected


async def test_backfill_inside_an_old_block_keeps_the_blocks_before_it(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    """A late response between two old blocks joins the right one and leaves earlier ones."""
    feeder = Feeder(store, tmp_path)
    write_lines(
        tmp_path / "s.jsonl",
        [
            a("A", "r", "2025-11-19T08:00:00.000Z", input_tokens=1),
            a("B", "r", "2025-11-20T10:00:00.000Z", input_tokens=2),
            a("C", "r", "2025-11-20T18:00:00.000Z", input_tokens=4),
        ],
    )
    await feeder.apply("s.jsonl")
    write_lines(tmp_path / "late.jsonl", [a("X", "r", "2025-11-20T14:30:00.000Z", input_tokens=8)])
    await feeder.apply("late.jsonl")
    # X joins B's block (4h30 after 10:00); C is 3h30 after X but 8 h after 10:00 -> own block
    assert blocks(db_path) == [
        ("2025-11-19T08:00:00.000Z", (1, 1, 0, 0, 0)),
        ("2025-11-20T10:00:00.000Z", (2, 10, 0, 0, 0)),
        ("2025-11-20T18:00:00.000Z", (1, 4, 0, 0, 0)),
    ]


# -- incremental and bulk paths agree ------------------------------------------------------


async def feed_in_pieces(
    store: Store, root: Path, corpus: dict[str, list[Line]], seed: int
) -> Feeder:
    """Append each file's bytes in random slices (lines cut anywhere), interleaving files
    at random, and apply after every step: the incremental path, one small batch at a time."""
    rng = random.Random(seed)
    data = {name: encode_lines(lines) for name, lines in corpus.items()}
    done = dict.fromkeys(data, 0)
    feeder = Feeder(store, root)
    while done:
        names = rng.sample(sorted(done), min(len(done), rng.choice([1, 1, 2, 3])))
        for name in names:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            step = rng.randrange(1, 2000)
            with path.open("ab") as f:
                f.write(data[name][done[name] : done[name] + step])
            done[name] += step
            if done[name] >= len(data[name]):
                del done[name]
        await feeder.apply(*names)
    return feeder


async def feed_in_bulk(store: Store, root: Path, corpus: dict[str, list[Line]], seed: int) -> None:
    """Write every file whole, then apply them in three large batches in random order."""
    for name, lines in corpus.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode_lines(lines))
    names = sorted(corpus)
    random.Random(seed).shuffle(names)
    feeder = Feeder(store, root)
    third = len(names) // 3 + 1
    for i in range(0, len(names), third):
        await feeder.apply(*names[i : i + third])


async def test_incremental_and_bulk_paths_build_identical_aggregates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One-slice-at-a-time and bulk ingestion of the same history give identical tables."""
    corpus = make_corpus(seed=11, sessions=8, per_session=30)
    oracle = Oracle.of(all_lines(corpus))
    prices = PriceTable.load()

    inc_db = tmp_path / "inc" / "usage.sqlite3"
    inc = await Store.open(inc_db, prices)
    await feed_in_pieces(inc, tmp_path / "inc-files", corpus, seed=5)
    assert await inc.settle() is False  # never went bulk
    await inc.close()

    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    bulk_db = tmp_path / "bulk" / "usage.sqlite3"
    bulk = await Store.open(bulk_db, prices)
    await feed_in_bulk(bulk, tmp_path / "bulk-files", corpus, seed=6)
    assert meta(bulk_db, "dirty") == "1"
    assert await bulk.settle() is True
    await bulk.close()

    assert oracle.entries() > 200
    assert_matches_oracle(inc_db, oracle)
    assert_matches_oracle(bulk_db, oracle)
    assert tables(inc_db) == tables(bulk_db)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_arrival_order_matches_the_oracle(
    db_path: Path, tmp_path: Path, seed: int
) -> None:
    """Whatever order files and line pieces arrive in, the totals equal the oracle's."""
    corpus = make_corpus(seed=100 + seed, sessions=5, per_session=20)
    s = await Store.open(db_path, PriceTable.load())
    try:
        await feed_in_pieces(s, tmp_path / "files", corpus, seed=seed)
    finally:
        await s.close()
    assert_matches_oracle(db_path, Oracle.of(all_lines(corpus)))


def exact_tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table row for row, floats unrounded, with each value's SQLite type (cursors
    without their device and inode: the two stores read copies of the files)."""
    queries = {
        "responses": "SELECT * FROM responses ORDER BY key",
        "agg_bucket": "SELECT * FROM agg_bucket ORDER BY bucket, model",
        "agg_session": "SELECT * FROM agg_session ORDER BY session_id, project, model",
        "agg_project": "SELECT * FROM agg_project ORDER BY project, model",
        "blocks": "SELECT * FROM blocks ORDER BY start",
        "cursors": "SELECT offset, head_len, head_hash, tail_hash, size FROM cursors "
        "ORDER BY head_hash, size",
        "meta": "SELECT name, value FROM meta WHERE name <> 'machine_id' ORDER BY name",
        "rowid_order": "SELECT key FROM responses ORDER BY rowid",
        "indexes": "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name",
    }
    with connect(db) as con:
        out = {name: con.execute(sql).fetchall() for name, sql in queries.items()}
        out["types"] = con.execute(
            "SELECT typeof(cost), typeof(is_sidechain), typeof(speed), count(*) "
            "FROM responses GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
    return out


async def test_settle_from_memory_equals_settle_from_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk load onto an empty table settles from its rows in memory; a crash before the
    settle makes the reopened store rebuild from the table instead. Both give the same
    tables, floats bit for bit, on a history with copies across batches, streamed lines,
    replays and tied copies."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    corpus = make_corpus(seed=41, sessions=8, per_session=30)
    oracle = Oracle.of(all_lines(corpus))
    prices = PriceTable.load()

    memory_db = tmp_path / "memory" / "usage.sqlite3"
    memory = await Store.open(memory_db, prices)
    await feed_in_bulk(memory, tmp_path / "files-a", corpus, seed=7)
    assert memory._loaded is not None  # the path under test: rows kept in memory
    assert await memory.settle() is True
    await memory.close()

    table_db = tmp_path / "table" / "usage.sqlite3"
    crashed = await Store.open(table_db, prices)
    await feed_in_bulk(crashed, tmp_path / "files-b", corpus, seed=7)
    await crashed.close()  # no settle: the reopened store reads the table back
    assert meta(table_db, "dirty") == "1"
    reopened = await Store.open(table_db, prices)
    await reopened.close()

    assert meta(memory_db, "dirty") == meta(table_db, "dirty") == "0"
    with connect(memory_db) as con:
        replays = con.execute("SELECT count(*) FROM responses WHERE counted = 0").fetchone()[0]
    assert replays == replay_count(corpus) > 0
    assert exact_tables(memory_db) == exact_tables(table_db)
    assert_matches_oracle(memory_db, oracle)


def replay_count(corpus: dict[str, list[Line]]) -> int:
    """Deduplicated responses that `Oracle` does not keep: the sidechain replays."""
    return response_count(all_lines(corpus)) - Oracle.of(all_lines(corpus)).entries()


def response_count(lines: list[Line]) -> int:
    """Rows of `responses` for these lines: one per key, replays included."""
    return len({row["key"] for line in lines for row in Oracle.of([line]).kept})


async def test_bulk_load_onto_a_filled_table_reads_the_table_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk batch after earlier responses keeps no rows in memory; totals stay exact."""
    corpus = make_corpus(seed=43, sessions=6, per_session=20)
    root = tmp_path / "files"
    for name, lines in corpus.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode_lines(lines))
    names = sorted(corpus)
    store = await Store.open(tmp_path / "usage.sqlite3", PriceTable.load())
    feeder = Feeder(store, root)
    await feeder.apply(names[0])  # small: the incremental path
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    await feeder.apply(*names[1:])
    assert meta(tmp_path / "usage.sqlite3", "dirty") == "1"
    assert store._loaded is None
    assert await store.settle() is True
    await store.close()
    assert_matches_oracle(tmp_path / "usage.sqlite3", Oracle.of(all_lines(corpus)))


async def test_bulk_load_larger_than_the_memory_limit_reads_the_table_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past LOADED_ROWS the rows in memory are dropped; the settle reads the table and
    still gives the oracle's totals."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    monkeypatch.setattr(store_module, "LOADED_ROWS", 50)
    corpus = make_corpus(seed=47, sessions=6, per_session=20)
    db = tmp_path / "usage.sqlite3"
    store = await Store.open(db, PriceTable.load())
    await feed_in_bulk(store, tmp_path / "files", corpus, seed=3)
    assert store._loaded is None
    assert await store.settle() is True
    await store.close()
    assert_matches_oracle(db, Oracle.of(all_lines(corpus)))


async def test_failed_bulk_batch_drops_the_rows_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk batch that rolls back leaves the memory copy incomplete: settle reads the
    table instead, and the retried batch is counted exactly once."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    corpus = make_corpus(seed=45, sessions=6, per_session=20)
    root = tmp_path / "files"
    for name, lines in corpus.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode_lines(lines))
    names = sorted(corpus)
    half = len(names) // 2
    db = tmp_path / "usage.sqlite3"
    store = await Store.open(db, PriceTable.load())
    feeder = Feeder(store, root)
    await feeder.apply(*names[:half])
    assert store._loaded is not None

    with monkeypatch.context() as m:
        m.setattr(Store, "_bump_counter", disk_full)
        with pytest.raises(OSError):
            await feeder.apply(*names[half:])
    assert store._loaded is None
    await feeder.apply(*names[half:])
    assert await store.settle() is True
    await store.close()
    assert_matches_oracle(db, Oracle.of(all_lines(corpus)))


# -- restarts and crashes ------------------------------------------------------------------


async def test_reopened_store_has_the_same_totals_and_cursors(
    db_path: Path, tmp_path: Path
) -> None:
    """Closing and reopening the store keeps every table, the cursors and the counters."""
    corpus = make_corpus(seed=21, sessions=4, per_session=15)
    first = await Store.open(db_path, PriceTable.load())
    feeder = await feed_in_pieces(first, tmp_path / "files", corpus, seed=21)
    before, counters = tables(db_path), await first.counters()
    await first.close()

    again = await Store.open(db_path, PriceTable.load())
    try:
        assert await again.load_cursors() == feeder.cursors
        assert await again.counters() == counters
        # every line counted: the generator's lines, nothing more
        assert counters["lines"] == sum(len(v) for v in corpus.values())
    finally:
        await again.close()
    assert tables(db_path) == before
    assert_matches_oracle(db_path, Oracle.of(all_lines(corpus)))


async def test_dirty_bulk_batch_is_rebuilt_on_reopen(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk batch committed without its settle (a crash) is settled when the store reopens."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    corpus = make_corpus(seed=31, sessions=4, per_session=15)
    crashed = await Store.open(db_path, PriceTable.load())
    await feed_in_bulk(crashed, tmp_path / "files", corpus, seed=31)
    await crashed.close()  # no settle()
    assert meta(db_path, "dirty") == "1"
    assert blocks(db_path) == []  # aggregates were never built

    reopened = await Store.open(db_path, PriceTable.load())
    await reopened.close()
    assert meta(db_path, "dirty") == "0"
    assert_matches_oracle(db_path, Oracle.of(all_lines(corpus)))


async def test_failed_batch_stores_neither_responses_nor_cursors(
    store: Store, db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose write fails midway leaves no trace; the retry counts it exactly once."""
    write_lines(tmp_path / "s.jsonl", [a("m1", "r1", "2025-11-20T10:00:00.000Z", input_tokens=5)])
    feeder = Feeder(store, tmp_path)

    monkeypatch.setattr(Store, "_bump_counter", disk_full)
    with pytest.raises(OSError):
        await feeder.apply("s.jsonl")
    feeder.cursors.clear()  # what ingest does: the cursor only moves with the data
    with connect(db_path) as con:
        assert con.execute("SELECT count(*) FROM responses").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM cursors").fetchone() == (0,)
    assert await store.load_cursors() == {}

    monkeypatch.undo()
    await feeder.apply("s.jsonl")
    await feeder.apply("s.jsonl")  # nothing new: the cursor was stored this time
    assert days(db_path) == {"2025-11-20": (1, 5, 0, 0, 0)}
    assert (await store.counters())["lines"] == 1


# -- files on disk -------------------------------------------------------------------------


async def test_database_files_are_private(store: Store, db_path: Path, tmp_path: Path) -> None:
    """The database, its WAL and shared-memory files are 0600, its new folder 0700."""
    write_lines(tmp_path / "s.jsonl", [a("m", "r", "2025-11-20T10:00:00.000Z", input_tokens=1)])
    await Feeder(store, tmp_path).apply("s.jsonl")
    files = sorted(p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name))
    assert [p.name for p in files][:1] == [db_path.name]
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700


async def test_message_content_never_reaches_the_database_or_the_logs(
    logs: list[dict[str, Any]], running: RunningDaemon
) -> None:
    """Unique strings in text, tool input, thinking, prompts and bad lines are never stored."""
    secret = uuid.uuid4().hex
    text = a("m1", "r1", "2025-11-20T10:00:00.000Z", input_tokens=3, text=f"answer {secret}")
    tool = a("m2", "r2", "2025-11-20T10:00:01.000Z", input_tokens=4)
    tool["message"]["content"] = [
        {"type": "thinking", "thinking": f"think {secret}", "signature": secret},
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "Bash",
            "input": {"command": f"echo {secret}"},
        },
    ]
    no_id = a(None, None, "2025-11-20T10:00:02.000Z", input_tokens=5, text=secret)
    lines: list[Line] = [
        user("2025-11-20T09:59:59.000Z", text=f"my secret is {secret}"),
        text,
        tool,
        no_id,
        f'{{"type":"assistant","message":{{"usage":{{"input_tokens":1}},"content":"{secret}",}}}}',
        f"garbage {secret} garbage",
        f'{{"type":"assistant","message":{{"content":"{secret}',
    ]
    write_lines(running.projects / "-home-dev-api" / "s1.jsonl", lines)
    await running.refresh()
    stats = await running.wait_for(lambda s: s["total_tokens"] == 3 + 4 + 5)
    assert stats["ingest"]["responses"] == 3
    needle = secret.encode()
    db_files = [p for p in running.db.parent.iterdir() if p.name.startswith(running.db.name)]
    assert any(p.name.endswith("-wal") for p in db_files)
    for p in db_files:
        assert needle not in p.read_bytes(), p
    assert secret not in json.dumps(logs, default=str)
    skipped = [e for e in logs if e["event"] == "lines.skipped"]
    assert skipped and all(e["count"] >= 1 for e in skipped)


async def test_migration_4_keeps_every_response_and_its_rowid(tmp_path: Path) -> None:
    """A version-3 database (responses keyed by a TEXT PRIMARY KEY) opens as version 4:
    the same rows at the same rowids, a unique key index, and upserts still merge."""
    from claude_usaged.schema import MIGRATIONS
    from claude_usaged.usage import UsageRecord

    db = tmp_path / "v3.sqlite3"
    con = sqlite3.connect(db, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        con.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
    rows = [  # rowids with a gap; a sidechain replay of m1 (counted 0), unpriced, fast
        (1, "m1:r1", "m1", 1_000, "claude-sonnet-4-5", "s1", "/p", 0, 1, 2, 3, 0, 4, 0,
         None, None, 0.25, 1),
        (7, "m2:r2", "m1", 2_000, "mystery", "s1", "/p", 1, 5, 6, 0, 0, 0, 1,
         "fast", None, None, 0),
        (9, "m3:r3", "m3", 3_000, "claude-opus-4-1", "s2", "/q", 0, 7, 8, 9, 9, 10, 0,
         None, "us", 1.5, 1),
    ]  # fmt: skip
    con.executemany(f"INSERT INTO responses (rowid, {store_module._COLUMNS}, counted) "
                    f"VALUES ({','.join('?' * 18)})", rows)  # fmt: skip
    con.close()

    store = await Store.open(db, PriceTable.load())
    await store.close()
    with connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        kept = con.execute(
            f"SELECT rowid, {store_module._COLUMNS}, counted FROM responses ORDER BY rowid"
        ).fetchall()
        (key_index,) = con.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'responses_key'"
        ).fetchone()
        autoindexes = con.execute(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'sqlite_autoindex_responses%'"
        ).fetchone()[0]
    assert [row[:16] for row in kept] == [row[:16] for row in rows]  # costs may be repriced
    assert [row[17] for row in kept] == [1, 0, 1]
    assert key_index == "CREATE UNIQUE INDEX responses_key ON responses(key)"
    assert autoindexes == 0
    # a larger snapshot of m1 replaces its row in place; nothing is duplicated
    store = await Store.open(db, PriceTable.load())
    better = UsageRecord(
        "m1:r1", "m1", 1_000, "claude-sonnet-4-5", "s1", "/p", False, 1, 20, 3, 0, 4
    )
    await store.apply_records([better])
    await store.close()
    with connect(db) as con:
        assert con.execute(
            "SELECT rowid, output FROM responses WHERE key = 'm1:r1'"
        ).fetchall() == [(1, 20)]
        assert con.execute("SELECT count(*) FROM responses").fetchone()[0] == 3


# -- a bulk load's staged rows -------------------------------------------------------------


def count(db: Path, table: str) -> int:
    with connect(db) as con:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@contextlib.asynccontextmanager
async def opened(
    db: Path, *, deferred: bool = False, prices: PriceTable | None = None
) -> AsyncIterator[Store]:
    """A store closed however the test ends (an open one would keep pytest from exiting)."""
    store = await Store.open(db, prices or PriceTable.load(), deferred=deferred)
    try:
        yield store
    finally:
        await store.close()


async def autocheckpoint(store: Store) -> int:
    async with store._db.execute("PRAGMA wal_autocheckpoint") as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def write_late(root: Path) -> Line:
    """One more response, in a file of its own (late.jsonl): 7 input tokens."""
    late = a("late", "r-late", "2025-11-20T10:00:00.000Z", input_tokens=7)
    write_lines(root / "late.jsonl", [late])
    return late


async def staged_load(db: Path, root: Path, corpus: dict[str, list[Line]], seed: int) -> None:
    """A deferred store's bulk load, settled, its rows left staged (then closed)."""
    async with opened(db, deferred=True) as store:
        await feed_in_bulk(store, root, corpus, seed=seed)
        assert await store.settle() is True
    assert count(db, "responses") == 0 and count(db, "staged") > 0


def staged_forms(db: Path) -> set[Any]:
    """How the staged blobs hold their new rows: bytes (packed) or list."""
    with connect(db) as con:
        blobs = [pickle.loads(row[0]) for row in con.execute("SELECT rows FROM staged")]
    return {(blob[0], type(blob[2])) for blob in blobs}


@pytest.mark.parametrize(
    ("per_blob", "form"),
    [(store_module.STAGED_ROWS, "packed"), (7, "packed"), (7, "listed"), (7, "release 1")],
)
async def test_a_deferred_bulk_load_stages_its_rows_until_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_blob: int, form: str
) -> None:
    """The daemon's store (deferred) keeps a cold catch-up's rows staged, in blobs of at
    most STAGED_ROWS: its aggregates are right before `responses` holds a row, and once
    `finish` has written them every table equals a plain store's, floats and rowids
    included. The rows are packed, or listed where packing declines them; blobs of
    the first format (left by a crash of the previous release) are written too."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    monkeypatch.setattr(store_module, "STAGED_ROWS", per_blob)
    expected_form: tuple[int, type] = (2, bytes)
    if form != "packed":
        monkeypatch.setattr(store_module, "pack_rows", lambda rows: None)
        expected_form = (2, list)
    if form == "release 1":
        monkeypatch.setattr(store_module, "_STAGED_FORMAT", 1)
        expected_form = (1, list)
    corpus = make_corpus(seed=41, sessions=8, per_session=30)
    plain_db = tmp_path / "plain" / "usage.sqlite3"
    async with opened(plain_db) as plain:
        await feed_in_bulk(plain, tmp_path / "plain-files", corpus, seed=3)
        assert await plain.settle() is True  # not deferred: settling writes the rows
    assert count(plain_db, "staged") == 0

    db = tmp_path / "deferred" / "usage.sqlite3"
    async with opened(db, deferred=True) as deferred:
        await feed_in_bulk(deferred, tmp_path / "files", corpus, seed=3)
        assert await deferred.settle() is True
        assert count(db, "responses") == 0
        # three batches (in blobs of per_blob rows), and the replays' counted flags
        assert replay_count(corpus) > 0
        if per_blob != 7:  # each batch's rows fit one blob
            assert count(db, "staged") == 3 + 1
        else:  # every blob holds at most per_blob rows
            assert count(db, "staged") > response_count(all_lines(corpus)) // per_blob
        assert_matches_oracle(db, Oracle.of(all_lines(corpus)))
        assert staged_forms(db) == {expected_form}
        monkeypatch.undo()  # this release writes them
        # nor did a commit merge the WAL into the database file: `finish` does
        assert await autocheckpoint(deferred) == 0
        await deferred.finish()
        assert await autocheckpoint(deferred) == store_module.AUTOCHECKPOINT_PAGES
    assert count(db, "staged") == 0
    assert exact_tables(db) == exact_tables(plain_db)


@pytest.mark.parametrize("then", ["incremental", "reprice", "outbox", "reopen"])
async def test_every_reader_of_responses_sees_the_staged_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    """Whatever reads `responses` after a deferred load and before `finish` (a small
    batch, new prices, the outbox, a store reopened after a crash) writes the staged
    rows first, in its own transaction: totals stay the oracle's, nothing counts twice."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    corpus = make_corpus(seed=47, sessions=6, per_session=20)
    lines = all_lines(corpus)
    db = tmp_path / "usage.sqlite3"
    await staged_load(db, tmp_path / "files", corpus, seed=5)
    prices = None
    if then == "reprice":  # new prices: opening reprices every response, staged ones too
        rates = {"input": 1, "output": 2, "cache_write_5m": 3, "cache_write_1h": 4, "cache_read": 5}
        override = tmp_path / "prices.json"
        override.write_text(json.dumps({"models": [{"ids": list(MODELS), "rows": [rates]}]}))
        prices = PriceTable.load(override)
    async with opened(db, prices=prices) as store:
        if then != "reprice":
            assert count(db, "staged") > 0  # opening does not write them: a reader does
        if then == "incremental":
            late = write_late(tmp_path / "files")
            await Feeder(store, tmp_path / "files").apply("late.jsonl")
            lines = [*lines, late]
        elif then == "reprice":
            with connect(db) as con:
                (wrong,) = con.execute(
                    "SELECT count(*) FROM responses WHERE abs(cost - (input + 2 * output"
                    " + 3 * (cache_creation - cache_creation_1h) + 4 * cache_creation_1h"
                    " + 5 * cache_read) / 1e6) > 1e-12"
                ).fetchone()
            assert wrong == 0
        else:
            assert await store.write(outbox.seed) == response_count(lines)
    assert count(db, "staged") == 0
    assert count(db, "responses") == response_count(lines)
    with connect(db) as con:
        assert con.execute("SELECT count(*) FROM responses WHERE cost IS NULL").fetchone() == (0,)
    assert_matches_oracle(db, Oracle.of(lines))


async def test_a_failed_transaction_keeps_the_staged_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that wrote the staged rows and then failed rolls them back into `staged`:
    the retry writes them again, once."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    corpus = make_corpus(seed=53, sessions=5, per_session=20)
    db = tmp_path / "usage.sqlite3"
    await staged_load(db, tmp_path / "files", corpus, seed=7)
    late = write_late(tmp_path / "files")

    async with opened(db, deferred=True) as store:
        feeder = Feeder(store, tmp_path / "files")
        with monkeypatch.context() as m:
            m.setattr(Store, "_bump_counter", disk_full)
            with pytest.raises(OSError):
                await feeder.apply("late.jsonl")
        assert count(db, "responses") == 0 and count(db, "staged") > 0
        await feeder.apply("late.jsonl")
    lines = [*all_lines(corpus), late]
    assert count(db, "staged") == 0
    assert count(db, "responses") == response_count(lines)
    assert_matches_oracle(db, Oracle.of(lines))


def response_indexes(db: Path) -> set[str]:
    with connect(db) as con:
        rows = con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'responses'"
            " AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    return {name for (name,) in rows}


async def test_after_finish_a_deferred_store_keeps_its_indexes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`finish` ends the deferral: a later bulk load onto a table still empty (a history
    copied in after the daemon started on none) writes its rows and every index at once."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    corpus = make_corpus(seed=41, sessions=6, per_session=20)
    db = tmp_path / "usage.sqlite3"
    async with opened(db, deferred=True) as store:
        await store.settle()
        await store.finish()  # the first catch-up (of nothing) is served
        await feed_in_bulk(store, tmp_path / "files", corpus, seed=3)
        assert await store.settle() is True
        assert count(db, "staged") == 0
    assert response_indexes(db) == {"responses_key", *RESPONSE_INDEXES}
    assert_matches_oracle(db, Oracle.of(all_lines(corpus)))


async def test_a_full_disk_after_writing_the_staged_rows_keeps_them_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk makes SQLite roll the whole transaction back by itself, staged rows
    written into `responses` included: the store must know they are staged still (and
    report the full disk, not a failed ROLLBACK), so the next reader writes them."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    corpus = make_corpus(seed=47, sessions=6, per_session=20)
    db = tmp_path / "usage.sqlite3"
    await staged_load(db, tmp_path / "files", corpus, seed=5)
    late = write_late(tmp_path / "files")

    async def big_batch(db: aiosqlite.Connection) -> None:  # as the forwarder freezes one
        await db.execute(
            "INSERT INTO outbox_batches(id, created_ms, body) VALUES ('b', 0, zeroblob(2000000))"
        )

    async with opened(db, deferred=True) as store:
        async with store._db.execute("PRAGMA page_count") as cur:
            row = await cur.fetchone()
        assert row is not None
        await store._db.execute(f"PRAGMA max_page_count={row[0] + 50}")  # nearly full
        with pytest.raises(sqlite3.OperationalError, match="full"):
            await store.write(big_batch)
        await store._db.execute("PRAGMA max_page_count=1000000")  # room again
        assert store._staged is True
        await Feeder(store, tmp_path / "files").apply("late.jsonl")
        await store.finish()
    lines = [*all_lines(corpus), late]
    assert count(db, "staged") == 0
    assert count(db, "responses") == response_count(lines)
    assert_matches_oracle(db, Oracle.of(lines))


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize(
    "field", ["key", "message_id", "model", "session_id", "project", "speed", "inference_geo"]
)
async def test_text_sqlite_cannot_store_is_refused_before_it_is_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, packed: bool
) -> None:
    """Staged rows are bound only when written: a bulk batch holding text that is not
    UTF-8 must fail at `apply`, as an insert would, so ingest can set its file aside
    (test_watching), and must leave nothing staged that no write could ever take.
    Every text column is checked (the check skips ASCII text column by column)."""
    monkeypatch.setattr(store_module, "BULK_THRESHOLD", 10)
    if not packed:  # rows the packed format declines: listed, after a check of their text
        monkeypatch.setattr(store_module, "pack_rows", lambda rows: None)
    records = [
        UsageRecord(
            f"m{i}:r{i}",
            f"m{i}",
            ms("2025-11-20T10:00:00.000Z") + i,
            MODELS[0],
            "s",
            "/p",
            False,
            1,
            1,
            0,
            0,
            0,
        )
        for i in range(20)
    ]
    setattr(records[0], field, f"bad-\udcff-{field}")
    db = tmp_path / "usage.sqlite3"
    async with opened(db, deferred=True) as store:
        with pytest.raises(UnicodeEncodeError):
            await store.apply_records(records)
        assert count(db, "staged") == 0
        await store.apply_records(records[1:])  # the rest, once the bad one is set aside
        await store.settle()
        await store.finish()
    assert count(db, "responses") == 19
    assert days(db) == {"2025-11-20": (19, 19, 19, 0, 0)}
