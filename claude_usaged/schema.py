"""The SQLite schema, as numbered migrations on `PRAGMA user_version`.

`responses` holds one row per deduplicated API response (metadata and token
counts only). Everything else is derived from it and rewritten in the same
transaction as the responses and the file cursors that produced them.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: responses, cursors, aggregates
    """
    CREATE TABLE responses (
        key TEXT PRIMARY KEY,
        message_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        model TEXT NOT NULL,
        session_id TEXT NOT NULL,
        project TEXT NOT NULL,
        is_sidechain INTEGER NOT NULL,
        input INTEGER NOT NULL,
        output INTEGER NOT NULL,
        cache_creation INTEGER NOT NULL,
        cache_creation_1h INTEGER NOT NULL,
        cache_read INTEGER NOT NULL,
        web_search INTEGER NOT NULL,
        speed TEXT,
        geo TEXT,
        cost REAL,
        counted INTEGER NOT NULL DEFAULT 1
    );

    CREATE TABLE cursors (
        path TEXT PRIMARY KEY,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        head_len INTEGER NOT NULL,
        head_hash TEXT NOT NULL,
        tail_hash TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL
    );

    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE agg_bucket (
        bucket INTEGER NOT NULL,
        model TEXT NOT NULL,
        entries INTEGER NOT NULL,
        input INTEGER NOT NULL,
        output INTEGER NOT NULL,
        cache_creation INTEGER NOT NULL,
        cache_read INTEGER NOT NULL,
        cost REAL NOT NULL,
        unpriced INTEGER NOT NULL,
        PRIMARY KEY (bucket, model)
    ) WITHOUT ROWID;

    CREATE TABLE agg_session (
        session_id TEXT NOT NULL,
        model TEXT NOT NULL,
        project TEXT NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        entries INTEGER NOT NULL,
        input INTEGER NOT NULL,
        output INTEGER NOT NULL,
        cache_creation INTEGER NOT NULL,
        cache_read INTEGER NOT NULL,
        cost REAL NOT NULL,
        unpriced INTEGER NOT NULL,
        PRIMARY KEY (session_id, project, model)
    ) WITHOUT ROWID;

    CREATE TABLE agg_project (
        project TEXT NOT NULL,
        model TEXT NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        entries INTEGER NOT NULL,
        input INTEGER NOT NULL,
        output INTEGER NOT NULL,
        cache_creation INTEGER NOT NULL,
        cache_read INTEGER NOT NULL,
        cost REAL NOT NULL,
        unpriced INTEGER NOT NULL,
        PRIMARY KEY (project, model)
    ) WITHOUT ROWID;

    CREATE TABLE blocks (
        start INTEGER PRIMARY KEY,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        entries INTEGER NOT NULL,
        input INTEGER NOT NULL,
        output INTEGER NOT NULL,
        cache_creation INTEGER NOT NULL,
        cache_read INTEGER NOT NULL,
        cost REAL NOT NULL,
        unpriced INTEGER NOT NULL,
        models TEXT NOT NULL
    );
    """,
    # 2: outbox for forwarding, and this machine's id
    """
    -- one row per response change still to deliver; `batch` is NULL while it is
    -- pending (at most one pending row per key: a later change coalesces into
    -- it) and names the frozen batch it was sent in afterwards
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        batch TEXT
    );
    CREATE UNIQUE INDEX outbox_pending ON outbox(key) WHERE batch IS NULL;
    CREATE INDEX outbox_batched ON outbox(batch) WHERE batch IS NOT NULL;

    -- the batch being delivered: its body is sent byte for byte on every retry,
    -- with its id as the Idempotency-Key, until the receiver acknowledges it
    CREATE TABLE outbox_batches (
        id TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );

    INSERT OR IGNORE INTO meta(name, value) VALUES ('machine_id', lower(hex(randomblob(16))));
    """,
    # 3: what a team server (--accept-forwarded) knows of the machines sending to it
    """
    CREATE TABLE team_machines (
        machine_id TEXT PRIMARY KEY,
        hostname TEXT NOT NULL,
        version TEXT NOT NULL,
        first_sync_ms INTEGER NOT NULL,
        last_sync_ms INTEGER NOT NULL,
        batches INTEGER NOT NULL
    );

    -- the first answer to each Idempotency-Key, returned again on a replay
    CREATE TABLE team_receipts (
        idempotency_key TEXT PRIMARY KEY,
        body_sha256 TEXT NOT NULL,
        status INTEGER NOT NULL,
        answer TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE INDEX team_receipts_at ON team_receipts(at_ms);
    """,
    # 4: responses keyed by a unique index instead of a TEXT PRIMARY KEY, so a bulk
    # load onto an empty table can insert first and build the key index once
    """
    CREATE TABLE responses_v4 (
        key TEXT NOT NULL,
        message_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        model TEXT NOT NULL,
        session_id TEXT NOT NULL,
        project TEXT NOT NULL,
        is_sidechain INTEGER NOT NULL,
        input INTEGER NOT NULL,
        output INTEGER NOT NULL,
        cache_creation INTEGER NOT NULL,
        cache_creation_1h INTEGER NOT NULL,
        cache_read INTEGER NOT NULL,
        web_search INTEGER NOT NULL,
        speed TEXT,
        geo TEXT,
        cost REAL,
        counted INTEGER NOT NULL DEFAULT 1
    );
    INSERT INTO responses_v4 (rowid, key, message_id, ts, model, session_id, project,
        is_sidechain, input, output, cache_creation, cache_creation_1h, cache_read,
        web_search, speed, geo, cost, counted)
    SELECT rowid, key, message_id, ts, model, session_id, project, is_sidechain, input,
        output, cache_creation, cache_creation_1h, cache_read, web_search, speed, geo, cost,
        counted
    FROM responses ORDER BY rowid;
    DROP TABLE responses;
    ALTER TABLE responses_v4 RENAME TO responses;
    CREATE UNIQUE INDEX responses_key ON responses(key);
    """,
    # 5: the rows of a bulk load onto an empty table, staged as one blob per batch in
    # the batch's transaction, and written to `responses` once the daemon serves
    """
    CREATE TABLE staged (
        id INTEGER PRIMARY KEY,
        rows BLOB NOT NULL
    );
    """,
]

KEY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS responses_key ON responses(key)"
"""The one key per response that `ON CONFLICT(key)` needs. A bulk load onto an
empty table drops it too (it knows every key it wrote) and settling builds it."""

RESPONSE_INDEXES: dict[str, str] = {
    "responses_message": "responses(message_id)",
    "responses_ts": "responses(ts) WHERE counted = 1",
    "responses_session": "responses(session_id)",
    "responses_project": "responses(project)",
    "responses_sidechain": "responses(message_id) WHERE is_sidechain = 1",
    "responses_uncounted": "responses(key) WHERE counted = 0",
}
"""Secondary indexes of `responses`. A bulk load drops them and the rebuild that
follows creates them again: building an index once is cheaper than keeping it
sorted through 100k random inserts. Opening the database creates any missing."""

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
    # a bulk load leaves a WAL of tens of MB: once checkpointed, cut it back
    "PRAGMA journal_size_limit=8388608",
)
