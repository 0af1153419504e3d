"""Deterministic generator of realistic Claude Code transcript histories.

Importable module and script::

    python benchmarks/corpus.py OUT_DIR --size-mb 500 --seed 1 \\
        [--no-progress-lines] [--files N] [--corrupt] [--known-models-only] [--quiet]

    sys.path.insert(0, "benchmarks")  # (benchmarks/ is not a package)
    from corpus import generate
    info = generate(Path(tmp), size_mb=2, seed=1)  # CorpusInfo; ~0.03 s once warm

Writes ``OUT_DIR/projects/<encoded-cwd>/<session-uuid>.jsonl``, 2.0.x subagent
files ``OUT_DIR/projects/<enc>/agent-<8hex>.jsonl`` and 2.1.x subagent files
``OUT_DIR/projects/<enc>/<session-uuid>/subagents/agent-<id>.jsonl`` with an
``agent-<id>.meta.json`` beside each (not a transcript: readers must skip it).
``OUT_DIR`` can be used directly as ``CLAUDE_CONFIG_DIR``.

Shape (see /work/shared/FORMAT.md): ~1,450 files per 500 MB (scaled with
``--size-mb``), most under 1 MB, one session file holding ~19 % of the bytes
(~95 MB at 500 MB). Lines are compact JSON with Claude Code's field order for
its 1.0.x, 2.0.x and 2.1.x eras (the version follows the session's date):

- ``user`` prompts (a few with a raw U+2028), tool results (whole files, the
  ``toolUseResult`` copy, rare base64 image blocks of 100s of KB);
- ``assistant`` responses streamed as one line per content block (thinking,
  text, tool_use) sharing ``message.id`` + ``requestId``; input/cache equal,
  ``output_tokens`` growing, the final count on the last line - except that
  some responses put it on an earlier line, and some repeat the final usage
  on every line (ties);
- 1.0.0-1.0.19 lines without ``requestId`` (and ``costUSD`` before 1.0.9);
- 1.0.x subagent lines inline (``isSidechain: true``) in the session file;
  2.0.x ``agent-*.jsonl`` files in the project dir; 2.1.x files under
  ``subagents/`` with ``.meta.json``; all carry the parent's ``sessionId``;
- ``progress`` lines (2.1.x) embedding copies of subagent messages with usage
  (``--no-progress-lines`` turns them off; about one echo in ten is missing,
  as when a session is interrupted);
- ``/btw`` side-question files replaying parent responses (same
  ``message.id``, new ``requestId``, ``isSidechain: true``) plus their answer;
- resumed/forked session files starting with verbatim copies of an earlier
  session's lines (same ids, timestamps and ``sessionId``);
- ``<synthetic>`` lines (``isApiErrorMessage``) with the limit texts of each
  era, some opening a burst after a long gap;
- usage with 5m/1h cache splits, ``cache_creation_input_tokens`` 0 while the
  split holds the count (2.1.x before 2.1.152), ``server_tool_use``,
  ``service_tier``, ``inference_geo`` (``""``, ``"not_available"``, ``"us"``),
  ``speed: "fast"``, ``iterations[]`` (with compaction entries) and
  ``output_tokens_details``;
- ``summary``, ``system``, ``file-history-snapshot``, ``queue-operation`` and
  unknown new types (``pr-link``, ``custom-title``, ...);
- models across eras: sonnet-4/4-5, opus-4/4-1/4-5/4-6, haiku-4-5,
  3-5-haiku, claude-opus-5, claude-sonnet-5, claude-fable-5-1 and an unknown
  ``claude-zephyr-1-20260901``;
- timestamps from May 2025 to September 2026, most in the last seven weeks:
  bursts, gaps below and above 5 h, bursts running past 5 h, midnight
  crossings.

``--corrupt`` adds a truncated line and a line of binary garbage to a few
files (off by default because the corpus is compared with ccusage).
``--known-models-only`` writes stand-ins for the models ccusage 20.0.11
cannot price offline (claude-opus-5, claude-sonnet-5, claude-fable-5-1 and the
unknown one): ccusage spends ~1 ms per such line on a failed price lookup, so a
speed comparison needs this flag. Neither flag, nor ``--no-progress-lines``,
changes anything else: the same seed gives the same lines otherwise.

Everything derives from ``random.Random(seed)``: same seed, same bytes. Big
contents are built once (module cache) as pre-escaped JSON and sliced at line
boundaries; lines are assembled from string templates. 500 MB take ~7.5 s on
one core (~65 MB/s, 145 MB RSS).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import calendar
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

MB = 1_000_000
FILES_PER_500MB = 1450
GIANT_SHARE = 0.19

_enc = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _ms(y: int, m: int, d: int, h: int = 0) -> int:
    return calendar.timegm((y, m, d, h, 0, 0, 0, 0, 0)) * 1000


# Eras and their dates (UTC, epoch ms).
T_V1 = _ms(2025, 5, 22)
T_V1_REQ = _ms(2025, 6, 20)  # 1.0.20: requestId present from here on
T_V2 = _ms(2025, 9, 29)
T_V21 = _ms(2026, 1, 7)
T_V21_A = _ms(2026, 8, 1)
END = _ms(2026, 9, 28)
DENSE_START = _ms(2026, 8, 10)
HOUR = 3_600_000
MIN = 60_000

UNKNOWN_MODEL = "claude-zephyr-1-20260901"
KNOWN_MODEL_MAP = {
    # Models ccusage 20.0.11 cannot price offline (cost 0, and ~1 ms of fuzzy price
    # lookup per line: 10-15x slower runs) -> stand-ins it knows, for speed runs.
    "claude-opus-5": "claude-opus-4-6",
    "claude-fable-5-1": "claude-opus-4-6",
    "claude-sonnet-5": "claude-sonnet-4-5-20250929",
    UNKNOWN_MODEL: "claude-sonnet-4-5-20250929",
}


def version_at(t: int) -> str:
    """Claude Code version in use at epoch ms `t` (monotonic with time)."""
    if t < T_V1_REQ:
        return f"1.0.{min(19, max(0, (t - T_V1) * 20 // (T_V1_REQ - T_V1)))}"
    if t < T_V2:
        return f"1.0.{20 + (t - T_V1_REQ) * 109 // (T_V2 - T_V1_REQ)}"
    if t < T_V21:
        return f"2.0.{(t - T_V2) * 77 // (T_V21 - T_V2)}"
    if t < T_V21_A:
        return f"2.1.{(t - T_V21) * 120 // (T_V21_A - T_V21)}"
    return f"2.1.{120 + (t - T_V21_A) * 70 // (END - T_V21_A)}"


def _vtuple(v: str) -> tuple[int, int, int]:
    a, b, c = v.split(".")
    return int(a), int(b), int(c)


def _models_at(t: int) -> tuple[list[str], list[float]]:
    if t < _ms(2025, 8, 5):
        return ["claude-sonnet-4-20250514", "claude-opus-4-20250514"], [0.7, 0.3]
    if t < T_V2:
        return ["claude-sonnet-4-20250514", "claude-opus-4-1-20250805"], [0.55, 0.45]
    if t < _ms(2025, 11, 24):
        return (
            ["claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001"],
            [0.75, 0.15, 0.1],
        )
    if t < _ms(2026, 5, 1):
        return (
            ["claude-opus-4-5-20251101", "claude-sonnet-4-5-20250929", "claude-opus-4-6"],
            [0.45, 0.35, 0.2],
        )
    return (
        [
            "claude-opus-4-6",
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-5-20251101",
            "claude-haiku-4-5-20251001",
            "claude-opus-5",
            "claude-sonnet-5",
            "claude-fable-5-1",
            UNKNOWN_MODEL,
        ],
        [0.24, 0.14, 0.08, 0.07, 0.18, 0.13, 0.12, 0.04],
    )


def _small_model(t: int) -> str:
    return "claude-3-5-haiku-20241022" if t < _ms(2025, 10, 15) else "claude-haiku-4-5-20251001"


# --------------------------------------------------------------------------- blobs

_WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "request",
    "response",
    "client",
    "server",
    "handler",
    "config",
    "cache",
    "token",
    "window",
    "usage",
    "session",
    "project",
    "parser",
    "reader",
    "writer",
    "buffer",
    "stream",
    "event",
    "queue",
    "worker",
    "index",
    "record",
    "entry",
    "model",
    "price",
    "block",
    "daily",
    "total",
    "input",
    "output",
    "create",
    "read",
    "write",
    "path",
    "file",
    "line",
    "offset",
    "length",
    "count",
    "limit",
    "reset",
    "timeout",
    "retry",
    "error",
    "result",
    "value",
    "key",
    "user",
    "agent",
    "tool",
    "message",
    "content",
    "summary",
    "state",
    "store",
    "schema",
    "table",
    "column",
    "migrate",
]
_UNI = ["é", "ü", "ñ", "ø", "ß", "✓", "→", "—", "日本語", "中文", "Ω", "😀", "€", "…"]


@dataclass(frozen=True)
class _Blobs:
    """Pre-escaped JSON string material, sliced at line boundaries."""

    code: str  # JSON-escaped (without quotes) numbered source lines
    code_cuts: list[int]  # offsets of line starts in `code`
    prose: str
    prose_cuts: list[int]
    b64: str
    sentences: list[str]  # raw short texts (escaped at dump time)

    def code_slice(self, rng: random.Random, size: int) -> str:
        return self._slice(self.code, self.code_cuts, rng, size)

    def prose_slice(self, rng: random.Random, size: int) -> str:
        return self._slice(self.prose, self.prose_cuts, rng, size)

    @staticmethod
    def _slice(s: str, cuts: list[int], rng: random.Random, size: int) -> str:
        size = max(1, min(size, len(s) // 2))
        i = rng.randrange(0, bisect.bisect_left(cuts, len(s) - size))
        start = cuts[i]
        j = bisect.bisect_left(cuts, start + size)
        end = cuts[min(j, len(cuts) - 1)]
        if end <= start:
            end = cuts[min(i + 1, len(cuts) - 1)]
        return s[start:end]

    def b64_slice(self, rng: random.Random, size: int) -> str:
        size = max(4, min(size, len(self.b64) - 4)) // 4 * 4
        start = rng.randrange(0, (len(self.b64) - size) // 4) * 4
        return self.b64[start : start + size]


def _code_line(r: random.Random, i: int) -> str:
    w = r.choice
    k = r.randrange(14)
    if k == 0:
        s = f"def {w(_WORDS)}_{w(_WORDS)}(self, {w(_WORDS)}: int = 0) -> dict[str, int]:"
    elif k == 1:
        s = f'    return {{"{w(_WORDS)}": {r.randrange(10**6)}, "{w(_WORDS)}": None}}'
    elif k == 2:
        s = f"import {w(_WORDS)}.{w(_WORDS)} as {w(_WORDS)}"
    elif k == 3:
        s = f"  const {w(_WORDS)}{w(_WORDS).title()} = require('./{w(_WORDS)}');"
    elif k == 4:
        s = f'    if (x["{w(_WORDS)}"] === "{w(_WORDS)}\\n") {{ throw new Error(`{w(_WORDS)}`); }}'
    elif k == 5:
        s = f'\tfmt.Printf("%s: %d\\t%v\\n", {w(_WORDS)}, {r.randrange(999)}, err)'
    elif k == 6:
        s = f"# {w(_WORDS)} {w(_WORDS)} {w(_UNI)} {w(_WORDS)} {w(_UNI)}"
    elif k == 7:
        s = f"path = r'C:\\Users\\dev\\{w(_WORDS)}\\{w(_WORDS)}.json'"
    elif k == 8:
        s = ""
    elif k == 9:
        s = f"        self.{w(_WORDS)} = {w(_WORDS)}[{r.randrange(64)}:{r.randrange(64, 4096)}]"
    elif k == 10:
        s = f"    /* {w(_WORDS)} {w(_WORDS)} {w(_WORDS)} {w(_WORDS)} {w(_WORDS)} */"
    elif k == 11:
        s = f"SELECT {w(_WORDS)}, SUM({w(_WORDS)}) FROM {w(_WORDS)} WHERE {w(_WORDS)} > ?;"
    elif k == 12:
        s = f'    {w(_WORDS)}: {r.randrange(10**9)}  # {w(_WORDS)} "{w(_WORDS)}"'
    else:
        s = "    " + " ".join(w(_WORDS) for _ in range(r.randrange(3, 12)))
    return f"{i:>6}→{s}"


@lru_cache(maxsize=1)
def _blobs() -> _Blobs:
    """Build the shared content once (independent of the corpus seed)."""
    r = random.Random(20251120)
    code_lines = [_code_line(r, (i % 4000) + 1) for i in range(70_000)]
    for i in range(1500, len(code_lines), 9000):
        code_lines[i] += " \u2028 paragraph-separator"
    esc = [_enc(line + "\n")[1:-1] for line in code_lines]
    cuts, pos = [], 0
    for e in esc:
        cuts.append(pos)
        pos += len(e)
    cuts.append(pos)
    code = "".join(esc)

    sentences = []
    for _ in range(3000):
        n = r.randrange(4, 22)
        words = [r.choice(_WORDS) for _ in range(n)]
        if r.random() < 0.1:
            words.insert(r.randrange(n), r.choice(_UNI))
        sentences.append(" ".join(words).capitalize() + r.choice([".", ".", "?", ":", "!"]))
    paras = []
    for _ in range(8000):
        para = " ".join(r.choice(sentences) for _ in range(r.randrange(1, 7)))
        if r.random() < 0.15:
            para = "- `" + r.choice(_WORDS) + "`: " + para
        paras.append(para + ("\n\n" if r.random() < 0.6 else "\n"))
    pesc = [_enc(p)[1:-1] for p in paras]
    pcuts, pos = [], 0
    for e in pesc:
        pcuts.append(pos)
        pos += len(e)
    pcuts.append(pos)
    b64 = base64.b64encode(r.randbytes(1_500_000)).decode()
    return _Blobs(code, cuts, "".join(pesc), pcuts, b64, sentences)


# --------------------------------------------------------------------------- ids

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def uuid(self) -> str:
        h = f"{self.r.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"

    def b62(self, n: int) -> str:
        return "".join(self.r.choices(_B62, k=n))

    def msg(self) -> str:
        return "msg_01" + self.b62(22)

    def req(self) -> str:
        return "req_011C" + self.b62(20)

    def toolu(self) -> str:
        return "toolu_01" + self.b62(22)

    def hexid(self, n: int) -> str:
        return f"{self.r.getrandbits(4 * n):0{n}x}"


def _ts(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:"
        f"{t.tm_min:02d}:{t.tm_sec:02d}.{ms % 1000:03d}Z"
    )


def encode_cwd(cwd: str) -> str:
    """Claude Code's project folder name: non-alphanumerics become '-'; long ones cut."""
    enc = "".join(c if c.isascii() and c.isalnum() else "-" for c in cwd)
    if len(enc) > 200:
        enc = enc[:200] + "-" + f"{abs(hash_str(cwd)):x}"[:8]
    return enc


def hash_str(s: str) -> int:
    """A stable (non-randomised) string hash."""
    h = 2166136261
    for b in s.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


# --------------------------------------------------------------------------- output


@dataclass
class CorpusInfo:
    """What `generate` wrote."""

    out_dir: Path
    files: int = 0
    meta_files: int = 0
    bytes: int = 0
    lines: int = 0
    assistant_lines: int = 0
    sessions: int = 0
    largest_file_bytes: int = 0
    seconds: float = 0.0
    cases: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        mbps = self.bytes / MB / self.seconds if self.seconds else 0.0
        return (
            f"corpus {self.out_dir}: {self.files} files (+{self.meta_files} meta), "
            f"{self.bytes:,} bytes, {self.lines:,} lines ({self.assistant_lines:,} assistant), "
            f"{self.sessions} sessions, largest file {self.largest_file_bytes:,} bytes, "
            f"{self.seconds:.2f} s ({mbps:.0f} MB/s)"
        )


class _Out:
    """One transcript file, buffered; bytes are counted as written."""

    FLUSH = 1 << 22

    def __init__(self, path: Path, info: CorpusInfo, keep: bool = False) -> None:
        self.path = path
        self.info = info
        self.buf: list[str] = []
        self.buf_chars = 0
        self.size = 0  # approximate (chars) until closed
        self.kept: list[tuple[str, bool]] | None = [] if keep else None  # (line, counted)
        self.raw: list[tuple[int, bytes]] = []  # (line index, bytes) for --corrupt
        self.nlines = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "wb")  # noqa: SIM115 - closed in close()

    def add(self, line: str, count: bool = True) -> None:
        """Append a line; `count=False` keeps it out of the budget (progress echoes)."""
        self.buf.append(line)
        n = len(line) + 1
        self.buf_chars += n
        if count:
            self.size += n
        self.nlines += 1
        if self.kept is not None:
            self.kept.append((line, count))
        if self.buf_chars >= self.FLUSH:
            self._flush()

    def add_raw(self, data: bytes) -> None:
        self._flush()
        self.fh.write(data)
        self.info.bytes += len(data)
        self.info.lines += 1
        self.size += len(data)

    def _flush(self) -> None:
        if self.buf:
            data = ("\n".join(self.buf) + "\n").encode()
            self.fh.write(data)
            self.info.bytes += len(data)
            self.info.lines += len(self.buf)
            self.buf = []
            self.buf_chars = 0

    def close(self) -> None:
        self._flush()
        self.fh.close()
        real = self.path.stat().st_size
        self.info.files += 1
        self.info.largest_file_bytes = max(self.info.largest_file_bytes, real)


# --------------------------------------------------------------------------- sessions

_PROMPTS = [
    "Fix the failing test in the parser module",
    "Can you refactor the cache layer so it streams instead of loading everything?",
    "Add a --json flag to the report command",
    "why is the daily total off by one day for users in Tokyo?",
    "Write a migration that adds the `cost_usd` column",
    "Review this diff and tell me what could break",
    "Run the benchmarks and summarise the numbers",
    "ok, now do the same for the weekly report",
    "Explain how the 5-hour window is computed here",
    "Please update the README with the new options",
    "Zażółć gęślą jaźń — handle non-ASCII paths too",
    "Line one\u2028line two after a raw paragraph separator",
    "continue",
    "yes",
    "<command-message>review is running…</command-message>\n<command-name>/review</command-name>",
]
_TOOLS = ["Read", "Bash", "Edit", "Grep", "Glob", "Write", "TodoWrite", "WebSearch", "WebFetch"]
_TOOL_W = [0.34, 0.22, 0.14, 0.08, 0.05, 0.05, 0.05, 0.04, 0.03]
_FORCED = ["", "error", "unknown", "system", "queue", "noresp", "limit", "", "comeback", ""]
_UNKNOWN_TYPES = ["pr-link", "custom-title", "ai-title", "agent-name", "last-prompt", "tag"]


@dataclass
class _Plan:
    kind: str  # giant | main | sub | btw | resumed
    budget: int
    era_hint: str = ""  # force an era for coverage: A (1.0 no requestId), B, C, D
    subs: list[_Plan] = field(default_factory=list)
    btws: list[_Plan] = field(default_factory=list)
    source: _Plan | None = None
    out: _Out | None = None
    project: tuple[str, str] = ("", "")  # (cwd, encoded)
    sid: str = ""
    end_ms: int = 0
    last_version: str = ""
    model: str = ""


class _Gen:
    def __init__(
        self,
        out_dir: Path,
        seed: int,
        progress_lines: bool,
        corrupt: bool,
        known_models_only: bool = False,
    ) -> None:
        self.model_map = KNOWN_MODEL_MAP if known_models_only else {}
        self.rng = random.Random(seed)
        self.ids = _Ids(self.rng)
        self.pids = _Ids(random.Random(seed * 7919 + 17))
        self.crng = random.Random(seed * 104729 + 3)
        self.out_dir = out_dir
        self.progress_lines = progress_lines
        self.corrupt = corrupt
        self.info = CorpusInfo(out_dir=out_dir)
        self.b = _blobs()
        self.projects = self._make_projects()

    # ---------------------------------------------------------------- projects
    def _make_projects(self) -> list[tuple[str, str]]:
        r = self.rng
        names = [
            "api",
            "web",
            "claude-usaged",
            "infra",
            "my_app.v2",
            "data-pipeline",
            "notes",
            "ml/experiments",
            "docs",
            "mobile",
        ]
        cwds = [f"/home/dev/src/{n}" for n in names]
        cwds += [f"/Users/anna/work/{r.choice(_WORDS)}-{r.choice(_WORDS)}" for _ in range(8)]
        cwds.append("C:\\Users\\dev\\source\\repos\\Legacy.App")
        cwds.append("/home/dev/src/" + "/".join(["very-long-directory-name"] * 10) + "/leaf")
        cwds.append("/home/dev/src/проект")
        return [(c, encode_cwd(c)) for c in cwds]

    # ---------------------------------------------------------------- planning
    def plan(self, size_mb: float, n_files: int | None) -> list[_Plan]:
        r = self.rng
        total = int(size_mb * MB)
        n = n_files if n_files else max(6, round(FILES_PER_500MB * size_mb / 500))
        n = max(n, 5)
        n_sub = max(1, round(0.33 * (n - 1)))
        n_btw = max(1, round(0.02 * (n - 1)))
        n_res = max(1, round(0.06 * (n - 1)))
        n_main = max(1, n - 1 - n_sub - n_btw - n_res)
        giant_budget = int(total * GIANT_SHARE) if n >= 6 else int(total * 0.3)
        rest = total - giant_budget
        kinds = ["main"] * n_main + ["sub"] * n_sub + ["btw"] * n_btw + ["resumed"] * n_res
        params = {
            "main": (0.0, 1.25),
            "sub": (-1.3, 1.0),
            "btw": (-3.0, 0.4),
            "resumed": (0.2, 1.0),
        }
        weights = [math.exp(r.gauss(*params[k])) for k in kinds]
        scale = rest / sum(weights) * 0.82  # progress echoes and turn ends overshoot
        cap = max(1, int(giant_budget * 0.6))
        plans = [
            _Plan(k, min(cap, max(3000, int(w * scale))))
            for k, w in zip(kinds, weights, strict=True)
        ]
        giant = _Plan("giant", giant_budget, era_hint="D")
        mains = [p for p in plans if p.kind == "main"]
        for i, p in enumerate(mains):
            p.era_hint = ["A", "C", "B"][i] if i < 3 else ""
        # Who spawns what: subagent files need a 2.x parent, /btw a 2.1.x one.
        parents2 = [giant] + [p for p in mains if p.era_hint in ("C", "D", "")]
        parents21 = [giant] + [p for p in mains if p.era_hint in ("D", "")]
        for p in plans:
            if p.kind == "sub":
                r.choice(parents2).subs.append(p)
            elif p.kind == "btw":
                r.choice(parents21).btws.append(p)
        resumed = [p for p in plans if p.kind == "resumed"]
        for i, p in enumerate(resumed):
            # The first fork copies the 1.0.x session without requestId.
            p.source = mains[0] if i == 0 else r.choice(mains)
        return [giant, *mains, *resumed]

    # ---------------------------------------------------------------- driver
    def run(self, size_mb: float, n_files: int | None, show_progress: bool) -> CorpusInfo:
        t0 = time.perf_counter()
        top = self.plan(size_mb, n_files)
        sources = {id(p.source) for p in top if p.source is not None}
        last_report = 0
        for p in top:
            if p.kind == "resumed":
                self._resumed(p)
            else:
                self._session(p, keep=id(p) in sources)
            if show_progress and self.info.bytes - last_report >= 25 * MB:
                last_report = self.info.bytes
                print(
                    f"corpus: {self.info.bytes / MB:.0f}/{size_mb:.0f} MB, "
                    f"{self.info.files} files, {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        for p in top:
            if p.source is not None and p.source.out is not None:
                p.source.out.kept = None
        self.info.seconds = time.perf_counter() - t0
        return self.info

    def _start_time(self, era: str) -> int:
        r = self.rng
        if era == "A":
            return r.randrange(T_V1 + 3 * 86_400_000, T_V1_REQ - 3 * 86_400_000)
        if era == "B":
            return r.randrange(T_V1_REQ, T_V2 - 2 * 86_400_000)
        if era == "C":
            return r.randrange(T_V2, T_V21 - 2 * 86_400_000)
        if era == "D":
            return r.randrange(DENSE_START, END - 3 * 86_400_000)
        x = r.random()
        if x < 0.04:
            return self._start_time("A")
        if x < 0.14:
            return self._start_time("B")
        if x < 0.28:
            return self._start_time("C")
        if x < 0.40:
            return r.randrange(T_V21, DENSE_START)
        return self._start_time("D")

    def _session(self, p: _Plan, keep: bool) -> None:
        r = self.rng
        p.project = r.choice(self.projects) if p.kind != "giant" else self.projects[2]
        p.sid = self.ids.uuid()
        path = self.out_dir / "projects" / p.project[1] / f"{p.sid}.jsonl"
        p.out = _Out(path, self.info, keep=keep)
        self.info.sessions += 1
        t = self._start_time(p.era_hint)
        s = _Session(self, p, p.out, t, sidechain=False)
        s.run_main()
        p.end_ms = s.clock
        p.last_version = s.version
        self._maybe_corrupt(p.out)
        p.out.close()

    def _resumed(self, p: _Plan) -> None:
        r = self.rng
        src = p.source
        assert src is not None and src.out is not None and src.out.kept is not None
        p.project = src.project
        p.sid = self.ids.uuid()
        path = self.out_dir / "projects" / p.project[1] / f"{p.sid}.jsonl"
        p.out = _Out(path, self.info)
        self.info.sessions += 1
        kept = src.out.kept
        # Fork point: copy a prefix of the source (all of it for a plain resume).
        limit = int(p.budget * 0.6)
        n, size = 0, 0
        last = 0  # index of the last counted line copied
        while n < len(kept):
            line, counted = kept[n]
            if counted:
                if size + len(line) >= limit and n >= 4:
                    break
                size += len(line) + 1
                last = n
            n += 1
        n = last + 1  # progress echoes after it are not copied
        start = self._ts_of(kept[last][0], src.end_ms)
        if src.last_version.startswith("1.") or src.last_version.startswith("2.0"):
            leaf = self.ids.uuid()
            p.out.add(_enc({"type": "summary", "summary": "Resumed work", "leafUuid": leaf}))
        for line, counted in kept[:n]:
            p.out.add(line, count=counted)
            if counted and '"usage":{' in line and line.startswith('{"parentUuid"'):
                self.info.assistant_lines += 1
        self.info.cases["resumed_copied_lines"] += n
        self.info.cases["resumed_files"] += 1
        t = start + r.choice([20 * MIN, 3 * HOUR, 9 * HOUR, 30 * HOUR])
        s = _Session(self, p, p.out, t, sidechain=False)
        s.parent_uuid = self._uuid_of(kept[last][0])
        s.run_main()
        self._maybe_corrupt(p.out)
        p.out.close()

    @staticmethod
    def _ts_of(line: str, default: int) -> int:
        i = line.rfind('"timestamp":"')
        if i < 0:
            return default
        s = line[i + 13 : i + 37]
        tt = time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
        return calendar.timegm(tt) * 1000 + int(s[20:23])

    @staticmethod
    def _uuid_of(line: str) -> str | None:
        i = line.rfind('"uuid":"')
        return line[i + 8 : i + 44] if i >= 0 else None

    def _maybe_corrupt(self, out: _Out) -> None:
        r = self.crng  # own random stream: --corrupt changes nothing else
        if not self.corrupt or r.random() > 0.08:
            return
        # A crash left half a line (then a restart went on); and binary junk.
        line = '{"parentUuid":"' + _Ids(r).uuid() + '","isSidechain":false,"type":"assistant'
        out.add_raw((line + ',"message":{"id":"msg_01trunc').encode() + b"\n")
        junk = r.randbytes(40).replace(b"\n", b" ")
        out.add_raw(b"\x00\x01\xff\xfe\x80garbage\x9c\xe2\x82" + junk + b"\n")
        self.info.cases["corrupt_lines"] += 2


class _Session:
    """Writes one conversation thread (main session, subagent or /btw) to `out`."""

    def __init__(
        self,
        g: _Gen,
        plan: _Plan,
        out: _Out,
        start_ms: int,
        sidechain: bool,
        sid: str | None = None,
        agent_id: str | None = None,
        parent: _Session | None = None,
        model: str | None = None,
    ) -> None:
        self.g = g
        self.r = g.rng
        self.ids = g.ids
        self.b = g.b
        self.plan = plan
        self.out = out
        self.clock = start_ms
        self.sidechain = sidechain
        self.sid = sid or plan.sid
        self.agent_id = agent_id
        self.parent = parent
        self.parent_uuid: str | None = None
        self.cwd, _ = plan.project if plan.project[0] else parent.plan.project  # type: ignore[union-attr]
        self.branch = self.r.choice(["main", "main", "", "feature/streaming", "fix/tz"])
        self.slug = "-".join(self.r.choice(_WORDS) for _ in range(3))
        self.ctx = self.r.randrange(12_000, 26_000)
        self.cached = 0
        self.last_call = start_ms
        self.ttl_1h = self.r.random() < 0.5
        self.geo = self.r.choices(["", "not_available", "us"], [0.5, 0.35, 0.15])[0]
        self.stream_repeat = self.r.random() < 0.2
        self.fast = False
        self.version = ""
        self.model = model or ""
        self.recent: list[tuple[str, str, int]] = []  # (message json, msg id, ms) of last responses
        self._set_version()
        if not self.model:
            self._pick_model()

    # ---------------------------------------------------------------- helpers
    def _set_version(self) -> None:
        self.version = version_at(self.clock)
        v = _vtuple(self.version)
        self.v1 = v[0] == 1
        self.v21 = v >= (2, 1, 0)
        self.has_req = v >= (1, 0, 20)
        self.has_cost = v < (1, 0, 9)
        self.has_cc_obj = v >= (1, 0, 60)
        self.split_bug = (2, 1, 0) <= v < (2, 1, 152)
        self._hdr()

    def _hdr(self) -> None:
        side = "true" if self.sidechain else "false"
        h = (
            f',"isSidechain":{side},"userType":"external","cwd":{_enc(self.cwd)},'
            f'"sessionId":"{self.sid}","version":"{self.version}","gitBranch":{_enc(self.branch)}'
        )
        if self.agent_id and not self.v1:
            h += f',"agentId":"{self.agent_id}"'
        if self.v21:
            h += f',"slug":"{self.slug}"'
        self.hdr = h

    def _pick_model(self) -> None:
        names, weights = _models_at(self.clock)
        self.model = self.r.choices(names, weights)[0]
        self.fast = (
            self.v21
            and self.model in ("claude-opus-4-6", "claude-opus-5")
            and self.r.random() < 0.3
        )

    def _pu(self) -> str:
        return "null" if self.parent_uuid is None else f'"{self.parent_uuid}"'

    def tick(self, lo_ms: int, hi_ms: int) -> int:
        self.clock += self.r.randrange(lo_ms, hi_ms)
        return self.clock

    def _emit(self, line: str, echo: str | None = None) -> None:
        self.out.add(line)
        # The draw happens either way (before the flag is looked at), so that
        # --no-progress-lines changes nothing else.
        drawn = echo is not None and self.parent is not None and self.r.random() < 0.9
        if drawn and self.g.progress_lines and self.parent is not None and echo is not None:
            self.parent._progress(echo, self)

    # ---------------------------------------------------------------- lines
    def user_prompt(self, text: str | None = None, meta: bool = False) -> None:
        r = self.r
        if self.v21 and not self.sidechain and r.random() < 0.08:
            self._queue_op()
        if not self.v1 and not self.sidechain:
            self._snapshot()
        if text is None:
            text = r.choice(_PROMPTS)
            if r.random() < 0.3:
                text += "\n\n" + r.choice(self.b.sentences)
        if "\u2028" in text:
            self.g.info.cases["u2028_prompt"] += 1
        u = self.ids.uuid()
        ts = _ts(self.tick(2_000, 240_000) if not meta else self.clock)
        content = _enc(text) if r.random() < 0.7 else '[{"type":"text","text":' + _enc(text) + "}]"
        extra = ',"isMeta":true' if meta else ""
        tail = ""
        if not self.v1 and not self.sidechain and not meta:
            tail = ',"thinkingMetadata":{"level":"high","disabled":false,"triggers":[]}'
        line = (
            f'{{"parentUuid":{self._pu()}{self.hdr},"type":"user","message":{{"role":"user",'
            f'"content":{content}}}{extra},"uuid":"{u}","timestamp":"{ts}"{tail}}}'
        )
        self.parent_uuid = u
        self._emit(
            line,
            echo=f'{{"type":"user","message":{{"role":"user","content":{content}}},'
            f'"uuid":"{u}","timestamp":"{ts}"}}',
        )

    def _snapshot(self) -> None:
        mid = self.ids.uuid()
        ts = _ts(self.clock)
        files = {}
        for _ in range(self.r.randrange(0, 4)):
            name = f"src/{self.r.choice(_WORDS)}.py"
            files[name] = {
                "backupFileName": f"{self.ids.hexid(16)}@v2",
                "version": 2,
                "backupTime": ts,
            }
        snap = {"messageId": mid, "trackedFileBackups": files, "timestamp": ts}
        self.out.add(
            _enc(
                {
                    "type": "file-history-snapshot",
                    "messageId": mid,
                    "snapshot": snap,
                    "isSnapshotUpdate": False,
                }
            )
        )

    def _queue_op(self) -> None:
        op = self.r.choice(["enqueue", "dequeue", "remove"])
        d: dict[str, object] = {
            "type": "queue-operation",
            "operation": op,
            "timestamp": _ts(self.clock),
            "sessionId": self.sid,
        }
        if op == "enqueue":
            d["content"] = self.r.choice(_PROMPTS)
        self.out.add(_enc(d))
        self.g.info.cases["queue_operation"] += 1

    def system(self, subtype: str, content: str, extra: str = "") -> None:
        u = self.ids.uuid()
        line = (
            f'{{"parentUuid":{self._pu()}{self.hdr},"type":"system","subtype":"{subtype}",'
            f'"content":{_enc(content)},"isMeta":false,"timestamp":"{_ts(self.clock)}",'
            f'"uuid":"{u}","level":"info"{extra}}}'
        )
        self.parent_uuid = u
        self.out.add(line)

    def unknown(self) -> None:
        kind = self.r.choice(_UNKNOWN_TYPES)
        d: dict[str, object] = {"type": kind, "sessionId": self.sid, "timestamp": _ts(self.clock)}
        if kind == "pr-link":
            d["url"] = (
                f"https://github.com/dev/{self.r.choice(_WORDS)}/pull/{self.r.randrange(9999)}"
            )
        else:
            d["value"] = self.r.choice(self.b.sentences)
        self.out.add(_enc(d))
        self.g.info.cases["unknown_type"] += 1

    def _usage(self, out_tok: int, thinking: int, blocks: int) -> tuple[list[str], int]:
        """Usage JSON for each streamed line (last = final) and the final output count."""
        r = self.r
        g = self.g.info.cases
        gap = self.clock - self.last_call
        ttl = HOUR if self.ttl_1h and not self.v1 else 5 * MIN
        if gap > ttl or self.cached == 0:
            create, read = self.ctx, 0  # cache expired: write it all again
        else:
            create, read = max(0, self.ctx - self.cached), self.cached
        self.cached = self.ctx
        self.last_call = self.clock
        inp = r.choice([1, 3, 4, 6, 8, 10]) if create or read else r.randrange(50, 4000)
        c1 = create if self.ttl_1h and self.has_cc_obj and not self.v1 else 0
        if c1 and r.random() < 0.2:
            c1 = create // 2
        c5 = create - c1
        flat = create
        if self.split_bug and create and r.random() < 0.08:
            flat = 0
            g["cache_flat0_split"] += 1
        if c1:
            g["cache_1h"] += 1
        head = (
            f'{{"input_tokens":{inp},"cache_creation_input_tokens":{flat},'
            f'"cache_read_input_tokens":{read}'
        )
        if self.has_cc_obj:
            head += (
                f',"cache_creation":{{"ephemeral_5m_input_tokens":{c5},'
                f'"ephemeral_1h_input_tokens":{c1}}}'
            )
        tail = ',"service_tier":"standard"'
        if not self.v1:
            ws = 1 if r.random() < 0.03 else 0
            wf = 1 if r.random() < 0.03 else 0
            g["web_search"] += ws
            tail += f',"server_tool_use":{{"web_search_requests":{ws},"web_fetch_requests":{wf}}}'
        if self.v21:
            tail += f',"inference_geo":"{self.geo}"'
            g["geo_" + (self.geo or "empty")] += 1
            if self.fast:
                tail += ',"speed":"fast"'
                g["speed_fast"] += 1
            if r.random() < 0.1:
                its = []
                if r.random() < 0.3:
                    its.append(
                        f'{{"type":"compaction","input_tokens":{r.randrange(50_000, 150_000)},'
                        f'"output_tokens":{r.randrange(1000, 5000)}}}'
                    )
                    g["iterations_compaction"] += 1
                its.append(
                    f'{{"type":"message","input_tokens":{inp},"cache_read_input_tokens":{read},'
                    f'"cache_creation_input_tokens":{create},"output_tokens":{out_tok}}}'
                )
                tail += ',"iterations":[' + ",".join(its) + "]"
                g["iterations"] += 1
            if thinking:
                tail += f',"output_tokens_details":{{"thinking_tokens":{min(thinking, out_tok)}}}'
        outs = []
        if self.stream_repeat:
            outs = [out_tok] * blocks
            if blocks > 1:
                g["stream_tie"] += 1
        else:
            partial = sorted(r.randrange(1, max(2, min(out_tok, 40))) for _ in range(blocks - 1))
            outs = [*partial, out_tok]
            if blocks > 1 and r.random() < 0.06:
                outs[-1], outs[-2] = outs[-2], outs[-1]  # final count not on the last line
                g["stream_final_not_last"] += 1
        if blocks > 1:
            g["stream_multi"] += 1
        if self.has_cost:
            g["cost_usd"] += 1
        return [f'{head},"output_tokens":{o}{tail}}}' for o in outs], out_tok

    def response(self, n_tools: int, final: bool) -> list[tuple[str, str, str]]:
        """One API response streamed as one line per block; returns its tool_use ids."""
        r = self.r
        b = self.b
        info = self.g.info
        model = self.model
        if model == "claude-fable-5-1" and r.random() < 0.05:
            model = "claude-opus-4-6"  # refused Fable turn falls back to Opus
        model = self.g.model_map.get(model, model)
        info.models[model] += 1
        blocks: list[tuple[str, list[str]]] = []  # (json with @@n@@ markers, substitutions)
        thinking = 0
        if not self.v1 and r.random() < 0.45 and "haiku" not in model:
            n = int(r.lognormvariate(6.3, 0.9))
            sig = b.b64_slice(r, r.randrange(300, 1200))
            blocks.append(
                (
                    '{"type":"thinking","thinking":"@@0@@","signature":"@@1@@"}',
                    [b.prose_slice(r, n), sig],
                )
            )
            thinking = n // 4
        if final or r.random() < 0.5:
            n = int(r.lognormvariate(5.8, 1.0))
            blocks.append(('{"type":"text","text":"@@0@@"}', [b.prose_slice(r, n)]))
        tools: list[tuple[str, str, str]] = []
        for _ in range(n_tools):
            name = r.choices(_TOOLS, _TOOL_W)[0]
            tid = self.ids.toolu()
            path = f"{self.cwd}/src/{r.choice(_WORDS)}/{r.choice(_WORDS)}.py"
            if name == "Read":
                inp = _enc({"file_path": path})
            elif name == "Bash":
                inp = _enc(
                    {
                        "command": f"pytest -q tests/test_{r.choice(_WORDS)}.py",
                        "description": "Run tests",
                    }
                )
            elif name in ("Edit", "Write"):
                key = "old_string" if name == "Edit" else "content"
                size = int(r.lognormvariate(6.5, 1.1))
                inp = (
                    '{"file_path":'
                    + _enc(path)
                    + f',"{key}":"@@0@@"'
                    + (',"new_string":"@@1@@"' if name == "Edit" else "")
                    + "}"
                )
                subs = [b.code_slice(r, size), b.code_slice(r, size)]
                blocks.append(
                    (f'{{"type":"tool_use","id":"{tid}","name":"{name}","input":{inp}}}', subs)
                )
                tools.append((tid, name, path))
                continue
            elif name == "WebSearch":
                inp = _enc({"query": " ".join(r.choice(_WORDS) for _ in range(4))})
            else:
                inp = _enc({"pattern": f"**/*{r.choice(_WORDS)}*"})
            blocks.append((f'{{"type":"tool_use","id":"{tid}","name":"{name}","input":{inp}}}', []))
            tools.append((tid, name, path))
        if not blocks:
            blocks.append(('{"type":"text","text":"@@0@@"}', [b.prose_slice(r, 200)]))
        out_tok = sum(len(x) for _, subs in blocks for x in subs) // 4 + r.randrange(5, 60)
        usages, out_tok = self._usage(out_tok, thinking, len(blocks))
        mid = self.ids.msg()
        rid = self.ids.req() if self.has_req else None
        if rid is None:
            info.cases["no_request_id"] += 1
        stop = '"tool_use"' if tools else '"end_turn"'
        self.ctx += out_tok + r.randrange(50, 400)
        for i, ((blk, subs), usage) in enumerate(zip(blocks, usages, strict=True)):
            for k, s in enumerate(subs):
                blk = blk.replace(f'"@@{k}@@"', f'"{s}"', 1)
            last = i == len(blocks) - 1
            sr = stop if last else "null"
            if self.v1:
                msg = (
                    f'{{"id":"{mid}","type":"message","role":"assistant","model":"{model}",'
                    f'"content":[{blk}],"stop_reason":{sr},"stop_sequence":null,"usage":{usage}}}'
                )
            else:
                msg = (
                    f'{{"model":"{model}","id":"{mid}","type":"message","role":"assistant",'
                    f'"content":[{blk}],"stop_reason":{sr},"stop_sequence":null,"usage":{usage}'
                    + (',"context_management":null}' if self.v21 else "}")
                )
            u = self.ids.uuid()
            ts = _ts(self.tick(300, 4000) if i else self.tick(1500, 9000))
            req = f',"requestId":"{rid}"' if rid else ""
            cost = f',"costUSD":{r.randrange(1, 90000) / 1e6}' if self.has_cost else ""
            line = (
                f'{{"parentUuid":{self._pu()}{self.hdr},"message":{msg}{req},"type":"assistant",'
                f'"uuid":"{u}","timestamp":"{ts}"{cost}}}'
            )
            self.parent_uuid = u
            info.assistant_lines += 1
            echo = f'{{"type":"assistant","timestamp":"{ts}","message":{msg}{req},"uuid":"{u}"}}'
            self._emit(line, echo=echo)
            if last:
                self.recent = [*self.recent[-2:], (msg, mid, self.clock)]
        return tools

    def tool_results(self, tools: list[tuple[str, str, str]]) -> None:
        r = self.r
        b = self.b
        for tid, name, path in tools:
            u = self.ids.uuid()
            ts = _ts(self.tick(80, 20_000))
            tur = '"Done"'
            err = ""
            if name == "Read":
                size = int(min(r.lognormvariate(7.4, 1.35), 400_000))
                body = b.code_slice(r, size)
                content = f'"{body}"'
                n = body.count("\\n")
                tur = (
                    f'{{"type":"text","file":{{"filePath":{_enc(path)},"content":"{body}",'
                    f'"numLines":{n},"startLine":1,"totalLines":{n + r.randrange(0, 300)}}}}}'
                )
                self.ctx += size // 4
                if r.random() < 0.006:
                    img = b.b64_slice(r, r.randrange(100_000, 700_000))
                    content = (
                        '[{"type":"image","source":{"type":"base64","media_type":"image/png",'
                        f'"data":"{img}"}}}}]'
                    )
                    tur = (
                        '{"type":"image","file":{"type":"image/png","originalSize":'
                        + str(len(img) * 3 // 4)
                        + "}}"
                    )
                    self.g.info.cases["image_blocks"] += 1
                    self.ctx += 1600
            elif name == "Bash":
                body = b.prose_slice(r, int(min(r.lognormvariate(6.0, 1.3), 60_000)))
                content = f'"{body}"'
                err = ',"is_error":true' if r.random() < 0.08 else ""
                tur = f'{{"stdout":"{body}","stderr":"","interrupted":false,"isImage":false}}'
                self.ctx += len(body) // 4
            else:
                content = _enc(r.choice(self.b.sentences))
                self.ctx += 40
            msg = (
                f'{{"role":"user","content":[{{"tool_use_id":"{tid}","type":"tool_result",'
                f'"content":{content}{err}}}]}}'
            )
            line = (
                f'{{"parentUuid":{self._pu()}{self.hdr},"type":"user","message":{msg},'
                f'"uuid":"{u}","timestamp":"{ts}","toolUseResult":{tur}}}'
            )
            self.parent_uuid = u
            self._emit(
                line, echo=f'{{"type":"user","message":{msg},"uuid":"{u}","timestamp":"{ts}"}}'
            )

    def synthetic(self, kind: str) -> None:
        r = self.r
        u = self.ids.uuid()
        ts = _ts(self.tick(500, 3000))
        reset_h = (self.clock // HOUR + r.randrange(1, 5)) * HOUR
        if kind == "limit":
            if self.v1:
                text = f"Claude AI usage limit reached|{reset_h // 1000}"
            elif not self.v21:
                hh = time.gmtime(reset_h // 1000).tm_hour
                text = f"Session limit reached ∙ resets {hh % 12 or 12}{'am' if hh < 12 else 'pm'}"
            else:
                hh = time.gmtime(reset_h // 1000).tm_hour
                h12 = f"{hh % 12 or 12}{'am' if hh < 12 else 'pm'}"
                text = r.choice(
                    [
                        f"You've hit your limit · resets {h12} (Europe/Warsaw)",
                        f"You've hit your session limit · resets {h12} (UTC)",
                        "You've hit your monthly spend limit",
                    ]
                )
            self.g.info.cases["synthetic_limit"] += 1
        elif kind == "error":
            text = (
                'API Error: 529 {"type":"error","error":{"type":"overloaded_error",'
                '"message":"Overloaded"}}'
            )
        else:
            text = "No response requested."
        usage = (
            '{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,'
            '"cache_read_input_tokens":0,"server_tool_use":{"web_search_requests":0'
            + (',"web_fetch_requests":0' if self.v21 else "")
            + '},"service_tier":null'
            + (
                ',"cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0}}'
                if not self.v1
                else "}"
            )
        )
        msg = (
            f'{{"id":"{self.ids.uuid()}","container":null,"model":"<synthetic>","role":"assistant",'
            f'"stop_reason":"stop_sequence","stop_sequence":"","type":"message","usage":{usage},'
            f'"content":[{{"type":"text","text":{_enc(text)}}}]'
            + (',"context_management":null}' if self.v21 else "}")
        )
        api_err = ',"isApiErrorMessage":true' if kind != "noresp" else ""
        err = ',"error":"rate_limit"' if self.v21 and kind == "limit" else ""
        line = (
            f'{{"parentUuid":{self._pu()}{self.hdr},"type":"assistant","uuid":"{u}",'
            f'"timestamp":"{ts}","message":{msg}{err}{api_err}}}'
        )
        self.parent_uuid = u
        self.g.info.cases["synthetic"] += 1
        self.g.info.assistant_lines += 1
        self.out.add(line)
        if kind == "limit":
            self.clock = max(self.clock, reset_h) + r.randrange(1, 40) * MIN

    def _progress(self, echo: str, child: _Session) -> None:
        """A 2.1.x `progress` line in this (parent) file echoing a subagent line."""
        ids = self.g.pids  # own random stream: progress lines change nothing else
        u = ids.uuid()
        line = (
            f'{{"parentUuid":{self._pu()}{self.hdr},"type":"progress","data":{{"message":{echo},'
            f'"normalizedMessages":[],"type":"agent_progress","prompt":{_enc(child.prompt)},'
            f'"agentId":"{child.agent_id}"}},"toolUseID":"agent_msg_01{ids.b62(22)}",'
            f'"parentToolUseID":"{child.task_tool}","uuid":"{u}","timestamp":"{_ts(child.clock)}"}}'
        )
        self.out.add(line, count=False)
        self.g.info.cases["progress_lines"] += 1

    # ---------------------------------------------------------------- flows
    def turn(self) -> None:
        """A user prompt and the tool loop that answers it."""
        r = self.r
        self.user_prompt()
        steps = min(int(r.expovariate(1 / 4)) + 1, 25)
        budget = self.plan.budget
        for step in range(steps):
            final = step == steps - 1 or self.out.size >= budget
            n_tools = 0 if final else r.choices([1, 1, 1, 2, 3], k=1)[0]
            tools = self.response(n_tools, final)
            if tools:
                self.tool_results(tools)
            if final:
                break
            if not self.sidechain:
                self._maybe_spawn()
        if self.ctx > 165_000:
            self.system(
                "compact_boundary",
                "Conversation compacted",
                ',"compactMetadata":{"trigger":"auto","preTokens":' + str(self.ctx) + "}",
            )
            self.ctx = self.r.randrange(18_000, 30_000)
            self.cached = 0

    def _maybe_spawn(self) -> None:
        p = self.plan
        r = self.r
        remaining = max(1, p.budget - self.out.size)
        pending = len(p.subs) + len(p.btws)
        if pending and r.random() < pending * 8_000 / remaining:
            if p.btws and (not p.subs or r.random() < 0.3):
                self.run_btw(p.btws.pop())
            else:
                self.run_subagent(p.subs.pop())
        elif self.v1 and r.random() < 0.04:
            self.run_inline_sidechain()

    def _gap(self) -> None:
        """Pause between bursts: minutes, a few hours, or more than 5 hours."""
        r = self.r
        x = r.random()
        if x < 0.55:
            self.clock += r.randrange(1, 45) * MIN
        elif x < 0.80:
            self.clock += r.randrange(60, 299) * MIN
        elif x < 0.83:
            self.clock += 5 * HOUR + r.randrange(1, 20) * MIN
        else:
            self.clock += r.randrange(5 * 60 + 30, 40 * 60) * MIN
        if self.plan.kind == "giant" or not self.sidechain:
            old = self.version
            self._set_version()
            if old != self.version and not self.v1 and r.random() < 0.3:
                self._pick_model()
        if r.random() < 0.2:
            self._pick_model()

    def run_main(self) -> None:
        r = self.r
        p = self.plan
        if self.parent_uuid is None:
            self.user_prompt(text="<command-name>/clear</command-name>", meta=True)
        # The biggest session and the oldest one show every event early, so that
        # even a 1 MB corpus holds each case.
        forced = list(_FORCED) if p.kind == "giant" or p.era_hint == "A" else []
        n_burst = 0
        while self.out.size < p.budget:
            if p.kind == "giant" and self.v21:
                names = _models_at(self.clock)[0]
                self.model = names[n_burst % len(names)]
                self.fast = self.model in ("claude-opus-4-6", "claude-opus-5") and r.random() < 0.5
                self.geo = r.choices(["", "not_available", "us"], [0.5, 0.3, 0.2])[0]
            n_burst += 1
            burst = max(1, int(r.expovariate(1 / 6)))
            long_burst = r.random() < 0.1 or n_burst == 2
            if long_burst:
                burst += 18  # steady work, pauses under 5 h, running past 5 hours
                self.g.info.cases["long_bursts"] += 1
            event = forced.pop(0) if forced else ""
            if event == "comeback" or (not event and r.random() < 0.04):
                self.user_prompt()
                self.synthetic("limit")  # the user came back, still limited
            for _ in range(burst):
                if forced and p.kind == "giant" and self.v21:
                    names = _models_at(self.clock)[0]
                    self.model = names[len(forced) % len(names)]
                    self.fast = self.model in ("claude-opus-4-6", "claude-opus-5")
                self.turn()
                event = forced.pop(0) if forced else ""
                if event == "comeback":
                    self.clock += 5 * HOUR + r.randrange(5, 90) * MIN
                    self.user_prompt()
                    self.synthetic("limit")
                x = r.random()
                if event == "limit" or (not event and x < 0.01):
                    self.synthetic("limit")
                elif event == "error" or (not event and x < 0.02):
                    self.synthetic("error")
                elif event == "noresp" or (not event and x < 0.025):
                    self.synthetic("noresp")
                if event == "unknown" or r.random() < 0.02:
                    self.unknown()
                if event == "system" or r.random() < 0.02:
                    tu = self.ids.toolu()
                    self.system("informational", "Hook completed", f',"toolUseID":"{tu}"')
                if event == "queue" and self.v21:
                    self._queue_op()
                if self.out.size >= p.budget:
                    break
                if long_burst:
                    self.clock += r.randrange(2, 50) * MIN
            self._gap()
        while p.subs or p.btws:  # anything not spawned yet
            if p.btws:
                self.run_btw(p.btws.pop())
            else:
                self.run_subagent(p.subs.pop())
        p.model = self.model

    def run_subagent(self, sp: _Plan) -> None:
        """Task tool: the subagent's file, its progress echoes here, then the result."""
        r = self.r
        tid = self.ids.toolu()
        self._task_call(tid)
        sp.project = self.plan.project
        if self.v21:
            aid = self.ids.hexid(17)
            sdir = self.out.path.parent / self.out.path.stem / "subagents"
            path = sdir / f"agent-{aid}.jsonl"
            meta = {
                "agentId": aid,
                "agentType": r.choice(["general-purpose", "Explore", "Plan"]),
                "description": r.choice(self.b.sentences)[:60],
                "parentSessionId": self.sid,
            }
            sdir.mkdir(parents=True, exist_ok=True)
            (sdir / f"agent-{aid}.meta.json").write_text(_enc(meta) + "\n")
            self.g.info.meta_files += 1
        else:
            aid = self.ids.hexid(8)
            path = self.out.path.parent / f"agent-{aid}.jsonl"
        out = _Out(path, self.g.info)
        model = _small_model(self.clock) if r.random() < 0.5 else self.model
        child = _Session(
            self.g,
            sp,
            out,
            self.clock,
            sidechain=True,
            sid=self.sid,
            agent_id=aid,
            parent=self if self.v21 else None,
            model=model,
        )
        child.prompt = r.choice(_PROMPTS)
        child.task_tool = tid
        child.user_prompt(text=child.prompt)
        while out.size < sp.budget:
            child.turn()
        self.g._maybe_corrupt(out)
        out.close()
        self.g.info.cases["subagent_files"] += 1
        self.clock = child.clock + r.randrange(200, 3000)
        self._task_result(tid)

    def run_inline_sidechain(self) -> None:
        """1.0.x: subagent lines written inline in the session file."""
        tid = self.ids.toolu()
        self._task_call(tid)
        child = _Session(
            self.g,
            self.plan,
            self.out,
            self.clock,
            sidechain=True,
            sid=self.sid,
            model=_small_model(self.clock) if self.r.random() < 0.5 else self.model,
        )
        child.user_prompt()
        for _ in range(self.r.randrange(1, 4)):
            child.turn()
        self.clock = child.clock + 500
        self.g.info.cases["inline_sidechain"] += 1
        self._task_result(tid)

    def run_btw(self, bp: _Plan) -> None:
        """/btw side question: replays recent parent responses, then answers."""
        r = self.r
        if not self.recent:
            self.response(0, True)
        aid = self.ids.hexid(17)
        sdir = self.out.path.parent / self.out.path.stem / "subagents"
        sdir.mkdir(parents=True, exist_ok=True)
        (sdir / f"agent-{aid}.meta.json").write_text(
            _enc({"agentId": aid, "agentType": "aside_question", "parentSessionId": self.sid})
            + "\n"
        )
        self.g.info.meta_files += 1
        out = _Out(sdir / f"agent-{aid}.jsonl", self.g.info)
        bp.project = self.plan.project
        child = _Session(
            self.g,
            bp,
            out,
            self.clock,
            sidechain=True,
            sid=self.sid,
            agent_id=aid,
            model=self.model,
        )
        child.user_prompt(text="/btw " + r.choice(_PROMPTS))
        for msg, _mid, _t in self.recent:
            u = self.ids.uuid()
            ts = _ts(child.tick(5, 50))
            line = (
                f'{{"parentUuid":{child._pu()}{child.hdr},"message":{msg},'
                f'"requestId":"{self.ids.req()}","type":"assistant","uuid":"{u}","timestamp":"{ts}"}}'
            )
            child.parent_uuid = u
            out.add(line)
            self.g.info.assistant_lines += 1
            self.g.info.cases["btw_replays"] += 1
        child.ctx, child.cached, child.last_call = self.ctx, self.ctx, child.clock
        while True:
            child.response(0, True)
            if out.size >= bp.budget:
                break
            child.user_prompt()
        self.g._maybe_corrupt(out)
        out.close()
        self.g.info.cases["btw_files"] += 1

    def _task_call(self, tid: str) -> None:
        name = "Task" if not self.v21 or self.r.random() < 0.5 else "Agent"
        model = self.g.model_map.get(self.model, self.model)
        mid = self.ids.msg()
        rid = self.ids.req() if self.has_req else None
        usages, _ = self._usage(self.r.randrange(80, 400), 0, 1)
        inp = _enc(
            {
                "description": "Investigate",
                "prompt": self.r.choice(self.b.sentences),
                "subagent_type": "general-purpose",
            }
        )
        blk = f'{{"type":"tool_use","id":"{tid}","name":"{name}","input":{inp}}}'
        if self.v1:
            msg = (
                f'{{"id":"{mid}","type":"message","role":"assistant","model":"{model}",'
                f'"content":[{blk}],"stop_reason":"tool_use","stop_sequence":null,'
                f'"usage":{usages[0]}}}'
            )
        else:
            msg = (
                f'{{"model":"{model}","id":"{mid}","type":"message","role":"assistant",'
                f'"content":[{blk}],"stop_reason":"tool_use","stop_sequence":null,'
                f'"usage":{usages[0]}' + (',"context_management":null}' if self.v21 else "}")
            )
        u = self.ids.uuid()
        req = f',"requestId":"{rid}"' if rid else ""
        cost = f',"costUSD":{self.r.randrange(1, 90000) / 1e6}' if self.has_cost else ""
        self.out.add(
            f'{{"parentUuid":{self._pu()}{self.hdr},"message":{msg}{req},"type":"assistant",'
            f'"uuid":"{u}","timestamp":"{_ts(self.tick(1000, 5000))}"{cost}}}'
        )
        self.g.info.models[model] += 1
        self.g.info.assistant_lines += 1
        self.parent_uuid = u

    def _task_result(self, tid: str) -> None:
        u = self.ids.uuid()
        text = self.b.prose_slice(self.r, self.r.randrange(300, 3000))
        dur = self.r.randrange(5000, 900000)
        self.out.add(
            f'{{"parentUuid":{self._pu()}{self.hdr},"type":"user","message":{{"role":"user",'
            f'"content":[{{"tool_use_id":"{tid}","type":"tool_result","content":[{{"type":"text",'
            f'"text":"{text}"}}]}}]}},"uuid":"{u}","timestamp":"{_ts(self.tick(100, 900))}",'
            f'"toolUseResult":{{"status":"completed","totalDurationMs":{dur}}}}}'
        )
        self.parent_uuid = u
        self.ctx += len(text) // 4

    prompt: str = ""
    task_tool: str = ""


# --------------------------------------------------------------------------- API


def generate(
    out_dir: Path,
    size_mb: float,
    seed: int,
    progress_lines: bool = True,
    corrupt: bool = False,
    files: int | None = None,
    show_progress: bool = False,
    known_models_only: bool = False,
) -> CorpusInfo:
    """Write a corpus of about `size_mb` MB under `out_dir` (``out_dir/projects/...``).

    Deterministic for a given (size_mb, seed, progress_lines, corrupt, files).
    `out_dir/projects` must not exist yet or be empty of earlier corpora.
    """
    out_dir = Path(out_dir)
    (out_dir / "projects").mkdir(parents=True, exist_ok=True)
    gen = _Gen(out_dir, seed, progress_lines, corrupt, known_models_only)
    return gen.run(size_mb, files, show_progress)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate a realistic Claude Code history.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--size-mb", type=float, default=500.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--no-progress-lines",
        action="store_true",
        help="no `progress` lines (use for ccusage comparisons)",
    )
    ap.add_argument("--files", type=int, default=None, help="number of .jsonl files")
    ap.add_argument("--corrupt", action="store_true", help="add truncated and garbage lines")
    ap.add_argument(
        "--known-models-only",
        action="store_true",
        help="replace the 2026 and unknown models by ones ccusage 20.0.11 prices offline "
        "(same tokens; for speed comparisons: unpriced models slow ccusage 10-15x)",
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if (args.out_dir / "projects").exists() and any((args.out_dir / "projects").iterdir()):
        print(f"{args.out_dir}/projects is not empty", file=sys.stderr)
        return 2
    info = generate(
        args.out_dir,
        args.size_mb,
        args.seed,
        progress_lines=not args.no_progress_lines,
        corrupt=args.corrupt,
        files=args.files,
        show_progress=not args.quiet and args.size_mb >= 50,
        known_models_only=args.known_models_only,
    )
    print(info.summary())
    if not args.quiet:
        print("cases: " + ", ".join(f"{k}={v}" for k, v in sorted(info.cases.items())))
        print("models: " + ", ".join(f"{k}={v}" for k, v in sorted(info.models.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
