"""Read models over the aggregates: stats, blocks, days, sessions, projects.

Reads go through their own read-only connection (WAL lets them run beside
the writer). Everything here returns plain JSON-ready dicts; times are
ISO-8601 UTC with `Z`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite

from claude_usaged.usage import BUCKET_MS, WINDOW_MS, Totals

TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")


MIN_RATE_SPAN_MS = 60_000
"""A burn rate from seconds of activity says nothing: wait for a minute of it."""


def iso(ts_ms: int) -> str:
    """Epoch ms -> `2025-09-03T00:47:21.540Z` (milliseconds only when not zero)."""
    dt = datetime.fromtimestamp(ts_ms / 1000, UTC)
    if ts_ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def human_remaining(seconds: int) -> str:
    hours, rest = divmod(max(0, seconds), 3600)
    return f"{hours}h {rest // 60}m remaining"


@lru_cache(maxsize=65536)
def _local_date(bucket: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(bucket * BUCKET_MS / 1000, tz).date()


def _day_start_ms(day: date, tz: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


def _breakdowns(rows: list[tuple[str, tuple[Any, ...]]]) -> list[dict[str, Any]]:
    per_model: dict[str, Totals] = {}
    for model, sums in rows:
        per_model.setdefault(model, Totals()).add(model, sums)
    return [
        {"model": model, **t.to_json(with_models=False)} for model, t in sorted(per_model.items())
    ]


def block_json(row: tuple[Any, ...], now_ms: int) -> dict[str, Any]:
    start, first, last, entries, inp, out, cc, cr, cost, unpriced, models = row
    totals = Totals(entries, inp, out, cc, cr, cost, unpriced)
    end = start + WINDOW_MS
    # start <= now: a block from a skewed clock's future is not the current one
    active = start <= now_ms < end and now_ms - last < WINDOW_MS
    rate = projected = None
    if active and last - first >= MIN_RATE_SPAN_MS:
        rate = totals.total_tokens / ((last - first) / 60_000)
        projected = round(totals.total_tokens + rate * max(0, end - now_ms) / 60_000)
    body = totals.to_json(with_models=False)
    return {
        "start": iso(start),
        "end": iso(end),
        "actual_end": iso(last),
        "is_active": active,
        **body,
        "models": json.loads(models),
        "burn_rate_tokens_per_minute": None if rate is None else round(rate, 3),
        "projected_total_tokens": projected,
    }


class ReadModel:
    """Answers the API's questions from the aggregate tables."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        default_tz: ZoneInfo,
        generation: Callable[[], int],
    ) -> None:
        self._db = db
        self.default_tz = default_tz
        self._generation = generation
        self._cache: dict[str, tuple[int, Any]] = {}
        self._block_cache: tuple[int, int, int, tuple[Any, ...] | None] | None = None

    @classmethod
    async def open(
        cls, path: Path, default_tz: ZoneInfo, generation: Callable[[], int]
    ) -> ReadModel:
        db = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
        await db.execute("PRAGMA busy_timeout=5000")
        return cls(db, default_tz, generation)

    async def close(self) -> None:
        await self._db.close()

    async def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Any read-only query on this database (tables other than the aggregates)."""
        return await self._all(sql, args)

    async def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())  # type: ignore[arg-type]

    async def _cached(self, name: str, compute: Callable[[], Any]) -> Any:
        generation = self._generation()
        hit = self._cache.get(name)
        if hit is not None and hit[0] == generation:
            return hit[1]
        value = await compute()
        self._cache[name] = (generation, value)
        return value

    # -- blocks ----------------------------------------------------------------

    async def blocks(
        self, since_ms: int | None, until_ms: int | None, limit: int | None, now_ms: int
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM blocks WHERE start >= ? AND start < ? ORDER BY start"
        args: tuple[Any, ...] = (since_ms or -(2**62), until_ms or 2**62)
        if limit is not None:
            # the newest `limit` blocks, still listed oldest first
            sql = (
                "SELECT * FROM (SELECT * FROM blocks WHERE start >= ? AND start < ? "
                "ORDER BY start DESC LIMIT ?) ORDER BY start"
            )
            args = (*args, limit)
        return [block_json(row, now_ms) for row in await self._all(sql, args)]

    async def _block_at(self, now_ms: int) -> tuple[Any, ...] | None:
        """The newest block that started by `now_ms` (only it can be active).

        Cached with the start of the block after it, so a clock skewed into
        the future costs a query only when the answer can change.
        """
        generation = self._generation()
        hit = self._block_cache
        if hit is not None and hit[0] == generation and hit[1] <= now_ms < hit[2]:
            return hit[3]
        rows = await self._all(
            "SELECT * FROM blocks WHERE start <= ? ORDER BY start DESC LIMIT 1", (now_ms,)
        )
        later = await self._all("SELECT min(start) FROM blocks WHERE start > ?", (now_ms,))
        row = rows[0] if rows else None
        valid_from = row[0] if row else -(2**62)
        valid_until = later[0][0] if later and later[0][0] is not None else 2**62
        self._block_cache = (generation, valid_from, valid_until, row)
        return row

    # -- days ------------------------------------------------------------------

    async def daily(self, since: date | None, until: date | None, tz: ZoneInfo) -> dict[str, Any]:
        where, args = "", []
        if since is not None:
            where += " AND bucket >= ?"
            args.append(_day_start_ms(since, tz) // BUCKET_MS)
        if until is not None:
            where += " AND bucket < ?"
            args.append(_day_start_ms(until + timedelta(days=1), tz) // BUCKET_MS)
        rows = await self._all(
            "SELECT bucket, model, entries, input, output, cache_creation, cache_read, cost, "
            f"unpriced FROM agg_bucket WHERE 1 {where} ORDER BY bucket",
            tuple(args),
        )
        per_day: dict[date, list[tuple[str, tuple[Any, ...]]]] = {}
        for bucket, model, *row_sums in rows:
            per_day.setdefault(_local_date(bucket, tz), []).append((model, tuple(row_sums)))
        days = []
        grand = Totals()
        for day, items in sorted(per_day.items()):
            totals = Totals()
            for model, sums in items:
                totals.add(model, sums)
                grand.add(model, sums)
            days.append(
                {
                    "date": day.isoformat(),
                    **totals.to_json(),
                    "model_breakdowns": _breakdowns(items),
                }
            )
        return {"timezone": tz.key, "days": days, "totals": grand.to_json()}

    async def today(self, now_ms: int, tz: ZoneInfo | None = None) -> dict[str, Any]:
        tz = tz or self.default_tz
        today = datetime.fromtimestamp(now_ms / 1000, tz).date()

        async def compute() -> dict[str, Any]:
            result = await self.daily(today, today, tz)
            if result["days"]:
                day: dict[str, Any] = result["days"][0]
                return day
            return {"date": today.isoformat(), **Totals().to_json(), "model_breakdowns": []}

        value: dict[str, Any] = await self._cached(f"today:{tz.key}:{today}", compute)
        return value

    # -- sessions and projects -------------------------------------------------

    async def sessions(self, project: str | None = None) -> list[dict[str, Any]]:
        """Per session; with `project`, each session's usage in that project only."""
        sql = (
            "SELECT session_id, model, entries, input, output, cache_creation, cache_read, "
            "cost, unpriced, project, first_ts, last_ts FROM agg_session"
        )
        args: tuple[Any, ...] = ()
        if project is not None:
            sql += " WHERE project = ?"
            args = (project,)
        return self._keyed(await self._all(sql, args), "session_id", with_project=True)

    async def projects(self) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT project, model, entries, input, output, cache_creation, cache_read, cost, "
            "unpriced, project, first_ts, last_ts FROM agg_project"
        )
        return self._keyed(rows, "project", with_project=False)

    @staticmethod
    def _keyed(rows: list[tuple[Any, ...]], name: str, with_project: bool) -> list[dict[str, Any]]:
        groups: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            groups.setdefault(row[0], []).append(row)
        out = []
        for key, items in groups.items():
            totals = Totals()
            for row in items:
                totals.add(row[1], row[2:9])
            first = min(items, key=lambda r: r[10])
            entry: dict[str, Any] = {name: key}
            if with_project:
                # a session can move between folders: its first one, and all of them
                entry["project"] = first[9]
                entry["projects"] = sorted({r[9] for r in items})
            entry.update(
                first_at=iso(first[10]),
                last_at=iso(max(r[11] for r in items)),
                **totals.to_json(),
                model_breakdowns=_breakdowns([(r[1], r[2:9]) for r in items]),
            )
            out.append(entry)
        out.sort(key=lambda e: (e["last_at"], e[name]), reverse=True)
        return out

    # -- the headline ------------------------------------------------------------

    async def totals(self) -> dict[str, Any]:
        async def compute() -> dict[str, Any]:
            rows = await self._all(
                "SELECT sum(unpriced), sum(entries),"
                " sum(input + output + cache_creation + cache_read), total(cost) FROM blocks"
            )
            models = await self._all("SELECT DISTINCT model FROM agg_bucket WHERE unpriced > 0")
            unpriced, entries, tokens, cost = rows[0]
            return {
                "responses": entries or 0,
                "total_tokens": tokens or 0,
                # as for a day or a block: null when no response has a known price
                "total_cost_usd": None if entries and unpriced == entries else cost,
                "unpriced_models": sorted(m for (m,) in models),
            }

        value: dict[str, Any] = await self._cached("totals", compute)
        return value

    async def stats(self, now_ms: int, tz: ZoneInfo | None = None) -> dict[str, Any]:
        """The headline; `today` is the calendar day of `now_ms` in `tz` (default --tz)."""
        totals = await self.totals()
        last = await self._block_at(now_ms)
        current = None
        if last is not None:
            block = block_json(last, now_ms)
            if block["is_active"]:
                current = block
        if current is not None:
            reset_ms = last[0] + WINDOW_MS  # type: ignore[index]
            seconds = max(0, (reset_ms - now_ms) // 1000)
            window = {
                "current_window_tokens": current["total_tokens"],
                "next_reset_at": iso(reset_ms),
                "time_until_reset_seconds": seconds,
                "time_until_reset_human": human_remaining(seconds),
                "is_within_active_window": True,
            }
        else:
            window = {
                "current_window_tokens": 0,
                "next_reset_at": None,
                "time_until_reset_seconds": 0,
                "time_until_reset_human": "no active window",
                "is_within_active_window": False,
            }
        return {
            "total_tokens": totals["total_tokens"],
            **window,
            "total_cost_usd": totals["total_cost_usd"],
            "unpriced_models": totals["unpriced_models"],
            "current_window": current,
            "today": await self.today(now_ms, tz),
        }
