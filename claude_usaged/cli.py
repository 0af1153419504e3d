"""The `claude-usaged` command: subcommands, and errors as one line and an exit code.

Exit codes: 0 success; 1 unexpected failure, or a service manager command
failed; 2 bad command line or a value the API refused; 3 a bad setting (from
any source, or a missing `--config` file), or the daemon could not start (port
taken, database unwritable); 4 no daemon is running (client commands).

Imports are deferred to the command that needs them: `statusline` runs on
every prompt and must not pay for pydantic, aiohttp or rich, and the client
commands must not pay for pydantic.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from claude_usaged import __version__

# `typing` costs ~3 ms to import; this path runs on every prompt (mypy knows the idiom)
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_STARTUP = 3
EXIT_NO_DAEMON = 4
CLIENT_COMMANDS = ("stats", "blocks", "daily", "sessions", "projects", "machines")


def _settings_help(name: str) -> str:
    from claude_usaged.settings import SOURCES, Settings

    field = Settings.model_fields[name]
    _flag, var = SOURCES[name]
    return f"{field.description} (env {var})"


def _add_settings_arguments(run: argparse.ArgumentParser) -> None:
    """The daemon's settings as flags (of `run`, `sync`, `config` and `service install`)."""
    from pathlib import Path

    from claude_usaged.settings import CONFIG_ENV

    run.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML settings file, below env and flags (env {CONFIG_ENV}; "
        "default: config.toml in the user config dir)",
    )
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
    run.add_argument("--forward-url", metavar="URL", help=_settings_help("forward_url"))
    run.add_argument("--forward-token", metavar="TOKEN", help=_settings_help("forward_token"))
    run.add_argument("--forward-timeout", metavar="SECONDS", help=_settings_help("forward_timeout"))
    run.add_argument(
        "--accept-forwarded",
        action="store_const",
        const=True,
        help=_settings_help("accept_forwarded"),
    )
    run.add_argument("--ingest-token", metavar="TOKEN", help=_settings_help("ingest_token"))


def _add_client_arguments(cmd: argparse.ArgumentParser, *, dates: str = "") -> None:
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--url", help="the daemon's address (default: from its address file)")
    if dates != "machines":  # only a team server knows other machines: nothing to read offline
        where.add_argument(
            "--offline",
            action="store_true",
            help="no daemon: read the transcripts into a temporary database and answer from it",
        )
    cmd.add_argument("--db", metavar="PATH", help="find the daemon of this database")
    cmd.add_argument(
        "--config", metavar="FILE", help="settings file for --offline (roots, zone, prices)"
    )
    cmd.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    cmd.add_argument("--tz", metavar="ZONE", help="IANA zone for times and days")
    if dates != "machines":
        cmd.add_argument(
            "--machine",
            metavar="ID",
            help="on a team server: one machine's usage (an id from `machines`), or `all`",
        )
    if dates == "blocks":
        cmd.add_argument(
            "--since",
            metavar="WHEN",
            help="blocks that start at or after this time: an ISO-8601 time such as "
            "2026-11-26T10:00:00Z (UTC when it has no offset), or a date such as "
            "2026-11-26 (its UTC midnight)",
        )
        cmd.add_argument(
            "--until",
            metavar="WHEN",
            help="blocks that start before this time, given as --since "
            "(a date includes that whole UTC day)",
        )
    elif dates == "daily":
        cmd.add_argument(
            "--since", metavar="DATE", help="from this day (YYYY-MM-DD or YYYYMMDD), in --tz"
        )
        cmd.add_argument(
            "--until", metavar="DATE", help="up to and including this day (YYYY-MM-DD or YYYYMMDD)"
        )


def build_parser(settings_help: bool = True) -> argparse.ArgumentParser:
    """The whole command line; without `settings_help` the settings flags (whose help
    comes from pydantic's Settings) are left out, for commands that do not take them."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="claude-usaged",
        description="Counts Claude Code usage from its transcripts and serves it on localhost.",
    )
    parser.add_argument("--version", action="version", version=f"claude-usaged {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    if settings_help:
        _add_settings_arguments(run)
    sync = sub.add_parser("sync", help="catch up and forward everything pending, then exit")
    sync.add_argument(
        "--once", action="store_true", required=True, help="one pass (for cron); required"
    )
    sync.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log progress on stderr (info; debug with --log-level debug); "
        "without it only warnings and errors are logged",
    )
    if settings_help:
        _add_settings_arguments(sync)
    config = sub.add_parser("config", help="print the effective settings and where each came from")
    config.add_argument("--json", action="store_true", help="as JSON, for scripts")
    if settings_help:
        _add_settings_arguments(config)
    stats = sub.add_parser("stats", help="the current window, today and all time")
    _add_client_arguments(stats)
    blocks = sub.add_parser("blocks", help="5-hour blocks")
    _add_client_arguments(blocks, dates="blocks")
    blocks.add_argument("--limit", metavar="N", help="only the newest N blocks")
    daily = sub.add_parser("daily", help="usage and cost per day")
    _add_client_arguments(daily, dates="daily")
    sessions = sub.add_parser("sessions", help="usage and cost per session")
    _add_client_arguments(sessions)
    sessions.add_argument(
        "--project",
        metavar="PATH",
        help="only usage in this project (a working directory, as `projects` lists it)",
    )
    projects = sub.add_parser("projects", help="usage and cost per project")
    _add_client_arguments(projects)
    machines = sub.add_parser(
        "machines", help="on a team server: the machines that forward to it, with their totals"
    )
    _add_client_arguments(machines, dates="machines")
    sub.add_parser(
        "statusline",
        help="one line for Claude Code's status bar (reads its JSON on stdin)",
        add_help=False,
    )
    service = sub.add_parser("service", help="install the daemon as a user service")
    actions = service.add_subparsers(dest="action", required=True)
    for name, text in (
        ("install", "write, enable and start the systemd user unit or launchd agent"),
        ("uninstall", "stop it and remove what install wrote"),
        ("status", "is it installed and running"),
        ("logs", "its recent log lines"),
    ):
        action = actions.add_parser(name, help=text)
        action.set_defaults(command_parser=action)
        action.add_argument(
            "--platform", choices=["systemd", "launchd"], help="default: this machine's"
        )
        if name in ("install", "uninstall"):
            action.add_argument(
                "--dry-run", action="store_true", help="print what would be written and run"
            )
        if name == "install" and settings_help:
            _add_settings_arguments(action)
        if name == "logs":
            action.add_argument(
                "-n",
                "--lines",
                type=int,
                default=100,
                metavar="N",
                help="show the last N lines (default: 100)",
            )
            action.add_argument(
                "-f", "--follow", action="store_true", help="keep printing new lines as they come"
            )
    for command, command_parser in sub.choices.items():
        if command != "service":
            command_parser.set_defaults(command_parser=command_parser)
    return parser


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser(settings_help=argv[:1] not in [[c] for c in CLIENT_COMMANDS])
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # the usage of the command the unknown argument was given to, not the top level's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _run(argv: list[str]) -> int:
    import signal

    from claude_usaged import headstart

    # until the event loop handles them, a stop (or Ctrl-C) ends the start quietly
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # the first catch-up runs in a child, forked before anything heavy is imported: it
    # imports what it needs while this process reads its command line and settings
    # (pydantic), and catches up while this one imports the rest
    try:
        early = headstart.fork_early()
    except headstart.BadSwitch as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        return 0
    try:
        # a usage error or --help exits here (SystemExit): the child gets no job
        args = _parse(argv)
        from claude_usaged.settings import SettingsError, load_settings

        try:
            settings = load_settings(vars(args))
        except SettingsError as exc:
            print(f"claude-usaged: {exc}", file=sys.stderr)
            return EXIT_STARTUP
        # the job first: the child configures its own logging, and needs no more
        head = early.go(settings) if early is not None else None
        from claude_usaged.log import configure_logging

        configure_logging(settings.log_format, settings.log_level, lean=True)
    except KeyboardInterrupt:
        return 0
    finally:
        if early is not None and early.waiting:
            early.cancel()  # no job was sent (an error, or a stop)
    try:
        # while the child catches up, on the core it leaves free
        headstart.import_behind(head)
        import asyncio

        from claude_usaged.daemon import Daemon, StartupError

        try:
            asyncio.run(Daemon(settings, head).run())
        except StartupError as exc:
            print(f"claude-usaged: {exc}", file=sys.stderr)
            return EXIT_STARTUP
    except KeyboardInterrupt:
        return 0
    finally:
        if head is not None and head.outcome is None:
            head.stop()
    return 0


def _client_path(args: argparse.Namespace) -> str:
    from urllib.parse import urlencode

    query = {
        "since": getattr(args, "since", None),
        "until": getattr(args, "until", None),
        "limit": getattr(args, "limit", None),
        "project": getattr(args, "project", None),
        "machine": getattr(args, "machine", None),
        # the zone days are counted in (today's row of `stats`); other commands only show times
        "tz": args.tz if args.command in ("daily", "stats") else None,
    }
    given = {k: v for k, v in query.items() if v is not None}
    return f"/{args.command}" + (f"?{urlencode(given)}" if given else "")


class _StartupFailed(Exception):
    """--offline could not start: a bad setting or price file (exit 3)."""


def _offline_text(args: argparse.Namespace) -> str:
    """The API's answer from a one-shot catch-up (pays for pydantic and aiohttp, once)."""
    import asyncio

    from claude_usaged.daemon import StartupError
    from claude_usaged.log import configure_logging
    from claude_usaged.offline import answer
    from claude_usaged.settings import SettingsError, load_settings

    try:
        settings = load_settings({"config": args.config})
    except SettingsError as exc:
        raise _StartupFailed(str(exc)) from None
    # stdout is for the answer: only warnings (an unreadable file), on stderr
    configure_logging(settings.log_format, "warning")
    try:
        return asyncio.run(answer(settings, _client_path(args), sys.stderr))
    except StartupError as exc:
        raise _StartupFailed(str(exc)) from None


def _client(args: argparse.Namespace) -> int:
    """Ask the running daemon and print its answer as a table, or as it is with --json."""
    import json

    from claude_usaged.client import ApiError, DaemonDown, fetch_text, find_url

    zone = None
    if args.tz:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            zone = ZoneInfo(args.tz)
        except (ZoneInfoNotFoundError, ValueError):
            print(
                f"claude-usaged: unknown time zone {args.tz!r} (use an IANA name)", file=sys.stderr
            )
            return EXIT_USAGE
    try:
        if getattr(args, "offline", False):
            text = _offline_text(args)
        else:
            config = str(args.config) if getattr(args, "config", None) else None
            text = fetch_text(find_url(args.url, args.db, config), _client_path(args))
    except DaemonDown as exc:
        print(
            f"claude-usaged: no daemon is running ({exc}).\n"
            "Start it with `claude-usaged run`, or once for good with "
            "`claude-usaged service install`; or read the transcripts once with --offline.",
            file=sys.stderr,
        )
        return EXIT_NO_DAEMON
    except _StartupFailed as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except ApiError as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    from claude_usaged import render

    data = json.loads(text)
    console = render.make_console()
    if args.command == "daily":
        render.render_daily(data, console)
    else:
        getattr(render, f"render_{args.command}")(data, console, zone)
    return 0


def _config(args: argparse.Namespace) -> int:
    """Print the effective settings, each with its source, secrets masked."""
    import json

    from claude_usaged.settings import SettingsError, config_report, resolve_settings

    try:
        report = config_report(resolve_settings(vars(args)))
    except SettingsError as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    cfg = report["config_file"]
    state = "read" if cfg["found"] else "not found"
    print(f"config file: {cfg['path']} ({cfg['source']}; {state})")
    rows = [
        (name, json.dumps(item["value"], ensure_ascii=False), item["source"])
        for name, item in report["settings"].items()
    ]
    name_width = max(len(name) for name, _v, _s in rows)
    value_width = max(len(value) for _n, value, _s in rows)
    for name, value, source in rows:
        print(f"{name:<{name_width}}  {value:<{value_width}}  {source}")
    return 0


def _service(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from claude_usaged.service import (
        Runner,
        Service,
        ServiceError,
        chosen_environment,
        detect_platform,
    )
    from claude_usaged.settings import SettingsError

    platform = args.platform or detect_platform()
    if platform is None:
        print(
            "claude-usaged: found neither systemd (systemctl) nor launchd on this machine; "
            "run `claude-usaged run` under the service manager you use",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    service = Service(platform, Path.home(), os.environ)
    runner = Runner(sys.stdout, getattr(args, "dry_run", False))
    try:
        if args.action == "install":
            service.install(chosen_environment(vars(args), os.environ), runner)
        elif args.action == "uninstall":
            service.uninstall(runner)
        elif args.action == "status":
            return service.status(runner)
        else:
            return service.logs(runner, args.lines, args.follow)
    except SettingsError as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except ServiceError as exc:
        print(f"claude-usaged: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["statusline"]:
        # before anything else is imported: this runs on every prompt
        from claude_usaged.statusline import main as statusline

        return statusline(argv[1:])
    if argv[:1] == ["run"]:
        return _run(argv)  # it forks its head start before reading the command line
    args = _parse(argv)
    if args.command in CLIENT_COMMANDS:
        return _client(args)
    if args.command == "service":
        return _service(args)
    if args.command == "config":
        return _config(args)
    if args.command == "sync":
        from claude_usaged.sync import main as sync

        return sync(vars(args))
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
