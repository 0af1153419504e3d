"""5-hour blocks (FORMAT.md, "5-hour windows"): floor, strict `>` rules, activity, totals.

Every expected instant is written out as an ISO string and converted with
`datetime`, independently of the code under test.
"""

from __future__ import annotations

from datetime import datetime

from claude_usaged.windows import Block, BlockRow, build_blocks

H = 3_600_000  # one hour in ms


def ms(iso: str) -> int:
    """`2025-11-20T10:47:21.540Z` -> epoch ms, via datetime (not the parser)."""
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def row(iso: str, inp: int = 1) -> BlockRow:
    return (ms(iso), "m", inp, 0, 0, 0, 0.0)


def starts(blocks: list[Block]) -> list[int]:
    return [b.start_ms for b in blocks]


def test_block_starts_at_first_response_floored_to_utc_hour() -> None:
    """A block starts at its first response floored to the UTC hour and ends 5 h later."""
    (block,) = build_blocks([row("2025-11-20T10:47:21.540Z")])
    assert block.start_ms == ms("2025-11-20T10:00:00.000Z")
    assert block.end_ms == ms("2025-11-20T15:00:00.000Z")
    assert block.first_ms == block.last_ms == ms("2025-11-20T10:47:21.540Z")


def test_floor_uses_utc_not_a_half_hour_offset() -> None:
    """A time given with a +05:30 offset floors to the UTC hour (04:00Z), not 04:30Z."""
    # 10:15+05:30 == 04:45Z -> floor 04:00Z
    (block,) = build_blocks([(ms("2025-11-20T10:15:00.000+05:30"), "m", 1, 0, 0, 0, 0.0)])
    assert block.start_ms == ms("2025-11-20T04:00:00.000Z")


def test_response_exactly_5h_after_block_start_stays_in_the_block() -> None:
    """t - start == 5 h stays in the block (strict `>`); the gap is only 4.5 h here."""
    blocks = build_blocks([row("2025-11-20T10:30:00.000Z"), row("2025-11-20T15:00:00.000Z")])
    assert starts(blocks) == [ms("2025-11-20T10:00:00.000Z")]
    assert blocks[0].entries == 2


def test_response_5h_plus_1ms_after_block_start_opens_a_new_block() -> None:
    """t - start == 5 h + 1 ms opens a new block although the gap is only 4.5 h + 1 ms."""
    blocks = build_blocks([row("2025-11-20T10:30:00.000Z"), row("2025-11-20T15:00:00.001Z")])
    assert starts(blocks) == [ms("2025-11-20T10:00:00.000Z"), ms("2025-11-20T15:00:00.000Z")]
    assert [b.entries for b in blocks] == [1, 1]


def test_gap_of_exactly_5h_after_previous_response_stays_in_the_block() -> None:
    """A response exactly 5 h after the previous one (here also the block start) stays."""
    blocks = build_blocks([row("2025-11-20T10:00:00.000Z"), row("2025-11-20T15:00:00.000Z")])
    assert starts(blocks) == [ms("2025-11-20T10:00:00.000Z")]


def test_gap_of_5h_plus_1ms_opens_a_block_floored_to_its_own_hour() -> None:
    """A response 5 h + 1 ms after the previous one opens a block at its own UTC hour."""
    blocks = build_blocks([row("2025-11-20T12:34:56.789Z"), row("2025-11-20T17:34:56.790Z")])
    # second: 17:34:56.790 - 12:34:56.789 = 5 h + 1 ms -> new block floored to 17:00
    assert starts(blocks) == [ms("2025-11-20T12:00:00.000Z"), ms("2025-11-20T17:00:00.000Z")]
    assert blocks[1].first_ms == ms("2025-11-20T17:34:56.790Z")


def test_later_blocks_chain_from_each_new_start() -> None:
    """Each new block measures 5 h from its own floored start, not from the first block."""
    rows = [
        row("2025-11-20T00:10:00.000Z"),  # block A 00:00-05:00
        row("2025-11-20T04:59:00.000Z"),  # 4h49 after A start -> A
        row("2025-11-20T05:00:00.001Z"),  # 5h+1ms after A -> block B at 05:00
        row("2025-11-20T09:59:59.999Z"),  # 4h59m59.999 after B start -> B
        row("2025-11-20T10:00:00.000Z"),  # exactly 5h after B start -> B
        row("2025-11-20T10:00:00.001Z"),  # 5h+1ms after B start -> block C at 10:00
    ]
    blocks = build_blocks(rows)
    assert starts(blocks) == [
        ms("2025-11-20T00:00:00.000Z"),
        ms("2025-11-20T05:00:00.000Z"),
        ms("2025-11-20T10:00:00.000Z"),
    ]
    assert [b.entries for b in blocks] == [2, 3, 1]
    assert blocks[1].last_ms == ms("2025-11-20T10:00:00.000Z")


def test_block_is_active_until_its_end_exclusive() -> None:
    """A block is active while now < end and now - last < 5 h; at its end it is not."""
    (block,) = build_blocks([row("2025-11-20T10:20:00.000Z"), row("2025-11-20T11:00:00.000Z")])
    # end = 15:00; last = 11:00 -> the `now < end` rule decides first
    assert block.is_active(ms("2025-11-20T11:00:00.000Z"))
    assert block.is_active(ms("2025-11-20T14:59:59.999Z"))
    assert not block.is_active(ms("2025-11-20T15:00:00.000Z"))
    assert not block.is_active(ms("2025-11-21T11:00:00.000Z"))


def test_block_is_inactive_exactly_5h_after_its_last_response() -> None:
    """now - last == 5 h is inactive (strict `<`); 1 ms earlier it is active."""
    (block,) = build_blocks([row("2025-11-20T10:00:00.000Z")])
    # last = start = 10:00 -> both rules meet at 15:00
    assert block.is_active(ms("2025-11-20T14:59:59.999Z"))
    assert not block.is_active(ms("2025-11-20T15:00:00.000Z"))


def test_block_totals_sum_tokens_cost_and_count_unpriced() -> None:
    """A block sums the four token kinds and known costs, counts unpriced rows, lists models."""
    rows: list[BlockRow] = [
        (ms("2025-11-20T10:00:00.000Z"), "a", 4, 96, 2315, 18422, 0.25),
        (ms("2025-11-20T10:05:00.000Z"), "b", 10, 20, 30, 40, None),
        (ms("2025-11-20T10:10:00.000Z"), "a", 1, 2, 3, 4, 0.5),
    ]
    (block,) = build_blocks(rows)
    assert block.entries == 3
    assert block.input_tokens == 4 + 10 + 1  # 15
    assert block.output_tokens == 96 + 20 + 2  # 118
    assert block.cache_creation_tokens == 2315 + 30 + 3  # 2348
    assert block.cache_read_tokens == 18422 + 40 + 4  # 18466
    assert block.total_tokens == 15 + 118 + 2348 + 18466  # 20947
    assert block.cost_usd == 0.75
    assert block.unpriced == 1
    assert block.models == {"a", "b"}


def test_rows_continue_a_previous_block() -> None:
    """Rows passed with `previous` join it while the rules allow and return only new blocks."""
    (prev,) = build_blocks([row("2025-11-20T10:00:00.000Z", inp=5)])
    new = build_blocks(
        [row("2025-11-20T14:00:00.000Z", inp=7), row("2025-11-20T15:00:00.001Z", inp=11)],
        previous=prev,
    )
    assert prev.entries == 2 and prev.input_tokens == 5 + 7
    assert starts(new) == [ms("2025-11-20T15:00:00.000Z")]
    assert new[0].input_tokens == 11


def test_no_rows_no_blocks() -> None:
    """No responses make no blocks."""
    assert build_blocks([]) == []
