"""Stub of the C scanner (claude_usaged/_fastscan.c); called only by parser.py."""

from claude_usaged.usage import UsageRecord

def scan(
    buf: bytes | bytearray | memoryview,
    fallback_session: str,
    fallback_project: str,
    seen: dict[str, str] | None,
    record_type: type[UsageRecord],
    max_line: int,
    unknown: str,
    dedupe: bool = False,
    /,
) -> tuple[int, int, int, list[UsageRecord], list[tuple[int, int, int]]]:
    """(lines, malformed, too_long, records, declined (index, start, end))."""

def read_files(
    paths: list[bytes],
    sessions: list[str],
    projects: list[str],
    buf: bytearray,
    max_line: int,
    head_bytes: int,
    tail_bytes: int,
    seen: dict[str, str] | None,
    record_type: type[UsageRecord],
    unknown: str,
    /,
) -> list[
    tuple[
        int,
        int,
        int,
        int,
        int,
        int,
        bytes,
        bytes,
        tuple[int, int, int, list[UsageRecord], list[tuple[int, bytes]]],
    ]
    | int
    | None
]:
    """Per path: None (the caller reads it), an errno, or (dev, ino, size, mtime_ns,
    offset, bytes_read, head, tail, (lines, malformed, too_long, records, declined))."""
