"""Domain types shared by the parser, pricing, windows and the store.

A `UsageRecord` is one API response as counted: only metadata and token
counts, never message content.
"""

from __future__ import annotations

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

    def beats(self, other: UsageRecord) -> bool:
        """True when this line should replace `other` (same key).

        The larger total wins; on a tie the earlier timestamp, so the result
        does not depend on the order files are read in.
        """
        mine, theirs = self.total_tokens, other.total_tokens
        if mine != theirs:
            return mine > theirs
        return self.ts_ms < other.ts_ms


TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
)
