"""Tables of the client commands from fixed API answers, and when colour is used."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from claude_usaged.cli import main
from claude_usaged.render import make_console, render_blocks, render_stats, short_model

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
