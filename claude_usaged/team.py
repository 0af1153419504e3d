"""The team server: usage forwarded by other machines, per machine and all together.

`--accept-forwarded` opens a `Team` beside the daemon's own store. Each
sending machine gets a database of its own (`<db>-team/machines/<id>.sqlite3`)
and every snapshot is also stored in `<db>-team/all.sqlite3` under a key
prefixed with its machine id. Both are ordinary `Store`s with their own
`ReadModel`s, so windows, days, sessions, projects and costs come from the
same code as for local transcripts: per machine, and for all machines
together.

A snapshot is upserted by (machine id, key) and the larger one is kept (the
store's rule for the lines of one response), so a batch sent twice counts
once. The first answer to each `Idempotency-Key` is kept for
`RECEIPT_DAYS` and returned again on a replay; a replay with another body is
refused. Batches are applied one at a time, in the order they arrive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite
import structlog

from claude_usaged import received
from claude_usaged.pricing import PriceTable
from claude_usaged.stats import ReadModel, iso
from claude_usaged.store import Store
from claude_usaged.usage import UsageRecord

log = structlog.get_logger(__name__)

ALL = "all"
"""`?machine=all`: every machine together (also the default on a team server)."""
RECEIPT_DAYS = 30
_MACHINE_FILE = re.compile(r"^[0-9a-f]{32}\.sqlite3$")


def team_dir(db: Path) -> Path:
    """Where a team server keeps what it receives: beside the daemon's own database."""
    return db.with_name(db.stem + "-team")


@dataclass(slots=True)
class Member:
    """One database of the team server and its read model."""

    store: Store
    read: ReadModel

    @classmethod
    async def open(cls, path: Path, prices: PriceTable, zone: ZoneInfo) -> Member:
        store = await Store.open(path, prices)
        read = await ReadModel.open(path, zone, lambda: store.generation)
        return cls(store, read)

    async def apply(self, records: Sequence[UsageRecord]) -> int:
        """Upsert the records; returns how many were new or larger than the stored ones."""
        outcome = await self.store.apply_records(records)
        await self.store.settle()  # a batch of over 2,000 snapshots takes the bulk path
        return len(outcome.changed)

    async def close(self) -> None:
        await self.read.close()
        await self.store.close()


@dataclass(frozen=True, slots=True)
class Answer:
    """What the ingest endpoint replies; `replayed` when it is a stored first answer."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


class Team:
    """The stores of a team server. Use `await Team.open(db, prices, zone)`."""

    def __init__(self, root: Path, prices: PriceTable, zone: ZoneInfo, every: Member) -> None:
        self.root = root
        self.prices = prices
        self.zone = zone
        self.all = every
        self.machines: dict[str, Member] = {}
        self._receiving = asyncio.Lock()

    @classmethod
    async def open(cls, db: Path, prices: PriceTable, zone: ZoneInfo) -> Team:
        """Open (creating) the team databases beside `db`; raises StoreError."""
        root = team_dir(db)
        (root / "machines").mkdir(mode=0o700, parents=True, exist_ok=True)
        team = cls(root, prices, zone, await Member.open(root / "all.sqlite3", prices, zone))
        for path in sorted((root / "machines").iterdir()):
            if _MACHINE_FILE.match(path.name):
                await team._member(path.name.split(".")[0])
        return team

    async def close(self) -> None:
        for member in self.machines.values():
            await member.close()
        await self.all.close()

    def read_for(self, machine: str | None) -> ReadModel | None:
        """The read model of `machine`, of all machines for None or `all`; None if unknown."""
        if machine is None or machine == ALL:
            return self.all.read
        member = self.machines.get(machine)
        return member.read if member else None

    async def _member(self, machine: str) -> Member:
        member = self.machines.get(machine)
        if member is None:
            path = self.root / "machines" / f"{machine}.sqlite3"
            member = self.machines[machine] = await Member.open(path, self.prices, self.zone)
        return member

    # -- receiving -------------------------------------------------------------------

    async def receive(self, body: bytes, idempotency_key: str | None) -> Answer:
        """Store one forwarded batch; raises `received.BadPayload` (400/422), storing nothing."""
        digest = hashlib.sha256(body).hexdigest()
        async with self._receiving:
            if idempotency_key:
                first = await self._receipt(idempotency_key)
                if first is not None:
                    sha, status, answer = first
                    if sha != digest:
                        raise received.BadPayload(
                            422,
                            f"Idempotency-Key {idempotency_key!r} was already used "
                            "for a different body",
                        )
                    return Answer(status, answer, replayed=True)
            batch = received.decode(body)
            payload = batch.payload
            machine = payload.agent.machine_id
            member = await self._member(machine)
            # two databases, two writer threads: both are written at the same time
            changed, _ = await asyncio.gather(
                member.apply(batch.records),
                self.all.apply(received.prefixed(batch.records, f"{machine}/")),
            )
            answer = {
                "status": "ok",
                "machine_id": machine,
                "batch_id": payload.batch_id,
                "projects": len({s.project for s in payload.snapshots}),
                "sessions": len({s.session_id for s in payload.snapshots}),
                "snapshots": len(payload.snapshots),
                "changed": changed,
            }
            await self._remember(payload.agent, idempotency_key, digest, answer)
        log.info(
            "team.received",
            machine_id=machine,
            hostname=payload.agent.hostname,
            snapshots=len(payload.snapshots),
            changed=changed,
        )
        return Answer(200, answer)

    async def _receipt(self, key: str) -> tuple[str, int, dict[str, Any]] | None:
        # a read: the reader connection sees every receipt committed so far
        rows = await self.all.read.rows(
            "SELECT body_sha256, status, answer FROM team_receipts WHERE idempotency_key = ?",
            (key,),
        )
        return (str(rows[0][0]), int(rows[0][1]), json.loads(rows[0][2])) if rows else None

    async def _remember(
        self, agent: received.Agent, key: str | None, digest: str, answer: dict[str, Any]
    ) -> None:
        now = int(time.time() * 1000)

        async def write(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO team_machines VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT(machine_id) "
                "DO UPDATE SET hostname = excluded.hostname, version = excluded.version, "
                "last_sync_ms = excluded.last_sync_ms, batches = batches + 1",
                (agent.machine_id, agent.hostname, agent.version, now, now),
            )
            if key:
                await db.execute(
                    "INSERT OR REPLACE INTO team_receipts VALUES (?, ?, 200, ?, ?)",
                    (key, digest, json.dumps(answer), now),
                )
            await db.execute(
                "DELETE FROM team_receipts WHERE at_ms < ?", (now - RECEIPT_DAYS * 86_400_000,)
            )

        await self.all.store.write(write)

    # -- reading ---------------------------------------------------------------------

    async def machines_json(self, now_ms: int) -> list[dict[str, Any]]:
        """`GET /machines`: each machine's last sync and totals, the latest sync first."""

        rows = await self.all.read.rows(
            "SELECT machine_id, hostname, version, first_sync_ms, last_sync_ms, batches "
            "FROM team_machines ORDER BY last_sync_ms DESC, machine_id"
        )
        out = []
        for machine, hostname, version, first_ms, last_ms, batches in rows:
            read = self.read_for(machine)
            if read is None:  # pragma: no cover - every registered machine has a database
                continue
            stats = await read.stats(now_ms)
            totals = await read.totals()
            out.append(
                {
                    "machine_id": machine,
                    "hostname": hostname,
                    "version": version,
                    "first_sync_at": iso(first_ms),
                    "last_sync_at": iso(last_ms),
                    "batches": batches,
                    "responses": totals["responses"],
                    "total_tokens": totals["total_tokens"],
                    "total_cost_usd": totals["total_cost_usd"],
                    "current_window_tokens": stats["current_window_tokens"],
                    "next_reset_at": stats["next_reset_at"],
                }
            )
        return out
