"""Prices Claude API responses in USD from a price table kept as data.

The packaged table (`data/prices.json`, format described by its `$comment`) can be
extended by a user override file in the same format. `PriceTable.cost()` prices one
`UsageRecord` at the row valid at its timestamp: size tiers (whole request), fast mode,
US-only inference and web search included. Unknown models cost `None`, never a
neighbour's price. Pure: the only I/O is reading the JSON files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import pathlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from operator import attrgetter
from typing import Any, NoReturn

from claude_usaged.usage import UsageRecord

__all__ = ["Plan", "PriceFileError", "PriceTable"]

Rates = tuple[float, float, float, float, float]
"""USD per million tokens: input, output, cache_write_5m, cache_write_1h, cache_read."""

_RATE_KEYS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_FREE_TEXT = frozenset({"$comment", "notes"})
_TOP_KEYS = frozenset({"version", "web_search_per_1000", "inference_geo", "models"})
_ROW_KEYS = frozenset({*_RATE_KEYS, "from", "until", "fast", "tiers"})
_TIER_KEYS = frozenset({*_RATE_KEYS, "from", "until", "above"})
_BEGIN, _END = -(2**63), 2**63 - 1
_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_CLOUD_PREFIX_RE = re.compile(r"^(?:[a-z]+\.)?anthropic\.")  # us./eu./apac./global.anthropic.
_BRACKET_SUFFIX_RE = re.compile(r"\[[^\]]*\]$")  # [1m]
_MEMO_LIMIT = 4096


Plan = tuple[tuple[Any, ...], ...]
"""A model's price rows as plain tuples (`PriceTable.plan`)."""


class PriceFileError(ValueError):
    """A price file cannot be read or does not follow the format."""


@dataclass(frozen=True, slots=True)
class _Tier:
    above: int
    start: int
    end: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class _Row:
    start: int
    end: int
    rates: Rates
    fast: float
    tiers: tuple[_Tier, ...]  # highest threshold first


def _fail(where: str, msg: str) -> NoReturn:
    raise PriceFileError(f"{where}: {msg}")


def _obj(v: Any, where: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        _fail(where, f"expected a JSON object, got {type(v).__name__}")
    unknown = sorted(set(v) - allowed - _FREE_TEXT)
    if unknown:
        _fail(where, f"unknown key(s) {', '.join(map(repr, unknown))}")
    return v


def _num(d: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    v = d.get(key, default)
    if v is None:
        _fail(where, f"missing {key!r}")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        _fail(where, f"{key!r} must be a non-negative number, got {v!r}")
    return float(v)


def _ms(d: dict[str, Any], key: str, where: str, default: int) -> int:
    v = d.get(key)
    if v is None:
        return default
    try:
        t = datetime.fromisoformat(v)  # "YYYY-MM-DD" is 00:00 UTC
    except (TypeError, ValueError):
        _fail(where, f"{key!r} must be an ISO-8601 date or time, got {v!r}")
    return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() * 1000)


def _span(d: dict[str, Any], where: str) -> tuple[int, int]:
    start, end = _ms(d, "from", where, _BEGIN), _ms(d, "until", where, _END)
    if start >= end:
        _fail(where, "'from' must be earlier than 'until'")
    return start, end


def _rates(d: dict[str, Any], where: str) -> Rates:
    i, o, w5, w1, r = (_num(d, k, where) for k in _RATE_KEYS)
    return (i, o, w5, w1, r)


def _row(d: Any, where: str) -> _Row:
    d = _obj(d, where, _ROW_KEYS)
    tiers_raw = d.get("tiers", [])
    if not isinstance(tiers_raw, list):
        _fail(where, "'tiers' must be a list")
    tiers = []
    for j, t in enumerate(tiers_raw):
        tw = f"{where}.tiers[{j}]"
        t = _obj(t, tw, _TIER_KEYS)
        above = t.get("above")
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            _fail(tw, f"'above' must be a non-negative integer token count, got {above!r}")
        tiers.append(_Tier(above, *_span(t, tw), _rates(t, tw)))
    tiers.sort(key=lambda t: -t.above)
    fast = _num(d, "fast", where, 1)
    if fast <= 0:
        _fail(where, "'fast' must be positive")
    return _Row(*_span(d, where), _rates(d, where), fast, tuple(tiers))


def _parse(doc: Any, where: str) -> tuple[dict[str, Any], dict[str, tuple[_Row, ...]]]:
    """Check one file; return its top-level prices and its rows per model id."""
    doc = _obj(doc, where, _TOP_KEYS)
    top: dict[str, Any] = {}
    if "version" in doc:
        if not isinstance(doc["version"], str):
            _fail(where, "'version' must be a string")
        top["version"] = doc["version"]
    if "web_search_per_1000" in doc:
        top["web_search"] = _num(doc, "web_search_per_1000", where) / 1000
    if "inference_geo" in doc:
        geo = doc["inference_geo"]
        if not isinstance(geo, dict):
            _fail(where, "'inference_geo' must map a geo value to a multiplier")
        top["geo"] = {str(k): _num(geo, k, f"{where}: inference_geo") for k in geo}
    models_raw = doc.get("models", [])
    if not isinstance(models_raw, list):
        _fail(where, "'models' must be a list of {ids, rows} objects")
    models: dict[str, tuple[_Row, ...]] = {}
    for i, m in enumerate(models_raw):
        mw = f"{where}: models[{i}]"
        m = _obj(m, mw, frozenset({"ids", "rows"}))
        ids, rows_raw = m.get("ids"), m.get("rows")
        if not isinstance(ids, list) or not ids:
            _fail(mw, "'ids' must be a non-empty list of model ids")
        if not isinstance(rows_raw, list) or not rows_raw:
            _fail(mw, "'rows' must be a non-empty list")
        rows = sorted(
            (_row(r, f"{mw}.rows[{j}]") for j, r in enumerate(rows_raw)), key=attrgetter("start")
        )
        for a, b in itertools.pairwise(rows):
            if b.start < a.end:
                _fail(mw, "rows overlap in time (each needs its own 'from'/'until' range)")
        for mid in ids:
            if not isinstance(mid, str) or not _ID_RE.fullmatch(mid.lower()):
                _fail(mw, f"bad model id {mid!r} (e.g. 'claude-opus-4-6')")
            if mid.lower() in models:
                _fail(mw, f"model id {mid!r} listed twice")
            models[mid.lower()] = tuple(rows)
    return top, models


def _read(path: pathlib.Path | Traversable, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        _fail(where, f"cannot read: {e}")
    except json.JSONDecodeError as e:
        _fail(where, f"not valid JSON: {e}")


class PriceTable:
    """The effective price table: packaged rows plus an optional override file."""

    def __init__(self, top: dict[str, Any], models: dict[str, tuple[_Row, ...]]) -> None:
        self.version: str = top.get("version", "")
        self._web_search: float = top.get("web_search", 0.0)
        self._geo: dict[str, float] = top.get("geo", {})
        self._models = models
        self._ids_longest_first = sorted(models, key=len, reverse=True)
        self._norm_memo: dict[str, str | None] = {}
        self._rows_memo: dict[str, tuple[_Row, ...] | None] = {}
        self.plans: dict[str, Plan | None] = {}
        """`plan`'s memo, by model as written in the transcripts."""
        canon = [self._web_search, self._geo, {k: [repr(r) for r in v] for k, v in models.items()}]
        blob = json.dumps(canon, sort_keys=True, separators=(",", ":"))
        self.fingerprint: str = hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def load(cls, override: pathlib.Path | None = None) -> PriceTable:
        """Read the packaged table, then apply `override` (same format) if given."""
        packaged = resources.files("claude_usaged").joinpath("data", "prices.json")
        top, models = _parse(_read(packaged, "packaged prices.json"), "packaged prices.json")
        if override is not None:
            where = str(override)
            o_top, o_models = _parse(_read(override, where), where)
            version = f"{top.get('version', '')}+{o_top.get('version', 'override')}"
            top = {**top, **o_top, "version": version}
            models = {**models, **o_models}
        return cls(top, models)

    def normalize(self, model: str) -> str | None:
        """The known model id that `model` names, or None when no price row fits."""
        try:
            return self._norm_memo[model]
        except KeyError:
            pass
        m = _BRACKET_SUFFIX_RE.sub("", model.strip().lower())
        m = _CLOUD_PREFIX_RE.sub("", m).split("@", 1)[0]  # Vertex: claude-x@20250929
        found: str | None = None
        for known in self._ids_longest_first:
            if m == known or (m.startswith(known) and m[len(known)] == "-"):
                # A short number after the id is a newer minor version (claude-opus-4-9):
                # another model, not a snapshot of this one (dates have 8 digits).
                head = m[len(known) + 1 :].split("-", 1)[0]
                found = None if head.isdigit() and len(head) < 8 else known
                break
        if len(self._norm_memo) >= _MEMO_LIMIT:
            self._norm_memo.clear()
        self._norm_memo[model] = found
        return found

    def _rows_for(self, model: str) -> tuple[_Row, ...] | None:
        """The price rows of the model `model` names (memoised), None for an unknown one."""
        try:
            return self._rows_memo[model]
        except KeyError:
            pass
        mid = self.normalize(model)
        rows = None if mid is None else self._models[mid]
        if len(self._rows_memo) >= _MEMO_LIMIT:
            self._rows_memo.clear()
        self._rows_memo[model] = rows
        return rows

    def plan(self, model: str) -> Plan | None:
        """`cost`'s rows for `model` as plain tuples (memoised in `plans`), for the C
        pricer (`_fastbatch`): per row (start, end, *rates, fast, tiers), per tier
        (above, start, end, *rates)."""
        rows = self._rows_for(model)
        plan = None
        if rows is not None:
            plan = tuple(
                (
                    r.start,
                    r.end,
                    *r.rates,
                    r.fast,
                    tuple((t.above, t.start, t.end, *t.rates) for t in r.tiers),
                )
                for r in rows
            )
        if len(self.plans) >= _MEMO_LIMIT:
            self.plans.clear()
        self.plans[model] = plan
        return plan

    @property
    def geo(self) -> dict[str, float]:
        """Multiplier per `inference_geo` value (absent: 1)."""
        return self._geo

    @property
    def web_search(self) -> float:
        """USD per web search request."""
        return self._web_search

    def cost(self, rec: UsageRecord) -> float | None:
        """USD for one response, or None when its model has no price at `rec.ts_ms`."""
        try:
            rows = self._rows_memo[rec.model]
        except KeyError:
            rows = self._rows_for(rec.model)
        if rows is None:
            return None
        ts = rec.ts_ms
        for row in rows:
            if row.start <= ts < row.end:
                break
        else:
            return None
        cw, cr = rec.cache_creation_tokens, rec.cache_read_tokens
        cw1h = rec.cache_creation_1h_tokens
        rates = row.rates
        if row.tiers:
            request_input = rec.input_tokens + cw + cr
            for tier in row.tiers:
                if request_input > tier.above and tier.start <= ts < tier.end:
                    rates = tier.rates
                    break
        r_in, r_out, r_w5, r_w1, r_cr = rates
        usd = (
            rec.input_tokens * r_in
            + (cw - cw1h) * r_w5
            + cw1h * r_w1
            + cr * r_cr
            + rec.output_tokens * r_out
        ) / 1_000_000
        if rec.speed == "fast":
            usd *= row.fast
        if rec.inference_geo:
            usd *= self._geo.get(rec.inference_geo, 1.0)
        if rec.web_search_requests:
            usd += rec.web_search_requests * self._web_search
        return usd
