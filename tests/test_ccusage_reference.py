"""Our /daily and /blocks equal ccusage 20.0.11's, token kind by token kind.

The corpus comes from the benchmark's generator (every counting case of
FORMAT.md), without `progress` lines: ccusage's daily report counts their
embedded copies, which FORMAT.md says not to (README: where we differ). For
the blocks, `<synthetic>` lines are removed too: ccusage lets them open a
block, FORMAT.md does not. The reference build is found through CCUSAGE_BIN
(set by .ci/run), ./node_modules/.bin or PATH, and must say 20.0.11 to
`--version`; on CI a missing or other build is a failure, elsewhere a skip.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, start_daemon

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import ccusage_ref  # noqa: E402
from ccusage_ref import ccusage_problem, run_ccusage  # noqa: E402
from corpus import generate  # noqa: E402

TOKENS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
CC_TOKENS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")
CC_BLOCK_TOKENS = (
    "inputTokens",
    "outputTokens",
    "cacheCreationInputTokens",
    "cacheReadInputTokens",
)


@pytest.fixture(scope="module")
def ccusage() -> None:
    problem = ccusage_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (on CI, .ci/run should install it)")
        pytest.skip(problem)


def test_a_build_of_another_version_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ccusage whose --version is not 20.0.11 is named with its version, not used."""
    fake = tmp_path / "ccusage"
    fake.write_text("#!/bin/sh\necho 'ccusage 19.9.0'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CCUSAGE_BIN", str(fake))
    assert ccusage_problem() == (
        f"{fake} is ccusage 19.9.0, not the reference 20.0.11: "
        "set CCUSAGE_BIN to a ccusage 20.0.11 build"
    )


def test_nothing_found_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CCUSAGE_BIN, ./node_modules or PATH, the problem says where it looked."""
    monkeypatch.delenv("CCUSAGE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(ccusage_ref, "REPO_ROOT", tmp_path)
    assert ccusage_problem() == (
        "ccusage not found: set CCUSAGE_BIN, or install ccusage@20.0.11 "
        "in ./node_modules or on PATH"
    )


def _drop_synthetic(root: Path) -> int:
    dropped = 0
    for path in (root / "projects").rglob("*.jsonl"):
        lines = path.read_bytes().split(b"\n")
        kept = [line for line in lines if b'"model":"<synthetic>"' not in line]
        dropped += len(lines) - len(kept)
        path.write_bytes(b"\n".join(kept))
    return dropped


async def _ours(root: Path, db: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import aiohttp

    daemon = await start_daemon(root, db)
    assert daemon.address is not None
    try:
        async with aiohttp.ClientSession() as http:
            host, port = daemon.address
            rd = RunningDaemon(daemon, f"http://{host}:{port}", root, db, http)
            await rd.wait_for(lambda s: s["ingest"]["caught_up"], timeout=60)
            return await rd.get("/daily?tz=UTC"), await rd.get("/blocks")
    finally:
        await daemon.shutdown()


def _compare_daily(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    mine = {d["date"]: tuple(d[k] for k in TOKENS) for d in ours["days"]}
    ref = {d["date"]: tuple(d[k] for k in CC_TOKENS) for d in theirs["daily"]}
    assert len(ref) > 10
    assert mine == ref


def _compare_blocks(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    mine = [(b["start"], b["entries"], *(b[k] for k in TOKENS)) for b in ours["blocks"]]
    ref = [
        (
            b["startTime"].replace(".000Z", "Z"),
            b["entries"],
            *(b["tokenCounts"][k] for k in CC_BLOCK_TOKENS),
        )
        for b in theirs["blocks"]
        if not b["isGap"]
    ]
    assert len(ref) > 10
    assert mine == ref


@pytest.mark.parametrize("seed", [3, 11])
async def test_daily_equals_ccusage_on_a_generated_history(
    ccusage: None, tmp_path: Path, seed: int
) -> None:
    """Per UTC day, every token kind equals ccusage's on a history with every case."""
    root = tmp_path / "claude"
    info = generate(root, 6, seed, progress_lines=False)
    assert info.cases["stream_multi"] and info.cases["resumed_copied_lines"]
    assert info.cases["btw_replays"] and info.cases["no_request_id"]
    daily, _ = await _ours(root, tmp_path / "db.sqlite3")
    _compare_daily(daily, run_ccusage("daily", root))


@pytest.mark.parametrize("seed", [5, 13])
async def test_blocks_equal_ccusage_without_synthetic_lines(
    ccusage: None, tmp_path: Path, seed: int
) -> None:
    """Every 5-hour block's start, entries and token kinds equal ccusage's."""
    root = tmp_path / "claude"
    generate(root, 6, seed, progress_lines=False)
    assert _drop_synthetic(root) > 0
    daily, blocks = await _ours(root, tmp_path / "db.sqlite3")
    _compare_blocks(blocks, run_ccusage("blocks", root))
    _compare_daily(daily, run_ccusage("daily", root))
