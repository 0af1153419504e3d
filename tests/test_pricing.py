"""Tests for claude_usaged.pricing: every expected cost is worked out by hand."""

from __future__ import annotations

import json
import pathlib
from datetime import datetime
from typing import Any

import pytest

from claude_usaged.pricing import PriceFileError, PriceTable
from claude_usaged.usage import UsageRecord


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


MID_2026 = ms("2026-06-01T12:00:00Z")  # after every long-context tier, before Sonnet 5.5's change


def rec(
    model: str,
    ts_ms: int = MID_2026,
    *,
    inp: int = 1000,
    out: int = 2000,
    cw: int = 3000,
    cw1h: int = 1000,
    cr: int = 4000,
    web: int = 0,
    speed: str | None = None,
    geo: str | None = None,
) -> UsageRecord:
    return UsageRecord(
        key="msg_1:req_1",
        message_id="msg_1",
        ts_ms=ts_ms,
        model=model,
        session_id="s",
        project="/p",
        is_sidechain=False,
        input_tokens=inp,
        output_tokens=out,
        cache_creation_tokens=cw,
        cache_creation_1h_tokens=cw1h,
        cache_read_tokens=cr,
        web_search_requests=web,
        speed=speed,
        inference_geo=geo,
    )


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def approx(x: float) -> Any:
    return pytest.approx(x, rel=1e-12)


# The default record: input 1000, 5m write 2000 (3000 - 1000), 1h write 1000, read 4000,
# output 2000. Cost = (1000*in + 2000*w5m + 1000*w1h + 4000*cr + 2000*out) / 1e6.
FAMILIES = [
    # 1000*8 + 2000*10 + 1000*16 + 4000*0.2 + 2000*40 = 8000+20000+16000+800+80000 = 124800
    ("claude-fable-5-2", 0.1248),
    ("claude-mythos-5-2", 0.1248),
    # 10000 + 2000*12.5 + 20000 + 4000*0.25 + 100000 = 10000+25000+20000+1000+100000 = 156000
    ("claude-fable-5-1", 0.156),
    ("claude-mythos-5-1", 0.156),
    # 10000 + 25000 + 20000 + 4000*1 + 100000 = 159000
    ("claude-fable-5", 0.159),
    ("claude-mythos-5", 0.159),
    # 1000*4 + 2000*5 + 1000*8 + 4000*0.2 + 2000*20 = 4000+10000+8000+800+40000 = 62800
    ("claude-opus-5-5", 0.0628),
    # 1000*5 + 2000*6.25 + 1000*10 + 4000*0.5 + 2000*25 = 5000+12500+10000+2000+50000 = 79500
    ("claude-opus-5", 0.0795),
    ("claude-opus-4-8", 0.0795),
    ("claude-opus-4-7", 0.0795),
    ("claude-opus-4-6", 0.0795),
    ("claude-opus-4-5", 0.0795),
    # 1000*15 + 2000*18.75 + 1000*30 + 4000*1.5 + 2000*75 = 15000+37500+30000+6000+150000
    ("claude-opus-4-1", 0.2385),
    ("claude-opus-4", 0.2385),
    ("claude-3-opus", 0.2385),
    # 1000*2 + 2000*2.5 + 1000*4 + 4000*0.2 + 2000*10 = 2000+5000+4000+800+20000 = 31800
    ("claude-sonnet-5-5", 0.0318),
    ("claude-sonnet-5", 0.0318),
    # 1000*3 + 2000*3.75 + 1000*6 + 4000*0.3 + 2000*15 = 3000+7500+6000+1200+30000 = 47700
    ("claude-sonnet-4-6", 0.0477),
    ("claude-sonnet-4-5", 0.0477),
    ("claude-sonnet-4", 0.0477),
    ("claude-3-7-sonnet", 0.0477),
    # request input 8000 <= 100K: 1000*0.1 + 2000*0.125 + 1000*0.2 + 4000*0.01 + 2000*0.5
    # = 100+250+200+40+1000 = 1590
    ("claude-haiku-5-5", 0.00159),
    # 1000*1 + 2000*1.25 + 1000*2 + 4000*0.1 + 2000*5 = 1000+2500+2000+400+10000 = 15900
    ("claude-haiku-4-5", 0.0159),
    # 1000*0.8 + 2000*1 + 1000*1.6 + 4000*0.08 + 2000*4 = 800+2000+1600+320+8000 = 12720
    ("claude-3-5-haiku", 0.01272),
    # 1000*0.25 + 2000*0.3 + 1000*0.5 + 4000*0.03 + 2000*1.25 = 250+600+500+120+2500 = 3970
    ("claude-3-haiku", 0.00397),
]


@pytest.mark.parametrize(("model", "usd"), FAMILIES)
def test_each_family(table: PriceTable, model: str, usd: float) -> None:
    assert table.normalize(model) == model
    assert table.cost(rec(model)) == approx(usd)


def test_format_md_example_line(table: PriceTable) -> None:
    # 4*3 + 2315*3.75 + 18422*0.3 + 96*15 = 12 + 8681.25 + 5526.6 + 1440 = 15659.85
    r = rec(
        "claude-sonnet-4-5-20250929",
        ms("2025-11-20T09:14:05.602Z"),
        inp=4,
        out=96,
        cw=2315,
        cw1h=0,
        cr=18422,
    )
    assert table.cost(r) == approx(0.01565985)


@pytest.mark.parametrize(
    ("raw", "known"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-6", "claude-opus-4-6"),
        ("claude-opus-4-6[1m]", "claude-opus-4-6"),
        ("claude-sonnet-4-5-20250929[1m]", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("global.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("eu.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("apac.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("claude-fable-5-2-20261104", "claude-fable-5-2"),
        ("claude-sonnet-5-5", "claude-sonnet-5-5"),
        ("claude-sonnet-5-20260801", "claude-sonnet-5"),
        ("Claude-Opus-4-6", "claude-opus-4-6"),
        # unknown models: never a neighbour's price
        ("claude-nova-1", None),
        ("gpt-4", None),
        ("<synthetic>", None),
        ("", None),
        ("claude-opus-4-9", None),  # a newer minor version, not a snapshot of claude-opus-4
        ("claude-fable-5-3", None),
        ("claude-haiku-5", None),
        ("claude-3-5-sonnet-20241022", None),  # not in FORMAT.md's table
        ("claude-opus", None),
    ],
)
def test_normalize(table: PriceTable, raw: str, known: str | None) -> None:
    assert table.normalize(raw) == known
    assert table.normalize(raw) == known  # memoised answer is the same


def test_prefix_never_takes_shorter_ids_price(table: PriceTable) -> None:
    # claude-opus-4-6 (0.0795) must not get claude-opus-4's price (0.2385), dated or not.
    assert table.cost(rec("claude-opus-4-6")) == approx(0.0795)
    assert table.cost(rec("claude-opus-4-6-20260205")) == approx(0.0795)
    assert table.cost(rec("claude-opus-4-20250514")) == approx(0.2385)
    assert table.cost(rec("us.anthropic.claude-opus-4-1-20250805-v1:0")) == approx(0.2385)


@pytest.mark.parametrize("model", ["claude-nova-1", "gpt-4", "<synthetic>", "claude-opus-4-9"])
def test_unknown_model_costs_none(table: PriceTable, model: str) -> None:
    assert table.cost(rec(model)) is None
    assert table.cost(rec(model, web=5)) is None


# Long-context records: input 100000, 5m write 50000, read 50000 (+1 to cross), output 1000.
def big(model: str, ts: int, *, cr: int) -> UsageRecord:
    return rec(model, ts, inp=100_000, out=1000, cw=50_000, cw1h=0, cr=cr)


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-sonnet-4-20250514"])
def test_sonnet_4_and_4_5_long_context_until_end_of_2026_04_30(
    table: PriceTable, model: str
) -> None:
    last_beta_ms = ms("2026-04-30T23:59:59.999Z")
    after = ms("2026-05-01T00:00:00Z")
    # request input 200000 (not above): 100000*3 + 50000*3.75 + 50000*0.3 + 1000*15
    # = 300000 + 187500 + 15000 + 15000 = 517500
    assert table.cost(big(model, last_beta_ms, cr=50_000)) == approx(0.5175)
    # 200001: whole request at 6 / 7.5 / 0.6 / 22.5:
    # 100000*6 + 50000*7.5 + 50001*0.6 + 1000*22.5 = 600000 + 375000 + 30000.6 + 22500
    assert table.cost(big(model, last_beta_ms, cr=50_001)) == approx(1.0275006)
    # from 2026-05-01 flat: 300000 + 187500 + 50001*0.3 + 15000 = 517500.3
    assert table.cost(big(model, after, cr=50_001)) == approx(0.5175003)


def test_opus_4_6_long_context_before_2026_03_13(table: PriceTable) -> None:
    before, on = ms("2026-03-12T23:59:59.999Z"), ms("2026-03-13T00:00:00Z")
    # at 200000: 100000*5 + 50000*6.25 + 50000*0.5 + 1000*25 = 500000+312500+25000+25000
    assert table.cost(big("claude-opus-4-6", before, cr=50_000)) == approx(0.8625)
    # 200001 before: 10 / 12.5 / 1.0 / 37.5:
    # 100000*10 + 50000*12.5 + 50001*1 + 1000*37.5 = 1000000+625000+50001+37500 = 1712501
    assert table.cost(big("claude-opus-4-6", before, cr=50_001)) == approx(1.712501)
    # from 2026-03-13 flat: 500000 + 312500 + 50001*0.5 + 25000 = 862500.5
    assert table.cost(big("claude-opus-4-6", on, cr=50_001)) == approx(0.8625005)


def test_sonnet_4_6_long_context_before_2026_03_13(table: PriceTable) -> None:
    before, on = ms("2026-03-12T23:59:59.999Z"), ms("2026-03-13T00:00:00Z")
    assert table.cost(big("claude-sonnet-4-6", before, cr=50_000)) == approx(0.5175)
    assert table.cost(big("claude-sonnet-4-6", before, cr=50_001)) == approx(1.0275006)
    assert table.cost(big("claude-sonnet-4-6", on, cr=50_001)) == approx(0.5175003)


@pytest.mark.parametrize("model", ["claude-3-7-sonnet", "claude-opus-4-5"])
def test_models_without_tiers_bill_flat(table: PriceTable, model: str) -> None:
    early = ms("2025-10-01T00:00:00Z")
    # 3-7-sonnet: 300000 + 187500 + 15000.3 + 15000 = 517500.3
    # opus-4-5:   500000 + 312500 + 25000.5 + 25000 = 862500.5
    usd = 0.5175003 if "sonnet" in model else 0.8625005
    assert table.cost(big(model, early, cr=50_001)) == approx(usd)


def test_haiku_5_5_above_100k(table: PriceTable) -> None:
    late = ms("2027-06-01T00:00:00Z")  # this tier has no end date
    # 100000: 50000*0.1 + 25000*0.125 + 25000*0.01 + 1000*0.5 = 5000+3125+250+500 = 8875
    r = rec("claude-haiku-5-5", late, inp=50_000, out=1000, cw=25_000, cw1h=0, cr=25_000)
    assert table.cost(r) == approx(0.008875)
    # 100001: 50000*0.5 + 25000*0.625 + 25001*0.05 + 1000*2.5 = 25000+15625+1250.05+2500
    r.cache_read_tokens = 25_001
    assert table.cost(r) == approx(0.04437505)
    # 1h writes count in the request input too: 50000 + 25000 (all 1h) + 25001 = 100001
    # 50000*0.5 + 25000*1.0 + 25001*0.05 + 1000*2.5 = 25000+25000+1250.05+2500 = 53750.05
    r.cache_creation_1h_tokens = 25_000
    assert table.cost(r) == approx(0.05375005)


def test_sonnet_5_5_cache_read_changes_on_2026_10_07(table: PriceTable) -> None:
    def read_1m(ts: int) -> UsageRecord:
        return rec("claude-sonnet-5-5", ts, inp=0, out=0, cw=0, cw1h=0, cr=1_000_000)

    assert table.cost(read_1m(ms("2026-10-06T23:59:59.999Z"))) == approx(0.20)
    assert table.cost(read_1m(ms("2026-10-07T00:00:00Z"))) == approx(0.10)
    # default record after the change: 2000 + 5000 + 4000 + 4000*0.1 + 20000 = 31400
    assert table.cost(rec("claude-sonnet-5-5", ms("2026-11-01T00:00:00Z"))) == approx(0.0314)


@pytest.mark.parametrize(
    ("model", "usd"),
    [
        ("claude-opus-4-6", 0.0795 * 6),  # 0.477
        ("claude-opus-4-7", 0.0795 * 6),
        ("claude-opus-4-8", 0.0795 * 2),  # 0.159
        ("claude-opus-5", 0.0795 * 2),
        ("claude-opus-5-5", 0.0628 * 2),  # 0.1256
        ("claude-fable-5-2", 0.1248 * 2),  # 0.2496
        ("claude-mythos-5-2", 0.1248 * 2),
        ("claude-opus-4-5", 0.0795),  # no fast price: 1x
        ("claude-sonnet-4-5", 0.0477),
    ],
)
def test_fast_mode(table: PriceTable, model: str, usd: float) -> None:
    assert table.cost(rec(model, speed="fast")) == approx(usd)
    base = FAMILIES[[m for m, _ in FAMILIES].index(model)][1]
    assert table.cost(rec(model, speed="standard")) == approx(base)
    assert table.cost(rec(model, speed=None)) == approx(base)


def test_us_geo_multiplies_all_rates(table: PriceTable) -> None:
    # 0.0477 * 1.1 = 0.05247
    assert table.cost(rec("claude-sonnet-4-5", geo="us")) == approx(0.05247)
    for geo in ("", None, "global"):
        assert table.cost(rec("claude-sonnet-4-5", geo=geo)) == approx(0.0477)


def test_fast_tier_and_geo_combine(table: PriceTable) -> None:
    before = ms("2026-03-01T00:00:00Z")
    r = big("claude-opus-4-6", before, cr=50_001)
    r.speed, r.inference_geo = "fast", "us"
    # 1.712501 (tier) * 6 (fast) = 10.275006; * 1.1 (us) = 11.3025066
    assert table.cost(r) == approx(11.3025066)


def test_web_search(table: PriceTable) -> None:
    # 3 searches * $0.01 = 0.03, added after the multipliers
    assert table.cost(rec("claude-sonnet-4-5", web=3)) == approx(0.0777)  # 0.0477 + 0.03
    assert table.cost(rec("claude-sonnet-4-5", web=3, geo="us")) == approx(0.08247)  # .05247+.03
    assert table.cost(rec("claude-opus-4-6", web=1, speed="fast")) == approx(0.487)  # .477+.01
    zero = rec("claude-sonnet-4-5", inp=0, out=0, cw=0, cw1h=0, cr=0, web=1000)
    assert table.cost(zero) == approx(10.0)


def test_one_hour_cache_part(table: PriceTable) -> None:
    def write(cw1h: int) -> UsageRecord:
        return rec("claude-sonnet-4-5", inp=0, out=0, cw=1_000_000, cw1h=cw1h, cr=0)

    assert table.cost(write(0)) == approx(3.75)  # all 5m
    assert table.cost(write(1_000_000)) == approx(6.0)  # all 1h
    # 600000*3.75 + 400000*6 = 2250000 + 2400000 = 4650000
    assert table.cost(write(400_000)) == approx(4.65)


def test_fingerprint_is_stable(table: PriceTable) -> None:
    again = PriceTable.load()
    assert again.fingerprint == table.fingerprint
    assert len(table.fingerprint) == 16
    assert table.version


ROW = {"input": 1, "output": 2, "cache_write_5m": 3, "cache_write_1h": 4, "cache_read": 5}


def write_json(tmp_path: pathlib.Path, doc: Any, name: str = "prices.json") -> pathlib.Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return p


def test_override_adds_and_replaces(tmp_path: pathlib.Path, table: PriceTable) -> None:
    doc = {
        "version": "local-1",
        "models": [
            {"ids": ["claude-nova-1"], "rows": [{**ROW, "from": "2026-01-01", "fast": 3}]},
            {"ids": ["claude-sonnet-4-5"], "rows": [{**ROW}]},
        ],
    }
    t = PriceTable.load(write_json(tmp_path, doc))
    assert t.fingerprint != table.fingerprint
    assert t.version == f"{table.version}+local-1"
    # new model: 1000*1 + 2000*3 + 1000*4 + 4000*5 + 2000*2 = 1000+6000+4000+20000+4000 = 35000
    assert t.normalize("claude-nova-1-20260301") == "claude-nova-1"
    assert t.cost(rec("claude-nova-1")) == approx(0.035)
    assert t.cost(rec("claude-nova-1", speed="fast")) == approx(0.105)  # 0.035 * 3
    assert t.cost(rec("claude-nova-1", ms("2025-12-31T23:59:59Z"))) is None  # before its row
    # replaced: sonnet-4-5 at the new rates, its long-context tier gone
    assert t.cost(rec("claude-sonnet-4-5-20250929")) == approx(0.035)
    # 100000*1 + 50000*3 + 50001*5 + 1000*2 = 100000+150000+250005+2000 = 502005
    assert t.cost(big("claude-sonnet-4-5", ms("2026-04-01T00:00:00Z"), cr=50_001)) == approx(
        0.502005
    )
    # sonnet-4 shared the packaged row but was not listed: unchanged
    assert t.cost(rec("claude-sonnet-4")) == approx(0.0477)
    assert t.cost(rec("claude-opus-4-6")) == approx(0.0795)


def test_override_longer_id_and_top_level(tmp_path: pathlib.Path) -> None:
    doc = {
        "web_search_per_1000": 20,
        "inference_geo": {"us": 1.5},
        "models": [{"ids": ["claude-opus-4-9"], "rows": [ROW]}],
    }
    t = PriceTable.load(write_json(tmp_path, doc))
    assert t.normalize("claude-opus-4-9-20270101") == "claude-opus-4-9"
    assert t.normalize("claude-opus-4-20250514") == "claude-opus-4"
    # 0.035 * 1.5 + 2 * 0.02 = 0.0525 + 0.04
    assert t.cost(rec("claude-opus-4-9", geo="us", web=2)) == approx(0.0925)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "expected a JSON object, got list"),
        ({"model": []}, "unknown key(s) 'model'"),
        ({"models": {"claude-x": ROW}}, "'models' must be a list"),
        ({"models": [{"ids": ["claude-x"], "rows": []}]}, "models[0]: 'rows' must be"),
        ({"models": [{"rows": [ROW]}]}, "'ids' must be a non-empty list"),
        ({"models": [{"ids": ["claude x"], "rows": [ROW]}]}, "bad model id 'claude x'"),
        (
            {"models": [{"ids": ["claude-x"], "rows": [{**ROW, "cache_read": None}]}]},
            "models[0].rows[0]: missing 'cache_read'",
        ),
        (
            {"models": [{"ids": ["claude-x"], "rows": [{**ROW, "input": -1}]}]},
            "'input' must be a non-negative number, got -1",
        ),
        (
            {"models": [{"ids": ["claude-x"], "rows": [{**ROW, "output": "2"}]}]},
            "'output' must be a non-negative number, got '2'",
        ),
        (
            {"models": [{"ids": ["claude-x"], "rows": [{**ROW, "cache_reed": 1}]}]},
            "unknown key(s) 'cache_reed'",
        ),
        (
            {"models": [{"ids": ["claude-x"], "rows": [{**ROW, "from": "soon"}]}]},
            "'from' must be an ISO-8601 date or time, got 'soon'",
        ),
        (
            {
                "models": [
                    {
                        "ids": ["claude-x"],
                        "rows": [{**ROW, "from": "2026-02-01", "until": "2026-01-01"}],
                    }
                ]
            },
            "'from' must be earlier than 'until'",
        ),
        (
            {
                "models": [
                    {
                        "ids": ["claude-x"],
                        "rows": [{**ROW, "until": "2026-02-01"}, {**ROW, "from": "2026-01-01"}],
                    }
                ]
            },
            "rows overlap in time",
        ),
        (
            {"models": [{"ids": ["claude-x"], "rows": [{**ROW, "tiers": [{**ROW}]}]}]},
            "rows[0].tiers[0]: 'above' must be a non-negative integer",
        ),
        (
            {"models": [{"ids": ["claude-x", "claude-x"], "rows": [ROW]}]},
            "model id 'claude-x' listed twice",
        ),
        ({"models": [{"ids": ["claude-x"], "rows": [{**ROW, "fast": 0}]}]}, "'fast' must be"),
    ],
)
def test_bad_override_names_file_and_problem(
    tmp_path: pathlib.Path, content: Any, fragment: str
) -> None:
    path = write_json(tmp_path, content, "my-prices.json")
    with pytest.raises(PriceFileError) as err:
        PriceTable.load(path)
    msg = str(err.value)
    assert str(path) in msg
    assert fragment in msg
    assert isinstance(err.value, ValueError)


def test_missing_override_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(PriceFileError, match=r"nope\.json: cannot read"):
        PriceTable.load(path)
