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
