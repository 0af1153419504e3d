"""A deliberately plain reference counter, and its comparison with ccusage 20.0.11.

`count(root)` reads every ``projects/**/*.jsonl`` under `root` with
``json.loads`` and applies the counting rules of docs/FORMAT.md
literally:

- only ``type == "assistant"`` lines with a top-level ``message.usage`` count
  (``progress`` echoes never do); ``<synthetic>`` lines are not responses;
- key ``message.id:requestId``, or ``sessionId:message.id`` without a
  requestId; a line without ``message.id`` is a response of its own;
- global dedup: the line with the largest total wins, with its timestamp (a
  tie goes to the earliest timestamp, then to the first line read);
- /btw replays: keys sharing a ``message.id`` of which one is a sidechain are
  one response: the non-sidechain keys stay, or the earliest when all are
  sidechains;
- ``cache_creation`` = max(``cache_creation_input_tokens``, 5m + 1h split);
- per-UTC-day totals and 5-hour blocks (start floored to the UTC hour, a new
  block when ``t - start > 5h`` or ``t - previous > 5h``).

`count(root, mode="ccusage-daily" | "ccusage-blocks")` instead models what
ccusage 20.0.11 was seen to do (see `CCUSAGE_DIFFERENCES`), so that a
comparison can show that the listed differences explain every mismatch.

Script::

    python benchmarks/reference_count.py ROOT            # FORMAT totals as JSON
    python benchmarks/reference_count.py ROOT --compare  # vs ccusage, both modes
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Mode = Literal["format", "ccusage-daily", "ccusage-blocks"]
HOUR_MS = 3_600_000
WINDOW_MS = 5 * HOUR_MS
KINDS = ("input", "output", "cache_creation", "cache_read")

CCUSAGE_DIFFERENCES = """\
Where ccusage 20.0.11 departs from FORMAT.md (each seen on a tiny transcript):
 1. No requestId: key is message.id alone, across sessions (FORMAT: sessionId:message.id).
 2. Tie in total: the first line in processing order wins (files sorted by full path,
    byte order, all roots merged; lines in file order), not the earliest timestamp.
 3. Same key, one line sidechain and one not: the non-sidechain line wins even when
    smaller (FORMAT rule 2: the larger). All-sidechain replays of one message.id: the
    largest total wins (FORMAT: the earliest).
 4. <synthetic> lines are entries: they count in `entries`, open blocks, create
    zero-token days (tokens are all 0, so token totals agree).
 5. cache_creation = ephemeral_5m + ephemeral_1h whenever the `cache_creation` object
    exists, ignoring cache_creation_input_tokens (FORMAT: the larger of the two).
 6. Any line with a top-level message.usage counts, whatever its `type`.
 7. Whole responses are dropped when: "speed" is not "standard"/"fast" (or null);
    "version" is not N.N.N…; requestId/sessionId/message.id/model is "";
    a key named id, cwd, model, speed, costUSD, version, sessionId, requestId,
    isApiErrorMessage, cache_read_input_tokens or cache_creation_input_tokens is null
    anywhere in the line (even inside a tool_use input); the JSON is not compact
    ('"usage":{' not found).
 8. daily only: `progress` lines' data.message.message.usage counts (as a
    non-sidechain line with the embedded requestId), so an echo beats the subagent
    file's own (sidechain) line of the same key even when smaller; `blocks` ignores
    progress lines, so daily and blocks can disagree.
 9. daily only: on a tie in total the more expensive line wins; a replayed sidechain
    entry replaced by a parent line stays indexed under the old key only, so a later
    streamed line of that parent response is counted a second time.
"""


@dataclass(slots=True)
class Resp:
    """One counted API response."""

    key: str
    ts: int
    side: bool
    tokens: tuple[int, int, int, int]
    order: int  # position in processing order
    speed: bool = False
    message_id: str | None = None
    request_id: str | None = None

    @property
    def total(self) -> int:
        return sum(self.tokens)


@dataclass
class Report:
    daily: dict[str, list[int]] = field(default_factory=dict)  # date -> 4 kinds + count
    blocks: list[dict[str, Any]] = field(default_factory=list)
    responses: list[Resp] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "daily": {
                d: dict(zip([*KINDS, "count"], v, strict=True)) for d, v in self.daily.items()
            },
            "blocks": self.blocks,
        }


def parse_ts(s: Any) -> int | None:
    """Epoch ms of an ISO-8601 timestamp, or None."""
    if not isinstance(s, str):
        return None
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def transcript_files(root: Path) -> list[Path]:
    """All ``projects/**/*.jsonl`` under `root`, sorted by full path (ccusage's order)."""
    return sorted((root / "projects").rglob("*.jsonl"), key=lambda p: str(p))


def iter_lines(root: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(raw line, parsed object) for each JSON-object line; split on b"\\n" only."""
    for path in transcript_files(root):
        for raw in path.read_bytes().split(b"\n"):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield raw, obj


def _int(x: Any) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) else 0


def tokens_of(usage: dict[str, Any], ccusage: bool) -> tuple[int, int, int, int]:
    flat = _int(usage.get("cache_creation_input_tokens"))
    split_obj = usage.get("cache_creation")
    split = 0
    if isinstance(split_obj, dict):
        split = _int(split_obj.get("ephemeral_5m_input_tokens")) + _int(
            split_obj.get("ephemeral_1h_input_tokens")
        )
    # ccusage: the split whenever the object exists; FORMAT.md: the larger of the two.
    cc = (split if isinstance(split_obj, dict) else flat) if ccusage else max(flat, split)
    return (
        _int(usage.get("input_tokens")),
        _int(usage.get("output_tokens")),
        cc,
        _int(usage.get("cache_read_input_tokens")),
    )


# ------------------------------------------------------------------ FORMAT.md


def _format_responses(root: Path) -> list[Resp]:
    best: dict[str, Resp] = {}
    all_side: dict[str, bool] = {}
    n = 0
    for _raw, d in iter_lines(root):
        msg = d.get("message")
        if d.get("type") != "assistant" or not isinstance(msg, dict):
            continue
        usage = msg.get("usage")
        if not isinstance(usage, dict) or msg.get("model") == "<synthetic>":
            continue
        ts = parse_ts(d.get("timestamp"))
        if ts is None:
            continue
        n += 1
        mid, rid = msg.get("id"), d.get("requestId")
        if mid and rid:
            key = f"{mid}:{rid}"
        elif mid:
            key = f"{d.get('sessionId')}:{mid}"
        else:
            key = f"#line{n}"
        side = d.get("isSidechain") is True
        r = Resp(key, ts, side, tokens_of(usage, False), n, message_id=mid, request_id=rid)
        all_side[key] = all_side.get(key, True) and side
        old = best.get(key)
        if old is None or r.total > old.total or (r.total == old.total and r.ts < old.ts):
            best[key] = r
    # /btw replays: one message.id, several keys, a sidechain among them.
    by_mid: dict[str, list[Resp]] = {}
    for r in best.values():
        r.side = all_side[r.key]
        if r.message_id:
            by_mid.setdefault(r.message_id, []).append(r)
    drop: set[str] = set()
    for group in by_mid.values():
        if len(group) < 2 or not any(r.side for r in group):
            continue
        mains = [r for r in group if not r.side]
        keep = mains or [min(group, key=lambda r: (r.ts, r.order))]
        drop.update(r.key for r in group if r not in keep)
    return [r for r in best.values() if r.key not in drop]


# ------------------------------------------------------------------ ccusage model

_NULL_FIELDS = (
    "id",
    "cwd",
    "model",
    "speed",
    "costUSD",
    "version",
    "sessionId",
    "requestId",
    "isApiErrorMessage",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def _ccusage_rejects(raw: bytes, d: dict[str, Any], usage: dict[str, Any]) -> bool:
    if b'"usage":{' not in raw:
        return True
    if any(f'"{f}":null'.encode() in raw for f in _NULL_FIELDS):
        return True
    if "speed" in usage and usage["speed"] not in ("standard", "fast"):
        return True
    v = d.get("version")
    if v is not None:
        parts = str(v).split(".")
        if len(parts) < 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            return True
        if not parts[2][:1].isdigit():
            return True
    msg = d["message"]
    return any(
        x == "" for x in (d.get("sessionId"), d.get("requestId"), msg.get("id"), msg.get("model"))
    )


def _ccusage_responses(root: Path, daily: bool) -> list[Resp]:
    out: list[Resp] = []
    exact: dict[tuple[str, str | None], list[int]] = {}
    by_mid: dict[str, list[int]] = {}
    n = 0
    for raw, d in iter_lines(root):
        src = d
        msg = d.get("message")
        if not isinstance(msg, dict) or not isinstance(msg.get("usage"), dict):
            data = d.get("data")
            inner = data.get("message") if daily and isinstance(data, dict) else None
            if not (isinstance(inner, dict) and isinstance(inner.get("message"), dict)):
                continue
            src, msg = inner, inner["message"]
            if not isinstance(msg.get("usage"), dict):
                continue
            src = {**inner, "version": None, "sessionId": None}
        usage = msg["usage"]
        if _ccusage_rejects(raw, {**src, "message": msg}, usage):
            continue
        ts = parse_ts(src.get("timestamp"))
        if ts is None:
            continue
        n += 1
        mid, rid = msg.get("id"), src.get("requestId")
        side = src.get("isSidechain") is True
        r = Resp(
            f"{mid}:{rid}",
            ts,
            side,
            tokens_of(usage, True),
            n,
            speed=usage.get("speed") is not None,
            message_id=mid,
            request_id=rid,
        )
        if mid is None:
            out.append(r)
            continue
        hit = next((i for i in exact.get((mid, rid), []) if out[i].request_id == rid), None)
        if hit is None:
            hit = next((i for i in by_mid.get(mid, []) if side or out[i].side), None)
        if hit is not None:
            old = out[hit]
            if old.side != side:
                better = old.side
            elif r.total != old.total:
                better = r.total > old.total
            else:
                better = r.speed and not old.speed
            if better:
                out[hit] = r
                if not daily:  # the blocks loader re-indexes the replacement
                    exact.setdefault((mid, rid), []).append(hit)
            continue
        out.append(r)
        exact.setdefault((mid, rid), []).append(len(out) - 1)
        by_mid.setdefault(mid, []).append(len(out) - 1)
    return out


# ------------------------------------------------------------------ aggregation


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts // 1000, UTC).strftime("%Y-%m-%d")


def _iso(ts: int) -> str:
    return (
        datetime.fromtimestamp(ts // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ts % 1000:03d}Z"
    )


def count(root: Path, mode: Mode = "format") -> Report:
    """Per-UTC-day totals and 5-hour blocks for the history under `root`."""
    root = Path(root)
    if mode == "format":
        resps = _format_responses(root)
    else:
        resps = _ccusage_responses(root, daily=mode == "ccusage-daily")
    rep = Report(responses=resps)
    for r in resps:
        row = rep.daily.setdefault(_day(r.ts), [0, 0, 0, 0, 0])
        for i, v in enumerate(r.tokens):
            row[i] += v
        row[4] += 1
    rep.daily = dict(sorted(rep.daily.items()))
    block: dict[str, Any] | None = None
    last = 0
    for r in sorted(resps, key=lambda r: r.ts):
        if block is None or r.ts - block["_start"] > WINDOW_MS or r.ts - last > WINDOW_MS:
            start = r.ts // HOUR_MS * HOUR_MS
            block = {"_start": start, "start": _iso(start), "end": _iso(start + WINDOW_MS)}
            block.update({k: 0 for k in KINDS}, entries=0)
            rep.blocks.append(block)
        for k, v in zip(KINDS, r.tokens, strict=True):
            block[k] += v
        block["entries"] += 1
        block["last"] = _iso(r.ts)
        last = r.ts
    for b in rep.blocks:
        del b["_start"]
    return rep


# ------------------------------------------------------------------ comparison


def ccusage_tables(root: Path) -> tuple[dict[str, list[int]], list[dict[str, Any]]]:
    """ccusage's daily rows and non-gap blocks in this module's shapes."""
    from ccusage_ref import run_ccusage  # local import: the module is also a library

    days = {
        x["date"]: [
            x["inputTokens"],
            x["outputTokens"],
            x["cacheCreationTokens"],
            x["cacheReadTokens"],
        ]
        for x in run_ccusage("daily", root)["daily"]
    }
    blocks = []
    for x in run_ccusage("blocks", root)["blocks"]:
        if x["isGap"]:
            continue
        t = x["tokenCounts"]
        blocks.append(
            {
                "start": x["startTime"],
                "end": x["endTime"],
                "input": t["inputTokens"],
                "output": t["outputTokens"],
                "cache_creation": t["cacheCreationInputTokens"],
                "cache_read": t["cacheReadInputTokens"],
                "entries": x["entries"],
                "last": x["actualEndTime"],
            }
        )
    return days, blocks


def diff(ref: Report, cc_days: dict[str, list[int]], cc_blocks: list[dict[str, Any]]) -> list[str]:
    """Human-readable differences, token kind by kind, day by day, block by block."""
    out: list[str] = []
    for d in sorted(set(ref.daily) | set(cc_days)):
        a = ref.daily.get(d, [0, 0, 0, 0, 0])[:4]
        b = cc_days.get(d)
        if b is None or a != b:
            kinds = ", ".join(
                f"{k} {x}/{y}" for k, x, y in zip(KINDS, a, b or [0] * 4, strict=True) if x != y
            )
            out.append(f"day {d}: ref/ccusage {kinds or 'row missing in ccusage'}")
    ra = {b["start"]: b for b in ref.blocks}
    rb = {b["start"]: b for b in cc_blocks}
    for s in sorted(set(ra) | set(rb)):
        a, b = ra.get(s), rb.get(s)
        if a is None or b is None:
            which = "ccusage" if a is None else "reference"
            other = b if a is None else a
            out.append(
                f"block {s}: only in {which} (entries {other['entries']}, "
                f"output {other['output']}, last {other['last']})"
            )
            continue
        bad = [f"{k} {a[k]}/{b[k]}" for k in (*KINDS, "entries", "last") if a[k] != b[k]]
        if bad:
            out.append(f"block {s}: ref/ccusage " + ", ".join(bad))
    return out


def compare(root: Path, verbose: bool = True) -> dict[str, list[str]]:
    """Run ccusage and the reference (FORMAT and ccusage models); return differences."""
    cc_days, cc_blocks = ccusage_tables(root)
    model_days = diff(count(root, "ccusage-daily"), cc_days, cc_blocks)
    model_blocks = diff(count(root, "ccusage-blocks"), cc_days, cc_blocks)
    result = {
        "format": diff(count(root, "format"), cc_days, cc_blocks),
        "ccusage-model": [x for x in model_days if x.startswith("day")]
        + [x for x in model_blocks if x.startswith("block")],
    }
    if verbose:
        for name, lines in result.items():
            print(f"== {name}: {len(lines)} difference(s)")
            for line in lines[:40]:
                print("  " + line)
            if len(lines) > 40:
                print(f"  ... {len(lines) - 40} more")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="FORMAT.md reference counter")
    ap.add_argument("root", type=Path, help="a CLAUDE_CONFIG_DIR (holds projects/)")
    ap.add_argument(
        "--mode", default="format", choices=["format", "ccusage-daily", "ccusage-blocks"]
    )
    ap.add_argument("--compare", action="store_true", help="compare with ccusage 20.0.11")
    args = ap.parse_args(argv)
    if args.compare:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        res = compare(args.root)
        return 0 if not any(res.values()) else 1
    print(json.dumps(count(args.root, args.mode).as_json(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
