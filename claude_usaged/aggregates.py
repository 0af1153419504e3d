"""Every aggregate from scratch, in one pass over the counted responses. Pure.

The store uses this after a bulk load (the cold catch-up) instead of one SQL
GROUP BY per table: one pass in time order, read in chunks so memory does not
grow with the history. The incremental path keeps the same tables with SQL; tests check both
give identical rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
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


_IN, _OUT, _CC, _CR, _COST = (itemgetter(i) for i in (4, 5, 6, 7, 8))


def _add(acc: list[Any], rows: list[ResponseRow]) -> None:
    """Add a group's rows (in time order) to its sums. Integers are summed in C;
    costs one by one from the running total, so the float result is the same as
    adding each response in time order (what SQL's total() and the incremental
    path do), not a differently rounded sum."""
    acc[0] += len(rows)
    acc[1] += sum(map(_IN, rows))
    acc[2] += sum(map(_OUT, rows))
    acc[3] += sum(map(_CC, rows))
    acc[4] += sum(map(_CR, rows))
    total, unpriced = acc[5], acc[6]
    for cost in map(_COST, rows):
        if cost is None:
            unpriced += 1
        else:
            total += cost
    acc[5], acc[6] = total, unpriced


def _grouped(
    rows: Sequence[ResponseRow], key: Callable[[ResponseRow], Any]
) -> dict[Any, list[ResponseRow]]:
    groups: dict[Any, list[ResponseRow]] = {}
    for row in rows:
        k = key(row)
        group = groups.get(k)
        if group is None:
            groups[k] = [row]
        else:
            group.append(row)
    return groups


def _bucket_key(row: ResponseRow) -> tuple[int, str]:
    return (row[0] // BUCKET_MS, row[1])


_SESSION_KEY = itemgetter(2, 3, 1)
_PROJECT_KEY = itemgetter(3, 1)


class Aggregator:
    """Feed counted responses in time order, in chunks; memory stays bounded by groups."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[int, str], list[Any]] = {}
        self._sessions: dict[tuple[str, str, str], list[Any]] = {}
        self._projects: dict[tuple[str, str], list[Any]] = {}
        self._blocks: list[Block] = []
        self._last_ts = -(2**62)

    def feed(self, rows: Sequence[ResponseRow]) -> None:
        """Add a chunk: each chunk is grouped, then each group's sums are added at once."""
        if not rows:
            return
        last = self._last_ts
        for row in rows:
            if row[0] < last:
                raise ValueError("Aggregator.feed needs rows in time order")
            last = row[0]
        self._last_ts = last
        for (bucket, model), group in _grouped(rows, _bucket_key).items():
            acc = self._buckets.get((bucket, model))
            if acc is None:
                acc = self._buckets[(bucket, model)] = [0, 0, 0, 0, 0, 0.0, 0]
            _add(acc, group)
        # groups keep time order: a group's first row is its earliest, its last the latest
        for keyed, table in ((_SESSION_KEY, self._sessions), (_PROJECT_KEY, self._projects)):
            for k, group in _grouped(rows, keyed).items():
                acc = table.get(k)
                if acc is None:
                    acc = table[k] = [0, 0, 0, 0, 0, 0.0, 0, group[0][0], 0]
                _add(acc, group)
                acc[8] = group[-1][0]
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
