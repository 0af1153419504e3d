"""The C scanner against the pure-Python parser: same records, lines and skips.

The pure-Python path (msgspec) is the specification. `_fastscan` may decline
any line (Python then decodes it), but what it does produce must equal what
Python produces, for every buffer. The buffers below are real transcript
lines, generated corpus lines, hand-written edge cases and thousands of random
mutations of them aimed at the places a hand-written JSON parser gets wrong:
escapes, invalid UTF-8, control characters, duplicate keys, odd numbers,
nulls, wrong types, whitespace, nesting, truncation. (conftest.py also checks
every parse_lines call of the rest of the suite the same way.)
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
from conftest import REAL_SAMPLE, assistant, dumps, user

from claude_usaged import fastpath
from claude_usaged.parser import new_interner, parse_lines
from claude_usaged.usage import dedupe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from corpus import generate

needs_ext = pytest.mark.skipif(
    not fastpath.available(), reason="claude_usaged._fastscan is not built (no compiler?)"
)

TS = "2025-11-20T09:14:05.602Z"

Outcome = tuple[str, Any]


def run(buf: bytes, c_path: bool, max_line: int = 1 << 62, deduped: bool = False) -> Outcome:
    """parse_lines on one path: its whole result as plain values, or the exception type.

    With `deduped` the records are compared after `usage.dedupe`, by key: the C
    scanner may then leave out the records that cannot win.
    """
    before = fastpath.enabled()
    fastpath.set_enabled(c_path)
    try:
        result = parse_lines(
            buf, "fb-session", "fb-project", new_interner(), max_line, deduped=deduped
        )
    except Exception as exc:  # both paths must fail alike (msgspec's RecursionError)
        return ("raised", type(exc).__name__)
    finally:
        fastpath.set_enabled(before)
    records: Any = [astuple(r) for r in result.records]
    if deduped:
        records = {key: astuple(r) for key, r in dedupe(result.records).items()}
    return ("ok", (records, result.lines, dict(Counter(result.skipped))))


class Differ:
    """Runs buffers through both paths and keeps count of what was compared."""

    def __init__(self) -> None:
        self.buffers = 0
        self.lines = 0
        self.records = 0

    def check(self, buf: bytes, max_line: int = 1 << 62) -> None:
        fast = run(buf, True, max_line)
        pure = run(buf, False, max_line)
        assert fast == pure, buf[:2000]
        assert run(buf, True, max_line, deduped=True) == run(buf, False, max_line, deduped=True)
        self.buffers += 1
        self.lines += buf.count(b"\n")
        if pure[0] == "ok":
            self.records += len(pure[1][0])

    def check_lines(self, lines: list[bytes], rng: random.Random) -> None:
        """Each line alone, then all of them in random groups and layouts."""
        for line in lines:
            self.check(line + b"\n")
        i = 0
        while i < len(lines):
            n = rng.randint(1, 40)
            self.check(layout(lines[i : i + n], rng))
            i += n


def layout(lines: list[bytes], rng: random.Random) -> bytes:
    """Join lines with the odd blank line, indentation, CRLF, missing last newline."""
    out = []
    for line in lines:
        if rng.random() < 0.05:
            out.append(rng.choice([b"", b"  ", b"\t", b"\r", b"\x0b", b" x "]))
        if rng.random() < 0.03:
            line = rng.choice([b" ", b"\t", b"\x0c"]) + line
        if rng.random() < 0.03:
            line += rng.choice([b"\r", b" ", b"\t\r", b"\x0b"])
        out.append(line)
    buf = b"\n".join(out)
    return buf if rng.random() < 0.1 else buf + b"\n"


def real_lines() -> list[bytes]:
    lines = []
    for path in sorted(REAL_SAMPLE.glob("projects/**/*.jsonl")):
        lines += path.read_bytes().splitlines()  # no \r, \x0b... in these files
    assert len(lines) > 500
    return lines


def corpus_lines(tmp: Path, seed: int) -> list[bytes]:
    generate(tmp, size_mb=4, seed=seed, corrupt=True)
    lines = []
    for path in sorted(tmp.glob("projects/**/*.jsonl")):
        lines += path.read_bytes().split(b"\n")
    return [line for line in lines if line]


def hand_lines() -> list[bytes]:
    """Edge cases written out: each either parses alike or is declined."""
    good = dumps(
        assistant(
            "msg_1",
            "req_1",
            TS,
            input_tokens=4,
            output_tokens=96,
            cache_creation=2315,
            cache_read=18422,
            extra_usage={
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 2000,
                    "ephemeral_1h_input_tokens": 315,
                },
                "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1},
                "speed": "fast",
                "inference_geo": "us",
            },
        )
    )
    out = [good, dumps(user(TS, text='say "usage"'))]
    for old, new in [
        ('"cwd":"/home/dev/api"', r'"cwd":"C:\\Users\\dev\\src"'),
        ('"cwd":"/home/dev/api"', r'"cwd":"\u00e9t\u00e9\/x\n\t\"q\"\b\f\r\u0000"'),
        ('"cwd":"/home/dev/api"', r'"cwd":"\ud83d\ude00"'),
        ('"cwd":"/home/dev/api"', '"cwd":"/home/dév/日本/😀"'),
        ('"cwd":"/home/dev/api"', '"cwd":""'),
        ('"cwd":"/home/dev/api"', '"cwd":null'),
        ('"cwd":"/home/dev/api"', '"cwd":5'),
        ('"sessionId":"s1"', '"sessionId":""'),
        ('"sessionId":"s1"', r'"sessionId":"s\u0031"'),
        ('"requestId":"req_1"', '"requestId":null'),
        ('"requestId":"req_1"', r'"requestId":"r\"1"'),
        ('"id":"msg_1"', '"id":""'),
        ('"id":"msg_1"', '"id":null'),
        ('"id":"msg_1"', r'"id":"m\u00e9"'),
        ('"type":"assistant"', r'"type":"assist\u0061nt"'),
        ('"type":"assistant"', '"type":null'),
        ('"type":"assistant"', r'"typ\u0065":"assistant"'),
        ('"type":"assistant"', '"type":"assistant","type":"user"'),
        ('"type":"assistant"', '"type":"user","type":"assistant"'),
        ('"isSidechain":false', '"isSidechain":null'),
        ('"isSidechain":false', '"isSidechain":true'),
        ('"isSidechain":false', '"isSidechain":0'),
        ('"input_tokens":4', '"input_tokens":null'),
        ('"input_tokens":4', '"input_tokens":-0'),
        ('"input_tokens":4', '"input_tokens":1e3'),
        ('"input_tokens":4', '"input_tokens":4.0'),
        ('"input_tokens":4', '"input_tokens":04'),
        ('"input_tokens":4', '"input_tokens":-4'),
        ('"input_tokens":4', '"input_tokens":999999999999999999'),
        ('"input_tokens":4', '"input_tokens":9999999999999999999'),
        ('"input_tokens":4', '"input_tokens":18446744073709551616'),
        ('"input_tokens":4', '"input_tokens":"4"'),
        ('"input_tokens":4', '"input_tokens":true'),
        ('"input_tokens":4', '"input_tokens":4,"input_tokens":5'),
        ('"input_tokens":4', '"input_tokens" : 4 '),
        ('"ephemeral_1h_input_tokens":315', '"ephemeral_1h_input_tokens":null'),
        ('"cache_creation":{', '"cache_creation":null,"x":{'),
        ('"server_tool_use":{', '"server_tool_use":[],"x":{'),
        ('"speed":"fast"', '"speed":""'),
        ('"speed":"fast"', '"speed":null'),
        ('"speed":"fast"', '"speed":1'),
        ('"inference_geo":"us"', r'"inference_geo":"\u0075s"'),
        ('"model":"claude-sonnet-4-5-20250929"', '"model":"<synthetic>"'),
        ('"model":"claude-sonnet-4-5-20250929"', r'"model":"\u003csynthetic>"'),
        ('"model":"claude-sonnet-4-5-20250929"', '"model":""'),
        ('"model":"claude-sonnet-4-5-20250929"', '"model":null'),
        ('"usage":{', '"usage":null,"x":{'),
        ('"usage":{', '"usage":{},"x":{'),
        ('"text":"ok"', '"text":"ok","usage":{"input_tokens":99}'),
        ('"text":"ok"', r'"text":"\ud800"'),
        ('"text":"ok"', r'"text":"\udc00\ud800"'),
        ('"text":"ok"', r'"text":"\x"'),
        ('"text":"ok"', '"text":[1e400,-0,0.5e-3,true,false,null,{},[]]'),
        ('"text":"ok"', '"text":[1.,.5,+1]'),
        ('"text":"ok"', '"text":' + "[" * 70 + "]" * 70),
        ('"text":"ok"', '"text":' + "[" * 63 + "]" * 63),
        ('"text":"ok"', '"text":' + "[" * 2000 + "]" * 2000),
        ('"text":"ok"', '"text":{"a":1,"a":2}'),
        ('"text":"ok"', '"text":NaN'),
        ('"text":"ok"', '"text":[1,]'),
        ('"text":"ok"', '"text":{"a":1,}'),
        (TS, "2025-11-20T09:14:05Z"),
        (TS, "2025-11-20T09:14:05.602+01:00"),
        (TS, "2025-02-29T09:14:05.602Z"),
        (TS, "2024-02-29T23:59:59.999Z"),
        (TS, "2025-11-20T24:14:05.602Z"),
        (TS, "2025-11-20T09:14:05.602z"),
        (TS, "1969-12-31T23:59:59.999Z"),
        (TS, "0001-01-01T00:00:00.000Z"),
        (TS, "2025-11-20 09:14:05.602Z"),
        (TS, "2025-11-20T09:14:05,602Z"),
        (TS, "2025-11-20T+9:14:05.602Z"),
        (TS, ""),
        (TS, "2025-11-20T09:14:05.602Z\\u0000"),
    ]:
        assert old in good, old
        out.append(good.replace(old, new, 1))
    encoded = [line.encode() for line in out]
    encoded += [
        good.encode().replace(b'"ok"', b'"\xff\xfe"'),
        good.encode().replace(b'"ok"', b'"\xc0\x80"'),
        good.encode().replace(b'"ok"', b'"\xed\xa0\x80"'),
        good.encode().replace(b'"ok"', b'"\xf4\x90\x80\x80"'),
        good.encode().replace(b'"ok"', b'"\xe2\x82"'),
        good.encode().replace(b'"ok"', b'"o\x00k\x1f\x7f"'),
        good.encode().replace(b"/home/dev/api", b"/home/\xff"),
        good.encode().replace(b"/home/dev/api", b"/home/\x01"),
        good.encode() + b"x",
        good.encode() + b"}",
        good.encode() + b"\x00",
        good.encode()[:-1],
        b'{"type":"assistant",\x00\xff\xfe"usage":\x01\x02}',
        b'{"usage":1}',
        b'"usage"',
        b"[" + good.encode() + b"]",
        b"",
    ]
    return encoded


MUTANTS = [
    b"\\n", b'\\"', b"\\\\", b"\\/", b"\\u00e9", b"\\u2028", b"\\ud83d\\ude00", b"\\ud800",
    b"\\", b"\\x", b"\\u12", "é".encode(), "日本".encode(), "😀".encode(), "\u2028".encode(),
    b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x00", b"\x01",
    b"\x1f", b"\x7f", b"\t", b" ", b"\r", b"\x0b", b"\x0c", b'"', b"{", b"}", b"[", b"]", b",",
    b":", b"null", b"-", b"0", b"e", b"usage", b'"usage":{"input_tokens":7},',
]  # fmt: skip

VALUES = [
    b"null", b"true", b"false", b"0", b"-0", b"01", b"1e3", b"1E3", b"1.5", b"-3", b"9" * 18,
    b"9" * 19, b"18446744073709551615", b"1" + b"0" * 30, b'"7"', b'""', b'"x"', b"[]", b"{}",
    b"[1,2]", b'{"a":null}', b'{"input_tokens":5}', b'"\\u0041"', b'"a\\"b"', b'"<synthetic>"',
    b'"assistant"', b'"2025-11-20T09:14:05.602Z"', b'"2025-11-20T09:14:05Z"', b"nul", b"tru",
]  # fmt: skip

KEYS = [
    b"type", b"timestamp", b"sessionId", b"requestId", b"isSidechain", b"cwd", b"message",
    b"id", b"model", b"usage", b"input_tokens", b"output_tokens", b"cache_creation_input_tokens",
    b"cache_read_input_tokens", b"cache_creation", b"ephemeral_5m_input_tokens",
    b"ephemeral_1h_input_tokens", b"server_tool_use", b"web_search_requests", b"speed",
    b"inference_geo",
]  # fmt: skip


def mutate(line: bytes, rng: random.Random) -> bytes:
    """One to three random edits aimed at a JSON parser's weak spots."""
    out = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        if not out:
            break
        kind = rng.randrange(9)
        at = rng.randrange(len(out))
        if kind == 8:  # another digit: counts and timestamps stay well-formed
            digits = [i for i in range(at, min(len(out), at + 400)) if 48 <= out[i] <= 57]
            if digits:
                out[rng.choice(digits)] = rng.choice(b"0123456789")
        elif kind == 0:  # flip a byte
            out[at] = rng.randrange(256)
        elif kind == 1:  # insert something nasty
            out[at:at] = rng.choice(MUTANTS)
        elif kind == 2:  # truncate
            del out[at:]
        elif kind == 3:  # delete a few bytes
            del out[at : at + rng.randint(1, 8)]
        else:  # rewrite the value of a key we read, or duplicate the key
            key = b'"' + rng.choice(KEYS) + b'":'
            pos = bytes(out).find(key, rng.randrange(max(1, len(out) // 2)))
            if pos == -1:
                pos = bytes(out).find(key)
            if pos == -1:
                continue
            value_at = pos + len(key)
            if kind == 4:  # duplicate the key with another value
                out[pos:pos] = key + rng.choice(VALUES) + b","
            elif kind == 5:  # whitespace around the value
                out[value_at:value_at] = rng.choice([b" ", b"\t", b"\r", b"\x0c", b"\n"])
            else:  # replace a scalar value
                end = value_at
                while end < len(out) and out[end] not in b",}]":
                    end += 1
                if end < len(out) and out[value_at] not in b"{[":
                    out[value_at:end] = rng.choice(VALUES)
    return bytes(out).replace(b"\n", b"") if rng.random() < 0.9 else bytes(out)


SCALARS = [*VALUES, b'"fast"', b'"us"', b'"C:\\\\x"', b'"\\u00e9"', b"12345", b"0"]
STRUCTS = {
    b"message": [b"id", b"model", b"usage", b"content"],
    b"usage": [
        b"input_tokens", b"output_tokens", b"cache_creation_input_tokens",
        b"cache_read_input_tokens", b"cache_creation", b"server_tool_use", b"speed",
        b"inference_geo", b"iterations",
    ],
    b"cache_creation": [b"ephemeral_5m_input_tokens", b"ephemeral_1h_input_tokens"],
    b"server_tool_use": [b"web_search_requests", b"web_fetch_requests"],
}  # fmt: skip
TOP = [b"type", b"timestamp", b"sessionId", b"requestId", b"isSidechain", b"cwd", b"message"]
GOOD = {
    b"type": b'"assistant"', b"timestamp": b'"2025-11-20T09:14:05.602Z"', b"sessionId": b'"s"',
    b"requestId": b'"r"', b"isSidechain": b"false", b"cwd": b'"/w"', b"id": b'"m"',
    b"model": b'"claude-x"', b"speed": b'"fast"', b"inference_geo": b'"us"',
}  # fmt: skip


LIMITS = {
    b"sessionId": 512, b"requestId": 512, b"id": 512, b"model": 255, b"cwd": 4096,
    b"speed": 64, b"inference_geo": 64,
}  # fmt: skip


def long_string(limit: int, rng: random.Random) -> bytes:
    """A string about `limit` characters long; escapes make its raw bytes longer."""
    chars = limit + rng.choice([-1, 0, 1])
    escaped = rng.randrange(0, 4)  # \u00e9 is 6 raw bytes for 1 character
    return b'"' + b"\\u00e9" * escaped + b"a" * (chars - escaped) + b'"'


def generated_line(rng: random.Random) -> bytes:
    """A line built from our keys: mostly plausible values, sometimes odd ones, odd spacing."""

    def ws() -> bytes:
        return rng.choice([b"", b"", b"", b" ", b"\t", b"\r", b" \t"])

    def value(key: bytes, depth: int) -> bytes:
        if key in STRUCTS and depth < 4 and rng.random() < 0.97:
            return obj(STRUCTS[key], depth + 1)
        if key in LIMITS and rng.random() < 0.08:
            return long_string(LIMITS[key], rng)
        if rng.random() < 0.97:
            if key in GOOD:
                return GOOD[key]
            if key.endswith((b"tokens", b"requests")):
                values = [0, 1, 7, 4096, 10**10, 10**10 + 1, 10**17, 10**18 - 1, 10**30]
                return str(rng.choice(values)).encode()
        return rng.choice(SCALARS)

    def obj(keys: list[bytes], depth: int) -> bytes:
        chosen = [k for k in keys if rng.random() < 0.9]
        if rng.random() < 0.05:
            chosen.append(rng.choice(keys))  # a duplicate
        if rng.random() < 0.1:
            chosen.append(rng.choice([b"usage", b"message", b"x", b"type"]))  # out of place
        rng.shuffle(chosen)
        members = [
            b'%s"%s"%s:%s%s%s' % (ws(), k, ws(), ws(), value(k, depth), ws()) for k in chosen
        ]
        return b"{" + b",".join(members) + ws() + b"}"

    return ws() + obj(TOP, 0) + ws()


def mutants(lines: list[bytes], count: int, rng: random.Random) -> Iterator[bytes]:
    usage_lines = [line for line in lines if b'"usage"' in line and len(line) < 20000]
    for _ in range(count):
        yield mutate(rng.choice(usage_lines), rng)


@needs_ext
def test_fastscan_matches_python_on_many_buffers(tmp_path: Path) -> None:
    """Real, corpus, hand-written, 50,000 mutated and 20,000 built lines: both paths agree."""
    rng = random.Random(20261126)
    differ = Differ()
    real = real_lines()
    generated = corpus_lines(tmp_path / "c1", seed=3)
    hand = hand_lines()
    for lines in (real, generated, hand):
        differ.check_lines(lines, rng)
    pool = real + generated + hand
    for n, line in enumerate(mutants(pool, 50_000, rng)):
        differ.check(line + b"\n")
        if n % 10 == 0:
            differ.check(layout([line, *rng.sample(pool, 3)], rng))
    for _ in range(20_000):
        line = generated_line(rng)
        differ.check(line + b"\n")
        differ.check(mutate(line, rng) + b"\n")
    # whole files at once, with small limits on line length too
    for path in sorted((tmp_path / "c1").glob("projects/**/*.jsonl"))[:40]:
        buf = path.read_bytes()
        differ.check(buf)
        differ.check(buf, max_line=rng.choice([0, 200, 3000]))
    print(f"compared {differ.buffers} buffers, {differ.lines} lines, {differ.records} records")
    assert differ.buffers > 90_000 and differ.records > 20_000


@needs_ext
def test_fastscan_accepts_the_common_lines() -> None:
    """Declining is safe but slow: the usual response lines must not be declined."""
    from claude_usaged._fastscan import scan
    from claude_usaged.usage import UsageRecord

    buf = b"\n".join(line for line in real_lines() if b'"usage"' in line) + b"\n"
    _lines, bad, too_long, records, declined = scan(
        buf, "s", "p", None, UsageRecord, 1 << 62, "unknown"
    )
    assert (bad, too_long) == (0, 0)
    assert len(declined) == 0, [buf[s : s + 200] for _, s, _ in declined[:3]]
    assert records


@needs_ext
def test_records_are_built_slot_by_slot_as_init_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """A UsageRecord's slots are set from C (its dataclass __init__ is not run: ~0.4 us
    of Python per record); a record type with a __post_init__ is built by calling it."""
    from dataclasses import dataclass

    from claude_usaged._fastscan import scan
    from claude_usaged.usage import UsageRecord

    line = assistant("m1", "r1", "2025-11-20T09:00:00.000Z", input_tokens=5, output_tokens=2)
    buf = dumps(line).encode() + b"\n"
    expected = parse_lines(buf, "s", "p", None).records

    def no_init(*_: object) -> None:
        raise AssertionError("__init__ ran")

    with monkeypatch.context() as m:
        m.setattr(UsageRecord, "__init__", no_init)
        records = scan(buf, "s", "p", None, UsageRecord, 1 << 62, "unknown")[3]
    assert [astuple(r) for r in records] == [astuple(r) for r in expected]
    assert type(records[0]) is UsageRecord and records[0].cost_usd is None

    @dataclass(slots=True)
    class Checked(UsageRecord):
        def __post_init__(self) -> None:
            self.project = "checked"

    (checked,) = scan(buf, "s", "p", None, Checked, 1 << 62, "unknown")[3]
    assert type(checked) is Checked and checked.project == "checked"
    assert astuple(checked)[:5] == astuple(expected[0])[:5]
    # a built-in type (no dict of its own since Python 3.12) is called too
    with pytest.raises(TypeError):
        scan(buf, "s", "p", None, dict, 1 << 62, "unknown")


def test_extension_is_built_on_ci() -> None:
    """On CI (and this machine's image) a compiler exists: the C scanner must be in use."""
    if not os.environ.get("CI"):
        pytest.skip("only enforced when CI is set")
    assert fastpath.available(), "claude_usaged._fastscan did not build or import"


def test_switch_turns_the_c_path_off_and_on() -> None:
    """set_enabled(False) routes parse_lines to Python; on needs the extension."""
    before = fastpath.enabled()
    try:
        fastpath.set_enabled(False)
        assert fastpath.scanner() is None
        if fastpath.available():
            fastpath.set_enabled(True)
            assert fastpath.scanner() is not None
        else:
            with pytest.raises(RuntimeError):
                fastpath.set_enabled(True)
    finally:
        fastpath.set_enabled(before)


def _streamed_lines() -> list[bytes]:
    """Lines of streamed responses whose winners take every rule of `usage.dedupe`."""
    t1, t2 = "2025-11-20T09:14:05.602Z", "2025-11-20T09:14:06.100Z"
    raw = [
        # m1: the largest total wins, however late (10, 10, 15)
        dumps(assistant("m1", "r1", t1, input_tokens=4, output_tokens=6)),
        dumps(assistant("m1", "r1", t2, input_tokens=4, output_tokens=6)),
        dumps(assistant("m1", "r1", t2, input_tokens=4, output_tokens=11, model="claude-x")),
        # m2: equal totals, the earlier time wins although it comes second
        dumps(assistant("m2", "r2", t2, output_tokens=7)),
        dumps(assistant("m2", "r2", t1, output_tokens=7, model="claude-y")),
        # m3: equal total and time, the smaller session wins
        dumps(assistant("m3", "r3", t1, output_tokens=3, session="s9")),
        dumps(assistant("m3", "r3", t1, output_tokens=3, session="s2")),
        # m4: a full tie, the first wins (the model tells which)
        dumps(assistant("m4", "r4", t1, output_tokens=5, model="claude-first")),
        dumps(assistant("m4", "r4", t1, output_tokens=5, model="claude-second")),
        # m5: sessions equal only once their escapes are decoded: Python decides
        dumps(assistant("m5", "r5", t1, output_tokens=2, session="s\\u0031")).replace(
            "s\\\\u0031", "s\\u0031"
        ),
        dumps(assistant("m5", "r5", t1, output_tokens=2, session="s1", model="claude-z")),
        # m6: no requestId and no sessionId: keyed by the fallback session; smaller cwd wins
        dumps(assistant("m6", None, t1, output_tokens=1, session="", cwd="/b")),
        dumps(assistant("m6", None, t1, output_tokens=1, session="", cwd="/a")),
        # m7: no requestId, keyed by its own session: two sessions, two keys
        dumps(assistant("m7", None, t1, output_tokens=8, session="sA")),
        dumps(assistant("m7", None, t1, output_tokens=9, session="sB")),
    ]
    return [line.encode() for line in raw]


@needs_ext
def test_deduped_scan_leaves_out_only_records_that_cannot_win() -> None:
    """The C scanner drops losing lines before building them, and the winners stay exact."""
    lines = _streamed_lines()
    buf = b"\n".join(lines) + b"\n"
    assert run(buf, True, deduped=True) == run(buf, False, deduped=True)
    rng = random.Random(7)
    for _ in range(300):  # any order of the lines: still the same winners as Python
        shuffled = rng.sample(lines, len(lines))
        joined = b"\n".join(shuffled) + b"\n"
        assert run(joined, True, deduped=True) == run(joined, False, deduped=True)
    fastpath.set_enabled(True)
    full = parse_lines(buf, "fb-session", "fb-project")
    kept = parse_lines(buf, "fb-session", "fb-project", deduped=True)
    assert len(full.records) == 15
    # one record per key, plus the second m5 line that Python must compare
    assert len(kept.records) == 9
    winners = {
        key: (r.model, r.ts_ms, r.session_id, r.project) for key, r in dedupe(kept.records).items()
    }
    assert winners["m1:r1"][0] == "claude-x"
    assert winners["m2:r2"][0] == "claude-y"
    assert winners["m3:r3"][2] == "s2"
    assert winners["m4:r4"][0] == "claude-first"
    assert winners["m5:r5"][0] == "claude-sonnet-4-5-20250929"  # the first of a full tie
    assert winners["fb-session:m6"][3] == "/a"
    assert {"sA:m7", "sB:m7"} <= winners.keys()
