"""Forwarding: the outbox, drained in order to a remote endpoint.

The delivery loop freezes the oldest pending responses into a batch (at most
500 responses or 1 MB), POSTs it as JSON (payload version 1, documented in
the README and in `schemas/forward-payload-v1.json`) with the batch id as
`Idempotency-Key`, and removes the batch from the outbox only on a 2xx. Every
retry, also after a crash or restart, sends the same bytes with the same key.

- 429 and 503 wait for `Retry-After` (seconds or an HTTP date);
- other 5xx, timeouts, resets and DNS errors back off exponentially with full
  jitter, 1 s doubling to 5 min;
- a rejection (400, 401, 403, 404, 422 and other 4xx) is a configuration
  problem: the state says so in one line, the log says it once, and delivery
  retries every 5 minutes until it works.

It only reads and writes the outbox through `Store.write`, between ingest's
transactions, and never holds the store while a request is in flight, so
neither ingest nor the API ever waits for the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec
import structlog

from claude_usaged import __version__, outbox
from claude_usaged.outbox import Batch, SnapshotRow
from claude_usaged.stats import iso
from claude_usaged.store import Store

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
MAX_RESPONSES = 500
MAX_BYTES = 1_000_000
TIMEOUT = 30.0
"""Seconds one request may take, connecting included."""
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
REJECTED_RETRY = 300.0
"""Seconds between attempts while the receiver rejects us (bad token, URL, payload)."""
RETRY_AFTER_CAP = 3600.0
"""A longer Retry-After is taken as this: a wrong clock must not stop delivery for days."""
DIRTY_POLL = 0.5
"""Seconds between looks while a bulk load is being settled (no event says when it ends)."""
IDLE_WAIT = 60.0

TOKEN_HINT = "CLAUDE_USAGED_FORWARD_TOKEN"
URL_HINT = "CLAUDE_USAGED_FORWARD_URL"
RETRIED_4XX = frozenset({408, 409, 425})
"""4xx that mean "try again": timeout, the same key still in progress, too early."""

ForwardStateName = Literal["ok", "retrying", "failing", "disabled"]


def compat_endpoint(api_url: str) -> str:
    """The setup guide's webhook under `CLAUDE_USAGE_API_URL`."""
    return api_url.rstrip("/") + "/app/claude-usage/agent-sync/"


def display_url(url: str) -> str:
    """The URL without a password, for logs and `/health`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds to wait: delay-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return min(max(0.0, (when - now).total_seconds()), RETRY_AFTER_CAP)


def backoff_delay(
    failures: int,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(failures - 1))]."""
    ceiling = min(cap, base * 2 ** max(0, min(failures - 1, 30)))
    return uniform(0.0, ceiling)


def snapshot_json(row: SnapshotRow) -> dict[str, Any]:
    """One counted response as sent: metadata and counts, never content."""
    key, ts, model, session, project, sidechain, inp, out, cc, cr, web, cost = row[:12]
    message_id, cc_1h, speed, geo = row[12:16]
    return {
        "key": key,
        "timestamp": iso(ts),
        "model": model,
        "session_id": session,
        "project": project,
        "is_sidechain": bool(sidechain),
        "input_tokens": inp,
        "output_tokens": out,
        "cache_creation_tokens": cc,
        "cache_read_tokens": cr,
        "web_search_requests": web,
        "cost_usd": cost,
        # what a receiver needs to count and price exactly as the sender does
        "message_id": message_id,
        "cache_creation_1h_tokens": cc_1h,
        "speed": speed,
        "inference_geo": geo,
    }


class BodySizer:
    """A slight overestimate of the bytes each next snapshot adds to one batch's body,
    its session's and project's entries included the first time they appear."""

    def __init__(self) -> None:
        self._projects: set[str] = set()
        self._sessions: set[str] = set()

    def __call__(self, row: SnapshotRow) -> int:
        key, _ts, model, session, project = row[:5]
        message_id, _cc_1h, speed, geo = row[12:16]
        size = 480 + _utf8(key) + _utf8(model) + _utf8(session) + _utf8(project)
        size += _utf8(message_id) + _utf8(speed or "") + _utf8(geo or "")
        if project not in self._projects:
            self._projects.add(project)
            size += 120 + _utf8(project)
        if session not in self._sessions:
            self._sessions.add(session)
            size += 150 + _utf8(session) + _utf8(project)
        return size


def _utf8(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def build_body(
    agent: dict[str, str], batch_id: str, created_ms: int, rows: Sequence[SnapshotRow]
) -> bytes:
    """The request body (payload version 1) of one batch."""
    snapshots = [snapshot_json(r) for r in rows]
    projects: dict[str, dict[str, Any]] = {}
    sessions: dict[str, dict[str, Any]] = {}
    for s in snapshots:
        for group, name, extra in (
            (projects, s["project"], {"project": s["project"]}),
            (sessions, s["session_id"], {"session_id": s["session_id"], "project": s["project"]}),
        ):
            entry = group.get(name)
            if entry is None:
                group[name] = {
                    **extra,
                    "first_at": s["timestamp"],
                    "last_at": s["timestamp"],
                    "snapshots": 1,
                }
            else:
                entry["first_at"] = min(entry["first_at"], s["timestamp"])
                entry["last_at"] = max(entry["last_at"], s["timestamp"])
                entry["snapshots"] += 1
    return msgspec.json.encode(
        {
            "schema": SCHEMA_VERSION,
            "agent": agent,
            "batch_id": batch_id,
            "sent_at": iso(created_ms),
            "projects": [projects[k] for k in sorted(projects)],
            "sessions": [sessions[k] for k in sorted(sessions)],
            "snapshots": snapshots,
        }
    )


@dataclass(slots=True)
class Attempt:
    """How one POST of a batch went."""

    kind: Literal["ok", "transient", "throttled", "rejected"]
    error: str | None = None
    retry_after: float | None = None


@dataclass(slots=True)
class Delivered:
    """What a run of `drain` delivered (distinct projects and sessions)."""

    projects: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    snapshots: int = 0
    batches: int = 0


@dataclass(slots=True)
class DrainResult:
    """The outcome of `Forwarder.drain`: what went out, and what did not."""

    delivered: Delivered
    pending: int
    error: str | None


class Forwarder:
    """Drains the store's outbox to `url`; `run()` forever, or `drain()` once."""

    def __init__(
        self,
        store: Store,
        url: str,
        token: str | None = None,
        *,
        timeout: float = TIMEOUT,
        max_responses: int | None = None,
        max_bytes: int | None = None,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        rejected_retry: float | None = None,
        token_hint: str = TOKEN_HINT,
        url_hint: str = URL_HINT,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        # None: the module's constant at construction time (tests shorten them)
        self.store = store
        self.url = url
        self._token = token or None
        self.timeout = timeout
        self.max_responses = max_responses or MAX_RESPONSES
        self.max_bytes = max_bytes or MAX_BYTES
        self.backoff_base = BACKOFF_BASE if backoff_base is None else backoff_base
        self.backoff_cap = BACKOFF_CAP if backoff_cap is None else backoff_cap
        self.rejected_retry = REJECTED_RETRY if rejected_retry is None else rejected_retry
        self.token_hint = token_hint
        self.url_hint = url_hint
        self._uniform = uniform
        self.state: ForwardStateName = "ok"
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self._logged_error: str | None = None
        self._failures = 0
        self._agent: dict[str, str] | None = None
        self._wake = asyncio.Event()

    # -- what the API shows -------------------------------------------------------

    def state_json(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "state": self.state,
            "pending": self.store.outbox_pending,
            "last_success_at": (
                iso(int(self.last_success_at * 1000)) if self.last_success_at else None
            ),
            "last_error": self.last_error,
        }

    def wake(self, *_changed: object) -> None:
        """New responses are in the outbox (an ingest listener)."""
        self._wake.set()

    # -- the loops ----------------------------------------------------------------

    async def run(self) -> None:
        """Deliver forever; cancel to stop (an unacknowledged batch is sent again later)."""
        log.info("forward.started", url=display_url(self.url), pending=self.store.outbox_pending)
        async with self._session() as session:
            while True:
                self._wake.clear()
                batch = await self._next_batch()
                if batch is None:
                    if self.state == "retrying":
                        self.state = "ok"
                    await self._idle()
                    continue
                attempt = await self._post(session, batch)
                if attempt.kind == "ok":
                    await self._acknowledge(batch)
                    continue
                await asyncio.sleep(self._after_failure(attempt))

    async def drain(self) -> DrainResult:
        """Deliver everything pending, stopping at the first failure."""
        delivered = Delivered()
        async with self._session() as session:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    return DrainResult(delivered, self.store.outbox_pending, None)
                attempt = await self._post(session, batch)
                if attempt.kind != "ok":
                    # not logged: the caller prints the error as its one line
                    self._after_failure(attempt, log_it=False)
                    return DrainResult(delivered, self.store.outbox_pending, self.last_error)
                await self._acknowledge(batch)
                body = msgspec.json.decode(batch.body)
                delivered.projects.update(p["project"] for p in body["projects"])
                delivered.sessions.update(s["session_id"] for s in body["sessions"])
                delivered.snapshots += len(body["snapshots"])
                delivered.batches += 1

    async def _idle(self) -> None:
        # pending rows but no batch: a bulk load is being settled, look again soon
        wait = DIRTY_POLL if self.store.outbox_pending else IDLE_WAIT
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    # -- one batch ----------------------------------------------------------------

    async def _next_batch(self) -> Batch | None:
        if self._agent is None:
            machine = await self.store.write(outbox.machine_id, responses=False)
            self._agent = {
                "machine_id": machine,
                "hostname": socket.gethostname(),
                "version": __version__,
            }
        agent = self._agent

        def build(batch_id: str, created_ms: int, rows: Sequence[SnapshotRow]) -> bytes:
            return build_body(agent, batch_id, created_ms, rows)

        async def freeze(db: Any) -> tuple[Batch | None, int]:
            batch = await outbox.next_batch(
                db, build, self.max_responses, self.max_bytes, BodySizer()
            )
            return batch, await outbox.count(db)

        batch, pending = await self.store.write(freeze)
        self.store.outbox_pending = pending
        return batch

    async def _acknowledge(self, batch: Batch) -> None:
        async def ack(db: Any) -> int:
            await outbox.ack(db, batch.id)
            return await outbox.count(db)

        self.store.outbox_pending = await self.store.write(ack)
        if self.state != "ok" or self._failures:
            log.info("forward.recovered", after_failures=self._failures)
        self.state = "ok"
        self.last_error = None
        self._logged_error = None
        self._failures = 0
        self.last_success_at = time.time()

    def _session(self) -> aiohttp.ClientSession:
        headers = {"User-Agent": f"claude-usaged/{__version__}"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
        )

    async def _post(self, session: aiohttp.ClientSession, batch: Batch) -> Attempt:
        headers = {
            "Content-Type": "application/json",
            # an sf-string, as draft-ietf-httpapi-idempotency-key-header shows it
            "Idempotency-Key": f'"{batch.id}"',
        }
        try:
            async with session.post(
                self.url, data=batch.body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                if 200 <= status < 300:
                    return Attempt("ok")
                reason = _reason(status, resp.reason)
                if status in (429, 503):
                    wait = retry_after_seconds(resp.headers.get("Retry-After"))
                    return Attempt("throttled", reason, wait)
                if status >= 500 or status in RETRIED_4XX:
                    return Attempt("transient", reason)
                detail = (await resp.content.read(300)).decode("utf-8", "replace")
                return Attempt("rejected", self._rejection(status, reason, detail))
        except TimeoutError:
            return Attempt("transient", f"no answer within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt("transient", connection_error(exc, self.url))

    def _rejection(self, status: int, reason: str, detail: str) -> str:
        if status in (401, 403):
            return f"{reason} — check {self.token_hint}"
        if status in (404, 405) or status < 400:
            return f"{reason} — check {self.url_hint}"
        detail = " ".join(detail.split())[:200]
        return f"{reason} — the receiver rejected the payload" + (f": {detail}" if detail else "")

    def _after_failure(self, attempt: Attempt, log_it: bool = True) -> float:
        """Record a failed attempt; return the seconds to wait before the next one."""
        self._failures += 1
        error = self._mask(attempt.error or "unknown error")
        self.last_error = error
        if attempt.kind == "rejected":
            self.state = "failing"
            delay = self.rejected_retry
        else:
            self.state = "retrying"
            delay = backoff_delay(
                self._failures, self.backoff_base, self.backoff_cap, self._uniform
            )
            if attempt.retry_after is not None:
                delay = attempt.retry_after
        if log_it and error != self._logged_error:
            # one line per distinct problem, not one per attempt
            self._logged_error = error
            emit = log.error if attempt.kind == "rejected" else log.warning
            emit(
                "forward.failed",
                error=error,
                state=self.state,
                retry_in_seconds=round(delay, 3),
                pending=self.store.outbox_pending,
            )
        return delay

    def _mask(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, "***")
        password = urlsplit(self.url).password
        if password:
            text = text.replace(password, "***")
        return text


def connection_error(exc: BaseException, url: str) -> str:
    """`ClientConnectorError: Cannot connect to host h:80 [Connection refused]`: aiohttp's
    message without its ` ssl:default`, which says nothing about a plain-HTTP URL."""
    text = f"{type(exc).__name__}: {exc}"
    if urlsplit(url).scheme == "http":
        text = text.replace(" ssl:default", "")
    return text


def _reason(status: int, reason: str | None) -> str:
    if not reason:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "HTTP error"
    return f"{status} {reason}"


def disabled_json() -> dict[str, Any]:
    """`forwarding` in `/stats` and `/health` when no forward URL is set."""
    return {
        "enabled": False,
        "state": "disabled",
        "pending": 0,
        "last_success_at": None,
        "last_error": None,
    }
