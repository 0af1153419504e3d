"""The outbox tables: what is still to be forwarded, and the batch in flight.

Plain functions over the store's writer connection. `Store.apply` calls
`enqueue` inside the transaction that stores the responses; the forwarder
calls the others through `Store.write`, which serialises them with `apply`
and wraps each in one transaction. Rows hold only response keys: a pending
row is read from `responses` when its batch is frozen, so a later, larger line
of a streamed response is what gets sent (coalescing). A frozen batch keeps
its exact body, so every retry, also after a restart, is byte for byte the
same request with the same Idempotency-Key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

_ENQUEUE = "INSERT INTO outbox(key) VALUES (?) ON CONFLICT(key) WHERE batch IS NULL DO NOTHING"
_SEED = (
    "INSERT INTO outbox(key) SELECT key FROM responses WHERE true ORDER BY ts "
    "ON CONFLICT(key) WHERE batch IS NULL DO NOTHING"
)
_PENDING = """
SELECT o.seq, r.counted, r.key, r.ts, r.model, r.session_id, r.project, r.is_sidechain,
    r.input, r.output, r.cache_creation, r.cache_read, r.web_search, r.cost,
    r.message_id, r.cache_creation_1h, r.speed, r.geo
FROM outbox o LEFT JOIN responses r ON r.key = o.key
WHERE o.batch IS NULL ORDER BY o.seq LIMIT ?
"""

SnapshotRow = tuple[Any, ...]
"""(key, ts, model, session_id, project, is_sidechain, input, output,
cache_creation, cache_read, web_search, cost, message_id, cache_creation_1h,
speed, geo) of one counted response."""

BodyBuilder = Callable[[str, int, Sequence[SnapshotRow]], bytes]
"""(batch id, created ms, snapshot rows) -> the request body; must not raise."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A frozen batch: its id is the Idempotency-Key, its body what is POSTed."""

    id: str
    created_ms: int
    body: bytes


async def enqueue(db: aiosqlite.Connection, keys: Sequence[str]) -> int:
    """Queue response keys (inside the caller's transaction); returns rows added."""
    cur = await db.executemany(_ENQUEUE, [(k,) for k in keys])
    return max(cur.rowcount, 0)


async def seed(db: aiosqlite.Connection) -> int:
    """Queue every stored response (forwarding was just enabled for this target)."""
    cur = await db.execute(_SEED)
    return max(cur.rowcount, 0)


async def count(db: aiosqlite.Connection) -> int:
    """Rows not yet acknowledged: pending ones and those of the batch in flight."""
    async with db.execute("SELECT count(*) FROM outbox") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def machine_id(db: aiosqlite.Connection) -> str:
    """The random id created once by migration 2."""
    async with db.execute("SELECT value FROM meta WHERE name = 'machine_id'") as cur:
        row = await cur.fetchone()
    if row is None:  # pragma: no cover - migration 2 always creates it
        raise RuntimeError("meta.machine_id is missing")
    return str(row[0])


async def _dirty(db: aiosqlite.Connection) -> bool:
    async with db.execute("SELECT value FROM meta WHERE name = 'dirty'") as cur:
        row = await cur.fetchone()
    return bool(row and row[0] == "1")


async def in_flight(db: aiosqlite.Connection) -> Batch | None:
    """The frozen batch not acknowledged yet (from before a failure or a restart)."""
    async with db.execute(
        "SELECT id, created_ms, body FROM outbox_batches ORDER BY created_ms, id LIMIT 1"
    ) as cur:
        row = await cur.fetchone()
    return Batch(str(row[0]), int(row[1]), bytes(row[2])) if row else None


async def next_batch(
    db: aiosqlite.Connection,
    build: BodyBuilder,
    max_responses: int,
    max_bytes: int,
    size_of: Callable[[SnapshotRow], int],
) -> Batch | None:
    """The batch in flight, else freeze the oldest pending rows into a new one.

    None when nothing is pending, or while a bulk load left the `counted`
    flags stale (a later `settle` fixes them; sending then would forward
    sidechain replays that the store does not count).
    """
    batch = await in_flight(db)
    if batch is not None:
        return batch
    if await _dirty(db):
        return None
    async with db.execute(_PENDING, (max_responses,)) as cur:
        rows = await cur.fetchall()
    if not rows:
        return None
    seqs: list[int] = []
    dropped: list[int] = []
    snapshots: list[SnapshotRow] = []
    size = 0
    for seq, counted, *rest in rows:
        if not counted:  # gone or a replay the store does not count: nothing to send
            dropped.append(seq)
            continue
        snapshot = tuple(rest)
        size += size_of(snapshot)
        if snapshots and size > max_bytes:
            break
        seqs.append(seq)
        snapshots.append(snapshot)
    await _delete_seqs(db, dropped)
    if not snapshots:
        return None
    batch_id = str(uuid.uuid4())
    created_ms = int(time.time() * 1000)
    body = build(batch_id, created_ms, snapshots)
    while len(body) > max_bytes and len(snapshots) > 1:
        # the envelope (projects, sessions) outgrew the estimate: trim and rebuild
        keep = max(1, len(snapshots) * 9 // 10)
        snapshots, seqs = snapshots[:keep], seqs[:keep]
        body = build(batch_id, created_ms, snapshots)
    await db.execute(
        "INSERT INTO outbox_batches(id, created_ms, body) VALUES (?, ?, ?)",
        (batch_id, created_ms, body),
    )
    for part in _parts(seqs):
        await db.execute(
            f"UPDATE outbox SET batch = ? WHERE seq IN ({','.join('?' * len(part))})",
            (batch_id, *part),
        )
    return Batch(batch_id, created_ms, body)


async def ack(db: aiosqlite.Connection, batch_id: str) -> int:
    """The receiver has the batch: forget it and its rows; returns rows removed."""
    cur = await db.execute("DELETE FROM outbox WHERE batch = ?", (batch_id,))
    await db.execute("DELETE FROM outbox_batches WHERE id = ?", (batch_id,))
    return max(cur.rowcount, 0)


async def _delete_seqs(db: aiosqlite.Connection, seqs: Sequence[int]) -> None:
    for part in _parts(seqs):
        await db.execute(f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(part))})", part)


def _parts(items: Sequence[int], size: int = 500) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
