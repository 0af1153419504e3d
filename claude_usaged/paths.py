"""Where things are: transcript roots, the database, the machine's time zone."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "claude-usaged"


def default_claude_dirs(env: dict[str, str] | None = None) -> list[Path]:
    """`CLAUDE_CONFIG_DIR` (comma-separated) when set, else both places Claude Code uses.

    Claude Code moved from `~/.claude` to `~/.config/claude`; either may exist,
    so both are watched and merged.
    """
    env = dict(os.environ) if env is None else env
    raw = env.get("CLAUDE_CONFIG_DIR", "").strip()
    if raw:
        return [Path(p.strip()).expanduser() for p in raw.split(",") if p.strip()]
    home = Path.home()
    return [home / ".config" / "claude", home / ".claude"]


def default_db_path() -> Path:
    """The user's data dir (platformdirs), e.g. `~/.local/share/claude-usaged/`."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "usage.sqlite3"


def address_file(db: Path) -> Path:
    """Where the running daemon writes the address it bound, beside its database."""
    return db.with_name(db.name + ".addr")


def machine_timezone() -> str:
    """The machine's IANA zone: `TZ`, then /etc/localtime's target, then /etc/timezone."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if (tz and "/" in tz) or tz == "UTC":
        return tz
    localtime = Path("/etc/localtime")
    try:
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return name
    except OSError:
        pass
    return "UTC"
