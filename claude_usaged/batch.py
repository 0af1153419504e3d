"""A batch's records before the store writes them: one per key, priced, as rows.

`best_priced` is `usage.dedupe` and `PriceTable.cost` over every record of a
batch, and `response_rows` gives the `responses` rows a bulk load stores. Both
run in C (`_fastbatch`) when it is built, with the Python here as their
specification (the tests hold both to the same results, floats bit for bit).
The C declines, before it changes anything, what it would not read as Python
does (a record that is not exactly a `UsageRecord`, an integer beyond 64 bits):
the Python runs then. `CLAUDE_USAGED_PURE_PYTHON=1` turns the C off.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from claude_usaged.pricing import PriceTable
from claude_usaged.usage import UsageRecord, dedupe

_c: ModuleType | None = None
try:
    from claude_usaged import _fastbatch
except ImportError:  # not built: no compiler at install time
    pass
else:
    if os.environ.get("CLAUDE_USAGED_PURE_PYTHON", "") in ("", "0"):
        _c = _fastbatch


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
