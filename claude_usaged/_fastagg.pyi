"""Stub of the C aggregator (claude_usaged/_fastagg.c); called only by aggregates.py."""

from collections.abc import Sequence
from typing import Any

def aggregate(
    rows: Sequence[tuple[Any, ...]],
    bucket_ms: int,
    hour_ms: int,
    window_ms: int,
    columns: tuple[int, ...] | None = None,
    /,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], list[Any]]:
    """(buckets, sessions, projects, blocks as tuples)."""
