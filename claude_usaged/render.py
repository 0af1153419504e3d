"""Tables for the client commands, shaped like ccusage's reports (rich).

Each `render_*` takes the API's JSON and a Console and prints; nothing here
talks to the daemon. Colour is off when stdout is not a terminal or
`NO_COLOR` is set.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import IO, Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, JustifyMethod
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
    # NO_COLOR: no styling at all (rich's no_color alone still prints bold)
    return Console(
        file=out,
        width=width,
        no_color=plain,
        color_system=None if plain else "auto",
        highlight=False,
        emoji=False,
        soft_wrap=False,
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


# A table is laid out to fit the console: numbers, costs and dates are never cut
# (their columns are exactly as wide as their longest cell); paths and session ids
# fold onto more lines; and when that is not enough, headers go onto two lines,
# token figures become compact (1.2M) and the least important columns are left out.
FLEX_MIN = 12  # the narrowest a folding column (a path, a session id) is made


@dataclass(frozen=True)
class _Col:
    header: str
    cells: list[str]  # one per row
    justify: JustifyMethod = "left"
    flex: bool = False  # text that may fold onto more lines (paths, ids)


def _header(col: _Col, split: bool) -> str:
    """The header, on two lines when `split` and it is wider than every cell."""
    widest = max((cell_len(line) for cell in col.cells for line in cell.split("\n")), default=0)
    if split and not col.flex and cell_len(col.header) > widest:
        return col.header.replace(" ", "\n", 1)
    return col.header


def _natural(col: _Col, split: bool) -> int:
    texts = [*col.cells, _header(col, split)]
    return max(cell_len(line) for text in texts for line in text.split("\n"))


def _widths(cols: Sequence[_Col], split: bool, width: int) -> list[int] | None:
    """Each column's content width, or None when the table cannot fit in `width`."""
    naturals = [_natural(col, split) for col in cols]
    room = width - (3 * len(cols) + 1)  # a border and two spaces of padding per column
    room -= sum(n for n, col in zip(naturals, cols, strict=True) if not col.flex)
    flex = [n for n, col in zip(naturals, cols, strict=True) if col.flex]
    if room < sum(min(n, FLEX_MIN) for n in flex):
        return None
    level = max(flex, default=0)
    while sum(min(n, level) for n in flex) > room:
        level -= 1
    return [min(n, level) if col.flex else n for n, col in zip(naturals, cols, strict=True)]


def _print_table(
    console: Console,
    title: str,
    columns: Callable[[bool], list[_Col]],
    drop: Sequence[str] = (),
    styles: Sequence[str | None] = (),
    section_after: int | None = None,
) -> None:
    """Print the first layout that fits: full figures, then compact ones, each with fewer
    and fewer of the `drop` columns (least important first)."""
    width = console.width
    layout: tuple[list[_Col], bool, list[int]] | None = None
    for dropped in range(len(drop) + 1):
        for compact in (False, True):
            cols = [col for col in columns(compact) if col.header not in drop[:dropped]]
            for split in (False, True):
                widths = _widths(cols, split, width)
                if widths is not None:
                    layout = cols, split, widths
                    break
            if layout:
                break
        if layout:
            break
    if layout is None:  # narrower than the narrowest layout: rich will have to cut
        cols = [col for col in columns(True) if col.header not in drop]
        layout = cols, True, [_natural(col, True) for col in cols]
    cols, split, widths = layout
    table = Table(title=title, box=box.SQUARE, header_style="bold cyan", title_style="bold")
    for col, col_width in zip(cols, widths, strict=True):
        table.add_column(
            _header(col, split),
            justify=col.justify,
            width=col_width,
            no_wrap=not col.flex,
            overflow="fold",
        )
    rows = len(cols[0].cells) if cols else 0
    for i in range(rows):
        table.add_row(
            *(col.cells[i] for col in cols),
            style=styles[i] if i < len(styles) else None,
            end_section=i == section_after,
        )
    console.print(table)


def compact_count(n: int | None) -> str:
    """1234 -> 1.2k, 123_456 -> 123k, 1_234_567 -> 1.2M; below 1000 as it is."""
    if n is None:
        return ""
    if n < 1000:
        return str(n)
    for limit, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "B")):
        value = n / limit
        text = f"{value:.1f}" if value < 99.95 else f"{value:.0f}"
        if float(text) < 1000 or suffix == "B":
            break
    return text.removesuffix(".0") + suffix


def _models(row: Mapping[str, Any]) -> str:
    return "\n".join(f"- {short_model(m)}" for m in row.get("models", []))


def _token_columns(rows: Sequence[Mapping[str, Any]], compact: bool) -> list[_Col]:
    fmt = compact_count if compact else count
    cols = [_Col(name, [fmt(row.get(key)) for row in rows], "right") for name, key in TOKEN_COLUMNS]
    cols.append(_Col("Cost (USD)", [cost(row.get("cost_usd")) for row in rows], "right"))
    return cols


# left out in this order when a table does not fit
DROP_ORDER = ("Models", "Cache Create", "Cache Read", "Input", "Output")


def render_daily(data: Mapping[str, Any], console: Console) -> None:
    days = data["days"]
    rows = [*days, {**data["totals"], "models": []}]

    def columns(compact: bool) -> list[_Col]:
        return [
            _Col("Date", [day["date"] for day in days] + ["Total"]),
            _Col("Models", [_models(row) for row in rows]),
            *_token_columns(rows, compact),
        ]

    _print_table(
        console,
        f"Claude Code usage by day ({data['timezone']})",
        columns,
        DROP_ORDER,
        styles=[None] * len(days) + ["yellow"],
        section_after=len(days) - 1,
    )


def render_blocks(data: Mapping[str, Any], console: Console, tz: tzinfo | None) -> None:
    blocks = data["blocks"]
    durations = []
    for block in blocks:
        start = datetime.fromisoformat(block["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(block["actual_end"].replace("Z", "+00:00"))
        status = hours_minutes((end - start).total_seconds())
        durations.append(f"ACTIVE ({status})" if block["is_active"] else status)

    def columns(compact: bool) -> list[_Col]:
        return [
            _Col("Block Start", [local_time(block["start"], tz) for block in blocks]),
            _Col("Duration", durations),
            _Col("Models", [_models(block) for block in blocks]),
            *_token_columns(blocks, compact),
        ]

    _print_table(
        console,
        "Claude Code 5-hour blocks",
        columns,
        DROP_ORDER,
        styles=["green" if block["is_active"] else None for block in blocks],
    )


def _grouped(
    rows: Sequence[Mapping[str, Any]],
    key: str,
    title: str,
    console: Console,
    tz: tzinfo | None,
    project: bool,
) -> None:
    def columns(compact: bool) -> list[_Col]:
        return [
            _Col(key.replace("_", " ").title(), [str(row[key]) for row in rows], flex=True),
            *(
                [_Col("Project", [str(row.get("project") or "") for row in rows], flex=True)]
                if project
                else []
            ),
            _Col("Models", [_models(row) for row in rows]),
            *_token_columns(rows, compact),
            _Col("Last Activity", [local_time(row["last_at"], tz) for row in rows]),
        ]

    _print_table(console, title, columns, DROP_ORDER)


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


def render_machines(data: Mapping[str, Any], console: Console, tz: tzinfo | None) -> None:
    rows = data["machines"]
    if not rows:
        console.print("No machine has forwarded usage yet.")
        return

    def columns(compact: bool) -> list[_Col]:
        fmt = compact_count if compact else count
        return [
            _Col("Machine", [row["machine_id"] for row in rows], flex=True),
            _Col("Host", [row["hostname"] for row in rows], flex=True),
            _Col("Responses", [fmt(row["responses"]) for row in rows], "right"),
            _Col("Total Tokens", [fmt(row["total_tokens"]) for row in rows], "right"),
            _Col("Cost (USD)", [cost(row["total_cost_usd"]) for row in rows], "right"),
            _Col("Window", [fmt(row["current_window_tokens"]) for row in rows], "right"),
            _Col("Last Sync", [local_time(row["last_sync_at"], tz) for row in rows]),
        ]

    _print_table(console, "Machines forwarding to this team server", columns, ("Window",))
