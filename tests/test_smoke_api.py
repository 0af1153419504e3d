"""The API on a real daemon over the real sample: exact known totals."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import REAL_SAMPLE, RunningDaemon, assistant, write_lines


async def test_real_sample_daily_and_blocks_match_known_totals(
    running: RunningDaemon,
) -> None:
    """The real sample's per-day and per-block totals equal expected.json."""
    shutil.copytree(REAL_SAMPLE / "projects", running.projects, dirs_exist_ok=True)
    await running.refresh()
    daily = await running.get("/daily?tz=UTC")
    got = {
        d["date"]: (
            d["input_tokens"],
            d["output_tokens"],
            d["cache_creation_tokens"],
            d["cache_read_tokens"],
            d["entries"],
        )
        for d in daily["days"]
    }
    assert got == {
        "2025-09-03": (1111, 52906, 150674, 3751073, 179),
        "2025-09-07": (129, 3629, 47747, 324259, 20),
    }
    blocks = (await running.get("/blocks"))["blocks"]
    assert [(b["start"], b["entries"], b["total_tokens"]) for b in blocks] == [
        ("2025-09-03T00:00:00Z", 179, 1111 + 52906 + 150674 + 3751073),
        ("2025-09-07T09:00:00Z", 20, 129 + 3629 + 47747 + 324259),
    ]
    stats = await running.get("/stats")
    assert stats["total_tokens"] == 3955764 + 375764
    assert stats["ingest"]["responses"] == 199
    assert stats["is_within_active_window"] is False


async def test_appended_line_becomes_visible(running: RunningDaemon) -> None:
    """A line appended to a watched file shows up in /stats without a refresh."""
    path: Path = running.projects / "-home-dev-api" / "s1.jsonl"
    write_lines(path, [assistant("m1", "r1", "2025-11-20T09:14:05.602Z", input_tokens=10)])
    stats = await running.wait_for(lambda s: s["total_tokens"] == 10)
    assert stats["ingest"]["files"] == 1
