"""The tailer on real files: partial lines, truncation, rewrites, renames, long lines."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from conftest import assistant, dumps, user, write_lines

from claude_usaged import tailer
from claude_usaged.tailer import Cursor, TailResult, read_new

TS = "2025-11-20T09:14:05.602Z"


def line(msg: str, tokens: int, ts: str = TS, **kw: object) -> str:
    """One compact assistant line (no newline) with `tokens` input tokens."""
    return dumps(assistant(msg, "req_" + msg, ts, input_tokens=tokens, **kw))  # type: ignore[arg-type]


def tokens(result: TailResult) -> list[int]:
    return [r.input_tokens for r in result.parsed.records]


def read(path: Path, cursor: Cursor | None = None, **kw: int) -> TailResult:
    return read_new(str(path), cursor, **kw)


# -- partial lines -------------------------------------------------------------------


def test_partial_last_line_is_held_back_and_counted_once_when_completed(tmp_path: Path) -> None:
    """A line without its `\\n` is not consumed; once completed it is read exactly once."""
    path = tmp_path / "s.jsonl"
    first, second = line("m1", 10), line("m2", 20)
    half = len(second) // 2
    path.write_bytes((first + "\n" + second[:half]).encode())

    r1 = read(path)
    assert tokens(r1) == [10]
    assert r1.cursor is not None and r1.cursor.offset == len(first) + 1
    assert r1.parsed.lines == 1 and not r1.parsed.skipped

    r2 = read(path, r1.cursor)  # nothing new is complete yet
    assert tokens(r2) == []
    assert r2.cursor is not None and r2.cursor.offset == len(first) + 1

    with path.open("ab") as f:
        f.write((second[half:] + "\n").encode())
    r3 = read(path, r2.cursor)
    assert r3.restarted is None
    assert tokens(r3) == [20]
    assert r3.cursor is not None and r3.cursor.offset == path.stat().st_size
    # 10 + 20: each line counted once over three reads
    assert sum(tokens(r1) + tokens(r2) + tokens(r3)) == 30


def test_partial_line_cut_inside_a_multibyte_character_completes_intact(tmp_path: Path) -> None:
    """A line cut in the middle of U+2028's UTF-8 bytes is held back and then parsed whole."""
    path = tmp_path / "s.jsonl"
    text = line("m1", 7, text="a\u2028b").encode()
    cut = text.index("\u2028".encode()) + 1  # inside the 3-byte sequence
    path.write_bytes(text[:cut])
    r1 = read(path)
    assert (tokens(r1), r1.parsed.lines) == ([], 0)
    with path.open("ab") as f:
        f.write(text[cut:] + b"\n")
    r2 = read(path, r1.cursor)
    assert tokens(r2) == [7] and not r2.parsed.skipped


def test_appended_lines_are_read_from_the_cursor_only(tmp_path: Path) -> None:
    """After a read, only lines appended since are returned; an unchanged file yields nothing."""
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1), user(TS), line("m2", 2)])
    r1 = read(path)
    assert (tokens(r1), r1.parsed.lines) == ([1, 2], 3)
    r2 = read(path, r1.cursor)
    assert (tokens(r2), r2.parsed.lines, r2.bytes_read) == ([], 0, 0)
    write_lines(path, [line("m3", 4)])
    r3 = read(path, r2.cursor)
    assert (tokens(r3), r3.parsed.lines, r3.restarted) == ([4], 1, None)


# -- truncation, rewrite, replacement ----------------------------------------------------


def test_truncated_file_is_reread_from_zero(tmp_path: Path) -> None:
    """A file that shrank below the cursor is read again from byte 0 ("truncated")."""
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1), line("m2", 2), line("m3", 4)])
    r1 = read(path)
    write_lines(path, [line("m9", 100)], mode="w")
    r2 = read(path, r1.cursor)
    assert r2.restarted == "truncated"
    assert tokens(r2) == [100]
    assert r2.cursor is not None and r2.cursor.offset == path.stat().st_size


def test_truncate_and_regrow_larger_while_stopped_is_detected(tmp_path: Path) -> None:
    """Truncated and regrown past the old offset (same inode) is noticed and read from 0."""
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1), line("m2", 2)])
    r1 = read(path)
    ino = path.stat().st_ino
    new = [line(f"n{i}", 10 * i, ts="2025-11-21T10:00:00.000Z") for i in range(1, 5)]
    write_lines(path, new, mode="w")  # open(w) truncates in place
    assert path.stat().st_ino == ino
    assert r1.cursor is not None and path.stat().st_size > r1.cursor.offset
    r2 = read(path, r1.cursor)
    assert r2.restarted == "rewritten"
    assert tokens(r2) == [10, 20, 30, 40]


def test_rewritten_to_the_same_size_is_detected(tmp_path: Path) -> None:
    """Rewritten in place to exactly the old size with other content: read again from 0."""
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1), line("m2", 2)])
    r1 = read(path)
    write_lines(path, [line("k1", 7), line("k2", 8)], mode="w")  # same lengths, other bytes
    assert r1.cursor is not None and path.stat().st_size == r1.cursor.offset
    r2 = read(path, r1.cursor)
    assert r2.restarted == "rewritten"
    assert tokens(r2) == [7, 8]


def test_regrown_file_with_the_same_first_line_is_detected_by_its_tail(tmp_path: Path) -> None:
    """Rewritten with the same first line but other lines after it: read again from 0."""
    path = tmp_path / "s.jsonl"
    head = line("m1", 1)
    write_lines(path, [head, line("m2", 2, ts="2025-11-20T09:20:00.000Z")])
    r1 = read(path)
    write_lines(
        path,
        [
            head,
            line("x2", 30, ts="2025-11-20T11:11:11.111Z"),
            line("x3", 40, ts="2025-11-20T12:12:12.222Z"),
        ],
        mode="w",
    )
    r2 = read(path, r1.cursor)
    assert r2.restarted == "rewritten"
    assert tokens(r2) == [1, 30, 40]  # the first line again: dedupe makes it count once


def test_file_replaced_by_rename_is_read_from_zero(tmp_path: Path) -> None:
    """A file replaced by a rename (new inode) is read from 0 ("replaced")."""
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1), line("m2", 2), line("m3", 3)])
    r1 = read(path)
    tmp = tmp_path / "s.jsonl.tmp"
    write_lines(tmp, [line("m1", 1), line("m2", 2), line("m3", 3), line("m4", 4)])
    os.replace(tmp, path)
    r2 = read(path, r1.cursor)
    assert r2.restarted == "replaced"
    assert tokens(r2) == [1, 2, 3, 4]


def test_deleted_and_recreated_file_is_read_from_zero(tmp_path: Path) -> None:
    """A file deleted and created again (its inode may be reused) is read from 0."""
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1), line("m2", 2)])
    r1 = read(path)
    path.unlink()
    write_lines(path, [line("z1", 50, ts="2025-11-22T00:00:00.000Z"), line("z2", 60)])
    r2 = read(path, r1.cursor)
    assert r2.restarted in ("replaced", "rewritten")
    assert tokens(r2) == [50, 60]


def test_two_files_with_the_same_first_line_are_tracked_separately(tmp_path: Path) -> None:
    """A resumed session's copy of another file's first line does not merge the two files."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    shared = line("m1", 1)
    write_lines(a, [shared, line("a2", 2)])
    write_lines(b, [shared, line("b2", 3)])
    ra, rb = read(a), read(b)
    assert (tokens(ra), tokens(rb)) == ([1, 2], [1, 3])
    write_lines(a, [line("a3", 10)])
    write_lines(b, [line("b3", 20), line("b4", 30)])
    ra2, rb2 = read(a, ra.cursor), read(b, rb.cursor)
    assert (tokens(ra2), tokens(rb2)) == ([10], [20, 30])
    assert (ra2.restarted, rb2.restarted) == (None, None)
    # one file's cursor never resumes the other, even with identical first bytes
    assert read(b, ra2.cursor).restarted == "replaced"


# -- long lines ------------------------------------------------------------------------------


def test_line_longer_than_max_line_is_skipped_in_a_small_file(tmp_path: Path) -> None:
    """With max_line=1000, a 5 KB line is skipped as line_too_long and the next line counts."""
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1), line("m2", 2, text="x" * 5000), line("m3", 3)])
    r = read(path, max_line=1000)
    assert tokens(r) == [1, 3]
    assert dict(r.parsed.skipped) == {"line_too_long": 1}


def test_line_longer_than_max_line_across_chunks_is_skipped_and_later_lines_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5 KB line spanning many 256-byte chunks is skipped; the lines after it count."""
    monkeypatch.setattr(tailer, "CHUNK_BYTES", 256)
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1), line("m2", 2, text="x" * 5000), line("m3", 3), line("m4", 4)])
    r = read(path, max_line=1000)
    assert tokens(r) == [1, 3, 4]
    assert dict(r.parsed.skipped) == {"line_too_long": 1}
    assert (r.long_lines, r.parsed.lines) == (1, 4)
    assert r.cursor is not None and r.cursor.offset == path.stat().st_size
    again = read(path, r.cursor, max_line=1000)  # the cursor is past the long line
    assert (tokens(again), dict(again.parsed.skipped)) == ([], {})


def test_long_line_still_being_written_is_skipped_once_when_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An over-long unfinished line holds the cursor; when finished it is skipped once."""
    monkeypatch.setattr(tailer, "CHUNK_BYTES", 256)
    path = tmp_path / "s.jsonl"
    long = line("m2", 2, text="y" * 5000)
    path.write_text(line("m1", 1) + "\n" + long[:3000])
    r1 = read(path, max_line=1000)
    assert (tokens(r1), dict(r1.parsed.skipped)) == ([1], {})
    assert r1.cursor is not None and r1.cursor.offset == len(line("m1", 1)) + 1
    with path.open("a") as f:
        f.write(long[3000:] + "\n" + line("m3", 3) + "\n")
    r2 = read(path, r1.cursor, max_line=1000)
    assert tokens(r2) == [3]
    assert dict(r2.parsed.skipped) == {"line_too_long": 1}


def sample_file(path: Path) -> None:
    """Short and long lines of several kinds, some with U+2028, one corrupt."""
    write_lines(
        path,
        [
            line("m1", 1, text="a\u2028b"),
            user(TS, text="u" * 3000),
            line("m2", 2, text="x" * 3000),
            line("m3", 3),
            '{"type":"assistant","message":{"usage":{"input_tokens":',
            "",
            line("m4", 4, text="\u2028" * 500),
            line("m5", 5),
        ],
    )


@pytest.mark.parametrize("chunk", [7, 64, 257, 4096])
def test_chunk_boundaries_anywhere_yield_the_same_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Reading with tiny chunks that cut lines anywhere yields the same records and offset."""
    path = tmp_path / "s.jsonl"
    sample_file(path)
    whole = read(path, max_line=1000)
    monkeypatch.setattr(tailer, "CHUNK_BYTES", chunk)
    pieces = read(path, max_line=1000)
    assert tokens(whole) == tokens(pieces) == [1, 3, 5]  # m2 and m4 are over 1000 bytes
    assert whole.parsed.lines == pieces.parsed.lines == 8
    assert whole.cursor is not None and pieces.cursor is not None
    assert whole.cursor.offset == pieces.cursor.offset == path.stat().st_size


def test_chunking_does_not_change_the_skip_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skip reasons are the same whether lines arrive whole or in 64-byte chunks."""
    path = tmp_path / "s.jsonl"
    sample_file(path)
    whole = read(path, max_line=1000)
    monkeypatch.setattr(tailer, "CHUNK_BYTES", 64)
    pieces = read(path, max_line=1000)
    assert dict(whole.parsed.skipped) == dict(pieces.parsed.skipped)


def test_real_50_mb_line_is_skipped_and_the_lines_after_it_count(tmp_path: Path) -> None:
    """A 50 MB line (over the 32 MB default) is skipped; lines before and after count."""
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        f.write(line("m1", 1) + "\n")
        f.write(line("m2", 2, text="z" * (50 << 20)) + "\n")
        f.write(line("m3", 3) + "\n")
    started = time.perf_counter()
    r = read(path)
    elapsed = time.perf_counter() - started
    assert tokens(r) == [1, 3]
    assert dict(r.parsed.skipped) == {"line_too_long": 1}
    assert r.cursor is not None and r.cursor.offset == path.stat().st_size
    assert elapsed < 2.0, elapsed


# -- errors and names -------------------------------------------------------------------------


def test_vanished_file_raises_file_not_found(tmp_path: Path) -> None:
    """A file that vanished since its last read raises FileNotFoundError for ingest to handle."""
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1)])
    r1 = read(path)
    path.unlink()
    with pytest.raises(FileNotFoundError):
        read(path, r1.cursor)


def test_unreachable_path_raises_an_os_error_even_for_root(tmp_path: Path) -> None:
    """A path whose parent is a regular file raises NotADirectoryError (an OSError)."""
    parent = tmp_path / "not-a-dir"
    parent.write_text("x")
    with pytest.raises(NotADirectoryError):
        read(parent / "s.jsonl")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_raises_permission_error(tmp_path: Path) -> None:
    """A file with mode 000 raises PermissionError."""
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1)])
    path.chmod(0)
    with pytest.raises(PermissionError):
        read(path)


def test_file_names_stand_in_for_missing_session_and_project(tmp_path: Path) -> None:
    """Lines without sessionId/cwd take the session from the file (or subagent folder)."""
    bare = assistant("m1", "r1", TS, input_tokens=1)
    del bare["sessionId"], bare["cwd"]
    main = tmp_path / "projects" / "-home-dev-api" / "sess-1.jsonl"
    sub = tmp_path / "projects" / "-home-dev-api" / "sess-1" / "subagents" / "agent-7.jsonl"
    write_lines(main, [bare])
    write_lines(sub, [bare])
    for path in (main, sub):
        (rec,) = read(path).parsed.records
        assert (rec.session_id, rec.project) == ("sess-1", "-home-dev-api")


def test_fallbacks_per_folder_equal_the_whole_paths_parts() -> None:
    """The folder-cached session/project fallbacks equal the pathlib definition for
    odd paths too: subagents anywhere, dots, doubled or trailing slashes, bad bytes."""
    rng = random.Random(5)
    names = ["a", "subagents", "x.jsonl", "sess-1", "-home-dev", "..", ".", "", "é", "s\udcff",
             "agent-1.jsonl", ".jsonl", "a.b.jsonl", "subagents.jsonl", "x."]  # fmt: skip
    for _ in range(20_000):
        path = ("/" if rng.random() < 0.7 else "") + "/".join(
            rng.choice(names) for _ in range(rng.randint(1, 6))
        )
        if rng.random() < 0.1:
            path = path.replace("/", "//", 1)
        if rng.random() < 0.05:
            path += "/"
        assert tailer._fallbacks(path) == tailer._fallbacks_of_parts(path), path
    assert tailer._fallbacks("/p/-home-dev/s1/subagents/agent-a.jsonl") == ("s1", "-home-dev")
    assert tailer._fallbacks("/p/-home-dev/s1.jsonl") == ("s1", "-home-dev")
