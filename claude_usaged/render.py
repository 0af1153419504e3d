"""Tables for the client commands, shaped like ccusage's reports (rich).

Each `render_*` takes the API's JSON and a Console and prints; nothing here
talks to the daemon. Colour is off when stdout is not a terminal or
`NO_COLOR` is set.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table

TOKEN_COLUMNS = (
    ("Input", "input_tokens"),
    ("Output", "output_tokens"),
    ("Cache Create", "cache_creation_tokens"),
    ("Cache Read", "cache_read_tokens"),
    ("Total Tokens", "total_tokens"),
)


def make_console(file: IO[str] | None = None, env: Mapping[str, str] | None = None) -> Console:
    """A console that writes plain text unless it is a terminal and NO_COLOR is unset;
    as wide as the terminal (or `COLUMNS`), and as wide as a table needs otherwise."""
    env = os.environ if env is None else env
    out = sys.stdout if file is None else file
    tty = out.isatty()
    plain = bool(env.get("NO_COLOR")) or not tty
    # piped into a file or another program, a table is never cut to 80 columns
    width = None if tty or env.get("COLUMNS") else 1000
    return Console(
        file=out, width=width, no_color=plain, highlight=False, emoji=False, soft_wrap=False
    )


def short_model(model: str) -> str:
    """`claude-sonnet-4-20250514` -> `sonnet-4`, as ccusage lists models."""
    return re.sub(r"-\d{8}$", "", model.removeprefix("claude-"))


def count(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


def cost(value: float | None) -> str:
    return "?" if value is None else f"${value:,.2f}"


def local_time(iso: str | None, tz: tzinfo | None) -> str:
    """An API time (`...Z`) in the chosen zone (the machine's when None), to the minute."""
    if not iso:
        return ""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def hours_minutes(seconds: float) -> str:
    minutes = int(seconds) // 60
    return f"{minutes // 60}h {minutes % 60:02d}m"


def _table(first: Sequence[str], title: str) -> Table:
    table = Table(title=title, box=box.SQUARE, header_style="bold cyan", title_style="bold")
    for name in first:
        table.add_column(name, no_wrap=True)
    return table


def _models(row: Mapping[str, Any]) -> str:
    return "\n".join(f"- {short_model(m)}" for m in row.get("models", []))


def _token_cells(row: Mapping[str, Any]) -> list[str]:
    return [count(row.get(key)) for _name, key in TOKEN_COLUMNS] + [cost(row.get("cost_usd"))]


def _add_numeric_columns(table: Table) -> None:
    for name, _key in TOKEN_COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Cost (USD)", justify="right", no_wrap=True)


def render_daily(data: Mapping[str, Any], console: Console) -> None:
    table = _table(["Date", "Models"], f"Claude Code usage by day ({data['timezone']})")
    _add_numeric_columns(table)
    for day in data["days"]:
        table.add_row(day["date"], _models(day), *_token_cells(day))
    totals = data["totals"]
    table.add_section()
    table.add_row("Total", "", *_token_cells(totals), style="yellow")
    console.print(table)


def render_blocks(data: Mapping[str, Any], console: Console, tz: tzinfo | None) -> None:
    table = _table(["Block Start", "Duration", "Models"], "Claude Code 5-hour blocks")
    _add_numeric_columns(table)
    for block in data["blocks"]:
        start = datetime.fromisoformat(block["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(block["actual_end"].replace("Z", "+00:00"))
        status = hours_minutes((end - start).total_seconds())
        if block["is_active"]:
            status = f"ACTIVE ({status})"
        table.add_row(
            local_time(block["start"], tz),
            status,
            _models(block),
            *_token_cells(block),
            style="green" if block["is_active"] else None,
        )
    console.print(table)


def _grouped(
    rows: Sequence[Mapping[str, Any]],
    key: str,
    title: str,
    console: Console,
    tz: tzinfo | None,
    project: bool,
) -> None:
    columns = [key.replace("_", " ").title(), *(["Project"] if project else []), "Models"]
    table = _table(columns, title)
    _add_numeric_columns(table)
    table.add_column("Last Activity", no_wrap=True)
    for row in rows:
        cells = [str(row[key]), *([str(row.get("project") or "")] if project else [])]
        table.add_row(*cells, _models(row), *_token_cells(row), local_time(row["last_at"], tz))
    console.print(table)


def render_sessions(data: Mapping[str, Any], console: Console, tz: tzinfo | None) -> None:
    _grouped(data["sessions"], "session_id", "Claude Code sessions", console, tz, True)


def render_projects(data: Mapping[str, Any], console: Console, tz: tzinfo | None) -> None:
    _grouped(data["projects"], "project", "Claude Code projects", console, tz, False)


def render_stats(data: Mapping[str, Any], console: Console, tz: tzinfo | None) -> None:
    table = Table(title="Claude Code usage", box=box.SQUARE, show_header=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", no_wrap=True)
    window = data.get("current_window")
    if window:
        table.add_row(
            "Window", f"{local_time(window['start'], tz)} → {local_time(window['end'], tz)}"
        )
        table.add_row("Resets in", hours_minutes(data["time_until_reset_seconds"]))
        table.add_row("Window tokens", count(window["total_tokens"]))
        table.add_row("Window cost", cost(window["cost_usd"]))
        rate = window.get("burn_rate_tokens_per_minute")
        if rate is not None:
            table.add_row("Burn rate", f"{round(rate):,} tokens/min")
        if window.get("projected_total_tokens") is not None:
            table.add_row("Projected", f"{window['projected_total_tokens']:,} tokens")
    else:
        table.add_row("Window", "no active window")
    today = data.get("today") or {}
    table.add_section()
    table.add_row(f"Today ({today.get('date', '')})", count(today.get("total_tokens", 0)))
    table.add_row("Today cost", cost(today.get("cost_usd", 0.0)))
    table.add_section()
    table.add_row("All time", count(data["total_tokens"]))
    table.add_row("All time cost", cost(data["total_cost_usd"]))
    if data.get("unpriced_models"):
        table.add_row("Unpriced models", ", ".join(data["unpriced_models"]))
    ingest = data.get("ingest") or {}
    table.add_section()
    state = "caught up" if ingest.get("caught_up") else "catching up"
    table.add_row("Transcripts", f"{count(ingest.get('files', 0))} files, {state}")
    console.print(table)
