"""Every aggregate from scratch, in one pass over the counted responses. Pure.

The store uses this after a bulk load (the cold catch-up) instead of one SQL
GROUP BY per table: one pass in time order. `Aggregator` takes the rows in
chunks, so memory does not grow with the history (rows read back from SQLite);
`aggregate` takes them all at once (rows kept in memory), in C when it is built
(`_fastagg.c`), with `Aggregator` as its specification. The incremental path keeps
the same tables with SQL; tests check all of them give identical rows.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from operator import add, gt, itemgetter
from typing import Any

from claude_usaged.fastpath import extension
from claude_usaged.usage import BUCKET_MS, HOUR_MS, WINDOW_MS
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


_TS, _MODEL, _IN, _OUT, _CC, _CR, _COST = (itemgetter(i) for i in (0, 1, 4, 5, 6, 7, 8))
_SESSION_KEY = itemgetter(2, 3, 1)
_PROJECT_KEY = itemgetter(3, 1)


def _priced(rows: Sequence[ResponseRow]) -> list[float]:
    return [cost for cost in map(_COST, rows) if cost is not None]


def _add(acc: list[Any], rows: Sequence[ResponseRow]) -> None:
    """Add a group's rows (in time order) to its sums. Integers are summed in C;
    costs are added one by one to the running total (`reduce`, not `sum`, which adds
    floats with compensation since Python 3.12), so the float result is the same as
    adding each response in time order, whatever the chunks."""
    acc[0] += len(rows)
    acc[1] += sum(map(_IN, rows))
    acc[2] += sum(map(_OUT, rows))
    acc[3] += sum(map(_CC, rows))
    acc[4] += sum(map(_CR, rows))
    costs = _priced(rows)
    acc[5] = reduce(add, costs, acc[5])
    acc[6] += len(rows) - len(costs)


def _grouped(keys: Iterable[Any], rows: Sequence[ResponseRow]) -> dict[Any, list[ResponseRow]]:
    """Rows by key, each group in the rows' order."""
    groups: defaultdict[Any, list[ResponseRow]] = defaultdict(list)
    for key, row in zip(keys, rows, strict=True):
        groups[key].append(row)
    return groups


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
        times = list(map(_TS, rows))
        if times[0] < self._last_ts or any(map(gt, times, itertools.islice(times, 1, None))):
            raise ValueError("Aggregator.feed needs rows in time order")
        self._last_ts = times[-1]
        buckets = zip([ts // BUCKET_MS for ts in times], map(_MODEL, rows), strict=True)
        for key, group in _grouped(buckets, rows).items():
            acc = self._buckets.get(key)
            if acc is None:
                acc = self._buckets[key] = [0, 0, 0, 0, 0, 0.0, 0]
            _add(acc, group)
        # groups keep time order: a group's first row is its earliest, its last the latest
        for keyed, table in ((_SESSION_KEY, self._sessions), (_PROJECT_KEY, self._projects)):
            for key, group in _grouped(map(keyed, rows), rows).items():
                acc = table.get(key)
                if acc is None:
                    acc = table[key] = [0, 0, 0, 0, 0, 0.0, 0, group[0][0], 0]
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


_fastagg = extension("_fastagg")
_c_aggregate: Callable[..., tuple[list[Any], list[Any], list[Any], list[Any]]] | None = (
    None if _fastagg is None else _fastagg.aggregate
)


def aggregate(
    rows: Sequence[tuple[Any, ...]], columns: tuple[int, ...] | None = None
) -> Aggregates:
    """Every aggregate of time-sorted rows, all at once: in C (`_fastagg`, ~8x faster)
    when it is built, else with `Aggregator`, which is its specification (the tests
    hold both to the same result, floats bit for bit). The rows are `ResponseRow`s,
    or longer rows holding a `ResponseRow`'s values at `columns`."""
    if _c_aggregate is not None:
        try:
            buckets, sessions, projects, blocks = _c_aggregate(
                rows, BUCKET_MS, HOUR_MS, WINDOW_MS, columns
            )
        except OverflowError:
            pass  # a sum beyond 64 bits: Python's integers take it
        else:
            return Aggregates(buckets, sessions, projects, [_block(*b) for b in blocks])
    aggregator = Aggregator()
    aggregator.feed(list(rows) if columns is None else list(map(itemgetter(*columns), rows)))
    return aggregator.result()


def _block(
    start: int,
    first: int,
    last: int,
    entries: int,
    inp: int,
    out: int,
    cc: int,
    cr: int,
    cost: float,
    unpriced: int,
    models: set[str],
    unpriced_models: set[str],
) -> Block:
    return Block(
        start_ms=start,
        first_ms=first,
        last_ms=last,
        entries=entries,
        input_tokens=inp,
        output_tokens=out,
        cache_creation_tokens=cc,
        cache_read_tokens=cr,
        cost_usd=cost,
        unpriced=unpriced,
        models=models,
        unpriced_models=unpriced_models,
    )
