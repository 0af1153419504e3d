"""The one SQLite writer: responses, cursors and aggregates in one transaction.

Every batch of tailed files is applied by `Store.apply` in a single
transaction: deduplicated responses, the derived aggregates that they change
(15-minute buckets, sessions, projects, 5-hour blocks from the first affected
position on) and the file cursors. A crash at any moment leaves either all of
it or none of it, so a restart neither loses nor double-counts a response.

A very large batch (the cold catch-up) marks the aggregates dirty instead of
updating them row by row; `settle()` rebuilds them in one pass when the queue
is empty, and a restart finishes that rebuild if a crash interrupted it.

When that bulk load began on an empty table, the store also keeps the rows it
wrote in memory, so `settle()` derives the counted flags and the aggregates from
them instead of reading ~50k rows back out of SQLite: turning rows into Python
objects, not SQL, is what costs there. Any doubt (a failed transaction, a
reprice) drops that copy and `settle()` reads the table, as after a crash.

Such a load does not even insert its rows one by one: each batch stages them as
blobs (table `staged`) in its transaction, and `_unstage` writes them into
`responses` later, in one transaction (a store opened `deferred`, the daemon's,
in `finish` once it serves; otherwise at the end of `settle`). SQLite's ~2 us per
inserted row was a quarter of a cold catch-up. Every path that reads `responses`
(an incremental batch, a rebuild, a reprice, the outbox) writes them first, in its
own transaction, so nothing sees the table without its staged rows but a reader of
the file itself.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import pickle
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite
import structlog

from claude_usaged import outbox
from claude_usaged.aggregates import Aggregates, Aggregator, aggregate
from claude_usaged.batch import best_priced, pack_rows, response_rows, split_rows, unpack_rows
from claude_usaged.parser import ParseResult
from claude_usaged.pricing import PriceTable
from claude_usaged.schema import KEY_INDEX, MIGRATIONS, PRAGMAS, RESPONSE_INDEXES
from claude_usaged.tailer import Cursor, TailResult
from claude_usaged.usage import BUCKET_MS, UsageRecord
from claude_usaged.windows import Block, build_blocks

log = structlog.get_logger(__name__)

BULK_THRESHOLD = 2000
"""Batches with more new responses than this rebuild aggregates in one pass."""

LOADED_ROWS = 200_000
"""At most this many rows of a bulk load are kept in memory (~230 bytes each);
a larger history settles from the table, as before."""


STAGED_ROWS = 1000
"""Rows per staged blob (see `Store._stage`). Writing a blob's rows holds the GIL for
~1 ms: with 5,000 the daemon's first answers after a catch-up waited up to 4 ms."""
_STAGED_FORMAT = 2
"""The layout of a staged blob: (2, first rowid, new rows, better rows, their rowids,
uncounted rowids), the rows as `batch.pack_rows` packs them, or a list of tuples
where they hold a value that format does not. A blob left by a crash may be read by
a later release: format 1 (lists only) is read too."""

AUTOCHECKPOINT_PAGES = 1000
"""SQLite's default: a commit that leaves a longer WAL merges it into the database."""

_IN_CHUNK = 500
REBUILD_CHUNK = 20_000

_TOTAL = "(input + output + cache_creation + cache_read)"

# speed and geo are bound as 0 when absent (NULLIF makes it NULL again): Python's
# sqlite3 sends None through its adapter lookup, ~0.35 us a value against ~0.03 us
# for an int, and most responses have neither (~30 ms of a 50k-response catch-up).
_UPSERT = """
INSERT INTO responses (key, message_id, ts, model, session_id, project, is_sidechain,
    input, output, cache_creation, cache_creation_1h, cache_read, web_search, speed, geo,
    cost, counted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, 0), NULLIF(?, 0), ?, 1)
ON CONFLICT(key) DO UPDATE SET
    message_id = excluded.message_id, ts = excluded.ts, model = excluded.model,
    session_id = excluded.session_id, project = excluded.project,
    is_sidechain = excluded.is_sidechain, input = excluded.input, output = excluded.output,
    cache_creation = excluded.cache_creation, cache_creation_1h = excluded.cache_creation_1h,
    cache_read = excluded.cache_read, web_search = excluded.web_search,
    speed = excluded.speed, geo = excluded.geo, cost = excluded.cost
WHERE (-(excluded.input + excluded.output + excluded.cache_creation + excluded.cache_read),
       excluded.ts, excluded.session_id, excluded.project)
    < (-(responses.input + responses.output + responses.cache_creation + responses.cache_read),
       responses.ts, responses.session_id, responses.project)
"""

_COLUMNS = (
    "key, message_id, ts, model, session_id, project, is_sidechain, input, output, "
    "cache_creation, cache_creation_1h, cache_read, web_search, speed, geo, cost"
)
_VALUES = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, 0), NULLIF(?, 0), ?"
_INSERT_AT = f"INSERT INTO responses (rowid, {_COLUMNS}, counted) VALUES (?, {_VALUES}, 1)"
"""A bulk load's new row, at the rowid it would get from `_UPSERT` (no key index yet)."""
_REPLACE_AT = f"UPDATE responses SET ({_COLUMNS}) = ({_VALUES}) WHERE rowid = ?"

# A sidechain response that shares its message.id with a non-sidechain one, or
# with an earlier sidechain one, is a replay (FORMAT.md rule 3): not counted.
_COUNTED = """
UPDATE responses SET counted = CASE WHEN is_sidechain = 0 THEN 1 ELSE NOT EXISTS (
    SELECT 1 FROM responses s
    WHERE s.message_id = responses.message_id AND s.key <> responses.key
      AND (s.is_sidechain = 0 OR s.ts < responses.ts
           OR (s.ts = responses.ts AND s.key < responses.key))) END
"""

_SUMS = (
    "count(*), sum(input), sum(output), sum(cache_creation), sum(cache_read), "
    "total(cost), sum(cost IS NULL)"
)

_BUCKET_SQL = f"""
INSERT INTO agg_bucket SELECT ts / {BUCKET_MS}, model, {_SUMS}
FROM responses WHERE counted = 1 {{where}} GROUP BY 1, 2
"""
_SESSION_SQL = f"""
INSERT INTO agg_session SELECT session_id, model, project, min(ts), max(ts), {_SUMS}
FROM responses WHERE counted = 1 {{where}} GROUP BY session_id, project, model
"""
_PROJECT_SQL = f"""
INSERT INTO agg_project SELECT project, model, min(ts), max(ts), {_SUMS}
FROM responses WHERE counted = 1 {{where}} GROUP BY project, model
"""


_KEY = itemgetter(0)
_BY_TS = itemgetter(2)
_AGGREGATED = (2, 3, 4, 5, 7, 8, 9, 11, 15)
"""Of a `responses` row, the columns `Aggregator.feed` takes, in its order."""


def _uncounted(rows: Iterable[tuple[Any, ...]]) -> list[str]:
    """Keys of the sidechain replays among `responses` rows: `_COUNTED` in Python."""
    rows = list(rows)
    sidechain_messages = {row[1] for row in rows if row[6]}
    groups: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        if row[1] in sidechain_messages:
            groups[row[1]].append(row)
    keys: list[str] = []
    for group in groups.values():
        if len(group) == 1:
            continue
        if all(row[6] for row in group):
            first = min(group, key=lambda row: (row[2], row[0]))
            keys += [row[0] for row in group if row is not first]
        else:
            keys += [row[0] for row in group if row[6]]
    return keys


class StoreError(RuntimeError):
    """The database cannot be opened or written; the message says why."""


@dataclass(slots=True)
class ApplyOutcome:
    """What one `apply` changed."""

    changed: list[UsageRecord]
    lines: int
    skipped: int


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


_TEXT_COLUMNS = tuple(map(itemgetter, (0, 1, 3, 4, 5, 13, 14)))
"""Of a response row: key, message id, model, session, project, and speed and geo
(text, or 0 for none)."""


def _check_text(rows: Sequence[tuple[Any, ...]]) -> None:
    """Raise UnicodeEncodeError for text SQLite cannot store, as binding it would
    (see `_packed`; rows it pickles, which are rare). ASCII text is always UTF-8
    (`isascii` reads a flag): only the rest is encoded; other values bind as
    they are."""
    for column in _TEXT_COLUMNS:
        for value in map(column, rows):
            if type(value) is str and not value.isascii():
                value.encode("utf-8")


def _packed(rows: Sequence[tuple[Any, ...]]) -> bytes | list[tuple[Any, ...]]:
    """Rows as a staged blob holds them: packed, else (a value the packed format does
    not hold) as they are. Raises UnicodeEncodeError for text SQLite cannot store,
    as binding it would: staged rows are bound only when written, too late to set
    aside the file that held the value (ingest splits a batch that raises a data
    error, file by file), so a bug that lets such text through (a file name that is
    not UTF-8 did) must fail here."""
    rows = list(rows)
    packed = pack_rows(rows)
    if packed is not None:
        return packed
    _check_text(rows)
    return rows


def _unpacked(rows: bytes | list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return unpack_rows(rows) if isinstance(rows, bytes) else rows


def _stored_path(path: str) -> str | bytes:
    """A path as the cursors table keeps it: text, or the raw bytes of a file name
    that is not UTF-8 (SQLite text must be; `os.fsdecode` gives the same str back)."""
    try:
        path.encode()
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def _cursor_row(c: Cursor) -> tuple[Any, ...]:
    return (
        _stored_path(c.path),
        c.dev,
        c.ino,
        c.offset,
        c.head_len,
        c.head_hash,
        c.tail_hash,
        c.size,
        c.mtime_ns,
    )


def create_private_file(path: Path) -> None:
    """Create the database file (and its folder) readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _serialized(
    method: Callable[Concatenate[Store, _P], Awaitable[_T]],
) -> Callable[Concatenate[Store, _P], Coroutine[Any, Any, _T]]:
    """One write transaction at a time on the one connection (ingest and forwarder)."""

    @functools.wraps(method)
    async def locked(store: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        async with store._writing:
            return await method(store, *args, **kwargs)

    return locked


class Store:
    """The single writer. Use `await Store.open(...)`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, prices: PriceTable) -> None:
        self._db = db
        self.path = path
        self.prices = prices
        self.generation = 0
        """Bumped after every commit that changed usage; read models cache on it."""
        self.forwarding = False
        """When set, `apply` queues every new or changed response in the outbox."""
        self.outbox_pending = 0
        """Outbox rows not yet acknowledged by the receiver."""
        self._writing = asyncio.Lock()
        self.deferred = False
        """Leave the staged rows and the secondary indexes to `finish` (see `open`)."""
        self._loaded: dict[str, tuple[Any, ...]] | None = None
        """Every row of a bulk load that began on an empty table, by key, in rowid
        order (first stored first), as committed; None when there is no such load."""
        self._staged = False
        """Whether `staged` holds rows that `responses` does not have yet."""

    @classmethod
    async def open(
        cls,
        path: Path,
        prices: PriceTable,
        *,
        forward_to: str | None = None,
        deferred: bool = False,
    ) -> Store:
        """Open (creating or migrating) the database; `forward_to` enables the outbox.

        `deferred`: the rows a bulk load staged, and the secondary indexes of
        `responses` (RESPONSE_INDEXES), are not written at open nor when the load
        settles, but by `finish` (the daemon calls it once it serves). The API's
        answers need neither: they come from the aggregates. Nor is the WAL merged
        into the database file (and fsynced) by a commit meanwhile: the first commit
        after a head start's catch-up would otherwise copy its ~10 MB before the
        daemon serves.
        """
        try:
            create_private_file(path)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, aiosqlite.Error) as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        store = cls(db, path, prices)
        store.deferred = deferred
        try:
            await store._migrate()
            store._staged = await store._has_staged()
            await store._recover()
            if forward_to:
                await store._start_forwarding(forward_to)
        except aiosqlite.Error as exc:
            await db.close()
            raise StoreError(f"cannot use database {path}: {exc}") from exc
        return store

    async def close(self) -> None:
        async with self._writing:  # a transaction under way (an unstaging) ends first
            await self._db.close()

    async def _checkpoint(self) -> None:
        """Merge the WAL into the database file now, as far as readers allow."""
        async with self._db.execute("PRAGMA wal_checkpoint(PASSIVE)") as cur:
            await cur.fetchall()

    async def _migrate(self) -> None:
        for pragma in PRAGMAS:
            await self._db.execute(pragma)
        if self.deferred:
            await self._db.execute("PRAGMA wal_autocheckpoint=0")
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.executescript(
                f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;"
            )
            log.info("store.migrated", version=number)
        await self._build_indexes()

    async def _build_indexes(self) -> None:
        """The key index (upserts need it: it is never deferred), and unless the store
        is `deferred` the secondary ones."""
        if self.deferred:
            await self._db.execute(KEY_INDEX)
        else:
            await self._create_indexes()

    async def _create_indexes(self) -> None:
        await self._db.execute(KEY_INDEX)
        for name, target in RESPONSE_INDEXES.items():
            await self._db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")

    async def _drop_indexes(self, *, key: bool) -> None:
        """Drop the secondary indexes of `responses`, and with `key` its key index: a bulk
        load builds them once its rows are in, instead of keeping them sorted."""
        for name in (*RESPONSE_INDEXES, "responses_key") if key else RESPONSE_INDEXES:
            await self._db.execute(f"DROP INDEX IF EXISTS {name}")

    @_serialized
    async def finish(self) -> None:
        """What a `deferred` store left: the staged rows written into `responses`, every
        index of `responses` built, and the WAL merged into the database file (and
        merged by commits again from now on)."""
        if self._staged:  # else no transaction is needed at all
            await self._transaction(self._unstage)
        self.deferred = False  # from now on, as any store: indexes kept, WAL merged
        await self._create_indexes()
        await self._db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        await self._checkpoint()

    async def _transaction(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        """`fn` in one write transaction: committed, or rolled back if it raises."""
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            result = await fn()
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        return result

    async def _rollback(self) -> None:
        """Undo the open transaction, and forget what it may have left in memory. SQLite
        may have rolled it back already (a full disk does): then there is none to undo."""
        self._loaded = None
        try:
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")
        finally:
            try:
                self._staged = await self._has_staged()
            except aiosqlite.Error:
                self._staged = True  # unknown: the next reader of `responses` looks

    async def _has_staged(self) -> bool:
        async with self._db.execute("SELECT 1 FROM staged LIMIT 1") as cur:
            return await cur.fetchone() is not None

    async def _stage(
        self,
        first: int = 0,
        new: Sequence[tuple[Any, ...]] = (),
        better: Sequence[tuple[Any, ...]] = (),
        better_rowids: Sequence[int] = (),
        uncounted: Sequence[int] = (),
    ) -> None:
        """Keep a bulk load's changes as blobs, in the open transaction (see `_unstage`):
        `new` rows at rowids `first`, `first + 1`...; the `better` rows replacing those at
        `better_rowids`; the rows at `uncounted` not counted. Rows go in blobs of at
        most STAGED_ROWS, so writing them later holds few in memory."""
        rest: tuple[Any, ...] = (_packed(better), list(better_rowids), list(uncounted))
        for i in range(0, max(len(new), 1), STAGED_ROWS):
            part = (_STAGED_FORMAT, first + i, _packed(new[i : i + STAGED_ROWS]), *rest)
            blob = pickle.dumps(part, protocol=5)
            await self._db.execute("INSERT INTO staged (rows) VALUES (?)", (blob,))
            rest = (_packed([]), [], [])  # all in the first blob
        self._staged = True

    async def _unstage(self) -> None:
        """Write the staged rows into `responses`, in the open transaction, blob by blob
        in the order they were staged: the same rows at the same rowids as inserting
        them at once would have written (a load is staged only onto an empty table,
        so its rowids are free). The indexes are built after the rows are in. Nothing
        to do when nothing is staged."""
        if not self._staged:
            return
        db = self._db
        await self._drop_indexes(key=True)
        async with db.execute("SELECT id FROM staged ORDER BY id") as cur:
            ids = [row[0] for row in await cur.fetchall()]
        uncounted: list[int] = []
        for blob_id in ids:  # one at a time: memory holds one blob's rows
            async with db.execute("SELECT rows FROM staged WHERE id = ?", (blob_id,)) as cur:
                row = await cur.fetchone()
            assert row is not None
            form, first, new, better, better_rowids, uncount = pickle.loads(row[0])
            assert form in (1, _STAGED_FORMAT)
            new, better = _unpacked(new), _unpacked(better)
            await db.executemany(
                _INSERT_AT, [(rowid, *row) for rowid, row in enumerate(new, start=first)]
            )
            await db.executemany(
                _REPLACE_AT,
                [(*row, rowid) for row, rowid in zip(better, better_rowids, strict=True)],
            )
            uncounted += uncount
        await db.executemany(
            "UPDATE responses SET counted = 0 WHERE rowid = ?", [(r,) for r in uncounted]
        )
        await self._build_indexes()
        await db.execute("DELETE FROM staged")
        self._staged = False

    async def _meta(self, name: str) -> str | None:
        async with self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def _set_meta(self, name: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO meta(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    async def _recover(self) -> None:
        """Finish an interrupted rebuild and reprice if the price table changed."""
        if await self._meta("prices") != self.prices.fingerprint:
            await self.reprice()
        elif await self._meta("dirty") == "1":
            await self.settle()

    async def load_cursors(self) -> dict[str, Cursor]:
        async with self._db.execute(
            "SELECT path, dev, ino, offset, head_len, head_hash, tail_hash, size, mtime_ns "
            "FROM cursors"
        ) as cur:
            rows = await cur.fetchall()
        cursors = (Cursor(os.fsdecode(row[0]), *row[1:]) for row in rows)
        return {c.path: c for c in cursors}

    async def counters(self) -> dict[str, int]:
        async with self._db.execute(
            "SELECT name, value FROM meta WHERE name IN ('lines', 'skipped_lines')"
        ) as cur:
            return {name: int(value) for name, value in await cur.fetchall()}

    # -- writing ---------------------------------------------------------------

    @_serialized
    async def apply(self, results: Sequence[TailResult]) -> ApplyOutcome:
        """Store a batch of tailed files and their cursors in one transaction."""
        best = best_priced([res.parsed.records for res in results], self.prices)
        lines = sum(res.parsed.lines for res in results)
        skipped = sum(sum(res.parsed.skipped.values()) for res in results)
        cursors = [_cursor_row(res.cursor) for res in results if res.cursor is not None]
        db = self._db
        stored: list[tuple[Any, ...]] = []
        await db.execute("BEGIN IMMEDIATE")
        try:
            if self._loaded is None:
                await self._unstage()  # the paths below read `responses`
            dirty = await self._meta("dirty") == "1"
            if len(best) > BULK_THRESHOLD or dirty:
                if not dirty:
                    self._loaded = {} if await self._responses_empty() else None
                    await self._drop_indexes(key=self._loaded is not None)
                    await self._set_meta("dirty", "1")
                changed = list(best.values())
                stored = await self._bulk_write(changed)
            else:
                changed = await self._apply_incremental(best)
            await db.executemany(
                "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", cursors
            )
            await self._bump_counter("lines", lines)
            await self._bump_counter("skipped_lines", skipped)
            queued = await self._enqueue_outbox(changed)
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        if self._loaded is not None:
            self._loaded.update(zip(map(_KEY, stored), stored, strict=True))
            if len(self._loaded) > LOADED_ROWS:
                self._loaded = None
        self.outbox_pending += queued
        if changed or lines:
            self.generation += 1
        return ApplyOutcome(changed=changed, lines=lines, skipped=skipped)

    async def _bulk_write(self, records: list[UsageRecord]) -> list[tuple[Any, ...]]:
        """Write a bulk batch (one record per key); returns the rows stored (new, or
        better than before).

        Onto an empty table (`_loaded` holds every row written so far) new keys are
        plain inserts with the next rowids, and a better snapshot of a key already
        written replaces its row by rowid: the same rows, in the same rowid order, as
        `_UPSERT` would leave. They are staged, not written (see `_unstage`).
        Otherwise the key index must exist (it is built again if this load gave up
        its rows).
        """
        db = self._db
        loaded = self._loaded
        if loaded is None:
            rows = response_rows(records)
            await db.execute(KEY_INDEX)
            await db.executemany(_UPSERT, rows)
            return rows
        new, better = split_rows(records, loaded)
        first = len(loaded) + 1  # rowids 1, 2, ... in the order rows were first stored
        rowids: list[int] = []
        if better:
            rowid_of = {key: rowid for rowid, key in enumerate(loaded, start=1)}
            rowids = [rowid_of[row[0]] for row in better]
        stored = new + better
        if stored:
            await self._stage(first, new, better, rowids)
        return stored

    async def apply_records(self, records: Sequence[UsageRecord]) -> ApplyOutcome:
        """Store records that come from no file (a forwarded batch): no cursor, no lines."""
        return await self.apply([TailResult("", None, ParseResult(records=list(records)))])

    async def _responses_empty(self) -> bool:
        async with self._db.execute("SELECT 1 FROM responses LIMIT 1") as cur:
            return await cur.fetchone() is None

    async def _bump_counter(self, name: str, delta: int) -> None:
        if delta:
            await self._db.execute(
                "INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) "
                "DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
                (name, str(delta)),
            )

    async def _apply_incremental(self, best: dict[str, UsageRecord]) -> list[UsageRecord]:
        db = self._db
        existing: dict[str, tuple[int, str, str, int]] = {}
        keys = list(best)
        for part in _chunks(keys):
            async with db.execute(
                f"SELECT key, ts, session_id, project, {_TOTAL} FROM responses "
                f"WHERE key IN ({_marks(len(part))})",
                part,
            ) as cur:
                for key, ts, session, project, total in await cur.fetchall():
                    existing[key] = (ts, session, project, total)
        changed: list[UsageRecord] = []
        touched_ts: set[int] = set()
        sessions: set[str] = set()
        projects: set[str] = set()
        for key, rec in best.items():
            old = existing.get(key)
            if old is not None:
                old_ts, old_session, old_project, old_total = old
                if rec.rank() >= (-old_total, old_ts, old_session, old_project):
                    continue
                touched_ts.add(old_ts)
                sessions.add(old_session)
                projects.add(old_project)
            changed.append(rec)
            touched_ts.add(rec.ts_ms)
            sessions.add(rec.session_id)
            projects.add(rec.project)
        if not changed:
            return changed
        message_ids = sorted({rec.message_id for rec in changed})
        for part in _chunks(message_ids):
            # The group's rows before the change: a replay whose counted flag
            # flips must leave (or join) its aggregates too.
            async with db.execute(
                f"SELECT ts, session_id, project FROM responses "
                f"WHERE message_id IN ({_marks(len(part))})",
                part,
            ) as cur:
                for ts, session, project in await cur.fetchall():
                    touched_ts.add(ts)
                    sessions.add(session)
                    projects.add(project)
        await db.executemany(_UPSERT, response_rows(changed))
        for part in _chunks(message_ids):
            await db.execute(f"{_COUNTED} WHERE message_id IN ({_marks(len(part))})", part)
        await self._rebuild_buckets(sorted({ts // BUCKET_MS for ts in touched_ts}))
        await self._rebuild_keyed("agg_session", "session_id", _SESSION_SQL, sorted(sessions))
        await self._rebuild_keyed("agg_project", "project", _PROJECT_SQL, sorted(projects))
        await self._rebuild_blocks_from(min(touched_ts))
        return changed

    async def _rebuild_buckets(self, buckets: list[int]) -> None:
        for bucket in buckets:
            await self._db.execute("DELETE FROM agg_bucket WHERE bucket = ?", (bucket,))
            await self._db.execute(
                _BUCKET_SQL.format(where="AND ts >= ? AND ts < ?"),
                (bucket * BUCKET_MS, (bucket + 1) * BUCKET_MS),
            )

    async def _rebuild_keyed(self, table: str, column: str, sql: str, keys: list[str]) -> None:
        for part in _chunks(keys):
            marks = _marks(len(part))
            await self._db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", part)
            await self._db.execute(sql.format(where=f"AND {column} IN ({marks})"), part)

    async def _rebuild_blocks_from(self, ts_ms: int) -> None:
        """Recompute blocks from the one holding the last response before `ts_ms`."""
        db = self._db
        since: int | None = None
        async with db.execute(
            "SELECT max(ts) FROM responses WHERE counted = 1 AND ts < ?", (ts_ms,)
        ) as cur:
            row = await cur.fetchone()
        prev = row[0] if row else None
        if prev is not None:
            async with db.execute(
                "SELECT max(first_ts) FROM blocks WHERE first_ts <= ?", (prev,)
            ) as cur:
                row = await cur.fetchone()
            since = row[0] if row else None
        if since is None:
            await db.execute("DELETE FROM blocks")
            query = (
                "SELECT ts, model, input, output, cache_creation, cache_read, cost "
                "FROM responses WHERE counted = 1 ORDER BY ts"
            )
            args: tuple[Any, ...] = ()
        else:
            await db.execute("DELETE FROM blocks WHERE first_ts >= ?", (since,))
            query = (
                "SELECT ts, model, input, output, cache_creation, cache_read, cost "
                "FROM responses WHERE counted = 1 AND ts >= ? ORDER BY ts"
            )
            args = (since,)
        async with db.execute(query, args) as cur:
            rows = await cur.fetchall()
        blocks = build_blocks(rows)  # type: ignore[arg-type]
        await db.executemany(
            "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_block_row(b) for b in blocks],
        )

    @_serialized
    async def settle(self) -> bool:
        """Rebuild every aggregate if a bulk batch left them dirty; True if it did."""
        if await self._meta("dirty") != "1":
            return False
        db = self._db
        loaded, self._loaded = self._loaded, None
        await db.execute("BEGIN IMMEDIATE")
        try:
            if loaded is None:
                await self._rebuild_all()
            else:
                await self._rebuild_loaded(loaded)
                if not self.deferred:
                    await self._unstage()
            await self._set_meta("dirty", "0")
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        finally:
            await db.execute("PRAGMA shrink_memory")
        self.generation += 1
        return True

    async def _rebuild_all(self) -> None:
        """Counted flags and every aggregate, from the responses table."""
        db = self._db
        self._loaded = None
        await self._unstage()
        await self._create_indexes()
        # non-sidechain rows are always counted: only the others can change
        await db.execute("UPDATE responses SET counted = 1 WHERE counted = 0 AND is_sidechain = 0")
        await db.execute(f"{_COUNTED} WHERE is_sidechain = 1")
        aggregator = Aggregator()
        async with db.execute(
            "SELECT ts, model, session_id, project, input, output, cache_creation, cache_read, "
            "cost FROM responses WHERE counted = 1 ORDER BY ts"
        ) as cur:
            while rows := await cur.fetchmany(REBUILD_CHUNK):
                aggregator.feed(rows)  # type: ignore[arg-type]
        await self._replace_aggregates(aggregator.result())

    async def _rebuild_loaded(self, loaded: dict[str, tuple[Any, ...]]) -> None:
        """`_rebuild_all` for a bulk load onto an empty table, from its rows in memory.

        Every row was staged with counted = 1, so only the replays change (staged
        too, by rowid). A stable sort by time keeps ties in rowid order, as the
        `responses_ts` index reads them, so the float sums add up in the same order.
        """
        uncounted = _uncounted(loaded.values())
        skip = set(uncounted)
        rows = sorted(loaded.values(), key=_BY_TS)
        if skip:
            rows = [row for row in rows if row[0] not in skip]
            rowids = [rowid for rowid, key in enumerate(loaded, start=1) if key in skip]
            await self._stage(uncounted=rowids)
        await self._replace_aggregates(aggregate(rows, _AGGREGATED))

    async def _replace_aggregates(self, agg: Aggregates) -> None:
        db = self._db
        for table in ("agg_bucket", "agg_session", "agg_project", "blocks"):
            await db.execute(f"DELETE FROM {table}")
        await db.executemany("INSERT INTO agg_bucket VALUES (?,?,?,?,?,?,?,?,?)", agg.buckets)
        await db.executemany(
            "INSERT INTO agg_session VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", agg.sessions
        )
        await db.executemany("INSERT INTO agg_project VALUES (?,?,?,?,?,?,?,?,?,?,?)", agg.projects)
        await db.executemany(
            "INSERT INTO blocks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [_block_row(b) for b in agg.blocks],
        )

    @_serialized
    async def reprice(self) -> None:
        """Recompute every response's cost with the current price table."""
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            await self._unstage()
            async with db.execute(
                "SELECT key, message_id, ts, model, session_id, project, is_sidechain, input, "
                "output, cache_creation, cache_creation_1h, cache_read, web_search, speed, geo, "
                "cost FROM responses"
            ) as cur:
                rows = list(await cur.fetchall())
            updates = []
            for row in rows:
                fields: list[Any] = list(row)
                fields[6] = bool(fields[6])
                rec = UsageRecord(*fields)
                cost = self.prices.cost(rec)
                if cost != fields[-1]:
                    updates.append((cost, rec.key))
            await db.executemany("UPDATE responses SET cost = ? WHERE key = ?", updates)
            if await self._meta("forward_target") is not None:
                # a receiver that keeps the sender's cost_usd gets the new one
                await outbox.enqueue(db, [key for _cost, key in updates])
            await self._rebuild_all()
            await self._set_meta("prices", self.prices.fingerprint)
            await self._set_meta("dirty", "0")
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        if rows:
            log.info("store.repriced", responses=len(rows))
        self.generation += 1

    # -- outbox (forwarding) -----------------------------------------------------

    async def _enqueue_outbox(self, changed: Sequence[UsageRecord]) -> int:
        """Queue changed responses for forwarding, inside `apply`'s transaction."""
        if not self.forwarding or not changed:
            return 0
        return await outbox.enqueue(self._db, [r.key for r in changed])

    async def _start_forwarding(self, target: str) -> None:
        """Enable the outbox; queue all history once per new forwarding target."""
        fingerprint = hashlib.sha256(target.encode()).hexdigest()[:16]
        if await self._meta("forward_target") != fingerprint:

            async def seed(db: aiosqlite.Connection) -> int:
                await self._set_meta("forward_target", fingerprint)
                return await outbox.seed(db)

            queued = await self.write(seed)
            if queued:
                log.info("outbox.seeded", responses=queued)
        self.forwarding = True
        self.outbox_pending = await outbox.count(self._db)

    @_serialized
    async def write(
        self, fn: Callable[[aiosqlite.Connection], Awaitable[_T]], *, responses: bool = True
    ) -> _T:
        """Run `fn` on the writer connection in one transaction, never beside `apply`.
        For an `fn` that reads `responses` (`responses=True`), staged rows are written
        into it first."""

        async def run() -> _T:
            if responses:
                await self._unstage()
            return await fn(self._db)

        return await self._transaction(run)


def _block_row(b: Block) -> tuple[Any, ...]:
    return (
        b.start_ms,
        b.first_ms,
        b.last_ms,
        b.entries,
        b.input_tokens,
        b.output_tokens,
        b.cache_creation_tokens,
        b.cache_read_tokens,
        b.cost_usd,
        b.unpriced,
        json.dumps(sorted(b.models)),
    )
