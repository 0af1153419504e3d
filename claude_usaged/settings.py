"""One frozen Settings object: defaults < config file < environment < command-line flags.

Each field names its flag and environment variable (`SOURCES`), which `--help`
and the README test that checks every setting is documented use; in the TOML
config file a setting's key is its field name (`port = 8714`).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from claude_usaged.paths import APP_NAME, default_claude_dirs, default_db_path, machine_timezone

SELF_TARGET = "team-server:self"
"""The outbox target of a team server that forwards its own transcripts to itself."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    accept_forwarded: bool = Field(
        default=False,
        description="Be a team server: take usage forwarded by other daemons (POST /v1/ingest)",
    )
    ingest_token: SecretStr | None = Field(
        default=None,
        description="Bearer token senders must present; required beyond loopback (never shown)",
    )

    @field_validator("forward_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("forward_token", "ingest_token")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # an empty token would authenticate nobody, or let anybody in
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty (leave it unset for no token)")
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

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def forward_target(self) -> str | None:
        """What the outbox forwards to: the URL, or a team server's own ingest endpoint."""
        if self.forward_url:
            return self.forward_url
        return SELF_TARGET if self.accept_forwarded else None

    def team_problem(self) -> str | None:
        """Why a team server with these settings must not start, if it must not."""
        if self.accept_forwarded and self.ingest_token is None and not is_loopback(self.host):
            return (
                f"--accept-forwarded on {self.host} needs an ingest token beyond loopback: "
                "set --ingest-token or CLAUDE_USAGED_INGEST_TOKEN (senders use it as "
                "CLAUDE_USAGED_FORWARD_TOKEN)"
            )
        return None

    def where_to_set(self, name: str) -> str:
        """Where a user changes this setting's value: the source it came from, else
        our environment variable (e.g. for a 401: the token the daemon really used)."""
        source = self._sources.get(name, "default")
        flag, var = SOURCES[name]
        if source.startswith("environment variable "):
            return source.removeprefix("environment variable ")
        if source.startswith("flag "):
            return flag
        if source.startswith("config file "):
            return f"{name} in {source.removeprefix('config file ')}"
        return var


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
    "accept_forwarded": ("--accept-forwarded", "CLAUDE_USAGED_ACCEPT_FORWARDED"),
    "ingest_token": ("--ingest-token", "CLAUDE_USAGED_INGEST_TOKEN"),
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


CONFIG_ENV = "CLAUDE_USAGED_CONFIG"
CONFIG_FLAG = "--config"
PATH_FIELDS = ("claude_dirs", "db", "prices")
MASK = "**********"


def default_config_file() -> Path:
    """`config.toml` in platformdirs' user config dir (`~/.config/claude-usaged/` on Linux,
    `~/Library/Application Support/claude-usaged/` on macOS): where each platform keeps a
    user's settings, found the same way the default database is."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


@dataclass(frozen=True)
class ConfigFile:
    """Which config file is read, why that one, and whether it exists."""

    path: Path
    source: str
    """`default`, `flag --config` or `environment variable CLAUDE_USAGED_CONFIG`."""
    found: bool

    @property
    def explicit(self) -> bool:
        return self.source != "default"


def config_file(flags: Mapping[str, Any], env: Mapping[str, str]) -> ConfigFile:
    """`--config` > `$CLAUDE_USAGED_CONFIG` > the default file: a file named on purpose
    must exist, the default one may not."""
    given, raw = flags.get("config"), env.get(CONFIG_ENV, "").strip()
    if given:
        path, source = Path(given), f"flag {CONFIG_FLAG}"
    elif raw:
        path, source = Path(raw), f"environment variable {CONFIG_ENV}"
    else:
        path, source = default_config_file(), "default"
    # absolute: relative paths inside the file are relative to its directory
    path = path.expanduser().absolute()
    return ConfigFile(path, source, path.is_file())


def _file_path(value: Any, base: Path) -> Any:
    """A relative path in the file means relative to the file, not to wherever the
    daemon happens to start (a service starts in another directory)."""
    if not isinstance(value, str):
        return value  # not a path: Settings says what is allowed
    return str(base / Path(value).expanduser())


def _from_file(cfg: ConfigFile) -> dict[str, tuple[Any, str]]:
    """The settings in the TOML file, keyed by field name; errors name the file."""
    if not cfg.found:
        if cfg.explicit:
            problem = "is not a file" if cfg.path.exists() else "does not exist"
            raise SettingsError(f"config file {cfg.path} (from {cfg.source}) {problem}")
        return {}
    try:
        with cfg.path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {cfg.path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {cfg.path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(SOURCES))
    if unknown:
        raise SettingsError(
            f"unknown setting {unknown[0]!r} in config file {cfg.path} "
            f"(known: {', '.join(SOURCES)})"
        )
    source = f"config file {cfg.path}"
    base = cfg.path.parent
    values: dict[str, tuple[Any, str]] = {}
    for name, value in data.items():
        if isinstance(value, bool):
            _check_boolean(name, value, source)
        if name in PATH_FIELDS:
            if isinstance(value, list):
                value = [_file_path(v, base) for v in value]
            else:
                value = _file_path(value, base)
        values[name] = (value, source)
    return values


def _check_boolean(name: str, value: bool, source: str) -> None:
    """TOML's true/false is a setting only where one is a yes or no (pydantic would
    read it as 1 or 0 for a number)."""
    annotation: Any = Settings.model_fields[name].annotation
    if annotation is bool:
        return
    msg = "must not be true or false"
    try:
        TypeAdapter(annotation).validate_python(value, strict=True)
    except ValidationError as exc:
        msg = str(exc.errors()[0]["msg"])  # what is allowed, in pydantic's words
    raise SettingsError(f"bad setting {name} (from {source}): {msg}")


@dataclass(frozen=True)
class Resolved:
    """The effective settings, where each came from, and the config file consulted."""

    settings: Settings
    sources: dict[str, str]
    """Field -> `default`, `config file PATH`, `environment variable NAME` or `flag --NAME`."""
    config: ConfigFile


def resolve_settings(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Resolved:
    """Flags (None = not given) over the environment over the config file over defaults.

    Raises SettingsError naming the setting, its source and what is allowed.
    """
    env = os.environ if env is None else env
    cfg = config_file(flags, env)
    chosen = _from_file(cfg)
    chosen.update(_from_env(env))
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
    settings = settings.model_copy(
        update={
            "claude_dirs": [p.expanduser() for p in settings.claude_dirs],
            "db": settings.db.expanduser(),
        }
    )
    sources = {name: chosen.get(name, (None, "default"))[1] for name in SOURCES}
    settings._sources.update(sources)
    return Resolved(settings, sources, cfg)


def load_settings(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from flags over the environment over the config file over defaults."""
    return resolve_settings(flags, env).settings


def shown_value(settings: Settings, name: str) -> Any:
    """A setting as JSON shows it, secrets masked: the token, and a password in a URL."""
    value = getattr(settings, name)
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [str(v) for v in value]
    if name == "forward_url" and value is not None:
        return _mask_url_password(value)
    return value


def _mask_url_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:{MASK}@{host}{slash}{tail}"


def config_report(resolved: Resolved) -> dict[str, Any]:
    """`claude-usaged config --json`: the config file consulted, and every setting with its
    value (secrets masked) and source."""
    cfg = resolved.config
    return {
        "config_file": {"path": str(cfg.path), "source": cfg.source, "found": cfg.found},
        "settings": {
            name: {
                "value": shown_value(resolved.settings, name),
                "source": resolved.sources[name],
            }
            for name in SOURCES
        },
    }
