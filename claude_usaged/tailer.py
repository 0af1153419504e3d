"""Read the complete new lines of one transcript since its cursor.

A cursor names the file by device, inode and a fingerprint of its first bytes
and of the bytes just before the offset. When any of them no longer match (the
file was truncated, rewritten, or replaced by a rename) the file is read again
from byte 0; global deduplication makes that safe. Only `\\n`-terminated lines
are consumed: a partial last line stays in the file for the next read.

Everything here is synchronous and picklable, so it runs in a thread or in a
worker process.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from claude_usaged.parser import ParseResult, _Interner, parse_lines
from claude_usaged.usage import dedupe

HEAD_BYTES = 1024
TAIL_BYTES = 32
CHUNK_BYTES = 512 << 10
"""Bytes read at a time: two reader threads' chunks and carries stay a few MB (the
daemon's peak RSS target is 100 MB), and the C scanner still runs without the GIL."""
_USAGE_KEY = b'"usage"'
MAX_LINE_BYTES = 32 << 20
"""A line longer than this is skipped (logged and counted), never buffered whole."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where reading a file stopped, and how to recognise the same file again."""

    path: str
    dev: int
    ino: int
    offset: int
    head_len: int
    head_hash: str
    tail_hash: str
    size: int = 0
    mtime_ns: int = 0


@dataclass(slots=True)
class TailResult:
    """New records of one file and the cursor to store with them."""

    path: str
    cursor: Cursor | None
    parsed: ParseResult = field(default_factory=ParseResult)
    bytes_read: int = 0
    restarted: str | None = None
    """Why the file was read from 0 although a cursor existed, if it was."""
    long_lines: int = 0


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def _pread(fd: int, length: int, offset: int) -> bytes:
    return os.pread(fd, length, offset) if length > 0 else b""


def _restart_reason(fd: int, st: os.stat_result, cursor: Cursor) -> str | None:
    if (st.st_dev, st.st_ino) != (cursor.dev, cursor.ino):
        return "replaced"
    if st.st_size < cursor.offset:
        return "truncated"
    if _digest(_pread(fd, cursor.head_len, 0)) != cursor.head_hash:
        return "rewritten"
    tail_start = max(0, cursor.offset - TAIL_BYTES)
    if _digest(_pread(fd, cursor.offset - tail_start, tail_start)) != cursor.tail_hash:
        return "rewritten"
    return None


def _fallbacks(path: str) -> tuple[str, str]:
    """Session id and project to use when a line lacks `sessionId` / `cwd`."""
    p = Path(path)
    parts = p.parts
    if "subagents" in parts:
        i = len(parts) - 1 - parts[::-1].index("subagents")
        session, project = parts[i - 1], parts[i - 2] if i >= 2 else p.parent.name
    else:
        session, project = p.stem, p.parent.name
    return _printable(session), _printable(project)


def _printable(name: str) -> str:
    """A file name's text, with bytes that are not UTF-8 shown as U+FFFD (they could
    not be stored, sent as JSON to a receiver, or shown)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_new(
    path: str,
    cursor: Cursor | None,
    intern: _Interner | None = None,
    max_line: int = MAX_LINE_BYTES,
) -> TailResult:
    """Read and parse the complete lines added since `cursor`.

    Raises OSError (vanished, permission denied): the caller logs and retries.
    """
    # O_NONBLOCK: opening a FIFO named *.jsonl must not wait for a writer
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        start = 0
        restarted = None
        if cursor is not None:
            restarted = _restart_reason(fd, st, cursor)
            start = 0 if restarted else cursor.offset
        result = TailResult(path=path, cursor=cursor, restarted=restarted)
        if cursor is not None and not restarted and st.st_size == start:
            if (cursor.size, cursor.mtime_ns) != (st.st_size, st.st_mtime_ns):
                result.cursor = _replace_stat(cursor, st)
            return result
        session, project = _fallbacks(path)
        offset = _consume(fd, start, result, session, project, intern, max_line)
        # a streamed response's lines sit in one file: keep only each key's winner
        result.parsed.records = list(dedupe(result.parsed.records).values())
        head = _pread(fd, min(HEAD_BYTES, offset), 0)
        tail_start = max(0, offset - TAIL_BYTES)
        result.cursor = Cursor(
            path=path,
            dev=st.st_dev,
            ino=st.st_ino,
            offset=offset,
            head_len=len(head),
            head_hash=_digest(head),
            tail_hash=_digest(_pread(fd, offset - tail_start, tail_start)),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
        )
        return result
    finally:
        os.close(fd)


def _replace_stat(cursor: Cursor, st: os.stat_result) -> Cursor:
    return Cursor(
        path=cursor.path,
        dev=cursor.dev,
        ino=cursor.ino,
        offset=cursor.offset,
        head_len=cursor.head_len,
        head_hash=cursor.head_hash,
        tail_hash=cursor.tail_hash,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
    )


def _dropped(carry: bytearray) -> tuple[bool, bytes]:
    """For a partial line that outgrew max_line: whether it holds the usage key, and its
    last bytes (a key cut by the next chunk edge is still found)."""
    return _USAGE_KEY in carry, bytes(carry[-len(_USAGE_KEY) :])


def _consume(
    fd: int,
    start: int,
    result: TailResult,
    session: str,
    project: str,
    intern: _Interner | None,
    max_line: int,
) -> int:
    """Parse complete lines from `start`; return the offset after the last one."""
    pos = start
    carry = bytearray()  # a partial line: grows by appending, not by copying itself
    skipping = False  # inside a line longer than max_line: drop bytes to its \n
    seen = b""  # the last bytes dropped, so a key cut by a chunk edge is still found
    had_usage = False  # whether the dropped line could have held a response
    committed = start
    while True:
        chunk = _pread(fd, CHUNK_BYTES, pos)
        if not chunk:
            break
        pos += len(chunk)
        result.bytes_read += len(chunk)
        if skipping:
            nl = chunk.find(b"\n")
            part = seen + (chunk if nl == -1 else chunk[:nl])
            had_usage = had_usage or _USAGE_KEY in part
            seen = part[-len(_USAGE_KEY) :]
            if nl == -1:
                continue
            skipping = False
            result.long_lines += 1
            result.parsed.lines += 1
            if had_usage:  # as parse_lines counts only the long lines it would decode
                result.parsed.skipped["line_too_long"] += 1
            chunk = chunk[nl + 1 :]
            committed = pos - len(chunk)
        last_nl = chunk.rfind(b"\n")
        if last_nl == -1:
            carry += chunk
            if len(carry) > max_line:
                skipping, (had_usage, seen) = True, _dropped(carry)
                carry = bytearray()
            continue
        # the scanner takes bytes (immutable while it runs without the GIL)
        buf = bytes(carry) + chunk[: last_nl + 1] if carry else chunk[: last_nl + 1]
        carry = bytearray(chunk[last_nl + 1 :])
        result.parsed.merge(parse_lines(buf, session, project, intern, max_line))
        committed = pos - len(carry)
        if len(carry) > max_line:
            skipping, (had_usage, seen) = True, _dropped(carry)
            carry = bytearray()
    return committed
