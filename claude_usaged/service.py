"""Install the daemon as a systemd user unit or a launchd agent, and take it away again.

The templates ship inside the package (`claude_usaged/templates/`). Install
renders one with the absolute path of the running interpreter and the
settings chosen at install time (flags and `CLAUDE_USAGED_*` variables, as
environment lines), writes it, then enables and starts it. Uninstall stops it
and removes that one file. Both are idempotent; `--dry-run` prints what would
be written and run, and changes nothing.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any, Literal, TextIO

Platform = Literal["systemd", "launchd"]

UNIT_NAME = "claude-usaged.service"
LAUNCHD_LABEL = "io.github.claude-usaged"
# the first line of every unit install writes; uninstall removes only such a file
SYSTEMD_MARKER = "# Written by `claude-usaged service install`"


class ServiceError(RuntimeError):
    """A service manager is missing or one of its commands failed; the message says which."""


def detect_platform(
    platform: str | None = None, which: Callable[[str], str | None] = shutil.which
) -> Platform | None:
    """launchd on macOS, systemd where `systemctl` is on PATH, else None."""
    if (sys.platform if platform is None else platform) == "darwin":
        return "launchd"
    if which("systemctl"):
        return "systemd"
    return None


def program_arguments() -> list[str]:
    """How the service starts the daemon: this interpreter (not resolved, so a venv stays a
    venv) running the package."""
    return [os.path.abspath(sys.executable), "-m", "claude_usaged", "run"]


def _template(name: str) -> str:
    return (files("claude_usaged") / "templates" / name).read_text(encoding="utf-8")


def _systemd_escape(value: str) -> str:
    """A word for a unit file: `%` is a specifier there, quotes and backslashes are syntax."""
    value = value.replace("%", "%%")
    if any(c in value for c in " \t\"\\'") or not value:
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def render_systemd(argv: Sequence[str], environment: Mapping[str, str], data_dir: Path) -> str:
    """The user unit, with `ExecStart=` from argv and one `Environment=` line per setting."""
    env_lines = "".join(
        f"Environment={_systemd_escape(f'{key}={value}')}\n"
        for key, value in sorted(environment.items())
    )
    return Template(_template(UNIT_NAME)).substitute(
        exec_start=" ".join(_systemd_escape(a) for a in argv),
        environment=env_lines,
        data_dir=_systemd_escape(str(data_dir)),
    )


def launchd_log_paths(home: Path) -> tuple[Path, Path]:
    logs = home / "Library" / "Logs"
    return logs / "claude-usaged.log", logs / "claude-usaged.err.log"


def render_launchd(argv: Sequence[str], environment: Mapping[str, str], home: Path) -> bytes:
    """The agent's plist: the template's keys, with the program, environment and log paths."""
    plist: dict[str, Any] = plistlib.loads(_template(f"{LAUNCHD_LABEL}.plist").encode())
    plist["ProgramArguments"] = list(argv)
    plist["EnvironmentVariables"] = dict(sorted(environment.items()))
    out, err = launchd_log_paths(home)
    plist["StandardOutPath"] = str(out)
    plist["StandardErrorPath"] = str(err)
    return plistlib.dumps(plist)


def unit_path(platform: Platform, home: Path, env: Mapping[str, str]) -> Path:
    """Where the user's service manager looks: `$XDG_CONFIG_HOME/systemd/user/` or
    `~/Library/LaunchAgents/`."""
    if platform == "launchd":
        return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    config = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config) / "systemd" / "user" / UNIT_NAME


@dataclass
class Runner:
    """Runs service-manager commands, or only prints them (`--dry-run`)."""

    out: TextIO
    dry_run: bool

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def warn(self, line: str) -> None:
        print(f"claude-usaged: warning: {line}", file=sys.stderr, flush=True)

    def attempt(self, argv: Sequence[str], note: str) -> None:
        """Run a command whose failure is only a warning: the error, then `note`."""
        try:
            self.run(argv)
        except ServiceError as exc:
            self.warn(f"{exc}; {note}")

    def run(self, argv: Sequence[str], check: bool = True) -> int:
        self.say("$ " + " ".join(argv))
        if self.dry_run:
            return 0
        try:
            code = subprocess.run(list(argv), check=False).returncode
        except FileNotFoundError:
            raise ServiceError(f"{argv[0]} not found on PATH") from None
        if check and code != 0:
            raise ServiceError(f"`{' '.join(argv)}` exited with status {code}")
        return code

    def quiet(self, argv: Sequence[str]) -> int:
        """A query whose output is not shown (is the agent loaded?); not run in a dry run."""
        if self.dry_run:
            return 1
        try:
            return subprocess.run(list(argv), capture_output=True, check=False).returncode
        except FileNotFoundError:
            raise ServiceError(f"{argv[0]} not found on PATH") from None


@dataclass(frozen=True)
class Service:
    """One platform's service for one user: where its file goes and how it is driven."""

    platform: Platform
    home: Path
    env: Mapping[str, str]

    @property
    def path(self) -> Path:
        return unit_path(self.platform, self.home, self.env)

    @property
    def domain(self) -> str:
        return f"gui/{os.getuid()}"

    def render(self, environment: Mapping[str, str], data_dir: Path) -> bytes:
        argv = program_arguments()
        if self.platform == "systemd":
            return render_systemd(argv, environment, data_dir).encode()
        return render_launchd(argv, environment, self.home)

    def _ours(self) -> bool:
        path = self.path
        if self.platform == "systemd":
            with path.open("rb") as f:
                return f.readline().decode(errors="replace").startswith(SYSTEMD_MARKER)
        try:
            label = plistlib.loads(path.read_bytes()).get("Label")
        except (plistlib.InvalidFileException, ValueError):
            return False
        return bool(label == LAUNCHD_LABEL)

    def install(self, chosen: Chosen, runner: Runner) -> None:
        data_dir = chosen.data_dir
        content = self.render(chosen.environment, data_dir)
        path = self.path
        existing = path.read_bytes() if path.exists() else None
        changed = existing != content
        if runner.dry_run:
            runner.say(f"would write {path}:" if changed else f"{path} is up to date")
            if changed:
                shown = content.decode()
                for secret in chosen.secrets:
                    shown = shown.replace(secret, "**********")
                runner.say(shown.rstrip("\n"))
        elif changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            # 0600: the environment may hold a token
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.replace(tmp, path)
            runner.say(f"wrote {path}")
        else:
            runner.say(f"{path} is up to date")
        if runner.dry_run:
            runner.say(f"would create {data_dir}")
        else:
            # ProtectSystem=strict needs the writable directory to exist before start
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.platform == "systemd":
            runner.run(["systemctl", "--user", "daemon-reload"])
            runner.run(["systemctl", "--user", "enable", "--now", UNIT_NAME])
            if changed and existing is not None:
                runner.run(["systemctl", "--user", "try-restart", UNIT_NAME])
            return
        target = f"{self.domain}/{LAUNCHD_LABEL}"
        loaded = runner.quiet(["launchctl", "print", target]) == 0
        if loaded and not changed:
            runner.run(["launchctl", "kickstart", target])
            return
        if loaded:
            runner.run(["launchctl", "bootout", target])
        runner.run(["launchctl", "enable", target])
        runner.run(["launchctl", "bootstrap", self.domain, str(path)])

    def uninstall(self, runner: Runner) -> None:
        path = self.path
        if not path.exists():
            runner.say(f"not installed ({path} does not exist)")
            return
        if not self._ours():
            raise ServiceError(f"{path} was not written by claude-usaged; leaving it alone")
        # a failed stop (no user bus, say) does not keep the file, which may hold a token
        note = "removing the file anyway; stop the service by hand if it still runs"
        if self.platform == "systemd":
            runner.attempt(["systemctl", "--user", "disable", "--now", UNIT_NAME], note)
        else:
            target = f"{self.domain}/{LAUNCHD_LABEL}"
            try:
                loaded = runner.dry_run or runner.quiet(["launchctl", "print", target]) == 0
            except ServiceError as exc:
                runner.warn(f"{exc}; {note}")
                loaded = False
            if loaded:
                runner.attempt(["launchctl", "bootout", target], note)
        if runner.dry_run:
            runner.say(f"would remove {path}")
        else:
            path.unlink()
            runner.say(f"removed {path}")
        if self.platform == "systemd":
            runner.attempt(["systemctl", "--user", "daemon-reload"], "the file is removed")

    def status(self, runner: Runner) -> int:
        path = self.path
        runner.say(f"{path}: {'installed' if path.exists() else 'not installed'}")
        if self.platform == "systemd":
            return runner.run(["systemctl", "--user", "status", "--no-pager", UNIT_NAME], False)
        return runner.run(["launchctl", "print", f"{self.domain}/{LAUNCHD_LABEL}"], False)

    def logs(self, runner: Runner, lines: int, follow: bool) -> int:
        if self.platform == "systemd":
            argv = ["journalctl", "--user", "-u", UNIT_NAME, "-n", str(lines), "--no-pager"]
        else:
            argv = ["tail", "-n", str(lines), *map(str, launchd_log_paths(self.home))]
        if follow:
            argv.append("-f")
        return runner.run(argv, check=False)


def _env_value(value: Any) -> str:
    if hasattr(value, "get_secret_value"):
        return str(value.get_secret_value())
    if isinstance(value, list):
        return ",".join(_env_value(v) for v in value)
    if isinstance(value, Path):
        # the service starts in another directory: relative paths would move
        return str(value.absolute())
    return str(value)


@dataclass(frozen=True)
class Chosen:
    """The settings given at install time, as the service's environment."""

    environment: dict[str, str]
    data_dir: Path
    secrets: frozenset[str]


def chosen_environment(flags: Mapping[str, Any], env: Mapping[str, str]) -> Chosen:
    """The settings given at install time (flags over environment), validated, as the
    environment variables the service will see; the database's directory; the secrets.

    Only what was chosen by a flag or a variable is written, so a default (the
    machine's zone, say) is still worked out when the service starts, and the
    config file is read by the service itself (an explicit one is named by
    `CLAUDE_USAGED_CONFIG`): an edit of the file is not hidden by a stale copy
    in the environment. Raises SettingsError.
    """
    from claude_usaged.settings import CONFIG_ENV, SOURCES, resolve_settings

    resolved = resolve_settings(flags, env)
    settings = resolved.settings
    chosen: dict[str, str] = {}
    secrets: set[str] = set()
    if resolved.config.explicit:
        chosen[CONFIG_ENV] = str(resolved.config.path.absolute())
    for name, (_flag, var) in SOURCES.items():
        value = getattr(settings, name)
        source = resolved.sources[name]
        if source != "default" and not source.startswith("config file "):
            chosen[var] = _env_value(value)
            if hasattr(value, "get_secret_value"):
                secrets.add(chosen[var])
    return Chosen(chosen, settings.db.absolute().parent, frozenset(secrets))
