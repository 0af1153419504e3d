"""Every aggregate from scratch, in one pass over the counted responses. Pure.

The store uses this after a bulk load (the cold catch-up) instead of one SQL
GROUP BY per table: one pass in time order, read in chunks so memory does not
grow with the history. The incremental path keeps the same tables with SQL; tests check both
give identical rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from claude_usaged.usage import BUCKET_MS
from claude_usaged.windows import Block, build_blocks

ResponseRow = tuple[int, str, str, str, int, int, int, int, float | None]
"""(ts_ms, model, session_id, project, input, output, cache_creation, cache_read, cost)."""


@dataclass(slots=True)
class Aggregates:
    """Rows ready for agg_bucket, agg_session, agg_project, and the blocks."""

    buckets: list[tuple[Any, ...]] = field(default_factory=list)
    sessions: list[tuple[Any, ...]] = field(default_factory=list)
    projects: list[tuple[Any, ...]] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)


def _sums(acc: list[Any], inp: int, out: int, cc: int, cr: int, cost: float | None) -> None:
    acc[0] += 1
    acc[1] += inp
    acc[2] += out
    acc[3] += cc
    acc[4] += cr
    if cost is None:
        acc[6] += 1
    else:
        acc[5] += cost


class Aggregator:
    """Feed counted responses in time order, in chunks; memory stays bounded by groups."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[int, str], list[Any]] = {}
        self._sessions: dict[tuple[str, str, str], list[Any]] = {}
        self._projects: dict[tuple[str, str], list[Any]] = {}
        self._blocks: list[Block] = []
        self._last_ts = -(2**62)

    def feed(self, rows: Sequence[ResponseRow]) -> None:
        buckets, sessions, projects = self._buckets, self._sessions, self._projects
        for ts, model, session, project, inp, out, cc, cr, cost in rows:
            if ts < self._last_ts:
                raise ValueError("Aggregator.feed needs rows in time order")
            self._last_ts = ts
            acc = buckets.get((ts // BUCKET_MS, model))
            if acc is None:
                acc = buckets[(ts // BUCKET_MS, model)] = [0, 0, 0, 0, 0, 0.0, 0]
            _sums(acc, inp, out, cc, cr, cost)
            # rows are time-ordered: the first row seen is the earliest
            acc = sessions.get((session, project, model))
            if acc is None:
                acc = sessions[(session, project, model)] = [0, 0, 0, 0, 0, 0.0, 0, ts, ts]
            _sums(acc, inp, out, cc, cr, cost)
            acc[8] = ts
            acc = projects.get((project, model))
            if acc is None:
                acc = projects[(project, model)] = [0, 0, 0, 0, 0, 0.0, 0, ts, ts]
            _sums(acc, inp, out, cc, cr, cost)
            acc[8] = ts
        previous = self._blocks[-1] if self._blocks else None
        self._blocks += build_blocks(
            (
                (ts, model, inp, out, cc, cr, cost)
                for ts, model, _, _, inp, out, cc, cr, cost in rows
            ),
            previous,
        )

    def result(self) -> Aggregates:
        out = Aggregates()
        out.buckets = [(b, m, *acc) for (b, m), acc in self._buckets.items()]
        out.sessions = [(s, m, p, a[7], a[8], *a[:7]) for (s, p, m), a in self._sessions.items()]
        out.projects = [(p, m, a[7], a[8], *a[:7]) for (p, m), a in self._projects.items()]
        out.blocks = self._blocks
        return out
