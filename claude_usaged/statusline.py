"""`claude-usaged statusline`: one short line for Claude Code's status bar.

Claude Code runs the command on every prompt update with a JSON description
of the session on stdin and shows the first line it prints. The whole process
has to stay well under 50 ms, so this module imports only `sys` and
`claude_usaged.client` (`json`, `os`, `socket`); `cli.main` dispatches here before it
imports anything else. When the daemon is down it prints a short fallback and
still exits 0, so the status bar never shows an error.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from claude_usaged.client import ApiError, DaemonDown, fetch, find_url

# `typing` costs ~3 ms to import; this path runs on every prompt (mypy knows the idiom)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Claude Code waits for the line: never hang it on a stuck daemon
TIMEOUT = 0.5
FALLBACK = "⏱ claude-usaged is not running"
USAGE = "usage: claude-usaged statusline [--url URL] [--db PATH]"


def tokens(n: float) -> str:
    """1234 -> 1.2k, 1_200_000 -> 1.2M; whole numbers below 1000."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= limit:
            value = f"{n / limit:.1f}".removesuffix(".0")
            return value + suffix
    return f"{n:.0f}"


def money(cost: float | None) -> str:
    return "$?" if cost is None else f"${cost:.2f}"


def duration(seconds: int) -> str:
    hours, rest = divmod(max(0, seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def format_line(stats: Mapping[str, Any]) -> str:
    """The line for one `/stats` answer."""
    today = stats.get("today") or {}
    today_part = f"{money(today.get('cost_usd', 0.0))} today"
    window = stats.get("current_window")
    if not window:
        return f"⏱ no active window · {today_part}"
    parts = [
        f"⏱ {duration(int(stats['time_until_reset_seconds']))} left",
        f"{tokens(window['total_tokens'])} tok",
        f"{money(window['cost_usd'])} window",
        today_part,
    ]
    rate = window.get("burn_rate_tokens_per_minute")
    if rate:
        parts.append(f"🔥 {tokens(rate)}/min")
    return " · ".join(parts)


def _options(argv: Sequence[str]) -> dict[str, str] | None:
    opts: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--url", "--db"):
            if not eq:
                if not args:
                    return None
                value = args.pop(0)
            opts[name[2:]] = value
        else:
            return None
    return opts


def main(argv: Sequence[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        print("Prints one status line for Claude Code from the running daemon; reads")
        print("Claude Code's status JSON on stdin. Always exits 0 when it can print a line.")
        return 0
    opts = _options(argv)
    if opts is None:
        print(USAGE, file=sys.stderr)
        return 2
    if not sys.stdin.isatty():
        # drain what Claude Code sent, so it never blocks writing to us
        sys.stdin.read()
    try:
        line = format_line(fetch(find_url(opts.get("url"), opts.get("db")), "/stats", TIMEOUT))
    except (DaemonDown, ApiError, ValueError, KeyError, TypeError):
        line = FALLBACK
    sys.stdout.write(line + "\n")
    return 0
