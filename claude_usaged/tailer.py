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

import contextlib
import errno
import functools
import hashlib
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from claude_usaged import fastpath
from claude_usaged.parser import FileScan, ParseResult, _Interner, parse_lines, scan_files
from claude_usaged.usage import dedupe

HEAD_BYTES = 1024
TAIL_BYTES = 32
CHUNK_BYTES = 1 << 20
"""Bytes read at a time, into a buffer each reader thread reuses: a few MB in all
(the daemon's peak RSS target is 100 MB), and most transcripts in one read."""
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
    if _digest(_tail(fd, cursor.offset)) != cursor.tail_hash:
        return "rewritten"
    return None


def _fallbacks(path: str) -> tuple[str, str]:
    """Session id and project to use when a line lacks `sessionId` / `cwd`: the
    file's stem and folder, or for a subagent's file the folder above `subagents/`
    and the one above that. The folder's part is worked out once per folder
    (pathlib costs ~30 us a call: 40 ms of a 1,450-file catch-up)."""
    directory, name = os.path.split(path)
    found = _folder_fallbacks(directory) if name not in _ODD_NAMES else None
    if found is None:
        return _fallbacks_of_parts(path)
    session, project = found
    return (_printable(_stem(name)) if session is None else session), project


_ODD_NAMES = frozenset(("", ".", "..", "subagents"))
"""File names pathlib does not take as the last part as it is (or that are the marker)."""


@functools.lru_cache(maxsize=4096)
def _folder_fallbacks(directory: str) -> tuple[str | None, str] | None:
    """(session, or None for the file's stem; project) for files in `directory`;
    None when the file's own name would be needed (`_fallbacks_of_parts` then)."""
    folder = Path(directory)
    parts = folder.parts
    if "subagents" not in parts:
        return None, _printable(folder.name)
    i = len(parts) - 1 - parts[::-1].index("subagents")
    if i == 0:
        return None
    return _printable(parts[i - 1]), _printable(parts[i - 2] if i >= 2 else folder.name)


def _fallbacks_of_parts(path: str) -> tuple[str, str]:
    """`_fallbacks` from the whole path's parts (the definition)."""
    p = Path(path)
    parts = p.parts
    if "subagents" in parts:
        i = len(parts) - 1 - parts[::-1].index("subagents")
        session, project = parts[i - 1], parts[i - 2] if i >= 2 else p.parent.name
    else:
        session, project = p.stem, p.parent.name
    return _printable(session), _printable(project)


def _stem(name: str) -> str:
    """`PurePath(name).stem` of a file name."""
    i = name.rfind(".")
    return name[:i] if 0 < i < len(name) - 1 else name


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
        with _read_buffer() as buf:
            offset = _consume(buf, fd, start, result, session, project, intern, max_line)
        if not fastpath.enabled():
            # a streamed response's lines sit in one file: keep only each key's winner
            # (the C scanner drops the lines that cannot win as it reads; the store
            # dedupes a batch's records in any case)
            result.parsed.records = list(dedupe(result.parsed.records).values())
        head = _pread(fd, min(HEAD_BYTES, offset), 0)
        result.cursor = _fingerprinted(
            path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, offset, head, _tail(fd, offset)
        )
        return result
    finally:
        os.close(fd)


def read_fresh(
    paths: Sequence[str], intern: _Interner | None = None, max_line: int = MAX_LINE_BYTES
) -> list[TailResult | OSError | None]:
    """`read_new(path, None)` of many files at once, read whole by the C scanner
    (`parser.scan_files`): one GIL round trip for all the small files that fit in the
    read buffer, where read_new takes the GIL again after each of a dozen syscalls.
    An OSError is returned, not raised (of read_new's type and errno, and naming the
    file even where read_new's, from fstat or a read, does not). None for each file
    left to read_new: all of them without the C scanner or with a max_line shorter
    than the buffer, and any file as big as the buffer, not regular, or growing
    while read."""
    read_files = fastpath.file_reader()
    if not paths or max_line < CHUNK_BYTES or read_files is None:
        return [None] * len(paths)
    fallbacks = [_fallbacks(path) for path in paths]
    with _read_buffer() as buf:
        scanned = scan_files(
            read_files, list(paths), fallbacks, buf, max_line, HEAD_BYTES, TAIL_BYTES, intern
        )
    return [
        _fresh_result(path, outcome) if isinstance(outcome, tuple) else outcome
        for path, outcome in zip(paths, scanned, strict=True)
    ]


def _fresh_result(path: str, scanned: FileScan) -> TailResult:
    dev, ino, size, mtime_ns, offset, bytes_read, head, tail, parsed = scanned
    cursor = _fingerprinted(path, dev, ino, size, mtime_ns, offset, head, tail)
    return TailResult(path=path, cursor=cursor, parsed=parsed, bytes_read=bytes_read)


def _fingerprinted(
    path: str, dev: int, ino: int, size: int, mtime_ns: int, offset: int, head: bytes, tail: bytes
) -> Cursor:
    """The cursor at `offset`, with the fingerprints of the `head` (up to HEAD_BYTES from
    byte 0) and the `tail` (up to TAIL_BYTES before offset) read there."""
    return Cursor(
        path=path,
        dev=dev,
        ino=ino,
        offset=offset,
        head_len=len(head),
        head_hash=_digest(head),
        tail_hash=_digest(tail),
        size=size,
        mtime_ns=mtime_ns,
    )


def _tail(fd: int, offset: int) -> bytes:
    """The bytes just before `offset` that a cursor's tail fingerprint hashes."""
    start = max(0, offset - TAIL_BYTES)
    return _pread(fd, offset - start, start)


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


def _dropped(partial: bytes) -> tuple[bool, bytes]:
    """For a partial line that outgrew max_line: whether it holds the usage key, and its
    last bytes (a key cut by the next chunk edge is still found)."""
    return _USAGE_KEY in partial, partial[-len(_USAGE_KEY) :]


_local = threading.local()


@contextlib.contextmanager
def _read_buffer() -> Iterator[bytearray]:
    """This thread's read buffer: reused from file to file, so reading allocates (and
    page-faults) nothing new per chunk. One grown for a very long line is let go."""
    buf: bytearray | None = getattr(_local, "buf", None)
    _local.buf = None  # lent out until the read is done
    if buf is None or len(buf) != CHUNK_BYTES:
        buf = bytearray(CHUNK_BYTES)
    try:
        yield buf
    finally:
        if len(buf) == CHUNK_BYTES:
            _local.buf = buf


def _read_into(fd: int, view: memoryview, pos: int) -> int:
    if _HAS_PREADV:
        return os.preadv(fd, [view], pos)
    os.lseek(fd, pos, os.SEEK_SET)
    return os.readv(fd, [view])


_HAS_PREADV = hasattr(os, "preadv")


def _consume(
    buf: bytearray,
    fd: int,
    start: int,
    result: TailResult,
    session: str,
    project: str,
    intern: _Interner | None,
    max_line: int,
) -> int:
    """Parse complete lines from `start`, read through `buf`; return the offset after
    the last one."""
    pos = committed = start
    held = 0  # a partial line at buf[:held]: read, not yet parsed
    skipping = False  # inside a line longer than max_line: drop bytes to its \n
    seen = b""  # the last bytes dropped, so a key cut by a chunk edge is still found
    had_usage = False  # whether the dropped line could have held a response
    while True:
        if held == len(buf):  # a partial line as long as the buffer (held <= max_line)
            buf.extend(bytes(len(buf)))
        with memoryview(buf) as view:
            n = _read_into(fd, view[held:], pos)
        if not n:
            break
        pos += n
        result.bytes_read += n
        end = held + n
        begin = 0  # buf[begin:end] is not parsed yet
        if skipping:
            nl = buf.find(b"\n", 0, end)
            part = seen + bytes(buf[: end if nl == -1 else nl])
            had_usage = had_usage or _USAGE_KEY in part
            seen = part[-len(_USAGE_KEY) :]
            if nl == -1:
                held = 0
                continue
            skipping = False
            result.long_lines += 1
            result.parsed.lines += 1
            if had_usage:  # as parse_lines counts only the long lines it would decode
                result.parsed.skipped["line_too_long"] += 1
            begin = nl + 1
            committed = pos - (end - begin)
        last_nl = buf.rfind(b"\n", begin, end)
        if last_nl != -1:
            with memoryview(buf) as view:
                lines = view[begin : last_nl + 1]
                parsed = parse_lines(lines, session, project, intern, max_line, deduped=True)
                result.parsed.merge(parsed)
                lines.release()
            begin = last_nl + 1
            committed = pos - (end - begin)
        held = end - begin
        if held > max_line:
            skipping, (had_usage, seen) = True, _dropped(bytes(buf[begin:end]))
            held = 0
        elif held and begin:
            buf[:held] = buf[begin:end]
    return committed
