"""Complete JSONL lines -> `UsageRecord`s, with a count of what was skipped.

Only lines that contain the key `"usage"` can count, so the rest are never
decoded: a byte search skips them at memory speed. The lines that remain are
decoded into typed structs that name only the fields we keep; message content
is skipped by the decoder and never reaches a Python object.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

import msgspec

from claude_usaged.usage import UsageRecord

SYNTHETIC_MODEL = "<synthetic>"


class _CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class _ServerToolUse(msgspec.Struct):
    web_search_requests: int | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None
    server_tool_use: _ServerToolUse | None = None
    speed: str | None = None
    inference_geo: str | None = None


class _Message(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class _Line(msgspec.Struct):
    type: str | None = None
    timestamp: str | None = None
    sessionId: str | None = None
    requestId: str | None = None
    isSidechain: bool | None = None
    cwd: str | None = None
    message: _Message | None = None


_decoder = msgspec.json.Decoder(_Line, strict=False)


@dataclass(slots=True)
class ParseResult:
    """What one buffer of complete lines yielded."""

    records: list[UsageRecord] = field(default_factory=list)
    lines: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def merge(self, other: ParseResult) -> None:
        self.records.extend(other.records)
        self.lines += other.lines
        self.skipped.update(other.skipped)


@lru_cache(maxsize=4096)
def _day_ms(date: str) -> int:
    return int(datetime.fromisoformat(date + "T00:00:00+00:00").timestamp()) * 1000


def parse_timestamp_ms(value: str) -> int:
    """ISO-8601 -> epoch milliseconds; fast for Claude Code's own `...T09:14:05.602Z`."""
    if len(value) == 24 and value[-1] == "Z" and value[10] == "T" and value[19] == ".":
        try:
            return (
                _day_ms(value[:10])
                + int(value[11:13]) * 3_600_000
                + int(value[14:16]) * 60_000
                + int(value[17:19]) * 1000
                + int(value[20:23])
            )
        except ValueError:
            pass
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without zone: {value!r}")
    return round(parsed.timestamp() * 1000)


def _count(value: int | None) -> int:
    return value if value is not None and value > 0 else 0


class _Interner:
    """Keeps one copy of repeated strings (models, sessions, projects)."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        return self._seen.setdefault(value, value)


def record_from_line(
    line: bytes, fallback_session: str, fallback_project: str, intern: _Interner | None = None
) -> UsageRecord | str | None:
    """One line -> a record, a skip reason (malformed input), or None (not a response)."""
    try:
        obj = _decoder.decode(line)
    except msgspec.DecodeError as exc:
        return "invalid_json" if "JSON" in str(exc) or "truncated" in str(exc) else "invalid_fields"
    if obj.type != "assistant" or obj.message is None or obj.message.usage is None:
        return None
    message = obj.message
    model = message.model or "unknown"
    if model == SYNTHETIC_MODEL:
        return None
    if not obj.timestamp:
        return "missing_timestamp"
    try:
        ts_ms = parse_timestamp_ms(obj.timestamp)
    except ValueError:
        return "bad_timestamp"
    usage = message.usage
    session_id = obj.sessionId or fallback_session
    split_5m = split_1h = 0
    if usage.cache_creation is not None:
        split_5m = _count(usage.cache_creation.ephemeral_5m_input_tokens)
        split_1h = _count(usage.cache_creation.ephemeral_1h_input_tokens)
    cache_creation = max(_count(usage.cache_creation_input_tokens), split_5m + split_1h)
    if message.id:
        message_id = message.id
        key = f"{message.id}:{obj.requestId}" if obj.requestId else f"{session_id}:{message.id}"
    else:
        # No id to deduplicate by: the line's own bytes identify it, so a
        # copy of it elsewhere (or a re-read) still counts once.
        key = message_id = "line:" + hashlib.blake2b(line, digest_size=16).hexdigest()
    web_search = 0
    if usage.server_tool_use is not None:
        web_search = _count(usage.server_tool_use.web_search_requests)
    keep = intern or (lambda s: s)
    return UsageRecord(
        key=key,
        message_id=message_id,
        ts_ms=ts_ms,
        model=keep(model),
        session_id=keep(session_id),
        project=keep(obj.cwd or fallback_project),
        is_sidechain=bool(obj.isSidechain),
        input_tokens=_count(usage.input_tokens),
        output_tokens=_count(usage.output_tokens),
        cache_creation_tokens=cache_creation,
        cache_creation_1h_tokens=min(split_1h, cache_creation),
        cache_read_tokens=_count(usage.cache_read_input_tokens),
        web_search_requests=web_search,
        speed=keep(usage.speed) if usage.speed else None,
        inference_geo=keep(usage.inference_geo) if usage.inference_geo else None,
    )


def _bad_line_count(buf: bytes) -> int:
    """Lines that are neither blank nor shaped like `{...}`; 0 on the fast path."""
    lines = buf.count(b"\n")
    starts = buf.count(b"\n{") + (1 if buf[:1] == b"{" else 0)
    if buf.endswith(b"\n{"):
        starts -= 1  # cannot happen for a buffer ending in \n; kept for safety
    ends = buf.count(b"}\n")
    if starts == lines and ends == lines:
        return 0
    bad = 0
    for raw in buf.split(b"\n")[:-1] if buf.endswith(b"\n") else buf.split(b"\n"):
        stripped = raw.strip()
        if stripped and not (stripped[:1] == b"{" and stripped[-1:] == b"}"):
            bad += 1
    return bad


def parse_lines(
    buf: bytes,
    fallback_session: str,
    fallback_project: str,
    intern: _Interner | None = None,
) -> ParseResult:
    """Parse a buffer of complete `\\n`-terminated lines (split on the byte only)."""
    result = ParseResult()
    result.lines = buf.count(b"\n")
    bad = _bad_line_count(buf)
    if bad:
        result.skipped["malformed_line"] += bad
    find = buf.find
    pos = find(b'"usage"')
    while pos != -1:
        start = buf.rfind(b"\n", 0, pos) + 1
        end = find(b"\n", pos)
        if end == -1:
            end = len(buf)
        line = buf[start:end]
        pos = find(b'"usage"', end)
        if b'"assistant"' not in line:
            continue
        head = line.lstrip()
        if head[:1] != b"{" or line.rstrip()[-1:] != b"}":
            continue  # already counted by _bad_line_count
        outcome = record_from_line(line, fallback_session, fallback_project, intern)
        if outcome is None:
            continue
        if isinstance(outcome, str):
            result.skipped[outcome] += 1
        else:
            result.records.append(outcome)
    return result


def new_interner() -> _Interner:
    return _Interner()
