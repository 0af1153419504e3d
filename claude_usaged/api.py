"""The HTTP API: thin aiohttp handlers over the read model.

JSON, snake_case, ISO-8601 UTC times with `Z`. A bad query parameter gets a
400 whose JSON names the parameter.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from claude_usaged import __version__
from claude_usaged.forwarder import Forwarder, disabled_json
from claude_usaged.ingest import Ingest
from claude_usaged.stats import ReadModel, iso
from claude_usaged.watcher import Watcher

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class ApiContext:
    """What the handlers read from."""

    read: ReadModel
    ingest: Ingest
    watcher: Watcher | None
    db_path: str
    started_at: float
    forwarder: Forwarder | None = None


CONTEXT = web.AppKey("context", ApiContext)


class BadParam(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _now_ms() -> int:
    return int(time.time() * 1000)


def parse_date(name: str, raw: str) -> date:
    """`YYYY-MM-DD` or ccusage's `YYYYMMDD`."""
    try:
        if len(raw) == 8 and raw.isdigit():
            return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
        return date.fromisoformat(raw)
    except ValueError:
        raise BadParam(name, f"{name} must be a date like 2026-11-26, got {raw!r}") from None


def parse_instant(name: str, raw: str, end_of_day: bool = False) -> int:
    """A date (UTC midnight; the next one with `end_of_day`) or an ISO-8601 time -> epoch ms.

    `until=2026-11-26` includes that whole day, as it does for /daily.
    """
    try:
        if len(raw) in (8, 10) and "T" not in raw:
            day = parse_date(name, raw)
            start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
            return start + 86_400_000 if end_of_day else start
        parsed = datetime.fromisoformat(raw)
    except (ValueError, BadParam):
        raise BadParam(
            name, f"{name} must be a date or an ISO-8601 time like 2026-11-26T10:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _zone(request: web.Request, default: ZoneInfo) -> ZoneInfo:
    raw = request.query.get("tz")
    if not raw:
        return default
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        message = f"tz must be an IANA time zone like Europe/Warsaw, got {raw!r}"
        raise BadParam("tz", message) from None


def _limit(request: web.Request) -> int | None:
    raw = request.query.get("limit")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise BadParam("limit", f"limit must be a positive whole number, got {raw!r}")
    return int(raw)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadParam as exc:
        return _json({"error": exc.message, "parameter": exc.name}, status=400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # 404, 405 and the like: JSON too, so scripts can always parse an answer
        return _json({"error": exc.reason, "path": request.path}, status=exc.status)


def forwarding_json(ctx: ApiContext) -> dict[str, Any]:
    return ctx.forwarder.state_json() if ctx.forwarder else disabled_json()


async def ingest_json(ctx: ApiContext) -> dict[str, Any]:
    state = ctx.ingest.state
    totals = await ctx.read.totals()
    return {
        "files": state.files,
        "lines": ctx.ingest.lines,
        "skipped_lines": ctx.ingest.skipped_lines,
        "responses": totals["responses"],
        "last_event_at": iso(int(state.last_event_at * 1000)) if state.last_event_at else None,
        "caught_up": state.caught_up,
        "unreadable_files": state.unreadable,
    }


async def stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await ctx.read.stats(_now_ms(), _zone(request, ctx.read.default_tz))
    body["ingest"] = await ingest_json(ctx)
    body["forwarding"] = forwarding_json(ctx)
    return _json(body)


async def blocks(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    q = request.query
    since = parse_instant("since", q["since"]) if q.get("since") else None
    until = parse_instant("until", q["until"], end_of_day=True) if q.get("until") else None
    rows = await ctx.read.blocks(since, until, _limit(request), _now_ms())
    return _json({"blocks": rows})


async def daily(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    q = request.query
    since = parse_date("since", q["since"]) if q.get("since") else None
    until = parse_date("until", q["until"]) if q.get("until") else None
    tz = _zone(request, ctx.read.default_tz)
    return _json(await ctx.read.daily(since, until, tz))


async def sessions(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return _json({"sessions": await ctx.read.sessions(request.query.get("project"))})


async def projects(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return _json({"projects": await ctx.read.projects()})


async def health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    watcher = ctx.watcher
    return _json(
        {
            "status": "ok",
            "version": __version__,
            "caught_up": ctx.ingest.state.caught_up,
            "uptime_seconds": round(time.time() - ctx.started_at, 3),
            "database": {
                "path": ctx.db_path,
                "state": "error" if ctx.ingest.state.last_error else "ok",
                "error": ctx.ingest.state.last_error,
            },
            "watcher": {
                "state": watcher.state if watcher else "disabled",
                "watched": watcher.watched if watcher else [],
                "error": watcher.error if watcher else None,
            },
            "ingest": await ingest_json(ctx),
            "forwarding": forwarding_json(ctx),
        }
    )


async def refresh(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await ctx.ingest.request_rescan()
    return _json({"status": "ok", "caught_up": ctx.ingest.state.caught_up})


def make_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[CONTEXT] = ctx
    app.router.add_get("/stats", stats)
    app.router.add_get("/blocks", blocks)
    app.router.add_get("/daily", daily)
    app.router.add_get("/sessions", sessions)
    app.router.add_get("/projects", projects)
    app.router.add_get("/health", health)
    app.router.add_post("/refresh", refresh)
    # the paths of the setup guide this replaces, so its frontend works unchanged
    app.router.add_get("/app/claude-usage/stats/", stats)
    app.router.add_post("/app/claude-usage/refresh/", refresh)
    return app
