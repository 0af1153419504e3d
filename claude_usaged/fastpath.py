"""Which parser runs: the C scanner (`_fastscan`) when built and allowed, else Python.

The extension is optional, so `pip install` without a compiler still works;
the pure-Python parser is then used, and it stays the specification the C
path is tested against (tests/test_fastscan.py runs both on the same input).
`CLAUDE_USAGED_PURE_PYTHON=1`, read at import, turns the C path off;
`set_enabled` switches it at run time (tests, benchmarks). `extension` finds the
other optional C extensions (batch helpers, aggregates) by the same rules.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType

from claude_usaged.usage import UsageRecord

Buffer = bytes | bytearray | memoryview
"""What the scanners read: bytes, or a view of the tailer's reused buffer."""

ScanResult = tuple[int, int, int, list[UsageRecord], list[tuple[int, int, int]]]
"""(lines, malformed lines, too-long lines, records, declined (index, start, end))."""

Scan = Callable[
    [Buffer, str, str, dict[str, str] | None, type[UsageRecord], int, str, bool], ScanResult
]

ScanOutcome = tuple[int, int, int, list[UsageRecord], list[tuple[int, bytes]]]
"""ScanResult of a file read whole: declined lines as (index, the line's bytes)."""

ReadFiles = Callable[
    [
        list[bytes],
        list[str],
        list[str],
        bytearray,
        int,
        int,
        int,
        dict[str, str] | None,
        type[UsageRecord],
        str,
    ],
    list[tuple[int, int, int, int, int, int, bytes, bytes, ScanOutcome] | int | None],
]

_scan: Scan | None
_read_files: ReadFiles | None
try:
    from claude_usaged import _fastscan

    _scan = _fastscan.scan
    _read_files = getattr(_fastscan, "read_files", None)  # POSIX only
except ImportError:  # not built: no compiler at install time
    _scan = _read_files = None

PURE_PYTHON = os.environ.get("CLAUDE_USAGED_PURE_PYTHON", "") not in ("", "0")
"""`CLAUDE_USAGED_PURE_PYTHON=1`, read at import: no C extension is used."""

_enabled = _scan is not None and not PURE_PYTHON


def extension(name: str) -> ModuleType | None:
    """The optional C extension `claude_usaged.<name>`, or None when it was not built
    or PURE_PYTHON turns C off (its callers then run their Python specification)."""
    if PURE_PYTHON:
        return None
    try:
        return importlib.import_module(f"claude_usaged.{name}")
    except ImportError:  # not built: no compiler at install time
        return None


def available() -> bool:
    """True when the extension was built and imports."""
    return _scan is not None


def enabled() -> bool:
    """True when parse_lines uses the C scanner (and readers may use threads)."""
    return _enabled


def set_enabled(flag: bool) -> None:
    """Turn the C scanner on or off; on needs the extension."""
    global _enabled
    if flag and _scan is None:
        raise RuntimeError("claude_usaged._fastscan is not built")
    _enabled = flag


def scanner() -> Scan | None:
    """The C scan function when it is in use, else None."""
    return _scan if _enabled else None


def file_reader() -> ReadFiles | None:
    """The C function that reads and scans whole small files, when the scanner is in use."""
    return _read_files if _enabled else None
