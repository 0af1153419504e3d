"""The C batch helpers (`_fastbatch`) against their specification in batch.py:
`usage.dedupe`, `PriceTable.cost` and `response_row`. The same winners (the very
objects), the same costs bit for bit, the same rows; and what the C declines goes
to the Python before anything is changed."""

from __future__ import annotations

import copy
import json
import random
import struct
from dataclasses import astuple
from datetime import datetime
from typing import Any

import pytest

from claude_usaged import batch
from claude_usaged.batch import best_priced, response_row, response_rows
from claude_usaged.pricing import PriceTable
from claude_usaged.usage import UsageRecord

pytestmark = pytest.mark.skipif(batch._c is None, reason="_fastbatch is not built")


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


# a model with a gap in its rows (no price in February 2026), tiers at two sizes and a
# fast multiplier; the packaged table adds its own tiers, dated rows and `us` geo
OVERRIDE = {
    "version": "test",
    "inference_geo": {"us": 1.1, "eu": 1.25},
    "web_search_per_1000": 12.5,
    "models": [
        {
            "ids": ["claude-gappy-1"],
            "rows": [
                {
                    "until": "2026-02-01",
                    "input": 3,
                    "output": 15,
                    "cache_write_5m": 3.75,
                    "cache_write_1h": 6,
                    "cache_read": 0.3,
                    "fast": 3,
                    "tiers": [
                        {
                            "above": 200_000,
                            "input": 6,
                            "output": 22.5,
                            "cache_write_5m": 7.5,
                            "cache_write_1h": 12,
                            "cache_read": 0.6,
                        },
                        {
                            "above": 100_000,
                            "until": "2026-01-15",
                            "input": 4.1,
                            "output": 17.3,
                            "cache_write_5m": 5.9,
                            "cache_write_1h": 7.7,
                            "cache_read": 0.37,
                        },
                    ],
                },
                {
                    "from": "2026-03-01",
                    "input": 2.7,
                    "output": 13.1,
                    "cache_write_5m": 3.3,
                    "cache_write_1h": 5.1,
                    "cache_read": 0.27,
                },
            ],
        }
    ],
}

MODELS = [
    "claude-gappy-1",
    "claude-opus-4-6",
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-opus-5",
    "us.anthropic.claude-sonnet-4-5",
    "claude-mystery-9",
    "<synthetic>",
]
TIMES = [
    ms("2025-06-01T00:00:00Z"),
    ms("2026-01-10T12:00:00Z"),
    ms("2026-01-20T12:00:00Z"),
    ms("2026-02-10T00:00:00Z"),  # in the gap
    ms("2026-03-12T23:59:59.999Z"),
    ms("2026-03-13T00:00:00Z"),
    ms("2026-10-06T23:59:59.999Z"),
    ms("2026-10-07T00:00:00Z"),
]
SESSIONS = ["s1", "s2", "s3"]
PROJECTS = ["/a", "/b"]


@pytest.fixture(scope="module")
def prices(tmp_path_factory: pytest.TempPathFactory) -> PriceTable:
    path = tmp_path_factory.mktemp("prices") / "override.json"
    path.write_text(json.dumps(OVERRIDE))
    return PriceTable.load(path)


def records(seed: int, n: int) -> list[UsageRecord]:
    """Copies of few keys (so every dedupe rule decides): equal totals, equal times,
    equal sessions; token counts around the tiers' sizes; fast, geo, web search."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        m = rng.randrange(n // 3 + 1)
        inp = rng.choice([0, 1, 3, 50_000, 99_999, 100_000, 100_001, 200_001, 10**9])
        cw = rng.choice([0, 7, 1000, 60_000, 150_000])
        out.append(
            UsageRecord(
                key=f"msg_{m}:req_{m}",
                message_id=f"msg_{m}",
                ts_ms=rng.choice(TIMES) + rng.choice([0, 0, 1]),
                model=rng.choice(MODELS),
                session_id=copy.copy(rng.choice(SESSIONS)),
                project=rng.choice(PROJECTS),
                is_sidechain=rng.random() < 0.2,
                input_tokens=inp,
                output_tokens=rng.choice([0, 1, 500, 12345]),
                cache_creation_tokens=cw,
                cache_creation_1h_tokens=rng.choice([0, cw // 3, cw]),
                cache_read_tokens=rng.choice([0, 1, 40_000, 99_990]),
                web_search_requests=rng.choice([0, 0, 0, 1, 3]),
                speed=rng.choice([None, None, "fast", "standard", ""]),
                inference_geo=rng.choice([None, None, "us", "eu", "global", ""]),
            )
        )
    return out


def python_side(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "_c", None)


def split(recs: list[UsageRecord], seed: int) -> list[list[UsageRecord]]:
    """The records as a batch's files give them: in lists, some empty."""
    rng = random.Random(seed)
    lists: list[list[UsageRecord]] = [[]]
    for rec in recs:
        if rng.random() < 0.1:
            lists.append([])
        lists[-1].append(rec)
    return lists


@pytest.mark.parametrize("seed", range(40))
def test_best_priced_is_dedupe_then_cost(
    seed: int, prices: PriceTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    recs = records(seed, 300)
    twins = copy.deepcopy(recs)  # the Python's own records: costs are set on them
    fast = best_priced(split(recs, seed), prices)
    python_side(monkeypatch)
    slow = best_priced(split(twins, seed), prices)
    assert list(fast) == list(slow)  # the same keys, in first-seen order
    for key, rec in fast.items():
        # the very record the Python chose: same position in the input
        assert recs.index(rec) == twins.index(slow[key])
        assert astuple(rec) == astuple(slow[key])
        assert repr(rec.cost_usd) == repr(slow[key].cost_usd)  # bit for bit
    assert any(r.cost_usd is None for r in fast.values())
    assert sum(r.cost_usd is not None for r in fast.values()) > 20


def test_costs_equal_the_price_table_for_each_record(prices: PriceTable) -> None:
    """Without dedupe in the way: every record its own key, each cost as `cost` says."""
    recs = records(7, 2000)
    for i, rec in enumerate(recs):
        rec.key = f"k{i}"
    best = best_priced([recs], prices)
    assert len(best) == 2000
    for rec in recs:
        expected = prices.cost(rec)
        assert repr(rec.cost_usd) == repr(expected), rec
    assert {rec.model for rec in recs if rec.cost_usd is None} >= {"claude-mystery-9"}
    gap = [
        r
        for r in recs
        if r.model == "claude-gappy-1" and r.ts_ms // 86_400_000 == TIMES[3] // 86_400_000
    ]
    assert gap and all(r.cost_usd is None for r in gap)


def test_hand_worked_cost(prices: PriceTable) -> None:
    """One record priced by hand: the gappy model's second tier (above 100k, before
    2026-01-15), fast, `eu` geo and web search."""
    rec = UsageRecord(
        "m:r", "m", TIMES[1], "claude-gappy-1", "s", "/p", False,
        100_000, 1000, 3000, 1000, 1,
        web_search_requests=2, speed="fast", inference_geo="eu",
    )  # fmt: skip
    # request input 100000 + 3000 + 1 > 100000: (100000*4.1 + 2000*5.9 + 1000*7.7 + 1*0.37
    # + 1000*17.3) / 1e6 = 446800.37 / 1e6; * 3 (fast) * 1.25 (eu) = 1.6755013875;
    # + 2 searches * 0.0125 = 1.7005013875
    best_priced([[rec]], prices)
    assert rec.cost_usd == pytest.approx(1.7005013875, rel=1e-15)


def test_ties_keep_the_first_seen(prices: PriceTable) -> None:
    first = UsageRecord("k", "m", 5, "claude-opus-5", "s", "/p", False, 1, 2, 0, 0, 3)
    twin = copy.copy(first)
    twin.session_id = "".join(["s"])  # equal, not the same object
    later = copy.copy(first)
    later.ts_ms = 4  # earlier time wins an equal total
    assert best_priced([[first, twin]], prices)["k"] is first
    assert best_priced([[first], [twin, later]], prices)["k"] is later
    bigger = copy.copy(first)
    bigger.output_tokens += 1
    assert best_priced([[bigger, later]], prices)["k"] is bigger
    # equal total and time: the smaller session, then the smaller project
    other = copy.copy(first)
    other.session_id = "r"
    assert best_priced([[first, other]], prices)["k"] is other
    other.session_id, other.project = "s", "/o"
    assert best_priced([[first, other]], prices)["k"] is other
    other.project = "/q"
    assert best_priced([[first, other]], prices)["k"] is first
    other.session_id = "r"  # the session decides before the project
    assert best_priced([[first, other]], prices)["k"] is other
    assert batch.split_rows([other], {"k": response_row(first)}) == ([], [response_row(other)])


def test_ordinary_records_take_the_c(prices: PriceTable, monkeypatch: pytest.MonkeyPatch) -> None:
    """The records the scanner makes never fall back to the Python (it is ~5x slower)."""

    def no_python(*_: object) -> None:
        raise AssertionError("the Python ran")

    monkeypatch.setattr(batch, "dedupe", no_python)
    monkeypatch.setattr(batch, "response_row", no_python)
    recs = records(5, 400)
    assert len(best_priced(split(recs, 5), prices)) > 100
    assert len(response_rows(recs)) == 400
    others = sum(rec.key != recs[0].key for rec in recs)
    assert len(batch.split_rows(recs, {recs[0].key: response_row(recs[0])})[0]) == others


@pytest.mark.parametrize("field", ["input_tokens", "ts_ms", "web_search_requests"])
def test_what_c_declines_runs_in_python(
    field: str, prices: PriceTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An integer beyond 64 bits: the C raises before it changes a record, and
    best_priced gives the Python's answer."""
    recs = records(3, 50)
    recs[-1].key, recs[-1].model = "only", "claude-opus-5"  # a winner, priced
    setattr(recs[-1], field, 2**70)
    assert batch._c is not None
    with pytest.raises(OverflowError):
        batch._c.best_priced([recs], prices.plans, prices.plan, prices.geo, prices.web_search)
    assert all(r.cost_usd is None for r in recs)  # nothing changed
    twins = copy.deepcopy(recs)
    fast = best_priced([recs], prices)
    python_side(monkeypatch)
    slow = best_priced([twins], prices)
    assert [astuple(r) for r in fast.values()] == [astuple(r) for r in slow.values()]


def test_a_record_of_another_type_runs_in_python(prices: PriceTable) -> None:
    class Odd(UsageRecord):
        __slots__ = ()

    rec = Odd("k", "m", TIMES[0], "claude-opus-5", "s", "/p", False, 1, 2, 0, 0, 3)
    assert batch._c is not None
    with pytest.raises(TypeError):
        batch._c.best_priced([[rec]], prices.plans, prices.plan, prices.geo, prices.web_search)
    assert best_priced([[rec]], prices)["k"].cost_usd == prices.cost(rec)
    assert response_rows([rec]) == [response_row(rec)]


def test_rows_are_response_row(prices: PriceTable) -> None:
    recs = records(11, 500)
    best_priced([recs[:250]], prices)  # costs on some: floats and None
    rows = response_rows(recs)
    expected = [response_row(r) for r in recs]
    assert rows == expected
    for got, want in zip(rows, expected, strict=True):
        assert [type(v) for v in got] == [type(v) for v in want]
        assert all(g is w for g, w in zip(got, want, strict=True) if isinstance(w, str))
    assert {row[13] for row in rows} == {0, "fast", "standard", ""}
    assert {row[6] for row in rows} == {0, 1}


def test_nothing_is_read_but_usage_metadata(prices: PriceTable) -> None:
    """A row holds exactly the sixteen columns of `responses`, no more."""
    (rec,) = records(1, 1)
    assert len(response_rows([rec])[0]) == 16 == len(UsageRecord.__slots__)


def test_plans_match_the_rows_cost_uses(prices: PriceTable) -> None:
    plan: Any = prices.plan("claude-gappy-1")
    assert plan is not None and len(plan) == 2
    start, end, *rates, fast, tiers = plan[0]
    assert (start, end) == (-(2**63), ms("2026-02-01T00:00:00Z"))
    assert (rates, fast) == ([3.0, 15.0, 3.75, 6.0, 0.3], 3.0)
    assert tiers[1] == (100_000, -(2**63), ms("2026-01-15T00:00:00Z"), 4.1, 17.3, 5.9, 7.7, 0.37)
    assert plan[1][:2] == (ms("2026-03-01T00:00:00Z"), 2**63 - 1)
    assert prices.plans["claude-gappy-1"] is plan
    assert prices.plan("claude-mystery-9") is None


def packable_rows(seed: int, n: int, prices: PriceTable) -> list[tuple[Any, ...]]:
    recs = records(seed, n)
    for i, rec in enumerate(recs):
        rec.key = f"k{i}-é-{'ü' * (i % 3)}"  # text beyond ASCII, of several lengths
    rec = recs[0]
    rec.project, rec.session_id, rec.model = "/home/dev/プロジェクト", "", "claude-😀"
    best_priced([recs], prices)
    return response_rows(recs)


@pytest.mark.parametrize("seed", range(5))
def test_packed_rows_come_back_as_they_went(
    seed: int, prices: PriceTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = packable_rows(seed, 300, prices)
    packed = batch.pack_rows(rows)
    assert packed is not None
    assert batch.unpack_rows(packed) == rows
    back = batch.unpack_rows(packed)
    assert [[type(v) for v in row] for row in back] == [[type(v) for v in row] for row in rows]
    assert repr([row[15] for row in back]) == repr([row[15] for row in rows])  # bit for bit
    python_side(monkeypatch)
    assert batch.pack_rows(rows) == packed  # the C wrote the Python's bytes
    assert batch.unpack_rows(packed) == rows


def test_packed_format_by_hand() -> None:
    row = ("k", "m", 7, "model", "s", "/p", 1, 2, 3, 4, 5, 6, 0, 0, "us", 0.5)
    packed = batch.pack_rows([row, (*row[:15], None)])
    table = b"".join(len(s).to_bytes(4, "little") + s for s in (b"model", b"s", b"/p", b"us"))
    fixed = (
        (7).to_bytes(8, "little", signed=True)
        + b"".join(i.to_bytes(4, "little") for i in (0, 1, 2))
        + b"".join(v.to_bytes(8, "little", signed=True) for v in (1, 2, 3, 4, 5, 6, 0))
        + (0xFFFFFFFF).to_bytes(4, "little")
        + (3).to_bytes(4, "little")
    )
    texts = b"\x01\x00\x00\x00k\x01\x00\x00\x00m"
    first = texts + fixed + b"\x01" + struct.pack("<d", 0.5)
    second = texts + fixed + b"\x00" + struct.pack("<d", 0.0)
    assert packed == (2).to_bytes(4, "little") + (4).to_bytes(4, "little") + table + first + second


@pytest.mark.parametrize(
    ("column", "value"),
    [(2, 2**63), (7, -(2**63) - 1), (6, True), (13, 5), (14, None), (15, 1), (4, b"s"), (0, 3)],
)
def test_rows_the_format_does_not_hold_are_not_packed(
    column: int, value: Any, prices: PriceTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """None (the store pickles them), from the C and from the Python alike."""
    rows = packable_rows(1, 20, prices)
    rows[7] = (*rows[7][:column], value, *rows[7][column + 1 :])
    assert batch.pack_rows(rows) is None
    python_side(monkeypatch)
    assert batch.pack_rows(rows) is None


@pytest.mark.parametrize("column", [0, 1, 3, 4, 5, 13, 14])
def test_text_sqlite_cannot_store_is_refused_when_packed(
    column: int, prices: PriceTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = packable_rows(2, 20, prices)
    rows[3] = (*rows[3][:column], "bad-\udcff", *rows[3][column + 1 :])
    with pytest.raises(UnicodeEncodeError):
        batch.pack_rows(rows)
    python_side(monkeypatch)
    with pytest.raises(UnicodeEncodeError):
        batch.pack_rows(rows)


def test_damaged_packed_rows_raise(prices: PriceTable, monkeypatch: pytest.MonkeyPatch) -> None:
    packed = batch.pack_rows(packable_rows(4, 10, prices))
    assert packed is not None
    for damaged in (packed[:-1], packed + b"\x00", packed[:6]):
        with pytest.raises(ValueError):
            batch.unpack_rows(damaged)
        with monkeypatch.context() as m:
            python_side(m)
            with pytest.raises(ValueError):
                batch.unpack_rows(damaged)


def test_a_header_claiming_more_rows_than_bytes_allocates_nothing() -> None:
    """Counts beyond what the bytes can hold are refused before any list is made
    (2**31 rows would take 16 GiB)."""
    assert batch._c is not None
    with pytest.raises(ValueError, match="cut short"):
        batch._c.unpack_rows(struct.pack("<II", 0x7FFFFFFF, 0))
    with pytest.raises(ValueError, match="cut short"):
        batch._c.unpack_rows(struct.pack("<II", 0, 0x7FFFFFFF))


@pytest.mark.parametrize("value", [("a",), 1, 1.5, None, "text"])
def test_what_is_not_a_record_is_declined_not_crashed_on(value: Any, prices: PriceTable) -> None:
    """A first record of a built-in type (which has no dict of its own since Python
    3.12): TypeError from the C, and the Python says what it makes of it."""
    assert batch._c is not None
    for call in (
        lambda: batch._c.rows([value]),
        lambda: batch._c.split_rows([value], {}),
        lambda: batch._c.best_priced([[value]], prices.plans, prices.plan, {}, 0.0),
    ):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(AttributeError):
        response_rows([value])


def test_odd_sessions_in_a_tie_are_compared_by_the_python(prices: PriceTable) -> None:
    """Only str is compared in C (another type's comparison could run Python code)."""

    class Name(str):
        pass

    first = UsageRecord("k", "m", 5, "claude-opus-5", Name("s"), "/p", False, 1, 2, 0, 0, 3)
    twin = copy.copy(first)
    twin.session_id = Name("r")
    assert batch._c is not None
    with pytest.raises(TypeError):
        batch._c.best_priced([[first, twin]], prices.plans, prices.plan, {}, 0.0)
    assert best_priced([[first, twin]], prices)["k"] is twin
    rows = response_rows([first, twin])
    assert batch.split_rows([twin], {"k": rows[0]}) == ([], [rows[1]])


@pytest.mark.parametrize("seed", range(20))
def test_split_rows_is_rank_against_the_loaded_rows(
    seed: int, prices: PriceTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each key once in the batch; some stored already, with a row that ties on total,
    time, session or project: the same new and better rows, in order, from both."""
    rng = random.Random(seed)
    batch_records = list(best_priced([records(seed, 200)], prices).values())
    loaded: dict[str, tuple[Any, ...]] = {}
    for rec in batch_records:
        if rng.random() < 0.6:
            old = copy.copy(rec)
            change = rng.choice(["output_tokens", "ts_ms", "session_id", "project", None])
            if change == "output_tokens":
                old.output_tokens += rng.choice([-1, 1]) if old.output_tokens else 1
            elif change == "ts_ms":
                old.ts_ms += rng.choice([-1, 1])
            elif change is not None:
                old_value = getattr(old, change)
                setattr(old, change, rng.choice([old_value + "a", old_value[:-1], old_value]))
            loaded[rec.key] = response_row(old)
    fast = batch.split_rows(batch_records, loaded)
    python_side(monkeypatch)
    slow = batch.split_rows(batch_records, loaded)
    assert fast == slow
    new, better = fast
    assert len(new) + len(loaded) == len(batch_records)  # every key: new, or stored
    assert 0 < len(better) < len(loaded)
    assert all(batch.rank(row) < batch.rank(loaded[row[0]]) for row in better)
