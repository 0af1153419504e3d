"""Settings from a TOML config file, below the environment and flags; `claude-usaged config`.

Every command runs as its own process with HOME and XDG_CONFIG_HOME in a temp
dir, so the default config file is a real file in a real place.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from claude_usaged.service import chosen_environment
from claude_usaged.settings import SOURCES, Settings

README = Path(__file__).resolve().parent.parent / "README.md"
TOKEN = "tok-4c1e9b-do-not-show"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The parent's environment without any setting, HOME and XDG_CONFIG_HOME in tmp_path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLAUDE_USAGED_", "CLAUDE_USAGE_API_", "XDG_"))
        and k != "CLAUDE_CONFIG_DIR"
    }
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg"), TZ="UTC")
    env.update(extra)
    return env


def default_file(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "claude-usaged" / "config.toml"


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claude_usaged", *args],
        env=env_for(tmp_path, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def config_json(tmp_path: Path, *args: str, **env: str) -> dict[str, Any]:
    proc = cli(tmp_path, "config", "--json", *args, **env)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


# -- precedence --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_file", "in_env", "flag", "value", "source"),
    [
        (False, False, False, 8714, "default"),
        (True, False, False, 9001, "config file {file}"),
        (True, True, False, 9002, "environment variable CLAUDE_USAGED_PORT"),
        (True, True, True, 9003, "flag --port"),
        (False, False, True, 9003, "flag --port"),
    ],
)
def test_each_level_wins_over_the_ones_below_it(
    tmp_path: Path, in_file: bool, in_env: bool, flag: bool, value: int, source: str
) -> None:
    """defaults < config file (the default one) < environment < flags, each reported as such."""
    file = default_file(tmp_path)
    if in_file:
        write_config(file, "port = 9001\n")
    env = {"CLAUDE_USAGED_PORT": "9002"} if in_env else {}
    args = ["--port", "9003"] if flag else []
    report = config_json(tmp_path, *args, **env)
    assert report["settings"]["port"] == {"value": value, "source": source.format(file=file)}
    assert report["config_file"] == {"path": str(file), "source": "default", "found": in_file}


def test_config_prints_every_setting_with_its_source(tmp_path: Path) -> None:
    """`config` lists each setting's value and where it came from: file, env, flag or default."""
    file = write_config(
        tmp_path / "my.toml",
        'claude_dirs = ["transcripts", "~/.claude"]\nreconcile_interval = 5\n'
        f'forward_url = "https://usage.example.com/in"\nforward_token = "{TOKEN}"\n'
        "accept_forwarded = true\n",
    )
    proc = cli(
        tmp_path,
        "config",
        "--config",
        str(file),
        "--host",
        "0.0.0.0",
        CLAUDE_USAGED_TZ="Asia/Kolkata",
        CLAUDE_USAGED_DB="/data/usage.sqlite3",
        CLAUDE_USAGED_INGEST_TOKEN="team-" + TOKEN,
    )
    home = tmp_path / "home"
    assert (proc.returncode, proc.stderr) == (0, "")
    dirs = json.dumps([str(tmp_path / "transcripts"), str(home / ".claude")])
    width = len(dirs)
    rows = [
        ("claude_dirs", dirs, f"config file {file}"),
        ("db", '"/data/usage.sqlite3"', "environment variable CLAUDE_USAGED_DB"),
        ("host", '"0.0.0.0"', "flag --host"),
        ("port", "8714", "default"),
        ("tz", '"Asia/Kolkata"', "environment variable CLAUDE_USAGED_TZ"),
        ("prices", "null", "default"),
        ("reconcile_interval", "5.0", f"config file {file}"),
        ("log_format", '"auto"', "default"),
        ("log_level", '"info"', "default"),
        ("forward_url", '"https://usage.example.com/in"', f"config file {file}"),
        ("forward_token", '"**********"', f"config file {file}"),
        ("forward_timeout", "30.0", "default"),
        ("accept_forwarded", "true", f"config file {file}"),
        ("ingest_token", '"**********"', "environment variable CLAUDE_USAGED_INGEST_TOKEN"),
    ]
    expected = [f"config file: {file} (flag --config; read)"]
    expected += [f"{n:<18}  {v:<{width}}  {s}" for n, v, s in rows]
    assert proc.stdout.splitlines() == expected


def test_config_file_named_by_the_environment_is_reported_as_such(tmp_path: Path) -> None:
    """CLAUDE_USAGED_CONFIG names the file; the report says the file came from that variable."""
    file = write_config(tmp_path / "elsewhere.toml", 'log_level = "debug"\n')
    write_config(default_file(tmp_path), 'log_level = "error"\n')  # not read
    report = config_json(tmp_path, CLAUDE_USAGED_CONFIG=str(file))
    assert report["config_file"] == {
        "path": str(file),
        "source": "environment variable CLAUDE_USAGED_CONFIG",
        "found": True,
    }
    assert report["settings"]["log_level"] == {"value": "debug", "source": f"config file {file}"}


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path: Path) -> None:
    """A relative `db` in the file means beside the file, wherever the command runs."""
    file = write_config(tmp_path / "conf" / "c.toml", 'db = "data/u.sqlite3"\n')
    report = config_json(tmp_path, "--config", str(file))
    assert report["settings"]["db"]["value"] == str(tmp_path / "conf" / "data" / "u.sqlite3")


# -- secrets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "args", "env", "source"),
    [
        (f'forward_token = "{TOKEN}"\n', [], {}, "config file {file}"),
        ("", [], {"CLAUDE_USAGED_FORWARD_TOKEN": TOKEN}, "environment variable {var}"),
        ("", [], {"CLAUDE_USAGE_API_TOKEN": TOKEN}, "environment variable CLAUDE_USAGE_API_TOKEN"),
        ("", ["--forward-token", TOKEN], {}, "flag --forward-token"),
    ],
)
def test_the_token_is_masked_whatever_its_source(
    tmp_path: Path, content: str, args: list[str], env: dict[str, str], source: str
) -> None:
    """`config` and `config --json` never print the forwarding token, only that it is set."""
    file = write_config(default_file(tmp_path), content)
    expected = source.format(file=file, var="CLAUDE_USAGED_FORWARD_TOKEN")
    report = config_json(tmp_path, *args, **env)
    assert report["settings"]["forward_token"] == {"value": "**********", "source": expected}
    text = cli(tmp_path, "config", *args, **env)
    assert text.returncode == 0
    assert TOKEN not in text.stdout + text.stderr
    assert re.search(r'^forward_token +"\*{10}" +' + re.escape(expected) + "$", text.stdout, re.M)


def test_a_password_in_the_forward_url_is_masked(tmp_path: Path) -> None:
    """A password in forward_url's user info is shown as asterisks, the rest as it is."""
    report = config_json(tmp_path, "--forward-url", f"https://me:{TOKEN}@example.com/in")
    assert report["settings"]["forward_url"]["value"] == "https://me:**********@example.com/in"


# -- errors ------------------------------------------------------------------------

COMMANDS = [
    ["run", "--db", "{tmp}/u.sqlite3"],
    ["config"],
    ["sync", "--once"],
    ["service", "install", "--dry-run", "--platform", "systemd"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("file", "bad setting port (from config file {file}): {allowed}"),
        ("env", "bad setting port (from environment variable CLAUDE_USAGED_PORT): {allowed}"),
        ("flag", "bad setting port (from flag --port): {allowed}"),
    ],
)
def test_a_bad_value_names_setting_source_and_what_is_allowed_and_exits_3(
    tmp_path: Path, command: list[str], where: str, message: str
) -> None:
    """A port out of range, from the file, the environment or a flag, is one line and exit 3."""
    file = write_config(default_file(tmp_path), "port = 70000\n" if where == "file" else "")
    args = [a.format(tmp=tmp_path) for a in command]
    if where == "flag":
        args += ["--port", "70000"]
    env = {"CLAUDE_USAGED_PORT": "70000"} if where == "env" else {}
    proc = cli(tmp_path, *args, **env)
    allowed = "Input should be less than or equal to 65535"
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr == "claude-usaged: " + message.format(file=file, allowed=allowed) + "\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('log_level = "loud"\n', "log_level (from {src}): Input should be 'debug', 'info', "),
        ('claude_dirs = "~/.claude"\n', "claude_dirs (from {src}): Input should be a valid list"),
        ("port = true\n", "port (from {src}): Input should be a valid integer"),
        ('tz = "Mars/Olympus"\n', "tz (from {src}): unknown time zone 'Mars/Olympus' (use an"),
    ],
)
def test_a_bad_value_in_the_file_says_what_is_allowed(
    tmp_path: Path, content: str, message: str
) -> None:
    """Values of the wrong kind in the file are refused with pydantic's words, exit 3."""
    file = write_config(default_file(tmp_path), content)
    proc = cli(tmp_path, "config")
    assert proc.returncode == 3
    assert proc.stderr.startswith(
        "claude-usaged: bad setting " + message.format(src=f"config file {file}")
    )
    assert proc.stderr.count("\n") == 1


def test_an_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    """A key that is no setting (a typo) is an error naming it and the file, exit 3."""
    file = write_config(default_file(tmp_path), "prot = 9000\n")
    proc = cli(tmp_path, "run")
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr == (
        f"claude-usaged: unknown setting 'prot' in config file {file} (known: "
        + ", ".join(SOURCES)
        + ")\n"
    )


def test_a_file_that_is_not_toml_is_an_error_naming_it(tmp_path: Path) -> None:
    """A syntax error in the file is one line naming the file and where, exit 3."""
    file = write_config(default_file(tmp_path), "port = \n")
    proc = cli(tmp_path, "config")
    assert proc.returncode == 3
    assert proc.stderr == (
        f"claude-usaged: config file {file} is not valid TOML: "
        "Invalid value (at line 1, column 8)\n"
    )


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_missing_named_config_file_is_an_error(tmp_path: Path, how: str) -> None:
    """A file named with --config or CLAUDE_USAGED_CONFIG must exist (exit 3)."""
    missing = tmp_path / "nope.toml"
    if how == "flag":
        proc = cli(tmp_path, "run", "--config", str(missing))
        source = "flag --config"
    else:
        proc = cli(tmp_path, "run", CLAUDE_USAGED_CONFIG=str(missing))
        source = "environment variable CLAUDE_USAGED_CONFIG"
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr == f"claude-usaged: config file {missing} (from {source}) does not exist\n"


# -- service install ---------------------------------------------------------------


def test_install_leaves_file_settings_to_the_file_and_names_an_explicit_one(
    tmp_path: Path,
) -> None:
    """The unit's environment gets flags and variables, not the file's values (the service
    reads the file itself); a --config file is passed on as CLAUDE_USAGED_CONFIG."""
    file = write_config(tmp_path / "c.toml", "port = 9001\n")
    chosen = chosen_environment({"config": file, "host": "0.0.0.0"}, {"CLAUDE_USAGED_TZ": "UTC"})
    assert chosen.environment == {
        "CLAUDE_USAGED_CONFIG": str(file),
        "CLAUDE_USAGED_HOST": "0.0.0.0",
        "CLAUDE_USAGED_TZ": "UTC",
    }


# -- the README --------------------------------------------------------------------


def readme_settings_rows() -> dict[str, str]:
    """The README's settings table: config key -> its whole row."""
    section = README.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([a-z_]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_every_setting_is_documented_in_the_readme_table() -> None:
    """Each Settings field has a row in the README's table with its flag and variable."""
    rows = readme_settings_rows()
    assert sorted(rows) == sorted(Settings.model_fields)
    for name, (flag, var) in SOURCES.items():
        assert f"`{flag}" in rows[name], name
        assert f"`{var}`" in rows[name], name


def test_a_rejected_token_names_the_setting_it_came_from(tmp_path: Path) -> None:
    """The hint of a 401 names the variable, flag or file line that set the token."""
    from claude_usaged.settings import load_settings

    file = write_config(tmp_path / "c.toml", f'forward_token = "{TOKEN}"\n')
    guide = {"CLAUDE_USAGE_API_URL": "https://x.example", "CLAUDE_USAGE_API_TOKEN": TOKEN}
    cases = [
        ({}, guide, "CLAUDE_USAGE_API_TOKEN"),
        ({}, {"CLAUDE_USAGED_FORWARD_TOKEN": TOKEN}, "CLAUDE_USAGED_FORWARD_TOKEN"),
        ({"forward_token": TOKEN}, guide, "--forward-token"),
        ({"config": str(file)}, {}, f"forward_token in {file}"),
        ({}, {}, "CLAUDE_USAGED_FORWARD_TOKEN"),  # none set: where to set one
    ]
    for flags, env, hint in cases:
        assert load_settings(flags, env).where_to_set("forward_token") == hint, (flags, env)
    assert load_settings({}, guide).where_to_set("forward_url") == "CLAUDE_USAGE_API_URL"
