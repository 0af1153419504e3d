"""A batch's records before the store writes them: one per key, priced, as rows.

`best_priced` is `usage.dedupe` and `PriceTable.cost` over every record of a
batch, `response_rows` gives the `responses` rows, `split_rows` sorts a bulk
load's rows into new and better ones, and `pack_rows` packs them as the staged
table keeps them. All run in C
(`_fastbatch`) when it is built, with the Python here as their specification
(the tests hold both to the same results, floats and bytes bit for bit).
The C declines, before it changes anything, what it would not read as Python
does (a record that is not exactly a `UsageRecord`, an integer beyond 64 bits):
the Python runs then. `CLAUDE_USAGED_PURE_PYTHON=1` turns the C off.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from claude_usaged.fastpath import extension
from claude_usaged.pricing import PriceTable
from claude_usaged.usage import UsageRecord, dedupe

_c: ModuleType | None = extension("_fastbatch")


def best_priced(
    record_lists: Sequence[list[UsageRecord]], prices: PriceTable
) -> dict[str, UsageRecord]:
    """One record per key over all the lists (`usage.dedupe`), each with its cost."""
    if _c is not None:
        try:
            best: dict[str, UsageRecord] = _c.best_priced(
                record_lists, prices.plans, prices.plan, prices.geo, prices.web_search
            )
            return best
        except (TypeError, OverflowError):
            pass  # what the C does not read: the Python below says what it means
    best = dedupe(itertools.chain.from_iterable(record_lists))
    cost = prices.cost
    for rec in best.values():
        rec.cost_usd = cost(rec)
    return best


def response_row(r: UsageRecord) -> tuple[Any, ...]:
    """A record as a `responses` row (no content: metadata and counts only)."""
    return (
        r.key,
        r.message_id,
        r.ts_ms,
        r.model,
        r.session_id,
        r.project,
        int(r.is_sidechain),
        r.input_tokens,
        r.output_tokens,
        r.cache_creation_tokens,
        r.cache_creation_1h_tokens,
        r.cache_read_tokens,
        r.web_search_requests,
        0 if r.speed is None else r.speed,
        0 if r.inference_geo is None else r.inference_geo,
        r.cost_usd,
    )


def response_rows(records: list[UsageRecord]) -> list[tuple[Any, ...]]:
    """`response_row` of each record."""
    if _c is not None:
        try:
            rows: list[tuple[Any, ...]] = _c.rows(records)
            return rows
        except TypeError:
            pass
    return [response_row(r) for r in records]


def rank(row: tuple[Any, ...]) -> tuple[int, int, str, str]:
    """`UsageRecord.rank` of a `responses` row: smaller wins among the rows of a key."""
    return (-(row[7] + row[8] + row[9] + row[11]), row[2], row[4], row[5])


def split_rows(
    records: list[UsageRecord], loaded: dict[str, tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The records' rows (one record per key) against the rows a bulk load stored so
    far, by key: (rows of new keys, rows that rank before the stored one of theirs)."""
    if _c is not None:
        try:
            split: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] = _c.split_rows(
                records, loaded
            )
            return split
        except (TypeError, OverflowError):
            pass
    new: list[tuple[Any, ...]] = []
    better: list[tuple[Any, ...]] = []
    for row in map(response_row, records):
        old = loaded.get(row[0])
        if old is None:
            new.append(row)
        elif rank(row) < rank(old):
            better.append(row)
    return new, better


# The staged rows' format (little-endian): a head (rows, strings: u32 each); the string
# table (each: u32 length, UTF-8), which holds model, session, project, speed and geo
# once per blob; then each row: key and message id (u32 length, UTF-8 each), and the
# fixed part below. Speed and geo are table indexes, or NO_TEXT for the int 0 that
# stands for none; the cost is a flag (priced) and a double (0.0 when not).
_HEAD = struct.Struct("<II")
_LENGTH = struct.Struct("<I")
_FIXED = struct.Struct("<q3I7q2IBd")
"""ts; model, session, project; is_sidechain, input, output, cache_creation,
cache_creation_1h, cache_read, web_search; speed, geo; priced, cost."""
NO_TEXT = 0xFFFFFFFF


class Unpackable(ValueError):
    """Rows holding a value the packed format does not: the store pickles them."""


def _text(s: Any) -> bytes:
    if type(s) is not str:
        raise Unpackable("text expected")
    return s.encode("utf-8")  # UnicodeEncodeError: SQLite could not store it either


def _packed_python(rows: list[tuple[Any, ...]]) -> bytes:
    table: dict[str, int] = {}

    def shared(s: Any) -> int:
        if type(s) is not str:
            raise Unpackable("text expected")
        return table.setdefault(s, len(table))

    parts: list[bytes] = []
    for row in rows:
        if type(row) is not tuple or len(row) != 16:
            raise Unpackable("a row is a tuple of 16 columns")
        key, message, ts, model, session, project, *counts, speed, geo, cost = row
        if any(type(v) is not int for v in (ts, *counts)):
            raise Unpackable("an int expected")
        if cost is not None and type(cost) is not float:
            raise Unpackable("a cost is a float or None")
        for text in (_text(key), _text(message)):
            parts += (_LENGTH.pack(len(text)), text)
        texts = [shared(model), shared(session), shared(project)]  # in column order
        texts += [NO_TEXT if type(v) is int and v == 0 else shared(v) for v in (speed, geo)]
        model_i, session_i, project_i, speed_i, geo_i = texts
        try:
            fixed = _FIXED.pack(
                ts,
                model_i,
                session_i,
                project_i,
                *counts,
                speed_i,
                geo_i,
                cost is not None,
                0.0 if cost is None else cost,
            )
        except struct.error as exc:  # an integer beyond 64 bits
            raise Unpackable(str(exc)) from None
        parts.append(fixed)
    strings = [_text(s) for s in table]
    head = _HEAD.pack(len(rows), len(strings))
    return b"".join([head, *(_LENGTH.pack(len(s)) + s for s in strings), *parts])


def pack_rows(rows: list[tuple[Any, ...]]) -> bytes | None:
    """`responses` rows as the staged table keeps them, or None when they hold a value
    the format does not (the store pickles them then). Raises UnicodeEncodeError for
    text that is not UTF-8, as binding it in SQLite would."""
    if _c is not None:
        try:
            packed: bytes = _c.pack_rows(rows)
            return packed
        except (TypeError, OverflowError):
            pass  # the Python says whether the format holds them
    try:
        return _packed_python(rows)
    except Unpackable:
        return None


def _unpacked_python(data: bytes) -> list[tuple[Any, ...]]:
    view = memoryview(data)
    at = 0

    def text() -> str:
        nonlocal at
        (n,) = _LENGTH.unpack_from(view, at)
        at += 4 + n
        if at > len(view):
            raise ValueError("packed rows cut short")
        return str(view[at - n : at], "utf-8")

    n_rows, n_strings = _HEAD.unpack_from(view, 0)
    at = _HEAD.size
    strings = [text() for _ in range(n_strings)]
    rows: list[tuple[Any, ...]] = []
    for _ in range(n_rows):
        key, message = text(), text()
        ts, model, session, project, *rest = _FIXED.unpack_from(view, at)
        at += _FIXED.size
        *counts, speed, geo, priced, cost = rest
        odd = [0 if i == NO_TEXT else strings[i] for i in (speed, geo)]
        shared = (strings[model], strings[session], strings[project])
        rows.append((key, message, ts, *shared, *counts, *odd, cost if priced else None))
    if at != len(view):
        raise ValueError("packed rows followed by other bytes")
    return rows


def unpack_rows(data: bytes) -> list[tuple[Any, ...]]:
    """The rows `pack_rows` packed; ValueError for bytes it did not pack."""
    if _c is not None:
        try:
            rows: list[tuple[Any, ...]] = _c.unpack_rows(data)
            return rows
        except TypeError:  # a big-endian machine
            pass
    try:
        return _unpacked_python(data)
    except (struct.error, IndexError) as exc:
        raise ValueError(f"packed rows damaged: {exc}") from None
