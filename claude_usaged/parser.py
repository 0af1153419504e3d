"""Complete JSONL lines -> `UsageRecord`s, with a count of what was skipped.

Only lines that contain the key `"usage"` can count, so the rest are never
decoded: a byte search skips them at memory speed. The lines that remain are
decoded into typed structs that name only the fields we keep; message content
is skipped by the decoder and never reaches a Python object.

When the C extension is built (see fastpath.py), `parse_lines` hands the whole
buffer to `_fastscan.scan`, which does the same in one pass without the GIL
and declines the lines it is not sure about; those come back here, to
`record_from_line`. This module stays the specification of both paths.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Annotated

import msgspec

from claude_usaged import fastpath
from claude_usaged.fastpath import Buffer
from claude_usaged.usage import UsageRecord

SYNTHETIC_MODEL = "<synthetic>"
UNKNOWN_MODEL = "unknown"
"""The model of a response whose line names none."""


MAX_COUNT = 10_000_000_000
"""No response holds ten billion tokens; a larger count is corrupt, and sums of
such counts would overflow SQLite's 64-bit integers (the C scanner declines it too)."""

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
"""A token count: negative or absurd numbers make the line invalid rather than count."""


MAX_ID = 512
"""Characters of a session, request or message id at most (they are UUID-like)."""
MAX_MODEL = 255
MAX_PATH = 4096
"""A working directory: Linux's PATH_MAX."""
MAX_TAG = 64
"""usage.speed and usage.inference_geo."""
# Longer values are corrupt: the line is invalid_fields, so nothing that is stored can
# later be refused by a team server (received.py takes exactly these limits).
Id = Annotated[str, msgspec.Meta(max_length=MAX_ID)]
Model = Annotated[str, msgspec.Meta(max_length=MAX_MODEL)]
PathText = Annotated[str, msgspec.Meta(max_length=MAX_PATH)]
Tag = Annotated[str, msgspec.Meta(max_length=MAX_TAG)]


class _CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: Count | None = None
    ephemeral_1h_input_tokens: Count | None = None


class _ServerToolUse(msgspec.Struct):
    web_search_requests: Count | None = None


class _Usage(msgspec.Struct):
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    cache_creation_input_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None
    cache_creation: _CacheCreation | None = None
    server_tool_use: _ServerToolUse | None = None
    speed: Tag | None = None
    inference_geo: Tag | None = None


class _Message(msgspec.Struct):
    id: Id | None = None
    model: Model | None = None
    usage: _Usage | None = None


class _Line(msgspec.Struct):
    type: str | None = None
    timestamp: str | None = None
    sessionId: Id | None = None
    requestId: Id | None = None
    isSidechain: bool | None = None
    cwd: PathText | None = None
    message: _Message | None = None


_decoder = msgspec.json.Decoder(_Line)


@dataclass(slots=True)
class ParseResult:
    """What one buffer of complete lines yielded."""

    records: list[UsageRecord] = field(default_factory=list)
    lines: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def merge(self, other: ParseResult) -> None:
        self.records.extend(other.records)
        self.lines += other.lines
        if other.skipped:  # Counter.update is Python: ~1 us even with nothing to add
            self.skipped.update(other.skipped)


@lru_cache(maxsize=4096)
def _day_ms(date: str) -> int:
    return int(datetime.fromisoformat(date + "T00:00:00+00:00").timestamp()) * 1000


MIN_TS_MS = 0
"""1970-01-01T00:00:00Z (a machine whose clock was reset writes such times)."""
MAX_TS_MS = 7_258_118_400_000
"""2200-01-01T00:00:00Z. Outside these a time is corrupt, and days, blocks and local
times of year 1 or 9999 cannot be computed in every zone (the C scanner agrees)."""


def parse_timestamp_ms(value: str) -> int:
    """ISO-8601 -> epoch milliseconds; fast for Claude Code's own `...T09:14:05.602Z`.

    Raises ValueError for a time that is not ISO-8601, has no zone, or lies outside
    [1970, 2200).
    """
    ts = _timestamp_ms(value)
    if not MIN_TS_MS <= ts < MAX_TS_MS:
        raise ValueError(f"timestamp out of range (1970 to 2199): {value!r}")
    return ts


def _timestamp_ms(value: str) -> int:
    if len(value) == 24 and value[-1] == "Z" and value[10] == "T" and value[19] == ".":
        try:
            hour, minute, second = int(value[11:13]), int(value[14:16]), int(value[17:19])
            if hour < 24 and minute < 60 and second < 60:
                return (
                    _day_ms(value[:10])
                    + hour * 3_600_000
                    + minute * 60_000
                    + second * 1000
                    + int(value[20:23])
                )
        except ValueError:
            pass
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without zone: {value!r}")
    return round(parsed.timestamp() * 1000)


class _Interner:
    """Keeps one copy of repeated strings (models, sessions, projects)."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        return self._seen.setdefault(value, value)


def record_from_line(
    line: bytes | memoryview,
    fallback_session: str,
    fallback_project: str,
    intern: _Interner | None = None,
) -> UsageRecord | str | None:
    """One line -> a record, a skip reason (malformed input), or None (not a response)."""
    try:
        obj = _decoder.decode(line)
    except msgspec.ValidationError:
        return "invalid_fields"
    except msgspec.DecodeError:
        return "invalid_json"
    except UnicodeDecodeError:
        return "invalid_utf8"
    except RecursionError:  # nested deeper than the decoder goes (~1000 levels)
        return "too_deep"
    message = obj.message
    if obj.type != "assistant" or message is None:
        return None
    usage = message.usage
    if usage is None:
        return None
    model = message.model or UNKNOWN_MODEL
    if model == SYNTHETIC_MODEL:
        return None
    stamp = obj.timestamp
    if not stamp:
        return "missing_timestamp"
    try:
        ts_ms = parse_timestamp_ms(stamp)
    except ValueError:
        return "bad_timestamp"
    session_id = obj.sessionId or fallback_session
    split_1h = 0
    cache_creation = usage.cache_creation_input_tokens or 0
    split = usage.cache_creation
    if split is not None:
        split_1h = split.ephemeral_1h_input_tokens or 0
        cache_creation = max(cache_creation, (split.ephemeral_5m_input_tokens or 0) + split_1h)
    message_id = message.id
    if message_id:
        request_id = obj.requestId
        key = f"{message_id}:{request_id}" if request_id else f"{session_id}:{message_id}"
    else:
        # No id to deduplicate by: the line's own bytes identify it, so a
        # copy of it elsewhere (or a re-read) still counts once.
        key = message_id = "line:" + hashlib.blake2b(line, digest_size=16).hexdigest()
    tool_use = usage.server_tool_use
    keep = intern or _identity
    return UsageRecord(
        key,
        message_id,
        ts_ms,
        keep(model),
        keep(session_id),
        keep(obj.cwd or fallback_project),
        bool(obj.isSidechain),
        usage.input_tokens or 0,
        usage.output_tokens or 0,
        cache_creation,
        min(split_1h, cache_creation),
        usage.cache_read_input_tokens or 0,
        (tool_use.web_search_requests or 0) if tool_use is not None else 0,
        keep(usage.speed) if usage.speed else None,
        keep(usage.inference_geo) if usage.inference_geo else None,
    )


def _identity(value: str) -> str:
    return value


_BAD_EDGE = re.compile(rb"\n(?:(?<![}\s]\n)|(?=[^{\s]))")
"""A `\n` that ends a line not closed by `}` or starts one not opened by `{`.

The pattern starts with a literal byte, so the regex engine jumps from newline
to newline at memory speed; a clean buffer costs one scan and no Python loop.
"""


def _bad_line_count(buf: bytes) -> int:
    """Lines that are neither blank nor shaped like `{...}`."""
    first = buf[:1]
    if _BAD_EDGE.search(buf) is None and (first == b"{" or first.isspace() or not first):
        return 0
    bad = 0
    for raw in buf.split(b"\n"):
        stripped = raw.strip()
        if stripped and not (stripped[:1] == b"{" and stripped[-1:] == b"}"):
            bad += 1
    return bad


def parse_lines(
    buf: Buffer,
    fallback_session: str,
    fallback_project: str,
    intern: _Interner | None = None,
    max_line: int = 1 << 62,
    deduped: bool = False,
) -> ParseResult:
    """Parse a buffer of complete `\\n`-terminated lines (split on the byte only).

    `buf` may be a view of a buffer the caller reuses: it must not change until
    this returns (the C scanner reads it without the GIL). `deduped` says that
    the caller passes the records through `usage.dedupe`: the C scanner then
    leaves out those that cannot win it (most lines of a streamed response).
    """
    scan = fastpath.scanner()
    if scan is not None:
        return _parse_scanned(
            scan, buf, fallback_session, fallback_project, intern, max_line, deduped
        )
    return _parse_python(buf, fallback_session, fallback_project, intern, max_line)


def _parse_python(
    data: Buffer,
    fallback_session: str,
    fallback_project: str,
    intern: _Interner | None,
    max_line: int,
) -> ParseResult:
    """parse_lines in pure Python: the specification of the C path."""
    buf = data if isinstance(data, bytes) else bytes(data)
    result = ParseResult()
    result.lines = buf.count(b"\n")
    bad = _bad_line_count(buf)
    if bad:
        result.skipped["malformed_line"] += bad
    find = buf.find
    view = memoryview(buf)
    pos = find(b'"usage"')
    while pos != -1:
        start = buf.rfind(b"\n", 0, pos) + 1
        end = find(b"\n", pos)
        if end == -1:
            end = len(buf)
        pos = find(b'"usage"', end)
        if end - start > max_line:
            result.skipped["line_too_long"] += 1
            continue
        _take_line(result, view, start, end, fallback_session, fallback_project, intern)
    return result


def _take_line(
    result: ParseResult,
    view: memoryview,
    start: int,
    end: int,
    fallback_session: str,
    fallback_project: str,
    intern: _Interner | None,
) -> None:
    """Decode the line view[start:end] into `result` (a record, a skip, or nothing)."""
    outcome = record_from_line(view[start:end], fallback_session, fallback_project, intern)
    if outcome is None:
        return
    if isinstance(outcome, str):
        stripped = view[start:end].tobytes().strip()
        if stripped[:1] == b"{" and stripped[-1:] == b"}":  # else counted already
            result.skipped[outcome] += 1
    else:
        result.records.append(outcome)


def _parse_scanned(
    scan: fastpath.Scan,
    buf: Buffer,
    fallback_session: str,
    fallback_project: str,
    intern: _Interner | None,
    max_line: int,
    deduped: bool = False,
) -> ParseResult:
    """parse_lines through the C scanner; the lines it declines go to record_from_line."""
    seen = intern._seen if intern is not None else None
    lines, bad, too_long, records, declined = scan(
        buf, fallback_session, fallback_project, seen, UsageRecord, max_line, UNKNOWN_MODEL, deduped
    )
    view = memoryview(buf)
    return _scanned_result(
        (lines, bad, too_long, records, [(i, view[start:end]) for i, start, end in declined]),
        fallback_session,
        fallback_project,
        intern,
    )


def _scanned_result(
    scanned: tuple[int, int, int, list[UsageRecord], Sequence[tuple[int, Buffer]]],
    fallback_session: str,
    fallback_project: str,
    intern: _Interner | None,
) -> ParseResult:
    """The ParseResult of a C scan, with each line it declined decoded by
    record_from_line (its outcome goes before records[index])."""
    lines, bad, too_long, records, declined = scanned
    result = ParseResult(records, lines)
    if bad:
        result.skipped["malformed_line"] += bad
    if too_long:
        result.skipped["line_too_long"] += too_long
    if declined:
        result.records = []
        done = 0
        for index, line in declined:
            result.records.extend(records[done:index])
            done = index
            view = memoryview(line)
            _take_line(result, view, 0, len(view), fallback_session, fallback_project, intern)
        result.records.extend(records[done:])
    return result


FileScan = tuple[int, int, int, int, int, int, bytes, bytes, ParseResult]
"""(dev, ino, size, mtime_ns, offset, bytes_read, head, tail, parsed) of a file read
whole: offset follows its last complete line, head and tail are the bytes before it
that a cursor's fingerprint hashes."""


def scan_files(
    read_files: fastpath.ReadFiles,
    paths: list[str],
    fallbacks: list[tuple[str, str]],
    buf: bytearray,
    max_line: int,
    head_bytes: int,
    tail_bytes: int,
    intern: _Interner | None = None,
) -> list[FileScan | OSError | None]:
    """Small files read whole and parsed (as parse_lines with deduped=True) by the C
    scanner's `read_files` (`fastpath.file_reader`), as many at a time as fit in `buf`,
    without the GIL: one item per path, None for a file left to the caller (not
    regular, as big as `buf`, growing while read)."""
    seen = intern._seen if intern is not None else None
    outcomes = read_files(
        [os.fsencode(path) for path in paths],
        [session for session, _ in fallbacks],
        [project for _, project in fallbacks],
        buf,
        max_line,
        head_bytes,
        tail_bytes,
        seen,
        UsageRecord,
        UNKNOWN_MODEL,
    )
    results: list[FileScan | OSError | None] = []
    for path, (session, project), outcome in zip(paths, fallbacks, outcomes, strict=True):
        if outcome is None:
            results.append(None)
        elif isinstance(outcome, int):  # the errno of a failed open, fstat or read
            results.append(OSError(outcome, os.strerror(outcome), path))
        else:
            parsed = _scanned_result(outcome[8], session, project, intern)
            results.append((*outcome[:8], parsed))
    return results


def new_interner() -> _Interner:
    return _Interner()
