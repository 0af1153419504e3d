"""The `claude-usaged` command: subcommands, and errors as one line and an exit code.

Exit codes: 0 success; 1 unexpected failure; 2 bad command line; 3 the daemon
could not start (bad setting, port taken, database unwritable).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from claude_usaged import __version__
from claude_usaged.settings import SOURCES, Settings, SettingsError, load_settings

EXIT_STARTUP = 3


def _settings_help(name: str) -> str:
    field = Settings.model_fields[name]
    _flag, var = SOURCES[name]
    return f"{field.description} (env {var})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-usaged",
        description="Counts Claude Code usage from its transcripts and serves it on localhost.",
    )
    parser.add_argument("--version", action="version", version=f"claude-usaged {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument(
        "--claude-dir",
        dest="claude_dirs",
        action="append",
        type=Path,
        metavar="DIR",
        help=_settings_help("claude_dirs") + "; repeatable",
    )
    run.add_argument("--db", type=Path, metavar="PATH", help=_settings_help("db"))
    run.add_argument("--host", help=_settings_help("host"))
    # --port and --reconcile-interval are checked by Settings, not argparse, so that a
    # bad value is a bad setting (one line, exit 3) as it is from the environment
    run.add_argument("--port", metavar="PORT", help=_settings_help("port"))
    run.add_argument("--tz", metavar="ZONE", help=_settings_help("tz"))
    run.add_argument("--prices", type=Path, metavar="FILE", help=_settings_help("prices"))
    run.add_argument(
        "--reconcile-interval",
        metavar="SECONDS",
        help=_settings_help("reconcile_interval"),
    )
    run.add_argument(
        "--log-format", choices=["auto", "console", "json"], help=_settings_help("log_format")
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help=_settings_help("log_level"),
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    from claude_usaged.daemon import Daemon, StartupError
    from claude_usaged.log import configure_logging

    try:
        settings = load_settings(vars(args))
    except SettingsError as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    configure_logging(settings.log_format, settings.log_level)
    try:
        asyncio.run(Daemon(settings).run())
    except StartupError as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
