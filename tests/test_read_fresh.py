"""read_fresh: small files read whole by the C scanner give what read_new gives them.

read_new (through the C scanner, itself checked against the Python parser by the
suite's cross-check) is the specification: records in the same order, the same
line and skip counts, the same cursor, the same OSError.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import assistant, dumps, write_lines

from claude_usaged import fastpath, reading, tailer
from claude_usaged.parser import new_interner
from claude_usaged.tailer import TailResult, read_fresh, read_new
from claude_usaged.usage import UsageRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from corpus import generate

pytestmark = pytest.mark.skipif(
    fastpath.file_reader() is None, reason="the C scanner's read_files is not in use"
)

TS = "2025-11-20T09:14:05.602Z"


def line(msg: str, tokens: int, **kw: object) -> str:
    return dumps(assistant(msg, "req_" + msg, TS, input_tokens=tokens, **kw))  # type: ignore[arg-type]


def same_as_read_new(path: str, fresh: TailResult | OSError | None) -> None:
    """`fresh` is exactly what read_new(path, None) returns now."""
    assert isinstance(fresh, TailResult), (path, fresh)
    alone = read_new(path, None)
    assert fresh.path == alone.path == path
    assert fresh.parsed.records == alone.parsed.records
    assert (fresh.parsed.lines, fresh.parsed.skipped) == (alone.parsed.lines, alone.parsed.skipped)
    assert fresh.cursor == alone.cursor
    assert (fresh.bytes_read, fresh.restarted, fresh.long_lines) == (alone.bytes_read, None, 0)


def test_a_corpus_reads_as_read_new_reads_it(tmp_path: Path) -> None:
    """Generated transcripts with corrupt lines, subagent files and progress copies."""
    generate(tmp_path, size_mb=3, seed=11, corrupt=True, files=40)
    paths = sorted(str(p) for p in tmp_path.glob("projects/**/*.jsonl"))
    assert len(paths) > 20
    results = read_fresh(paths, new_interner())
    taken = 0
    for path, fresh in zip(paths, results, strict=True):
        if fresh is None:  # as big as the read buffer: left to read_new
            assert os.path.getsize(path) >= tailer.CHUNK_BYTES
            continue
        same_as_read_new(path, fresh)
        taken += 1
    assert taken >= len(paths) - 2
    read = [r for r in results if isinstance(r, TailResult)]
    assert sum(len(r.parsed.records) for r in read) > 300
    assert any(r.parsed.skipped for r in read)  # the corrupt lines were met


def test_partial_and_empty_files_commit_only_complete_lines(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jsonl"
    partial = tmp_path / "partial.jsonl"
    no_newline = tmp_path / "no-newline.jsonl"
    empty = tmp_path / "empty.jsonl"
    write_lines(whole, [line("m1", 1), line("m2", 2)])
    write_lines(partial, [line("m1", 1)])
    with partial.open("a") as f:
        f.write(line("m2", 2)[:40])
    no_newline.write_text(line("m1", 1))
    empty.write_bytes(b"")
    paths = [str(p) for p in (whole, partial, no_newline, empty)]
    results = read_fresh(paths)
    for path, fresh in zip(paths, results, strict=True):
        same_as_read_new(path, fresh)
    ok = [r for r in results if isinstance(r, TailResult)]
    assert [[rec.input_tokens for rec in r.parsed.records] for r in ok] == [[1, 2], [1], [], []]
    assert [r.cursor.offset for r in ok if r.cursor] == [
        whole.stat().st_size,
        len(line("m1", 1)) + 1,
        0,
        0,
    ]
    assert ok[1].bytes_read == partial.stat().st_size  # the partial line was read, not kept


def test_declined_lines_keep_their_place(tmp_path: Path) -> None:
    """Lines the C scanner leaves to Python (a key spelled with an escape, no message
    id) are decoded in Python, and their records go where their lines were."""
    escaped = line("m2", 2).replace('"model"', '"mod\\u0065l"', 1)
    no_id = dumps(assistant("", "req_x", TS, input_tokens=3))
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1), escaped, line("m3", 4), no_id, "{not json", line("m5", 5)])
    (fresh,) = read_fresh([str(path)])
    same_as_read_new(str(path), fresh)
    assert isinstance(fresh, TailResult)
    assert [r.input_tokens for r in fresh.parsed.records] == [1, 2, 4, 3, 5]
    assert fresh.parsed.skipped == {"malformed_line": 1}


def test_files_over_many_buffers_each_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 4 kB buffer, 40 files of ~1 kB take many rounds; files that differ only
    in their strings land where the previous round's were (no stale reuse), and the
    ones as big as the buffer are left to read_new."""
    monkeypatch.setattr(tailer, "CHUNK_BYTES", 4096)
    paths = []
    for n in range(40):
        path = tmp_path / f"p{n % 3}" / f"s{n}.jsonl"
        lines = [line(f"m{n}", n, model=f"claude-model-{n % 7}", session=f"sess{n:03}")]
        lines *= 1 if n % 10 else 40  # every tenth: bigger than the buffer
        write_lines(path, lines)
        paths.append(str(path))
    results = read_fresh(paths, new_interner(), max_line=4096)
    for n, (path, fresh) in enumerate(zip(paths, results, strict=True)):
        if n % 10 == 0:
            assert fresh is None
            continue
        same_as_read_new(path, fresh)
        assert isinstance(fresh, TailResult)
        (rec,) = fresh.parsed.records
        assert (rec.model, rec.session_id, rec.input_tokens) == (
            f"claude-model-{n % 7}",
            f"sess{n:03}",
            n,
        )


def test_strings_are_interned_across_files(tmp_path: Path) -> None:
    paths = []
    for n in range(2):
        path = tmp_path / f"s{n}.jsonl"
        write_lines(path, [line(f"m{n}", 1, model="claude-sonnet-4-5")])
        paths.append(str(path))
    first, second = read_fresh(paths, new_interner())
    assert isinstance(first, TailResult) and isinstance(second, TailResult)
    assert first.parsed.records[0].model is second.parsed.records[0].model


def test_errors_are_the_os_errors_read_new_raises(tmp_path: Path) -> None:
    vanished = tmp_path / "gone.jsonl"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    below_a_file = not_a_dir / "s.jsonl"
    good = tmp_path / "good.jsonl"
    write_lines(good, [line("m1", 1)])
    paths = [str(vanished), str(below_a_file), str(good)]
    gone, below, fine = read_fresh(paths)
    assert isinstance(gone, FileNotFoundError) and gone.filename == str(vanished)
    assert isinstance(below, NotADirectoryError) and below.filename == str(below_a_file)
    for path, error in ((vanished, gone), (below_a_file, below)):
        with pytest.raises(OSError) as raised:
            read_new(str(path), None)
        assert (type(error), error.errno, error.strerror) == (
            type(raised.value),
            raised.value.errno,
            raised.value.strerror,
        )
    same_as_read_new(str(good), fine)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_is_returned(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1)])
    path.chmod(0)
    (error,) = read_fresh([str(path)])
    assert isinstance(error, PermissionError)


def test_what_is_not_a_small_regular_file_is_left_to_read_new(tmp_path: Path) -> None:
    """A folder, a FIFO (not opened for a writer: O_NONBLOCK) and a file whose size says
    0 but that holds bytes (it grew while read, as /proc files do) are left to read_new."""
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    paths = [str(folder), str(fifo)]
    if os.path.exists("/proc/self/mounts"):
        assert os.path.getsize("/proc/self/mounts") == 0
        paths.append("/proc/self/mounts")
    assert read_fresh(paths) == [None] * len(paths)


def test_without_the_c_scanner_or_with_a_short_max_line_nothing_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1)])
    assert read_fresh([str(path)], max_line=tailer.CHUNK_BYTES - 1) == [None]
    monkeypatch.setattr(fastpath, "_enabled", False)
    assert read_fresh([str(path)]) == [None]
    assert read_fresh([]) == []


def test_a_group_with_cursors_reads_each_file_as_read_new(tmp_path: Path) -> None:
    """read_group: fresh files through read_fresh, the others (and those it leaves)
    through read_new from their cursor, in the group's order."""
    paths = [str(tmp_path / f"s{n}.jsonl") for n in range(4)]
    for n, path in enumerate(paths):
        write_lines(Path(path), [line(f"a{n}", n)])
    cursors = {paths[1]: read_new(paths[1], None).cursor, paths[3]: None}
    for n, path in enumerate(paths):
        write_lines(Path(path), [line(f"b{n}", 10)])
    items = [(p, cursors.get(p)) for p in paths] + [(str(tmp_path / "missing.jsonl"), None)]
    got = reading.read_group(items)
    assert [path for path, _ in got] == [path for path, _ in items]
    for (path, cursor), (_, outcome) in zip(items[:4], got, strict=False):
        assert isinstance(outcome, TailResult)
        expected = read_new(path, cursor)
        assert outcome.parsed.records == expected.parsed.records
        assert outcome.cursor == expected.cursor
    assert [len(o.parsed.records) for _, o in got[:4] if isinstance(o, TailResult)] == [2, 1, 2, 2]
    assert isinstance(got[4][1], FileNotFoundError)


def test_bad_arguments_raise_before_reading(tmp_path: Path) -> None:
    read_files = fastpath.file_reader()
    assert read_files is not None
    buf = bytearray(4096)
    args = (buf, 4096, 1024, 32, None, UsageRecord, "unknown")
    with pytest.raises(TypeError):
        read_files([b"a"], ["s"], [], *args)
    with pytest.raises(TypeError):
        read_files(["a"], ["s"], ["p"], *args)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        read_files([b"a\0b"], ["s"], ["p"], *args)
    with pytest.raises(BufferError):
        read_files([b"a"], ["s"], ["p"], b"read-only", *args[1:])  # type: ignore[arg-type]
    assert read_files([], [], [], *args) == []
    path = tmp_path / "s.jsonl"
    write_lines(path, [line("m1", 1)])
    (huge,) = read_fresh([str(path)], max_line=1 << 70)  # any max_line, as scan takes it
    same_as_read_new(str(path), huge)
