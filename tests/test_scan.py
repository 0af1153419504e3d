"""A rescan's stat pass (scan.py), and the one an Ingest is given, taken ahead."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from conftest import assistant, write_lines

from claude_usaged.ingest import Ingest, catch_up
from claude_usaged.pricing import PriceTable
from claude_usaged.scan import changed_paths, list_transcripts
from claude_usaged.store import Store
from claude_usaged.tailer import read_new

TS = "2025-11-20T09:14:05.602Z"


def transcript(root: Path, name: str, tokens: int) -> str:
    path = root / "projects" / "-home-dev-api" / f"{name}.jsonl"
    write_lines(path, [assistant(name, "req_" + name, TS, input_tokens=tokens)])
    return str(path)


def test_a_listing_taken_ahead_finds_what_a_rescan_finds(tmp_path: Path) -> None:
    """New, grown, replaced, untouched, vanished and failing files: the same answer
    from stats taken now or from a listing; and a listing's stats are the ones used."""
    names = ["same", "grown", "replaced", "vanished", "failing", "new"]
    paths = dict(zip(names, (transcript(tmp_path, n, 1) for n in names), strict=True))
    cursors = {}
    for name in names[:-1]:
        result = read_new(paths[name], None)
        assert result.cursor is not None
        cursors[paths[name]] = result.cursor
    write_lines(Path(paths["grown"]), [assistant("g2", "r", TS, input_tokens=2)])
    os.replace(transcript(tmp_path, "other", 1), paths["replaced"])
    os.unlink(paths["vanished"])
    failing = {paths["failing"]}
    expected = sorted(paths[n] for n in ("grown", "replaced", "failing", "new"))
    assert sorted(changed_paths([tmp_path], cursors, failing)) == expected
    listing = list_transcripts([tmp_path])
    assert sorted(listing) == sorted(p for n, p in paths.items() if n != "vanished")
    assert sorted(changed_paths([tmp_path], cursors, failing, listing)) == expected
    # what was listed is what counts: the files, and their stats as they were then
    write_lines(Path(paths["same"]), [assistant("s2", "r", TS, input_tokens=2)])
    assert paths["same"] not in changed_paths([tmp_path], cursors, failing, listing)
    del listing[paths["new"]]
    listing[paths["vanished"]] = None  # listed, then gone before its stat
    without_new = [p for p in expected if p != paths["new"]]
    assert sorted(changed_paths([tmp_path], cursors, failing, listing)) == without_new


async def test_the_first_rescan_uses_the_listing_once(tmp_path: Path) -> None:
    """An Ingest given a listing reads the files it lists at its first rescan, and
    finds the others at the next one."""
    early = transcript(tmp_path, "early", 5)
    late = transcript(tmp_path, "late", 7)
    listing = {early: None}
    ahead: asyncio.Future[dict[str, tuple[int, int, int] | None]] = asyncio.Future()
    ahead.set_result(listing)
    store = await Store.open(tmp_path / "db.sqlite", PriceTable.load(None))
    try:
        ingest = Ingest(store, [tmp_path], ahead)
        await catch_up(ingest)
        assert set(ingest.cursors) == {early}
        await catch_up(ingest)
        assert set(ingest.cursors) == {early, late}
        assert ingest.state.bytes_read == os.path.getsize(early) + os.path.getsize(late)
    finally:
        await store.close()
