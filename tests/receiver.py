"""A real aiohttp receiver on a loopback port that fails on cue, for forwarding tests.

Each request takes the next action of `script`, or `fallback` once the script
is used up. Accepted bodies are checked against the payload's JSON Schema and
their snapshots upserted by (machine_id, key), keeping the larger total, as a
team server must; every attempt is logged with its Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp import web

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "schemas" / "forward-payload-v1.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "cost_usd",
)


@dataclass(frozen=True)
class Action:
    """What the receiver does with one request."""

    kind: str  # "ok", "status", "reset", "slow"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    body: str = ""


OK = Action("ok")


def status(code: int, body: str = "", **headers: str) -> Action:
    return Action(
        "status", code, tuple((k.replace("_", "-"), v) for k, v in headers.items()), 0.0, body
    )


RESET = Action("reset")


def slow(seconds: float) -> Action:
    """Accept the batch, but answer only after `seconds` (past the sender's timeout)."""
    return Action("slow", seconds=seconds)


@dataclass
class Attempt:
    at: float
    action: str
    idempotency_key: str | None
    authorization: str | None
    batch_id: str | None
    path: str
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    script: list[Action] = field(default_factory=list)
    fallback: Action = OK
    attempts: list[Attempt] = field(default_factory=list)
    snapshots: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    schema_errors: list[str] = field(default_factory=list)
    accepted_batches: list[str] = field(default_factory=list)

    def next_action(self) -> Action:
        return self.script.pop(0) if self.script else self.fallback

    def accept(self, body: bytes) -> None:
        data = json.loads(body)
        errors = [e.message for e in VALIDATOR.iter_errors(data)]
        if errors:
            self.schema_errors.extend(errors)
            return
        machine = data["agent"]["machine_id"]
        for snap in data["snapshots"]:
            ident = (machine, snap["key"])
            old = self.snapshots.get(ident)
            if old is None or total(snap) >= total(old):  # a tie: the later (a new cost)
                self.snapshots[ident] = snap
        self.accepted_batches.append(data["batch_id"])

    def totals(self) -> dict[str, tuple[Any, ...]]:
        """Per key: the token counts, web searches and cost the receiver holds."""
        return {key: tuple(s[f] for f in TOKEN_FIELDS) for (_m, key), s in self.snapshots.items()}

    def keys_by_batch(self) -> dict[str, set[str | None]]:
        """batch_id -> the Idempotency-Keys its attempts carried."""
        seen: dict[str, set[str | None]] = {}
        for a in self.attempts:
            if a.batch_id is not None:
                seen.setdefault(a.batch_id, set()).add(a.idempotency_key)
        return seen

    def raw(self) -> bytes:
        return b"\n".join(a.body for a in self.attempts)


RECEIVER = web.AppKey("receiver", Receiver)


def total(snap: dict[str, Any]) -> int:
    return int(sum(snap[f] for f in TOKEN_FIELDS[:4]))


def _batch_id(body: bytes) -> str | None:
    try:
        return str(json.loads(body)["batch_id"])
    except (ValueError, KeyError, TypeError):
        return None


async def _handle(request: web.Request) -> web.StreamResponse:
    rec = request.app[RECEIVER]
    action = rec.next_action()
    if action.kind == "reset":
        await request.content.read(64)  # part of the body, then a TCP reset
        attempt_body = b""
        rec.attempts.append(_attempt(request, action, attempt_body, None))
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        raise asyncio.CancelledError
    body = await request.read()
    rec.attempts.append(_attempt(request, action, body, _batch_id(body)))
    if action.kind == "status":
        return web.Response(status=action.status, text=action.body, headers=dict(action.headers))
    if action.kind == "slow":
        rec.accept(body)  # processed, but the answer comes too late for the sender
        await asyncio.sleep(action.seconds)
        return web.json_response({"status": "ok"})
    rec.accept(body)
    return web.json_response({"status": "ok"})


def _attempt(request: web.Request, action: Action, body: bytes, batch_id: str | None) -> Attempt:
    return Attempt(
        time.monotonic(),
        action.kind if action.kind != "status" else str(action.status),
        request.headers.get("Idempotency-Key"),
        request.headers.get("Authorization"),
        batch_id,
        request.path,
        body,
    )


@asynccontextmanager
async def serve(path: str = "/ingest") -> AsyncIterator[Receiver]:
    """Run a Receiver on 127.0.0.1 and an ephemeral port; its `url` is the POST target."""
    rec = Receiver()
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[RECEIVER] = rec
    app.router.add_post(path, _handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}{path}"
    try:
        yield rec
    finally:
        await runner.cleanup()


async def until(check: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Await check() (sync or async) until truthy; bounded, never a fixed sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
