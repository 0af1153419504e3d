"""Every HTTP endpoint on a real daemon over hand-written transcripts.

Each expected number is worked out by hand in a comment beside it. Prices
(USD per million tokens, FORMAT.md): sonnet-4-5 3 / 15 / 3.75 (5m write) /
0.30 (read); opus-4-5 5 / 25; haiku-4-5 1 / 5 / 0.10 (read).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, assistant, daemon_on, stop_watcher, user, write_lines

from claude_usaged import api

SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-5-20251101"
HAIKU = "claude-haiku-4-5-20251001"
UNKNOWN = "claude-nova-1-20260101"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def fix_now(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Make the API's clock read `text`, so windows and burn rates are exact."""
    monkeypatch.setattr(api, "_now_ms", lambda: ms(text))


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-12)


# -- /stats ---------------------------------------------------------------------


def window_lines() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two responses in the window opened at 10:00 UTC, one the day before."""
    current = [
        user("2026-11-20T10:19:59.000Z"),
        # 300 + 700 + 1000 + 8000 = 10000 tokens;
        # cost 300*3 + 700*15 + 1000*3.75 + 8000*0.30 = 900+10500+3750+2400 = 17550 / 1e6
        assistant(
            "m_w1",
            "r_w1",
            "2026-11-20T10:20:00.000Z",
            input_tokens=300,
            output_tokens=700,
            cache_creation=1000,
            cache_read=8000,
        ),
        # 2000 tokens; cost 2000*15 = 30000 / 1e6
        assistant("m_w2", "r_w2", "2026-11-20T11:20:00.000Z", output_tokens=2000),
    ]
    # 5000 tokens; cost 5000*1 = 5000 / 1e6
    old = [
        assistant(
            "m_p1", "r_p1", "2026-11-19T08:00:00.000Z", model=HAIKU, input_tokens=5000, session="s0"
        )
    ]
    return current, old


async def test_stats_reports_the_active_window_exactly(
    running: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a block active, /stats gives its tokens, reset time, countdown and the whole block."""
    current, old = window_lines()
    write_lines(running.projects / "-home-dev-api" / "s1.jsonl", current)
    write_lines(running.projects / "-home-dev-api" / "s0.jsonl", old)
    fix_now(monkeypatch, "2026-11-20T13:00:00+00:00")
    stats = await running.wait_for(lambda s: s["ingest"]["responses"] == 3)

    # window: first response 10:20 -> start 10:00, reset 15:00; now 13:00 -> 7200 s
    block = {
        "start": "2026-11-20T10:00:00Z",
        "end": "2026-11-20T15:00:00Z",
        "actual_end": "2026-11-20T11:20:00Z",
        "is_active": True,
        "entries": 2,
        "input_tokens": 300,
        "output_tokens": 700 + 2000,
        "cache_creation_tokens": 1000,
        "cache_read_tokens": 8000,
        "total_tokens": 10000 + 2000,
        "cost_usd": approx((17550 + 30000) / 1e6),
        "models": [SONNET],
        # 12000 tokens over 10:20..11:20 = 60 minutes -> 200 per minute
        "burn_rate_tokens_per_minute": 200.0,
        # 12000 + 200/min * (15:00 - 13:00 = 120 min) = 36000
        "projected_total_tokens": 36000,
    }
    assert stats["current_window"] == block
    assert stats["total_tokens"] == 12000 + 5000
    assert stats["current_window_tokens"] == 12000
    assert stats["next_reset_at"] == "2026-11-20T15:00:00Z"
    assert stats["time_until_reset_seconds"] == 7200
    assert stats["time_until_reset_human"] == "2h 0m remaining"
    assert stats["is_within_active_window"] is True
    assert stats["total_cost_usd"] == approx((17550 + 30000 + 5000) / 1e6)
    assert stats["unpriced_models"] == []
    assert stats["today"] == {
        "date": "2026-11-20",
        "entries": 2,
        "input_tokens": 300,
        "output_tokens": 2700,
        "cache_creation_tokens": 1000,
        "cache_read_tokens": 8000,
        "total_tokens": 12000,
        "cost_usd": approx(47550 / 1e6),
        "models": [SONNET],
        "unpriced_models": [],
        "model_breakdowns": [
            {
                "model": SONNET,
                "entries": 2,
                "input_tokens": 300,
                "output_tokens": 2700,
                "cache_creation_tokens": 1000,
                "cache_read_tokens": 8000,
                "total_tokens": 12000,
                "cost_usd": approx(47550 / 1e6),
            }
        ],
    }
    ingest = stats["ingest"]
    # two files; 3 lines in s1 (one user line), 1 in s0; nothing skipped
    assert {k: ingest[k] for k in ("files", "lines", "skipped_lines", "responses")} == {
        "files": 2,
        "lines": 4,
        "skipped_lines": 0,
        "responses": 3,
    }
    assert ingest["caught_up"] is True
    # the watcher (not a refresh) delivered the files, so an event time is known
    assert ingest["last_event_at"].endswith("Z")
    datetime.fromisoformat(ingest["last_event_at"])

    # the seed's example: window from 10:00, now 13:30 -> "1h 30m" left (5400 s)
    fix_now(monkeypatch, "2026-11-20T13:30:00+00:00")
    stats = await running.get("/stats")
    assert (stats["time_until_reset_seconds"], stats["time_until_reset_human"]) == (
        5400,
        "1h 30m remaining",
    )
    # 12000 + 200/min * 90 min = 30000
    assert stats["current_window"]["projected_total_tokens"] == 30000
    # 14:59:59.500 -> 0.5 s left, floored to 0 s
    fix_now(monkeypatch, "2026-11-20T14:59:59.500+00:00")
    stats = await running.get("/stats")
    assert (stats["time_until_reset_seconds"], stats["time_until_reset_human"]) == (
        0,
        "0h 0m remaining",
    )
    assert stats["is_within_active_window"] is True


async def test_stats_without_an_active_window(
    running: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the last block has ended, no reset is announced and the window counts 0."""
    current, old = window_lines()
    write_lines(running.projects / "-home-dev-api" / "s1.jsonl", current + old)
    # the block 10:00-15:00 is over at 15:00 exactly (now < end is strict)
    fix_now(monkeypatch, "2026-11-20T15:00:00+00:00")
    stats = await running.wait_for(lambda s: s["ingest"]["responses"] == 3)
    assert stats["next_reset_at"] is None
    assert stats["time_until_reset_seconds"] == 0
    assert stats["is_within_active_window"] is False
    assert stats["current_window"] is None
    assert stats["current_window_tokens"] == 0
    assert stats["total_tokens"] == 17000  # 12000 + 5000
    # today is still 2026-11-20 with both window responses
    assert (stats["today"]["date"], stats["today"]["total_tokens"]) == ("2026-11-20", 12000)
    # and a day with nothing: an empty row, not a missing one
    fix_now(monkeypatch, "2026-11-23T09:00:00+00:00")
    stats = await running.get("/stats")
    assert stats["today"]["date"] == "2026-11-23"
    assert (stats["today"]["entries"], stats["today"]["total_tokens"]) == (0, 0)
    assert stats["today"]["model_breakdowns"] == []


async def test_stats_window_follows_the_real_clock(running: RunningDaemon) -> None:
    """A response written a minute ago opens a window that resets 5 h after its UTC hour."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    ts_ms = now_ms - 60_000
    ts = datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"
    write_lines(
        running.projects / "-home-dev-api" / "s1.jsonl",
        [assistant("m_now", "r_now", ts, input_tokens=40, output_tokens=2)],
    )
    before = int(datetime.now(UTC).timestamp())
    stats = await running.wait_for(lambda s: s["total_tokens"] == 42)
    after = int(datetime.now(UTC).timestamp())
    reset_ms = ts_ms - ts_ms % 3_600_000 + 5 * 3_600_000
    assert stats["next_reset_at"] == api.iso(reset_ms)
    assert stats["is_within_active_window"] is True
    assert stats["current_window_tokens"] == 42
    left = stats["time_until_reset_seconds"]
    assert reset_ms // 1000 - after - 1 <= left <= reset_ms // 1000 - before
    assert stats["time_until_reset_human"] == f"{left // 3600}h {left % 3600 // 60}m remaining"
    # a single response: no duration to derive a burn rate from
    assert stats["current_window"]["burn_rate_tokens_per_minute"] is None
    assert stats["current_window"]["projected_total_tokens"] is None


async def test_a_block_from_a_skewed_future_is_not_the_current_window(
    running: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a response stamped a day ahead, the window is still the one open now."""
    fix_now(monkeypatch, "2026-11-20T12:00:00+00:00")
    write_lines(
        running.projects / "-home-dev-api" / "s1.jsonl",
        [
            # now's block: 10:00-15:00, 30 tokens
            assistant("m_a", "r_a", "2026-11-20T10:30:00.000Z", input_tokens=30),
            # a clock a day ahead: its own block 2026-11-21 11:00, 500 tokens
            assistant("m_b", "r_b", "2026-11-21T11:15:00.000Z", input_tokens=500),
        ],
    )
    stats = await running.wait_for(lambda s: s["total_tokens"] == 530)
    assert stats["is_within_active_window"] is True
    assert stats["current_window_tokens"] == 30
    assert stats["next_reset_at"] == "2026-11-20T15:00:00Z"
    blocks = (await running.get("/blocks"))["blocks"]
    assert [(b["start"], b["is_active"]) for b in blocks] == [
        ("2026-11-20T10:00:00Z", True),
        ("2026-11-21T11:00:00Z", False),
    ]


# -- /blocks --------------------------------------------------------------------


def block_lines() -> list[dict[str, Any]]:
    return [
        # block 1 opens at 09:00 (09:14 floored to the UTC hour): 100 in -> 300 / 1e6
        assistant("m_b1", "r_b1", "2025-11-20T09:14:05.602Z", input_tokens=100),
        # 14:00 is exactly start + 5 h: not > 5 h, same block; 50 out -> 750 / 1e6
        assistant("m_b2", "r_b2", "2025-11-20T14:00:00.000Z", output_tokens=50),
        # 1 ms later is > 5 h after 09:00: block 2 opens at 14:00; 1000 read -> 300 / 1e6
        assistant("m_b3", "r_b3", "2025-11-20T14:00:00.001Z", cache_read=1000),
        # 11 h later: block 3 at 01:00 (the gap 19:00-01:00 is not a block); 20 out -> 500
        assistant("m_b4", "r_b4", "2025-11-21T01:00:00.002Z", model=OPUS, output_tokens=20),
        # 2.5 h into block 3; 10 in -> 10 / 1e6
        assistant("m_b5", "r_b5", "2025-11-21T03:30:00.000Z", model=HAIKU, input_tokens=10),
    ]


def block(start: str, end: str, actual_end: str, **fields: Any) -> dict[str, Any]:
    tokens = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_tokens": 0,
        "cache_read_tokens": 0,
    }
    tokens.update({k: v for k, v in fields.items() if k in tokens})
    return {
        "start": start,
        "end": end,
        "actual_end": actual_end,
        "is_active": False,
        "entries": fields["entries"],
        **tokens,
        "total_tokens": sum(tokens.values()),
        "cost_usd": approx(fields["cost_usd"]),
        "models": fields["models"],
        "burn_rate_tokens_per_minute": None,
        "projected_total_tokens": None,
    }


BLOCK_1 = block(
    "2025-11-20T09:00:00Z",
    "2025-11-20T14:00:00Z",
    "2025-11-20T14:00:00Z",
    entries=2,
    input_tokens=100,
    output_tokens=50,
    cost_usd=(300 + 750) / 1e6,
    models=[SONNET],
)
BLOCK_2 = block(
    "2025-11-20T14:00:00Z",
    "2025-11-20T19:00:00Z",
    "2025-11-20T14:00:00.001Z",
    entries=1,
    cache_read_tokens=1000,
    cost_usd=300 / 1e6,
    models=[SONNET],
)
BLOCK_3 = block(
    "2025-11-21T01:00:00Z",
    "2025-11-21T06:00:00Z",
    "2025-11-21T03:30:00Z",
    entries=2,
    input_tokens=10,
    output_tokens=20,
    cost_usd=(500 + 10) / 1e6,
    models=[HAIKU, OPUS],
)


async def test_blocks_are_listed_oldest_first_without_gaps(running: RunningDaemon) -> None:
    """/blocks lists the three 5-hour blocks in order, with the strict > 5 h boundaries."""
    write_lines(running.projects / "-home-dev-api" / "s1.jsonl", block_lines())
    await running.wait_for(lambda s: s["ingest"]["responses"] == 5)
    assert (await running.get("/blocks")) == {"blocks": [BLOCK_1, BLOCK_2, BLOCK_3]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # since/until filter on the block's start: since inclusive, until exclusive
        ("since=2025-11-20T10:00:00Z", [BLOCK_2, BLOCK_3]),
        ("since=2025-11-20T14:00:00Z", [BLOCK_2, BLOCK_3]),
        ("since=2025-11-21", [BLOCK_3]),
        ("since=20251121", [BLOCK_3]),  # ccusage's YYYYMMDD
        ("until=2025-11-21", [BLOCK_1, BLOCK_2, BLOCK_3]),  # a date includes its whole day
        ("until=2025-11-20", [BLOCK_1, BLOCK_2]),
        ("until=2025-11-21T01:00:00Z", [BLOCK_1, BLOCK_2]),
        ("until=2025-11-21T01:00:00.001Z", [BLOCK_1, BLOCK_2, BLOCK_3]),
        ("since=2025-11-20T12:00:00%2B00:00&until=2025-11-20T15:00:00Z", [BLOCK_2]),
        # a zone offset: 15:00+02:00 is 13:00Z, after block 1's start
        ("since=2025-11-20T15:00:00%2B02:00", [BLOCK_2, BLOCK_3]),
        # limit keeps the newest, still listed oldest first
        ("limit=1", [BLOCK_3]),
        ("limit=2", [BLOCK_2, BLOCK_3]),
        ("limit=10", [BLOCK_1, BLOCK_2, BLOCK_3]),
        ("until=2025-11-21&limit=1", [BLOCK_3]),
        ("until=2025-11-20&limit=1", [BLOCK_2]),
        ("since=2026-01-01", []),
    ],
)
async def test_blocks_filters(
    running: RunningDaemon, query: str, expected: list[dict[str, Any]]
) -> None:
    """since, until and limit choose blocks by their start."""
    write_lines(running.projects / "-home-dev-api" / "s1.jsonl", block_lines())
    await running.wait_for(lambda s: s["ingest"]["responses"] == 5)
    assert (await running.get(f"/blocks?{query}")) == {"blocks": expected}


async def test_active_block_has_burn_rate_and_projection(
    running: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the active block gets a burn rate and a projection to its end."""
    lines = block_lines()
    write_lines(running.projects / "-home-dev-api" / "s1.jsonl", lines)
    await running.wait_for(lambda s: s["ingest"]["responses"] == 5)
    # now 04:00: block 3 (01:00-06:00, last response 03:30) is active
    fix_now(monkeypatch, "2025-11-21T04:00:00+00:00")
    blocks = (await running.get("/blocks"))["blocks"]
    assert blocks[:2] == [BLOCK_1, BLOCK_2]
    # 30 tokens over 01:00:00.002 .. 03:30:00.000 = 149.99996667 minutes
    minutes = (ms("2025-11-21T03:30:00+00:00") - ms("2025-11-21T01:00:00.002+00:00")) / 60_000
    rate = 30 / minutes
    assert blocks[2] == {
        **BLOCK_3,
        "is_active": True,
        "burn_rate_tokens_per_minute": round(rate, 3),  # 0.2
        # 30 + rate * (06:00 - 04:00 = 120 min) = 30 + 24.0000053 -> 54
        "projected_total_tokens": round(30 + rate * 120),
    }
    assert blocks[2]["projected_total_tokens"] == 54
    stats = await running.get("/stats")
    assert stats["current_window"] == blocks[2]
    assert stats["time_until_reset_human"] == "2h 0m remaining"


# -- /daily ---------------------------------------------------------------------

# Four responses around midnight, placed to fall on different days per zone.
# 2025-11-20: New York is UTC-5 (EST), Kolkata +5:30, Kathmandu +5:45.
#  A 04:30Z sonnet  in 1000 out 200   = 1200 tok, 3000+3000       = 6000 / 1e6
#     NY 19th 23:30 | Kolkata 20th 10:00 | Kathmandu 20th 10:15
#  B 18:20Z opus    in 2000 out 100   = 2100 tok, 10000+2500      = 12500 / 1e6
#     NY 20th 13:20 | Kolkata 20th 23:50 | Kathmandu 21st 00:05
#  C 18:40Z sonnet  cw 4000 out 300   = 4300 tok, 15000+4500      = 19500 / 1e6
#     NY 20th 13:40 | Kolkata 21st 00:10 | Kathmandu 21st 00:25
#  D 21st 00:30Z haiku  cr 50000 out 1000 = 51000 tok, 5000+5000 = 10000 / 1e6
#     NY 20th 19:30 | Kolkata 21st 06:00 | Kathmandu 21st 06:15
RESP = {
    "A": (1200, 6000 / 1e6),
    "B": (2100, 12500 / 1e6),
    "C": (4300, 19500 / 1e6),
    "D": (51000, 10000 / 1e6),
}


def day_lines() -> dict[str, list[dict[str, Any]]]:
    api_cwd, web_cwd = "/home/dev/api", "/home/dev/web"
    return {
        "-home-dev-api/sa.jsonl": [
            assistant(
                "m_A",
                "r_A",
                "2025-11-20T04:30:00.000Z",
                input_tokens=1000,
                output_tokens=200,
                session="sa",
                cwd=api_cwd,
            ),
            # B is streamed as two lines: only the larger (final) one counts
            assistant(
                "m_B",
                "r_B",
                "2025-11-20T18:19:59.000Z",
                model=OPUS,
                input_tokens=2000,
                output_tokens=1,
                session="sa",
                cwd=api_cwd,
            ),
            assistant(
                "m_B",
                "r_B",
                "2025-11-20T18:20:00.000Z",
                model=OPUS,
                input_tokens=2000,
                output_tokens=100,
                session="sa",
                cwd=api_cwd,
            ),
        ],
        "-home-dev-web/sb.jsonl": [
            assistant(
                "m_C",
                "r_C",
                "2025-11-20T18:40:00.000Z",
                cache_creation=4000,
                output_tokens=300,
                session="sb",
                cwd=web_cwd,
            ),
            assistant(
                "m_D",
                "r_D",
                "2025-11-21T00:30:00.000Z",
                model=HAIKU,
                cache_read=50000,
                output_tokens=1000,
                session="sb",
                cwd=web_cwd,
            ),
        ],
    }


async def write_days(running: RunningDaemon) -> None:
    for name, lines in day_lines().items():
        write_lines(running.projects / name, lines)
    await running.wait_for(lambda s: s["ingest"]["responses"] == 4)


def day_summary(days: list[dict[str, Any]]) -> dict[str, tuple[int, int, float]]:
    return {d["date"]: (d["entries"], d["total_tokens"], d["cost_usd"]) for d in days}


def expect(groups: dict[str, str]) -> dict[str, tuple[int, int, Any]]:
    return {
        day: (
            len(names),
            sum(RESP[n][0] for n in names),
            approx(sum(RESP[n][1] for n in names)),
        )
        for day, names in groups.items()
    }


@pytest.mark.parametrize(
    ("tz", "groups"),
    [
        ("UTC", {"2025-11-20": "ABC", "2025-11-21": "D"}),
        ("America/New_York", {"2025-11-19": "A", "2025-11-20": "BCD"}),
        ("Asia/Kolkata", {"2025-11-20": "AB", "2025-11-21": "CD"}),
        ("Asia/Kathmandu", {"2025-11-20": "A", "2025-11-21": "BCD"}),
    ],
)
async def test_daily_buckets_by_the_zone_asked_for(
    running: RunningDaemon, tz: str, groups: dict[str, str]
) -> None:
    """Each response lands on its calendar date in the zone of ?tz=, half-hour offsets included."""
    await write_days(running)
    body = await running.get(f"/daily?tz={tz}")
    assert body["timezone"] == tz
    assert day_summary(body["days"]) == expect(groups)
    # the totals do not depend on the zone: 1200+2100+4300+51000 = 58600
    assert body["totals"] == {
        "entries": 4,
        "input_tokens": 1000 + 2000,
        "output_tokens": 200 + 100 + 300 + 1000,
        "cache_creation_tokens": 4000,
        "cache_read_tokens": 50000,
        "total_tokens": 58600,
        "cost_usd": approx((6000 + 12500 + 19500 + 10000) / 1e6),
        "models": sorted([HAIKU, OPUS, SONNET]),
        "unpriced_models": [],
    }


async def test_daily_rows_have_model_breakdowns(running: RunningDaemon) -> None:
    """A day row sums its models and breaks them down one by one."""
    await write_days(running)
    body = await running.get("/daily")  # the daemon's zone: UTC
    assert body["timezone"] == "UTC"
    first = body["days"][0]
    assert first == {
        "date": "2025-11-20",
        "entries": 3,  # A, B, C
        "input_tokens": 3000,  # 1000 + 2000
        "output_tokens": 600,  # 200 + 100 + 300
        "cache_creation_tokens": 4000,
        "cache_read_tokens": 0,
        "total_tokens": 7600,  # 1200 + 2100 + 4300
        "cost_usd": approx(38000 / 1e6),  # 6000 + 12500 + 19500
        "models": [OPUS, SONNET],
        "unpriced_models": [],
        "model_breakdowns": [
            {
                "model": OPUS,
                "entries": 1,
                "input_tokens": 2000,
                "output_tokens": 100,
                "cache_creation_tokens": 0,
                "cache_read_tokens": 0,
                "total_tokens": 2100,
                "cost_usd": approx(12500 / 1e6),
            },
            {
                "model": SONNET,
                "entries": 2,  # A + C
                "input_tokens": 1000,
                "output_tokens": 500,  # 200 + 300
                "cache_creation_tokens": 4000,
                "cache_read_tokens": 0,
                "total_tokens": 5500,  # 1200 + 4300
                "cost_usd": approx(25500 / 1e6),  # 6000 + 19500
            },
        ],
    }
    assert [b["model"] for b in body["days"][1]["model_breakdowns"]] == [HAIKU]


@pytest.mark.parametrize(
    ("query", "groups"),
    [
        ("tz=UTC&since=2025-11-21", {"2025-11-21": "D"}),
        ("tz=UTC&until=2025-11-20", {"2025-11-20": "ABC"}),
        ("tz=Asia/Kolkata&since=2025-11-21", {"2025-11-21": "CD"}),
        ("tz=Asia/Kathmandu&until=2025-11-20", {"2025-11-20": "A"}),
        ("tz=America/New_York&since=2025-11-20&until=2025-11-20", {"2025-11-20": "BCD"}),
        ("tz=America/New_York&since=20251119&until=20251119", {"2025-11-19": "A"}),
        ("tz=UTC&since=2025-11-22", {}),
    ],
)
async def test_daily_since_until_are_local_dates(
    running: RunningDaemon, query: str, groups: dict[str, str]
) -> None:
    """since and until are inclusive dates in the chosen zone; totals cover only them."""
    await write_days(running)
    body = await running.get(f"/daily?{query}")
    assert day_summary(body["days"]) == expect(groups)
    names = "".join(groups.values())
    assert body["totals"]["entries"] == len(names)
    assert body["totals"]["total_tokens"] == sum(RESP[n][0] for n in names)


async def test_daily_follows_daylight_saving_changes(running: RunningDaemon) -> None:
    """New York days are cut at local midnight on both sides of the November clock change."""
    write_lines(
        running.projects / "-home-dev-api" / "s1.jsonl",
        [
            # 04:30Z on Nov 2 is 00:30 EDT (UTC-4), the day the clocks go back
            assistant("m_d1", "r_d1", "2025-11-02T04:30:00.000Z", input_tokens=1),
            # 04:30Z on Nov 3 is 23:30 EST (UTC-5), still Nov 2: a fixed offset would say Nov 3
            assistant("m_d2", "r_d2", "2025-11-03T04:30:00.000Z", input_tokens=10),
            # 05:00Z on Nov 3 is 00:00 EST: Nov 3
            assistant("m_d3", "r_d3", "2025-11-03T05:00:00.000Z", input_tokens=100),
        ],
    )
    await running.wait_for(lambda s: s["ingest"]["responses"] == 3)
    body = await running.get("/daily?tz=America/New_York")
    assert [(d["date"], d["input_tokens"]) for d in body["days"]] == [
        ("2025-11-02", 1 + 10),
        ("2025-11-03", 100),
    ]
    body = await running.get("/daily?tz=America/New_York&since=2025-11-03")
    assert [(d["date"], d["input_tokens"]) for d in body["days"]] == [("2025-11-03", 100)]


async def test_daemon_zone_is_the_default_for_daily_and_today(
    claude_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --tz Asia/Kathmandu, /daily without ?tz= and /stats today use that zone."""
    for name, lines in day_lines().items():
        write_lines(claude_root / "projects" / name, lines)
    db = tmp_path / "data" / "usage.sqlite3"
    async with daemon_on(claude_root, db, tz="Asia/Kathmandu") as rd:
        body = await rd.get("/daily")
        assert body["timezone"] == "Asia/Kathmandu"
        assert day_summary(body["days"]) == expect({"2025-11-20": "A", "2025-11-21": "BCD"})
        # 2025-11-21T00:00Z is 05:45 on the 21st in Kathmandu (still the 20th in UTC)
        fix_now(monkeypatch, "2025-11-21T00:00:00+00:00")
        today = (await rd.get("/stats"))["today"]
        # B + C + D = 2100 + 4300 + 51000
        assert (today["date"], today["entries"], today["total_tokens"]) == (
            "2025-11-21",
            3,
            57400,
        )


# -- /sessions and /projects -------------------------------------------------------


def keyed(name: str, value: str, **fields: Any) -> dict[str, Any]:
    return {name: value, **fields}


async def test_sessions_and_projects(running: RunningDaemon) -> None:
    """Sessions and projects carry their totals, models and first/last times, latest first."""
    await write_days(running)
    sb_fields = {
        "first_at": "2025-11-20T18:40:00Z",  # C
        "last_at": "2025-11-21T00:30:00Z",  # D
        "entries": 2,
        "input_tokens": 0,
        "output_tokens": 1300,  # 300 + 1000
        "cache_creation_tokens": 4000,
        "cache_read_tokens": 50000,
        "total_tokens": 55300,  # 4300 + 51000
        "cost_usd": approx(29500 / 1e6),  # 19500 + 10000
        "models": [HAIKU, SONNET],
        "unpriced_models": [],
    }
    sa_fields = {
        "first_at": "2025-11-20T04:30:00Z",  # A
        "last_at": "2025-11-20T18:20:00Z",  # B, the final line's time
        "entries": 2,
        "input_tokens": 3000,  # 1000 + 2000
        "output_tokens": 300,  # 200 + 100
        "cache_creation_tokens": 0,
        "cache_read_tokens": 0,
        "total_tokens": 3300,  # 1200 + 2100
        "cost_usd": approx(18500 / 1e6),  # 6000 + 12500
        "models": [OPUS, SONNET],
        "unpriced_models": [],
    }
    sessions = (await running.get("/sessions"))["sessions"]
    assert [{k: v for k, v in s.items() if k != "model_breakdowns"} for s in sessions] == [
        {
            "session_id": "sb",
            "project": "/home/dev/web",
            "projects": ["/home/dev/web"],
            **sb_fields,
        },
        {
            "session_id": "sa",
            "project": "/home/dev/api",
            "projects": ["/home/dev/api"],
            **sa_fields,
        },
    ]
    assert [(b["model"], b["total_tokens"]) for b in sessions[0]["model_breakdowns"]] == [
        (HAIKU, 51000),
        (SONNET, 4300),
    ]
    only_api = (await running.get("/sessions?project=/home/dev/api"))["sessions"]
    assert [s["session_id"] for s in only_api] == ["sa"]

    projects = (await running.get("/projects"))["projects"]
    assert [{k: v for k, v in p.items() if k != "model_breakdowns"} for p in projects] == [
        {"project": "/home/dev/web", **sb_fields},
        {"project": "/home/dev/api", **sa_fields},
    ]
    assert [(b["model"], b["total_tokens"]) for b in projects[1]["model_breakdowns"]] == [
        (OPUS, 2100),
        (SONNET, 1200),
    ]


# -- /health and the seed's paths -----------------------------------------------


async def test_a_failing_database_write_is_reported_and_retried_without_loss(
    running: RunningDaemon,
) -> None:
    """A write that fails shows in /health; once writes work again nothing is lost."""
    import sqlite3

    other = sqlite3.connect(running.db, isolation_level=None)
    other.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON responses "
        "BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END"
    )
    path = running.projects / "-p" / "s.jsonl"
    write_lines(path, [assistant("m_f", "r_f", "2025-11-20T10:00:00.000Z", input_tokens=21)])
    for _ in range(500):
        health = await running.get("/health")
        if health["database"]["state"] == "error":
            break
        await asyncio.sleep(0.01)
    assert health["database"]["state"] == "error"
    assert "simulated write failure" in health["database"]["error"]
    assert (await running.get("/stats"))["total_tokens"] == 0
    other.execute("DROP TRIGGER fail")
    other.close()
    # the supervisor retries after 1 s: the line is counted once, the error cleared
    await running.wait_for(lambda s: s["total_tokens"] == 21)
    health = await running.get("/health")
    assert health["database"]["state"] == "ok"
    assert (await running.get("/stats"))["ingest"]["responses"] == 1


async def test_health_reports_catch_up_database_and_watcher(running: RunningDaemon) -> None:
    """/health answers 200 with caught_up, the database and the watched tree."""
    health = await running.get("/health")
    assert health["status"] == "ok"
    assert health["caught_up"] is True
    assert health["database"] == {"path": str(running.db), "state": "ok", "error": None}
    assert health["watcher"] == {
        "state": "running",
        "watched": [str(running.projects)],
        "error": None,
    }
    await stop_watcher(running)  # and /health says so


async def test_seed_stats_path_answers_as_stats(
    running: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /app/claude-usage/stats/ returns exactly what /stats returns."""
    current, old = window_lines()
    write_lines(running.projects / "-home-dev-api" / "s1.jsonl", current + old)
    fix_now(monkeypatch, "2026-11-20T13:00:00+00:00")
    stats = await running.wait_for(lambda s: s["ingest"]["responses"] == 3)
    seed = await running.get("/app/claude-usage/stats/")
    assert seed == stats
    assert (seed["current_window_tokens"], seed["time_until_reset_human"]) == (
        12000,
        "2h 0m remaining",
    )


@pytest.mark.parametrize("path", ["/refresh", "/app/claude-usage/refresh/"])
async def test_refresh_catches_up_before_answering(running: RunningDaemon, path: str) -> None:
    """With the watcher stopped, a POST to refresh answers only once the new line is counted."""
    await stop_watcher(running)
    write_lines(
        running.projects / "-home-dev-api" / "s1.jsonl",
        [assistant("m_r", "r_r", "2025-11-20T09:00:00.000Z", input_tokens=123)],
    )
    async with running.http.post(running.url + path) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "caught_up": True}
    # read once, no polling: the refresh already counted it
    stats = await running.get("/stats")
    assert (stats["total_tokens"], stats["ingest"]["responses"]) == (123, 1)


# -- bad parameters -------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("/blocks?since=yesterday", "since"),
        ("/blocks?since=2025-13-01", "since"),
        ("/blocks?until=2025-11-20T25:00:00Z", "until"),
        ("/blocks?limit=0", "limit"),
        ("/blocks?limit=-1", "limit"),
        ("/blocks?limit=ten", "limit"),
        ("/blocks?limit=1.5", "limit"),
        ("/blocks?limit=%EF%BC%95", "limit"),  # a fullwidth 5
        ("/daily?since=2025-11-31", "since"),
        ("/daily?until=tomorrow", "until"),
        ("/daily?since=2025-11-20T10:00:00Z", "since"),
        ("/daily?tz=Mars/Olympus_Mons", "tz"),
        ("/daily?tz=../../etc/passwd", "tz"),
        ("/daily?tz=UTC&until=20251340", "until"),
    ],
)
async def test_bad_parameters_get_400_naming_them(
    running: RunningDaemon, query: str, parameter: str
) -> None:
    """A bad since/until/limit/tz is answered 400 with a JSON error naming the parameter."""
    async with running.http.get(running.url + query) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body["parameter"] == parameter
    assert parameter in body["error"]


# -- prices ---------------------------------------------------------------------


def unknown_lines() -> list[dict[str, Any]]:
    return [
        # sonnet, 1000 in -> 3000 / 1e6
        assistant("m_k", "r_k", "2025-11-20T09:00:00.000Z", input_tokens=1000),
        # unknown model on the same day: 500 + 500 tokens, no price
        assistant(
            "m_u1",
            "r_u1",
            "2025-11-20T09:30:00.000Z",
            model=UNKNOWN,
            input_tokens=500,
            output_tokens=500,
        ),
        # unknown model alone on the 22nd: 7 tokens, no price
        assistant("m_u2", "r_u2", "2025-11-22T09:30:00.000Z", model=UNKNOWN, output_tokens=7),
    ]


async def test_unknown_model_counts_tokens_without_a_cost(running: RunningDaemon) -> None:
    """An unpriced model has its tokens counted, cost null, and is named in unpriced_models."""
    write_lines(running.projects / "-home-dev-api" / "s1.jsonl", unknown_lines())
    stats = await running.wait_for(lambda s: s["ingest"]["responses"] == 3)
    assert stats["total_tokens"] == 1000 + 1000 + 7
    assert stats["total_cost_usd"] == approx(0.003)  # the priced part only
    assert stats["unpriced_models"] == [UNKNOWN]

    days = (await running.get("/daily?tz=UTC"))["days"]
    assert [(d["date"], d["total_tokens"], d["cost_usd"]) for d in days] == [
        ("2025-11-20", 2000, approx(0.003)),
        ("2025-11-22", 7, None),  # nothing priced that day: unknown, not 0
    ]
    assert days[0]["unpriced_models"] == [UNKNOWN]
    breakdown = {
        b["model"]: (b["total_tokens"], b["cost_usd"]) for b in days[0]["model_breakdowns"]
    }
    assert breakdown == {SONNET: (1000, approx(0.003)), UNKNOWN: (1000, None)}

    blocks = (await running.get("/blocks"))["blocks"]
    assert [(b["total_tokens"], b["cost_usd"], b["models"]) for b in blocks] == [
        (2000, approx(0.003), [UNKNOWN, SONNET]),  # sorted by name
        (7, None, [UNKNOWN]),
    ]
    (session,) = (await running.get("/sessions"))["sessions"]
    assert (session["total_tokens"], session["unpriced_models"]) == (2007, [UNKNOWN])


def price_file(path: Path, sonnet_input: float, with_unknown: bool) -> Path:
    models: list[dict[str, Any]] = [
        {
            "ids": ["claude-sonnet-4-5"],
            "rows": [
                {
                    "input": sonnet_input,
                    "output": 100,
                    "cache_write_5m": 1,
                    "cache_write_1h": 1,
                    "cache_read": 1,
                }
            ],
        }
    ]
    if with_unknown:
        models.append(
            {
                "ids": ["claude-nova-1"],
                "rows": [
                    {
                        "input": 2,
                        "output": 4,
                        "cache_write_5m": 2,
                        "cache_write_1h": 2,
                        "cache_read": 2,
                    }
                ],
            }
        )
    path.write_text(json.dumps({"version": "test", "models": models}))
    return path


async def test_price_override_file_changes_costs_and_is_reapplied(
    claude_root: Path, tmp_path: Path
) -> None:
    """--prices overrides and adds prices; a changed file reprices the stored history."""
    write_lines(claude_root / "projects" / "-home-dev-api" / "s1.jsonl", unknown_lines())
    db = tmp_path / "data" / "usage.sqlite3"
    prices = tmp_path / "prices.json"

    # run 1: sonnet input at 10 -> 1000*10 = 10000; nova 500*2 + 500*4 = 3000, 7*4 = 28
    async with daemon_on(claude_root, db, prices=price_file(prices, 10, True)) as rd:
        stats = await rd.get("/stats")
        assert stats["total_cost_usd"] == approx((10000 + 3000 + 28) / 1e6)
        assert stats["unpriced_models"] == []
        days = (await rd.get("/daily"))["days"]
        assert [d["cost_usd"] for d in days] == [approx(13000 / 1e6), approx(28 / 1e6)]

    # run 2, same database, the file now says 20 and drops nova: 1000*20 = 20000
    async with daemon_on(claude_root, db, prices=price_file(prices, 20, False)) as rd:
        stats = await rd.get("/stats")
        assert stats["ingest"]["responses"] == 3  # not re-read, repriced
        assert stats["total_cost_usd"] == approx(20000 / 1e6)
        assert stats["unpriced_models"] == [UNKNOWN]
        days = (await rd.get("/daily"))["days"]
        assert [d["cost_usd"] for d in days] == [approx(20000 / 1e6), None]
        blocks = (await rd.get("/blocks"))["blocks"]
        assert [b["cost_usd"] for b in blocks] == [approx(20000 / 1e6), None]

    # run 3 without the file: the packaged 3 per million again -> 3000
    async with daemon_on(claude_root, db) as rd:
        stats = await rd.get("/stats")
        assert stats["total_cost_usd"] == approx(3000 / 1e6)
        (session,) = (await rd.get("/sessions"))["sessions"]
        assert session["cost_usd"] == approx(3000 / 1e6)


async def test_stats_today_follows_the_tz_parameter(
    running: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`/stats?tz=` puts `today` on that zone's calendar; a bad zone is a 400."""
    fix_now(monkeypatch, "2026-11-26T16:00:00+00:00")  # 2026-11-27 01:00 in Tokyo
    write_lines(
        running.projects / "-home-dev-api" / "s1.jsonl",
        [
            # 2026-11-26 in UTC and 2026-11-27 in Tokyo (+9): 70 tokens
            assistant("m_t", "r_t", "2026-11-26T15:30:00.000Z", input_tokens=70),
            # 2026-11-26 in both zones (10:00 UTC = 19:00 Tokyo): 5 tokens
            assistant("m_u", "r_u", "2026-11-26T10:00:00.000Z", input_tokens=5),
        ],
    )
    await running.wait_for(lambda s: s["total_tokens"] == 75)
    utc = (await running.get("/stats"))["today"]
    assert (utc["date"], utc["total_tokens"]) == ("2026-11-26", 75)
    tokyo = (await running.get("/stats?tz=Asia/Tokyo"))["today"]
    assert (tokyo["date"], tokyo["total_tokens"]) == ("2026-11-27", 70)
    bad = await running.get("/stats?tz=Mars/Olympus", status=400)
    assert bad["parameter"] == "tz"


async def test_a_session_that_moves_between_folders_is_found_under_each(
    running: RunningDaemon,
) -> None:
    """`/sessions?project=` finds a session by any folder it worked in, with that usage."""
    write_lines(
        running.projects / "-home-dev-api" / "s1.jsonl",
        [
            assistant("m1", "r1", "2025-11-20T10:00:00.000Z", input_tokens=10, cwd="/repo"),
            assistant("m2", "r2", "2025-11-20T10:05:00.000Z", input_tokens=20, cwd="/repo/app"),
            assistant("m3", "r3", "2025-11-20T10:10:00.000Z", input_tokens=40, cwd="/repo/app"),
        ],
    )
    await running.wait_for(lambda s: s["total_tokens"] == 70)
    (whole,) = (await running.get("/sessions"))["sessions"]
    # 10 + 20 + 40 = 70; first folder /repo
    assert (whole["project"], whole["projects"], whole["total_tokens"]) == (
        "/repo",
        ["/repo", "/repo/app"],
        70,
    )
    (in_app,) = (await running.get("/sessions?project=/repo/app"))["sessions"]
    # only its usage in /repo/app: 20 + 40 = 60, first there at 10:05
    assert (in_app["session_id"], in_app["total_tokens"], in_app["first_at"]) == (
        "s1",
        60,
        "2025-11-20T10:05:00Z",
    )
    projects = {
        p["project"]: p["total_tokens"] for p in (await running.get("/projects"))["projects"]
    }
    assert projects == {"/repo": 10, "/repo/app": 60}


async def test_unknown_paths_and_methods_answer_json(running: RunningDaemon) -> None:
    """A 404 or 405 is JSON with the reason and the path, like every other answer."""
    assert await running.get("/nope", status=404) == {"error": "Not Found", "path": "/nope"}
    async with running.http.put(running.url + "/stats") as resp:
        assert resp.status == 405
        assert await resp.json() == {"error": "Method Not Allowed", "path": "/stats"}


async def test_times_outside_1970_to_2199_are_skipped_and_every_endpoint_answers(
    running: RunningDaemon,
) -> None:
    """Year 1 or 9999 cannot be a day or a block in every zone: such a line is a
    bad_timestamp, and no endpoint fails for the lines that count (1970 is kept)."""
    stamps = [
        "0001-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
        "1969-12-31T23:59:59.999Z",
        "2200-01-01T00:00:00.000Z",
        "0001-01-01T00:00:00+14:00",
        "1970-01-01T00:00:00.000Z",
        "2199-12-31T23:59:59.999Z",
        "2025-11-20T10:00:00.000Z",
    ]
    lines = [assistant(f"m{i}", "r", ts, input_tokens=1) for i, ts in enumerate(stamps)]
    write_lines(running.projects / "-p" / "s.jsonl", lines)
    await running.refresh()
    stats = await running.get("/stats")
    assert (stats["total_tokens"], stats["ingest"]["skipped_lines"]) == (3, 5)
    for zone in ("UTC", "Pacific/Kiritimati", "Etc/GMT%2B12", "Asia/Kathmandu"):
        days = (await running.get(f"/daily?tz={zone}"))["days"]
        assert sum(d["input_tokens"] for d in days) == 3, zone
        await running.get(f"/stats?tz={zone}")
    blocks = (await running.get("/blocks"))["blocks"]
    assert [b["start"] for b in blocks] == [
        "1970-01-01T00:00:00Z",
        "2025-11-20T10:00:00Z",
        "2199-12-31T23:00:00Z",
    ]
    for path in ("/sessions", "/projects"):
        await running.get(path)


async def test_a_limit_larger_than_any_history_means_all(running: RunningDaemon) -> None:
    """Past 2**63 a number is no SQLite integer: it is taken as "every block", not a 500."""
    write_lines(
        running.projects / "-p" / "s.jsonl",
        [assistant("m1", "r1", "2025-11-20T10:00:00.000Z", input_tokens=1)],
    )
    await running.refresh()
    for limit in ("9223372036854775808", "9" * 40):
        blocks = (await running.get(f"/blocks?limit={limit}"))["blocks"]
        assert [b["entries"] for b in blocks] == [1]
