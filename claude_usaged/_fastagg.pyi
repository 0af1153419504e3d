"""Stub of the C aggregator (claude_usaged/_fastagg.c); called only by aggregates.py."""

from typing import Any

def aggregate(
    rows: list[tuple[int, str, str, str, int, int, int, int, float | None]],
    bucket_ms: int,
    hour_ms: int,
    window_ms: int,
    /,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], list[Any]]:
    """(buckets, sessions, projects, blocks as tuples)."""
