"""Domain types shared by the parser, pricing, windows and the store.

A `UsageRecord` is one API response as counted: only metadata and token
counts, never message content.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
        old = best.get(rec.key)
        if old is None or rec.beats(old):
            best[rec.key] = rec
    return best


TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
)
