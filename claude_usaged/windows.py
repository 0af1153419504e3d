"""5-hour block arithmetic, exactly as FORMAT.md (and ccusage) define it. Pure.

Responses sorted by time; the first opens a block starting at its time floored
to the UTC hour, ending 5 h later. A response opens a new block when it is more
than 5 h after the block's start or more than 5 h after the previous response.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from claude_usaged.usage import HOUR_MS, WINDOW_MS, Totals


@dataclass(slots=True, kw_only=True)
class Block(Totals):
    """One 5-hour block and its totals (cost over priced responses only)."""

    start_ms: int
    first_ms: int
    last_ms: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + WINDOW_MS

    def is_active(self, now_ms: int) -> bool:
        return self.start_ms <= now_ms < self.end_ms and now_ms - self.last_ms < WINDOW_MS


def floor_hour(ts_ms: int) -> int:
    return ts_ms - ts_ms % HOUR_MS


def opens_new_block(block: Block, ts_ms: int) -> bool:
    return ts_ms - block.start_ms > WINDOW_MS or ts_ms - block.last_ms > WINDOW_MS


BlockRow = tuple[int, str, int, int, int, int, float | None]
"""(ts_ms, model, input, output, cache_creation, cache_read, cost_usd)."""


def build_blocks(rows: Iterable[BlockRow], previous: Block | None = None) -> list[Block]:
    """Blocks for time-sorted rows; rows may continue `previous` (which is mutated)."""
    blocks: list[Block] = []
    current = previous
    for ts, model, inp, out, cc, cr, cost in rows:
        if current is None or opens_new_block(current, ts):
            current = Block(start_ms=floor_hour(ts), first_ms=ts, last_ms=ts)
            blocks.append(current)
        current.last_ms = ts
        current.add_response(model, inp, out, cc, cr, cost)
    return blocks
