"""Stub of the C batch helpers (claude_usaged/_fastbatch.c); called only by batch.py."""

from collections.abc import Callable, Sequence
from typing import Any

from claude_usaged.pricing import Plan
from claude_usaged.usage import UsageRecord

def best_priced(
    record_lists: Sequence[list[UsageRecord]],
    plans: dict[str, Plan | None],
    plan_of: Callable[[str], Plan | None],
    geo: dict[str, float],
    web_search: float,
    /,
) -> dict[str, UsageRecord]:
    """One record per key, each priced."""

def rows(records: list[UsageRecord], /) -> list[tuple[Any, ...]]:
    """The `responses` row of each record."""

def split_rows(
    records: list[UsageRecord], loaded: dict[str, tuple[Any, ...]], /
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(rows of new keys, rows that rank before the stored one)."""

def pack_rows(rows: list[tuple[Any, ...]], /) -> bytes:
    """The rows as the staged table keeps them."""

def unpack_rows(data: bytes, /) -> list[tuple[Any, ...]]:
    """The rows pack_rows packed."""
