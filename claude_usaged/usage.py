"""Domain types shared by the parser, pricing, windows and the store.

A `UsageRecord` is one API response as counted: only metadata and token
counts, never message content.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

HOUR_MS = 3_600_000
WINDOW_MS = 5 * HOUR_MS
BUCKET_MS = 15 * 60_000
"""Aggregates are kept per 15 minutes: every time zone's offset is a multiple."""


@dataclass(slots=True)
class UsageRecord:
    """One deduplicated API response (the line with the largest total wins)."""

    key: str
    message_id: str
    ts_ms: int
    model: str
    session_id: str
    project: str
    is_sidechain: bool
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_creation_1h_tokens: int
    """The part of `cache_creation_tokens` written to the 1-hour cache."""
    cache_read_tokens: int
    web_search_requests: int = 0
    speed: str | None = None
    inference_geo: str | None = None
    cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )

    def rank(self) -> tuple[int, int, str, str]:
        """Smaller wins among the lines of one key (see `beats`)."""
        return (-self.total_tokens, self.ts_ms, self.session_id, self.project)

    def beats(self, other: UsageRecord) -> bool:
        """True when this line should replace `other` (same key).

        The larger total wins; on a tie the earlier timestamp, then the smaller
        session id and project, so the result never depends on the order in
        which files are read.
        """
        return self.rank() < other.rank()

    def __reduce__(self) -> tuple[type[UsageRecord], tuple[object, ...]]:
        # positional fields: pickles (to and from worker processes) several times faster
        return (UsageRecord, tuple(getattr(self, f) for f in self.__slots__))


def dedupe(records: Iterable[UsageRecord]) -> dict[str, UsageRecord]:
    """One record per key: the line that `beats` all others."""
    best: dict[str, UsageRecord] = {}
    for rec in records:
        key = rec.key
        old = best.get(key)
        if old is None:
            best[key] = rec
            continue
        # `beats` inlined for its common outcome (a streamed response's totals
        # differ): the larger total wins; equal totals go to the full rank
        new_total = (
            rec.input_tokens + rec.output_tokens + rec.cache_creation_tokens + rec.cache_read_tokens
        )
        old_total = (
            old.input_tokens + old.output_tokens + old.cache_creation_tokens + old.cache_read_tokens
        )
        if new_total > old_total or (new_total == old_total and rec.beats(old)):
            best[key] = rec
    return best


@dataclass(slots=True)
class Totals:
    """Token sums, entries and cost of a group of responses."""

    entries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    models: set[str] = field(default_factory=set)
    unpriced_models: set[str] = field(default_factory=set)

    def add_response(
        self, model: str, inp: int, out: int, cc: int, cr: int, cost: float | None
    ) -> None:
        """Count one response (cost None: no known price)."""
        self.entries += 1
        self.input_tokens += inp
        self.output_tokens += out
        self.cache_creation_tokens += cc
        self.cache_read_tokens += cr
        if cost is None:
            self.unpriced += 1
            self.unpriced_models.add(model)
        else:
            self.cost_usd += cost
        self.models.add(model)

    def add(self, model: str, row: tuple[Any, ...]) -> None:
        """Add an aggregate row: (entries, input, output, cache_creation, cache_read,
        cost, unpriced)."""
        entries, inp, out, cc, cr, cost, unpriced = row
        self.entries += entries
        self.input_tokens += inp
        self.output_tokens += out
        self.cache_creation_tokens += cc
        self.cache_read_tokens += cr
        self.cost_usd += cost
        self.unpriced += unpriced
        self.models.add(model)
        if unpriced:
            self.unpriced_models.add(model)

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )

    def to_json(self, with_models: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "entries": self.entries,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": None if self.entries and self.unpriced == self.entries else self.cost_usd,
        }
        if with_models:
            out["models"] = sorted(self.models)
            out["unpriced_models"] = sorted(self.unpriced_models)
        return out


TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
)
