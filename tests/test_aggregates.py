"""The bulk Aggregator against the definition: each response added on its own, in time
order, to its bucket, session, project and block (`Totals.add_response`,
`build_blocks`). Equal exactly, floats bit for bit, however the rows are chunked."""

from __future__ import annotations

import random
from typing import Any

import pytest

from claude_usaged import aggregates as aggregates_module
from claude_usaged.aggregates import Aggregates, Aggregator, ResponseRow, aggregate
from claude_usaged.usage import BUCKET_MS, HOUR_MS, Totals
from claude_usaged.windows import build_blocks


def reference(rows: list[ResponseRow]) -> Aggregates:
    """Row by row: the definition the Aggregator must equal."""
    buckets: dict[tuple[int, str], Totals] = {}
    sessions: dict[tuple[str, str, str], tuple[Totals, list[int]]] = {}
    projects: dict[tuple[str, str], tuple[Totals, list[int]]] = {}
    for ts, model, session, project, inp, out, cc, cr, cost in rows:
        buckets.setdefault((ts // BUCKET_MS, model), Totals()).add_response(
            model, inp, out, cc, cr, cost
        )
        for table, key in ((sessions, (session, project, model)), (projects, (project, model))):
            totals, span = table.setdefault(key, (Totals(), [ts, ts]))  # type: ignore[arg-type]
            totals.add_response(model, inp, out, cc, cr, cost)
            span[1] = ts

    def sums(t: Totals) -> tuple[Any, ...]:
        return (
            t.entries,
            t.input_tokens,
            t.output_tokens,
            t.cache_creation_tokens,
            t.cache_read_tokens,
            t.cost_usd,
            t.unpriced,
        )

    out = Aggregates()
    out.buckets = [(b, m, *sums(t)) for (b, m), t in buckets.items()]
    out.sessions = [(s, m, p, *span, *sums(t)) for (s, p, m), (t, span) in sessions.items()]
    out.projects = [(p, m, *span, *sums(t)) for (p, m), (t, span) in projects.items()]
    out.blocks = build_blocks((r[0], r[1], *r[4:]) for r in rows)  # type: ignore[misc]
    return out


SESSIONS = [f"s{i}" for i in range(6)]
PROJECTS = [f"/p{i}" for i in range(3)]
"""One object per name, as the parser's interner gives (the C side compares identity
first); `copy` makes equal strings that are other objects."""


def history(seed: int, n: int) -> list[ResponseRow]:
    """Time-ordered responses: bursts and gaps (of 5 h exactly, and more), ties, times on
    the hour (a block's start), unpriced models."""
    rng = random.Random(seed)
    ts = 1_763_000_000_000 + rng.randrange(HOUR_MS)
    rows: list[ResponseRow] = []
    for _ in range(n):
        step = rng.choice([0, 0, 1, 900, 60_000, 4 * 60_000, HOUR_MS, 5 * HOUR_MS, 6 * HOUR_MS])
        ts += step if rng.random() > 0.05 else HOUR_MS - ts % HOUR_MS  # on the hour, at times
        model = rng.choice(["sonnet", "opus", "haiku", "mystery"])
        cost = None if model == "mystery" else rng.random() * rng.choice([1e-4, 0.3, 7.0])
        rows.append(
            (
                ts,
                model,
                rng.choice(SESSIONS),
                rng.choice(PROJECTS),
                rng.randrange(10**6),
                rng.randrange(10**4),
                rng.randrange(10**5),
                rng.randrange(10**7),
                cost,
            )
        )
    return rows


@pytest.mark.parametrize("seed", range(8))
def test_the_aggregator_equals_adding_each_response_in_time_order(seed: int) -> None:
    rows = history(seed, 3000)
    expected = reference(rows)
    assert any(r[8] is None for r in rows) and len(expected.blocks) > 5
    rng = random.Random(seed)
    aggregator = Aggregator()
    i = 0
    while i < len(rows):  # chunks of any size, a block or a group cut anywhere
        step = rng.choice([1, 2, 7, 100, 1000])
        aggregator.feed(rows[i : i + step])
        i += step
    got = aggregator.result()
    assert got.buckets == expected.buckets
    assert got.sessions == expected.sessions
    assert got.projects == expected.projects
    assert got.blocks == expected.blocks


def test_rows_out_of_time_order_are_refused() -> None:
    early, late = ((ts, "m", "s", "/p", 1, 1, 1, 1, 0.5) for ts in (1_000, 2_000))
    aggregator = Aggregator()
    aggregator.feed([late])
    with pytest.raises(ValueError, match="time order"):
        aggregator.feed([early])  # earlier than a chunk before
    with pytest.raises(ValueError, match="time order"):
        Aggregator().feed([late, early])  # within one chunk
    Aggregator().feed([early, early, late])  # ties are in order


needs_c = pytest.mark.skipif(
    aggregates_module._c_aggregate is None, reason="claude_usaged._fastagg is not built"
)


@needs_c
@pytest.mark.parametrize("seed", range(8))
def test_the_c_aggregator_equals_the_python_one(seed: int) -> None:
    """`aggregate` (C) against `Aggregator`, its specification: the same rows, floats bit
    for bit, blocks' model sets included; and with strings equal but not identical
    (rows read back from SQLite, where the C side's identity cache never hits)."""
    rows = history(100 + seed, 5000)
    expected = reference(rows)
    for data in (rows, [(r[0], *(copy(v) for v in r[1:4]), *r[4:]) for r in rows]):
        got = aggregate(data)
        assert got.buckets == expected.buckets
        assert got.sessions == expected.sessions
        assert got.projects == expected.projects
        assert got.blocks == expected.blocks
        assert [type(v) for v in got.buckets[0]] == [type(v) for v in expected.buckets[0]]


def copy(text: str) -> str:
    """An equal string that is another object."""
    return "".join(list(text))


@needs_c
def test_the_c_aggregator_leaves_huge_sums_and_bad_rows_to_python() -> None:
    """A sum beyond 64 bits falls back to Python's integers; rows out of order or of the
    wrong shape are refused as `Aggregator` refuses them."""
    huge = [(1_000 * i, "m", "s", "/p", 2**62, 0, 0, 0, 0.5) for i in range(4)]
    got = aggregate(huge)
    assert got.buckets == [(0, "m", 4, 2**64, 0, 0, 0, 2.0, 0)]
    assert got.blocks[0].input_tokens == 2**64
    early, late = ((ts, "m", "s", "/p", 1, 1, 1, 1, 0.5) for ts in (1_000, 2_000))
    with pytest.raises(ValueError, match="time order"):
        aggregate([late, early])
    with pytest.raises(TypeError):
        aggregates_module._fastagg.aggregate([(1, "m")], BUCKET_MS, HOUR_MS, 5 * HOUR_MS)
    assert aggregate([]) == Aggregates()


@pytest.mark.parametrize("c_side", [True, False])
def test_rows_read_at_columns_of_longer_rows(c_side: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's 16-column rows go in as they are: each value read at its column."""
    if c_side and aggregates_module._c_aggregate is None:
        pytest.skip("claude_usaged._fastagg is not built")
    if not c_side:
        monkeypatch.setattr(aggregates_module, "_c_aggregate", None)
    rows = history(7, 3000)
    expected = reference(rows)
    columns = (5, 0, 9, 2, 7, 1, 10, 3, 12)  # where each of a row's 9 values goes
    wide = []
    for row in rows:
        cells: list[Any] = ["junk"] * 13
        for value, at in zip(row, columns, strict=True):
            cells[at] = value
        wide.append(tuple(cells))
    got = aggregate(wide, columns)
    assert (got.buckets, got.sessions, got.projects) == (
        expected.buckets,
        expected.sessions,
        expected.projects,
    )
    assert got.blocks == expected.blocks


@needs_c
@pytest.mark.parametrize("columns", [(0, 1, 2), (0, 1, 2, 3, 4, 5, 6, 7, -1), "012345678"])
def test_bad_columns_are_refused(columns: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        aggregates_module._fastagg.aggregate([], BUCKET_MS, HOUR_MS, 5 * HOUR_MS, columns)
