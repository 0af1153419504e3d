"""Reading many files at once: threads with the C scanner, same results as one by one."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncGenerator
from concurrent.futures import Executor
from pathlib import Path

import pytest

from claude_usaged import fastpath, reading
from claude_usaged.tailer import Cursor, TailResult, read_new

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from corpus import generate

needs_ext = pytest.mark.skipif(
    not fastpath.available(), reason="claude_usaged._fastscan is not built (no compiler?)"
)


def corpus(tmp: Path) -> list[str]:
    generate(tmp, size_mb=3, seed=5)
    return sorted(str(p) for p in tmp.glob("projects/**/*.jsonl"))


async def collect(paths: list[str]) -> dict[str, reading.ReadOutcome]:
    return {path: outcome async for path, outcome in reading.read_all(paths, {})}


@needs_ext
async def test_threads_read_what_one_thread_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In parallel (threads, C scanner) every file yields what read_new alone yields."""
    monkeypatch.setattr(fastpath, "_enabled", True)  # even under CLAUDE_USAGED_PURE_PYTHON
    monkeypatch.setattr(reading, "THREAD_PARALLEL_BYTES", 0)
    monkeypatch.setattr(reading, "worker_count", lambda: 3)
    used: list[bool] = []
    real_pool = reading._pool

    def pool(workers: int, threads: bool) -> Executor:
        used.append(threads)
        return real_pool(workers, threads)

    monkeypatch.setattr(reading, "_pool", pool)
    paths = corpus(tmp_path)
    got = await collect(paths)
    assert used == [True]  # a thread pool
    assert sorted(got) == paths
    for path in paths:
        outcome = got[path]
        assert isinstance(outcome, TailResult)
        alone = read_new(path, None)
        assert outcome.parsed.records == alone.parsed.records
        assert (outcome.cursor, outcome.parsed.lines) == (alone.cursor, alone.parsed.lines)


@needs_ext
async def test_a_stop_drops_the_groups_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the reader after its first result leaves most of 30 groups unread."""
    monkeypatch.setattr(fastpath, "_enabled", True)  # threads: read_group can be patched
    paths = [str(tmp_path / f"{n}.jsonl") for n in range(30)]
    for path in paths:
        Path(path).write_bytes(b"{}\n")
    started: list[int] = []
    slow_read = reading.read_group

    def read_group(
        items: list[tuple[str, Cursor | None]],
    ) -> list[tuple[str, reading.ReadOutcome]]:
        started.append(len(items))
        time.sleep(0.05)
        return slow_read(items)

    monkeypatch.setattr(reading, "THREAD_PARALLEL_BYTES", 0)
    monkeypatch.setattr(reading, "worker_count", lambda: 2)
    monkeypatch.setattr(reading, "_groups", lambda ps, workers, per_worker: [[p] for p in ps])
    monkeypatch.setattr(reading, "read_group", read_group)
    reader = reading.read_all(paths, {})
    assert isinstance(reader, AsyncGenerator)
    await reader.__anext__()
    await reader.aclose()
    await asyncio.sleep(0.3)
    assert len(started) <= 6


def test_groups_take_big_and_small_files_in_turns() -> None:
    """Groups hold at least their share of bytes, biggest file first, and are handed out
    first, last, second, second to last: a reader on small files (GIL-bound) is paired
    with one on big files (scanning without the GIL)."""
    mb = 1 << 20
    sizes = {"huge": 40 * mb, "a": 20 * mb, "b": 12 * mb, "c": 6 * mb}
    small = {f"s{n}": mb for n in range(10)}
    # 88 MB over 2 workers x 4 groups each: at least 11 MB a group
    groups = reading._groups(sizes | small, workers=2, per_worker=4)
    # by bytes: [huge] [a] [b] [c s9 s8 s7 s6 s5] [s4 s3 s2 s1 s0] (the rest)
    rest = ["s4", "s3", "s2", "s1", "s0"]
    assert groups == [["huge"], rest, ["a"], ["c", "s9", "s8", "s7", "s6", "s5"], ["b"]]


def test_interleaved_orders_any_number_of_groups() -> None:
    assert reading._interleaved([]) == []
    assert reading._interleaved([["a"]]) == [["a"]]
    assert reading._interleaved([["a"], ["b"]]) == [["a"], ["b"]]
    five = [[str(n)] for n in range(5)]
    assert reading._interleaved(five) == [["0"], ["4"], ["1"], ["3"], ["2"]]
