"""One frozen Settings object: defaults < environment < command-line flags.

Each field names its flag and environment variable; `SETTINGS_DOC` lists them
for `--help` and for the README test that checks every setting is documented.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from claude_usaged.paths import default_claude_dirs, default_db_path, machine_timezone


class SettingsError(ValueError):
    """A setting has a bad value; the message names it, its source and what is allowed."""


class Settings(BaseModel):
    """Everything the daemon needs to know, validated once at start."""

    model_config = ConfigDict(frozen=True)

    claude_dirs: list[Path] = Field(
        default_factory=default_claude_dirs,
        description="Roots whose projects/ tree is watched",
    )
    db: Path = Field(default_factory=default_db_path, description="SQLite database file")
    host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on")
    port: int = Field(default=8714, ge=0, le=65535, description="Port; 0 picks a free one")
    tz: str = Field(default_factory=machine_timezone, description="Zone for daily totals")
    prices: Path | None = Field(default=None, description="JSON file adding or overriding prices")
    reconcile_interval: float = Field(
        default=30.0, gt=0, description="Seconds between rescans that catch missed events"
    )
    log_format: Literal["auto", "console", "json"] = Field(
        default="auto", description="auto: console on a TTY, JSON lines otherwise"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged"
    )
    forward_url: str | None = Field(
        default=None, description="Endpoint that counted usage is forwarded to (POST JSON)"
    )
    forward_token: SecretStr | None = Field(
        default=None, description="Bearer token sent with forwarded usage (never shown)"
    )
    forward_timeout: float = Field(
        default=30.0, gt=0, description="Seconds one forwarding request may take"
    )

    @field_validator("forward_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @field_validator("prices")
    @classmethod
    def _prices_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


# field -> (flag, environment variable)
SOURCES: dict[str, tuple[str, str]] = {
    "claude_dirs": ("--claude-dir", "CLAUDE_CONFIG_DIR"),
    "db": ("--db", "CLAUDE_USAGED_DB"),
    "host": ("--host", "CLAUDE_USAGED_HOST"),
    "port": ("--port", "CLAUDE_USAGED_PORT"),
    "tz": ("--tz", "CLAUDE_USAGED_TZ"),
    "prices": ("--prices", "CLAUDE_USAGED_PRICES"),
    "reconcile_interval": ("--reconcile-interval", "CLAUDE_USAGED_RECONCILE_INTERVAL"),
    "log_format": ("--log-format", "CLAUDE_USAGED_LOG_FORMAT"),
    "log_level": ("--log-level", "CLAUDE_USAGED_LOG_LEVEL"),
    "forward_url": ("--forward-url", "CLAUDE_USAGED_FORWARD_URL"),
    "forward_token": ("--forward-token", "CLAUDE_USAGED_FORWARD_TOKEN"),
    "forward_timeout": ("--forward-timeout", "CLAUDE_USAGED_FORWARD_TIMEOUT"),
}

COMPAT_FORWARD = ("CLAUDE_USAGE_API_URL", "CLAUDE_USAGE_API_TOKEN")
"""The setup guide's variables: forward to `$CLAUDE_USAGE_API_URL/app/claude-usage/agent-sync/`."""


def _compat_forwarding(env: Mapping[str, str], values: dict[str, tuple[Any, str]]) -> None:
    """The cron agent's variables, used only where ours are not set."""
    url_var, token_var = COMPAT_FORWARD
    url, token = env.get(url_var, "").strip(), env.get(token_var, "").strip()
    if url and "forward_url" not in values:
        endpoint = url.rstrip("/") + "/app/claude-usage/agent-sync/"
        values["forward_url"] = (endpoint, f"environment variable {url_var}")
    if token and "forward_token" not in values:
        values["forward_token"] = (token, f"environment variable {token_var}")


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    values: dict[str, tuple[Any, str]] = {}
    for name, (_flag, var) in SOURCES.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        value: Any = raw
        if name == "claude_dirs":
            value = default_claude_dirs({"CLAUDE_CONFIG_DIR": raw})
        values[name] = (value, f"environment variable {var}")
    _compat_forwarding(env, values)
    return values


def load_settings(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from flags (None = not given) over the environment over defaults."""
    env = os.environ if env is None else env
    chosen = _from_env(env)
    for name, value in flags.items():
        if name in SOURCES and value not in (None, []):
            chosen[name] = (value, f"flag {SOURCES[name][0]}")
    try:
        settings = Settings(**{name: value for name, (value, _src) in chosen.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        source = chosen.get(name, (None, "default"))[1]
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"bad setting {name} (from {source}): {msg}") from None
    return settings.model_copy(
        update={
            "claude_dirs": [p.expanduser() for p in settings.claude_dirs],
            "db": settings.db.expanduser(),
        }
    )
