"""A forwarded batch (payload version 1) as a team server reads it.

The body is decoded into typed structs that name only what is counted, so a
sender cannot make the receiver keep anything else; unknown fields are
ignored (a newer sender may add some). A body that is not JSON is a
`BadPayload` with status 400; one that is JSON but breaks the schema (a
negative count, a bad machine id, a time without zone) is 422, and the reason
names the field, e.g. `Expected int >= 0, got -1 - at $.snapshots[3].input_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Literal

import msgspec

from claude_usaged.parser import MAX_ID, MAX_MODEL, MAX_PATH, MAX_TAG, Count, parse_timestamp_ms
from claude_usaged.usage import UsageRecord

Text = Annotated[str, msgspec.Meta(max_length=4096)]
MachineId = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]


class BadPayload(ValueError):
    """The body cannot be taken; `status` is 400 (not JSON) or 422 (breaks the schema)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Agent(msgspec.Struct, frozen=True):
    machine_id: MachineId
    hostname: Annotated[str, msgspec.Meta(max_length=255)]
    version: Annotated[str, msgspec.Meta(max_length=64)]


class Snapshot(msgspec.Struct, frozen=True):
    """The parser's limits (a sender never stores a longer value), so a snapshot a
    sender holds is never refused here: one refused snapshot would hold back every
    later one in its outbox."""

    key: Annotated[str, msgspec.Meta(min_length=1, max_length=2 * MAX_ID + 1)]
    timestamp: Text
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MODEL)]
    session_id: Annotated[str, msgspec.Meta(max_length=MAX_PATH)]
    project: Annotated[str, msgspec.Meta(max_length=MAX_PATH)]
    is_sidechain: bool
    input_tokens: Count
    output_tokens: Count
    cache_creation_tokens: Count
    cache_read_tokens: Count
    web_search_requests: Count
    cost_usd: float | None
    message_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)] | None = None
    cache_creation_1h_tokens: Count = 0
    speed: Annotated[str, msgspec.Meta(max_length=MAX_TAG)] | None = None
    inference_geo: Annotated[str, msgspec.Meta(max_length=MAX_TAG)] | None = None


class Payload(msgspec.Struct, frozen=True):
    schema: Literal[1]
    agent: Agent
    batch_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    sent_at: Text
    snapshots: list[Snapshot]


_decoder = msgspec.json.Decoder(Payload)


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch and its snapshots as records (times parsed once)."""

    payload: Payload
    records: list[UsageRecord]


def decode(body: bytes) -> Batch:
    """The batch in `body`; raises BadPayload (400 or 422) with the reason.

    The records' cost is left to the receiver's price table (set when stored), so
    one team server prices everyone's usage the same way and reprices it when its
    table changes.
    """
    try:
        payload = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadPayload(422, str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadPayload(400, f"body is not JSON: {exc}") from None
    out = []
    for i, s in enumerate(payload.snapshots):
        try:
            ts_ms = parse_timestamp_ms(s.timestamp)
        except ValueError:
            raise BadPayload(
                422,
                f"Expected an ISO-8601 time with zone, got {s.timestamp!r} "
                f"- at `$.snapshots[{i}].timestamp`",
            ) from None
        out.append(
            UsageRecord(
                key=s.key,
                message_id=s.message_id or s.key,
                ts_ms=ts_ms,
                model=s.model,
                session_id=s.session_id,
                project=s.project,
                is_sidechain=s.is_sidechain,
                input_tokens=s.input_tokens,
                output_tokens=s.output_tokens,
                cache_creation_tokens=s.cache_creation_tokens,
                cache_creation_1h_tokens=min(s.cache_creation_1h_tokens, s.cache_creation_tokens),
                cache_read_tokens=s.cache_read_tokens,
                web_search_requests=s.web_search_requests,
                speed=s.speed,
                inference_geo=s.inference_geo,
            )
        )
    return Batch(payload, out)


def prefixed(records: list[UsageRecord], prefix: str) -> list[UsageRecord]:
    """Copies whose key and message id start with `prefix`: keys of different machines
    stay apart in a store that holds them all."""
    return [replace(r, key=prefix + r.key, message_id=prefix + r.message_id) for r in records]
