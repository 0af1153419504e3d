"""The HTTP API: thin aiohttp handlers over the read model.

JSON, snake_case, ISO-8601 UTC times with `Z`. A bad query parameter gets a
400 whose JSON names the parameter.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from aiohttp import web

from claude_usaged import __version__
from claude_usaged.forwarder import Forwarder, disabled_json
from claude_usaged.ingest import Ingest
from claude_usaged.received import BadPayload
from claude_usaged.stats import ReadModel, iso
from claude_usaged.team import ALL, Team
from claude_usaged.watcher import Watcher

log = structlog.get_logger(__name__)

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
    machine_id: str | None = None
    """This daemon's own machine id (the one it forwards as)."""
    team: Team | None = None
    """Set on a team server (`--accept-forwarded`)."""
    ingest_token: str | None = None
    head_start: dict[str, float | int] | None = None
    """How `run`'s first catch-up in a child went (headstart.py), when there was one."""


MAX_LIMIT = 1 << 31
"""`?limit=` beyond this means "all" (a larger number cannot be an SQLite integer)."""

MAX_INGEST_BYTES = 10 * 1024 * 1024
"""A forwarded batch is at most 1 MB; a body over 10 MB gets 413 unread."""

CONTEXT = web.AppKey("context", ApiContext)


class BadParam(Exception):
    def __init__(self, name: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.status = status


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
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise BadParam("limit", f"limit must be a positive whole number, got {raw!r}")
    return min(int(raw), MAX_LIMIT)  # more than there can be rows (SQLite's are 64-bit)


def _read(request: web.Request) -> ReadModel:
    """The read model `?machine=` names: on a team server every machine together by
    default (or `all`), one machine by its id; elsewhere this daemon's own usage."""
    ctx = request.app[CONTEXT]
    machine = request.query.get("machine") or None
    if ctx.team is not None:
        read = ctx.team.read_for(machine)
        if read is not None:
            return read
        known = ", ".join(sorted(ctx.team.machines)) or "none yet"
        raise BadParam("machine", f"unknown machine {machine!r} (known: {known})", 404)
    if machine in (None, ALL, ctx.machine_id):
        return ctx.read
    raise BadParam(
        "machine",
        f"unknown machine {machine!r}: this daemon has only its own usage "
        f"(machine {ctx.machine_id}); other machines are known to a team server "
        "(--accept-forwarded)",
        404,
    )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadParam as exc:
        return _json({"error": exc.message, "parameter": exc.name}, status=exc.status)
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
    read = _read(request)
    body = await read.stats(_now_ms(), _zone(request, read.default_tz))
    body["ingest"] = await ingest_json(ctx)
    body["forwarding"] = forwarding_json(ctx)
    return _json(body)


async def blocks(request: web.Request) -> web.Response:
    q = request.query
    since = parse_instant("since", q["since"]) if q.get("since") else None
    until = parse_instant("until", q["until"], end_of_day=True) if q.get("until") else None
    rows = await _read(request).blocks(since, until, _limit(request), _now_ms())
    return _json({"blocks": rows})


async def daily(request: web.Request) -> web.Response:
    q = request.query
    since = parse_date("since", q["since"]) if q.get("since") else None
    until = parse_date("until", q["until"]) if q.get("until") else None
    read = _read(request)
    return _json(await read.daily(since, until, _zone(request, read.default_tz)))


async def sessions(request: web.Request) -> web.Response:
    return _json({"sessions": await _read(request).sessions(request.query.get("project"))})


async def projects(request: web.Request) -> web.Response:
    return _json({"projects": await _read(request).projects()})


async def health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    watcher = ctx.watcher
    return _json(
        {
            "status": "ok",
            "version": __version__,
            "machine_id": ctx.machine_id,
            "team": _team_json(ctx),
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
            "head_start": ctx.head_start,
        }
    )


async def refresh(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await ctx.ingest.request_rescan()
    return _json({"status": "ok", "caught_up": ctx.ingest.state.caught_up})


def _team_json(ctx: ApiContext) -> dict[str, Any]:
    team = ctx.team
    return {"enabled": team is not None, "machines": len(team.machines) if team else 0}


def _authorized(request: web.Request, token: str | None) -> bool:
    if token is None:
        return True  # allowed only on loopback: the daemon refuses to start otherwise
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given_bytes = given.strip().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, token.encode())


def _idempotency_key(request: web.Request) -> str | None:
    raw = request.headers.get("Idempotency-Key", "").strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':  # an sf-string, as our forwarder sends it
        raw = raw[1:-1]
    return raw[:200] or None


def _log_refusal(request: web.Request, status: int, reason: str) -> None:
    """One line on the team server too: its admin sees which sender is misconfigured."""
    log.warning(
        "team.refused", status=status, reason=reason[:300], remote=request.remote, path=request.path
    )


async def ingest_forwarded(request: web.Request) -> web.Response:
    """`POST /v1/ingest`: one batch from a forwarding daemon (payload version 1)."""
    ctx = request.app[CONTEXT]
    assert ctx.team is not None  # only routed on a team server
    if not _authorized(request, ctx.ingest_token):
        reason = "missing or wrong ingest token (Authorization: Bearer ...)"
        _log_refusal(request, 401, reason)
        return web.json_response(
            {"error": reason},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="claude-usaged"'},
        )
    try:
        if (request.content_length or 0) > MAX_INGEST_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_INGEST_BYTES, request.content_length or 0)
        body = await request.read()  # over client_max_size: 413
    except web.HTTPRequestEntityTooLarge:
        _log_refusal(request, 413, f"body over {MAX_INGEST_BYTES} bytes")
        raise
    try:
        answer = await ctx.team.receive(body, _idempotency_key(request))
    except BadPayload as exc:
        _log_refusal(request, exc.status, exc.reason)
        return _json({"error": exc.reason}, status=exc.status)
    response = _json(answer.body, status=answer.status)
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def machines(request: web.Request) -> web.Response:
    """`GET /machines` (team server): every machine that forwarded, with its totals."""
    ctx = request.app[CONTEXT]
    if ctx.team is None:
        return _json(
            {
                "error": "this daemon is not a team server: start it with --accept-forwarded "
                "to receive usage from other machines",
                "path": request.path,
            },
            status=404,
        )
    return _json({"machines": await ctx.team.machines_json(_now_ms())})


def make_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_INGEST_BYTES)
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
    if ctx.team is not None:
        app.router.add_post("/v1/ingest", ingest_forwarded)
        app.router.add_post("/app/claude-usage/agent-sync/", ingest_forwarded)
    app.router.add_get("/machines", machines)
    return app
