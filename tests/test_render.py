"""Tables of the client commands from fixed API answers, and when colour is used."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from claude_usaged.cli import main
from claude_usaged.render import (
    compact_count,
    make_console,
    render_blocks,
    render_daily,
    render_projects,
    render_sessions,
    render_stats,
    short_model,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
WARSAW = ZoneInfo("Europe/Warsaw")

BLOCK: dict[str, Any] = {
    "start": "2026-11-26T10:00:00Z",
    "end": "2026-11-26T15:00:00Z",
    "actual_end": "2026-11-26T12:47:00Z",
    "is_active": True,
    "entries": 42,
    "input_tokens": 1200,
    "output_tokens": 98000,
    "cache_creation_tokens": 150000,
    "cache_read_tokens": 2900000,
    "total_tokens": 3149200,
    "cost_usd": 4.1249,
    "models": ["claude-opus-4-1-20250805", "claude-sonnet-4-5-20250929"],
    "burn_rate_tokens_per_minute": 18857.485,
    "projected_total_tokens": 3550000,
}
STATS: dict[str, Any] = {
    "total_tokens": 98765432,
    "current_window_tokens": 3149200,
    "next_reset_at": "2026-11-26T15:00:00Z",
    "time_until_reset_seconds": 7980,
    "time_until_reset_human": "2h 13m remaining",
    "is_within_active_window": True,
    "total_cost_usd": 123.456,
    "unpriced_models": ["claude-future-9"],
    "current_window": BLOCK,
    "today": {"date": "2026-11-26", "total_tokens": 4000000, "cost_usd": 18.4},
    "ingest": {"files": 1234, "caught_up": True},
}


def rendered(draw: Any, data: dict[str, Any]) -> str:
    out = io.StringIO()
    draw(data, make_console(out, env={}), WARSAW)
    return out.getvalue()


def test_stats_table_for_an_active_window() -> None:
    """stats shows the window in the chosen zone, its tokens, cost and rate, today, all time."""
    assert rendered(render_stats, STATS) == (FIXTURES / "stats_table.txt").read_text()


def test_blocks_table_marks_the_active_block() -> None:
    """blocks lists the start in the chosen zone, the duration so far and ACTIVE."""
    data = {
        "blocks": [
            {
                **BLOCK,
                "is_active": False,
                "start": "2026-11-25T08:00:00Z",
                "actual_end": "2026-11-25T09:30:00Z",
            },
            BLOCK,
        ]
    }
    assert rendered(render_blocks, data) == (FIXTURES / "blocks_table.txt").read_text()


def _usage(i: int, **fields: Any) -> dict[str, Any]:
    """A row with the large figures of a busy month."""
    return {
        "entries": 5 * i,
        "input_tokens": 12345 * i,
        "output_tokens": 987654 * i,
        "cache_creation_tokens": 9876543 * i,
        "cache_read_tokens": 123456789 * i,
        "total_tokens": 134333331 * i,
        "cost_usd": 1234.5678 * i,
        "models": ["claude-opus-4-1-20250805", "claude-sonnet-4-5-20250929"],
        **fields,
    }


WIDE = {
    "sessions": {
        "sessions": [
            _usage(
                1,
                session_id="6c1e4f2a-9b3d-4e5f-8a7b-1c2d3e4f5a6b",
                project="/home/dev/projects/very-long-project-name/api",
                first_at="2026-11-25T08:00:00Z",
                last_at="2026-11-26T12:47:00Z",
            ),
            _usage(
                2,
                session_id="0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a",
                project="/home/dev/web",
                first_at="2026-11-25T08:00:00Z",
                last_at="2026-11-25T09:47:00Z",
            ),
        ]
    },
    "projects": {
        "projects": [
            _usage(
                1,
                project="/home/dev/projects/very-long-project-name/api",
                first_at="2026-11-25T08:00:00Z",
                last_at="2026-11-26T12:47:00Z",
            )
        ]
    },
    "daily": {
        "timezone": "Europe/Warsaw",
        "days": [_usage(1, date="2026-11-25"), _usage(2, date="2026-11-26")],
        "totals": _usage(3),
    },
    "blocks": {
        "blocks": [
            _usage(
                1,
                start="2026-11-26T10:00:00Z",
                end="2026-11-26T15:00:00Z",
                actual_end="2026-11-26T12:47:00Z",
                is_active=True,
            )
        ]
    },
}


@pytest.mark.parametrize("width", [80, 120])
def test_tables_fit_the_terminal_without_cutting_a_number_cost_or_date(width: int) -> None:
    """At 80 and 120 columns every table fits and shows every figure, cost and date whole:
    paths and ids fold, headers take two lines, figures turn compact, minor columns go."""
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    render_sessions(WIDE["sessions"], console, WARSAW)
    render_projects(WIDE["projects"], console, WARSAW)
    render_daily(WIDE["daily"], console)
    render_blocks(WIDE["blocks"], console, WARSAW)
    text = out.getvalue()
    assert text == (FIXTURES / f"tables_{width}.txt").read_text()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text


def test_compact_token_figures() -> None:
    """Compact figures keep three significant digits at most and never read 1000k."""
    figures = [999, 1000, 1234, 99950, 123456, 999950, 1234567, 98765432, 1234567890]
    assert [compact_count(n) for n in figures] == [
        "999",
        "1k",
        "1.2k",
        "100k",
        "123k",
        "1M",
        "1.2M",
        "98.8M",
        "1.2B",
    ]


def test_model_names_are_shortened_as_ccusage_does() -> None:
    """The `claude-` prefix and the date suffix are dropped."""
    assert short_model("claude-sonnet-4-20250514") == "sonnet-4"
    assert short_model("claude-opus-4-1") == "opus-4-1"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color() -> None:
    """Colour on a terminal; off when piped or when NO_COLOR is set."""
    assert make_console(Tty(), env={}).no_color is False
    assert make_console(Tty(), env={"NO_COLOR": "1"}).no_color is True
    assert make_console(io.StringIO(), env={}).no_color is True


def test_no_color_on_a_terminal_prints_no_escape_codes_at_all() -> None:
    """With NO_COLOR on a terminal the table has no styling, not even bold."""
    plain, styled = Tty(), Tty()
    render_stats(STATS, make_console(plain, env={"NO_COLOR": "1", "COLUMNS": "100"}), WARSAW)
    render_stats(STATS, make_console(styled, env={"COLUMNS": "100"}), WARSAW)
    assert plain.getvalue() == (FIXTURES / "stats_table.txt").read_text()
    assert "\x1b[1m" in styled.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["stats"],
        ["blocks"],
        ["daily"],
        ["sessions"],
        ["projects"],
        ["service"],
        ["service", "install"],
        ["service", "uninstall"],
        ["service", "status"],
        ["service", "logs"],
    ],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` works on every command and exits 0."""
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: claude-usaged")


def test_statusline_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """statusline answers --help itself (it never builds the argparse parser)."""
    assert main(["statusline", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: claude-usaged statusline [--url URL]")


def test_blocks_help_says_since_and_until_take_iso_times(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """blocks --since/--until are documented as ISO-8601 times or dates, as the API takes."""
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps help to the terminal
    with pytest.raises(SystemExit):
        main(["blocks", "--help"])
    out = capsys.readouterr().out
    assert (
        "  --since WHEN   blocks that start at or after this time: an ISO-8601 time\n"
        "                 such as 2026-11-26T10:00:00Z (UTC when it has no offset), or\n"
        "                 a date such as 2026-11-26 (its UTC midnight)\n"
        "  --until WHEN   blocks that start before this time, given as --since (a date\n"
        "                 includes that whole UTC day)\n"
    ) in out


def test_an_unknown_option_shows_the_usage_of_its_command(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`stats --bogus` prints the usage of `stats`, not the top-level one, and exits 2."""
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps help to the terminal
    with pytest.raises(SystemExit) as exc:
        main(["stats", "--bogus"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "usage: claude-usaged stats [-h] [--url URL | --offline] [--db PATH]\n"
        "                           [--config FILE] [--json] [--tz ZONE] [--machine ID]\n"
        "claude-usaged stats: error: unrecognized arguments: --bogus\n"
    )


def test_service_logs_explains_its_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`service logs --help` says what -n N and -f do."""
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps help to the terminal
    with pytest.raises(SystemExit):
        main(["service", "logs", "--help"])
    out = capsys.readouterr().out
    assert "  -n N, --lines N       show the last N lines (default: 100)\n" in out
    assert "  -f, --follow          keep printing new lines as they come\n" in out
