"""Ask the running daemon: find its address, GET a path, return the JSON.

Standard library only, and only cheap parts of it (`socket`, `json`, `os`):
`claude-usaged statusline` runs this on every prompt, where importing
`urllib.request` alone (~28 ms, it pulls in `http.client`, `email` and `ssl`)
would cost more than the rest of the process. The daemon speaks plain HTTP on
localhost, so an HTTP/1.0 request on a socket is all that is needed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping

# `typing` costs ~3 ms to import; this path runs on every prompt (mypy knows the idiom)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

APP_NAME = "claude-usaged"
TIMEOUT = 5.0


class DaemonDown(ConnectionError):
    """No daemon answers: no address file, or nothing listens at the address."""


class ApiError(RuntimeError):
    """The daemon answered with an error status; the message is the API's own."""

    def __init__(self, status: int, message: str, parameter: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.parameter = parameter


def default_data_dir(env: Mapping[str, str] | None = None, platform: str = sys.platform) -> str:
    """platformdirs' `user_data_dir("claude-usaged")`, without importing platformdirs (~8 ms).

    A test checks the two agree on this machine.
    """
    env = os.environ if env is None else env
    home = os.path.expanduser("~")
    if platform == "darwin":
        return os.path.join(home, "Library", "Application Support", APP_NAME)
    base = env.get("XDG_DATA_HOME", "").strip() or os.path.join(home, ".local", "share")
    return os.path.join(base, APP_NAME)


def default_config_path(env: Mapping[str, str], platform: str = sys.platform) -> str:
    """`claude_usaged.settings.default_config_file`, without platformdirs."""
    home = os.path.expanduser("~")
    if platform == "darwin":
        return os.path.join(home, "Library", "Application Support", APP_NAME, "config.toml")
    base = env.get("XDG_CONFIG_HOME", "").strip() or os.path.join(home, ".config")
    return os.path.join(base, APP_NAME, "config.toml")


def _db_from_config(config: str | None, env: Mapping[str, str]) -> str | None:
    """The `db` key of the config file, if there is one (read only when it exists)."""
    path = config or env.get("CLAUDE_USAGED_CONFIG", "").strip() or default_config_path(env)
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        return None
    import tomllib  # only when a config file exists: the status line stays fast

    try:
        with open(path, "rb") as f:
            value = tomllib.load(f).get("db")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(value, str) or not value:
        return None
    # relative to the file, as `claude-usaged run` reads it
    return os.path.join(os.path.dirname(path), os.path.expanduser(value))


def address_path(
    db: str | None = None, env: Mapping[str, str] | None = None, config: str | None = None
) -> str:
    """The address file beside the database (`--db`, `$CLAUDE_USAGED_DB`, the config
    file's `db`, or the default): the same place as `claude_usaged.paths.address_file`."""
    env = os.environ if env is None else env
    db = db or env.get("CLAUDE_USAGED_DB", "").strip() or _db_from_config(config, env)
    if not db:
        db = os.path.join(default_data_dir(env), "usage.sqlite3")
    return os.path.expanduser(db) + ".addr"


def find_url(url: str | None = None, db: str | None = None, config: str | None = None) -> str:
    """`url` when given, else the `url` the running daemon wrote to its address file."""
    if url:
        return url.rstrip("/")
    path = address_path(db, config=config)
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)["url"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DaemonDown(f"no address file at {path}") from None
    return str(found).rstrip("/")


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1] if "://" in url else url
    hostport = rest.split("/", 1)[0]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail.lstrip(":")
    else:
        host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    return host, int(port) if port else 80


def fetch_text(url: str, path: str, timeout: float = TIMEOUT) -> str:
    """GET url+path; the body as text. Raises DaemonDown or ApiError."""
    try:
        host, port = _host_port(url)
    except ValueError:
        raise DaemonDown(f"not a valid address: {url}") from None
    prefix = url.split("://", 1)[-1].partition("/")[2]
    target = ("/" + prefix if prefix else "") + path
    request = (
        f"GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n"
    ).encode()
    chunks = []
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise DaemonDown(f"nothing answers at {url} ({exc.strerror or exc})") from None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise DaemonDown(f"{url} did not answer HTTP") from None
    text = body.decode("utf-8")
    if status != 200:
        try:
            err = json.loads(text)
            raise ApiError(status, str(err["error"]), err.get("parameter"))
        except (ValueError, KeyError, TypeError):
            raise ApiError(status, f"HTTP {status} for {path}", None) from None
    return text


def fetch(url: str, path: str, timeout: float = TIMEOUT) -> Any:
    """GET url+path and decode its JSON."""
    return json.loads(fetch_text(url, path, timeout))
