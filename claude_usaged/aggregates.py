"""Every aggregate from scratch, in one pass over the counted responses. Pure.

The store uses this after a bulk load (the cold catch-up) instead of one SQL
GROUP BY per table: one table scan and one sort cost less than four indexed
scans. The incremental path keeps the same tables with SQL; tests check both
give identical rows.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def aggregate(rows: Iterable[ResponseRow]) -> Aggregates:
    ordered = sorted(rows, key=lambda r: r[0])
    buckets: dict[tuple[int, str], list[Any]] = {}
    sessions: dict[tuple[str, str], list[Any]] = {}
    projects: dict[tuple[str, str], list[Any]] = {}
    for ts, model, session, project, inp, out, cc, cr, cost in ordered:
        acc = buckets.get((ts // BUCKET_MS, model))
        if acc is None:
            acc = buckets[(ts // BUCKET_MS, model)] = [0, 0, 0, 0, 0, 0.0, 0]
        _sums(acc, inp, out, cc, cr, cost)
        # rows are time-ordered: the first row seen is the earliest
        acc = sessions.get((session, model))
        if acc is None:
            acc = sessions[(session, model)] = [0, 0, 0, 0, 0, 0.0, 0, project, ts, ts]
        _sums(acc, inp, out, cc, cr, cost)
        acc[9] = ts
        acc = projects.get((project, model))
        if acc is None:
            acc = projects[(project, model)] = [0, 0, 0, 0, 0, 0.0, 0, ts, ts]
        _sums(acc, inp, out, cc, cr, cost)
        acc[8] = ts
    result = Aggregates()
    result.buckets = [(b, m, *acc) for (b, m), acc in buckets.items()]
    result.sessions = [(s, m, a[7], a[8], a[9], *a[:7]) for (s, m), a in sessions.items()]
    result.projects = [(p, m, a[7], a[8], *a[:7]) for (p, m), a in projects.items()]
    result.blocks = build_blocks(
        (ts, model, inp, out, cc, cr, cost) for ts, model, _s, _p, inp, out, cc, cr, cost in ordered
    )
    return result
