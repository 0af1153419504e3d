"""`claude-usaged service`: rendering both templates, install/uninstall against a temp home.

Only the service managers are faked: executables named `systemctl` and
`launchctl` first on PATH that record their argv (and, for launchctl, whether
the agent is loaded). Everything else - files, directories, the CLI - is real.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from claude_usaged.cli import main
from claude_usaged.service import (
    LAUNCHD_LABEL,
    program_arguments,
    render_launchd,
    render_systemd,
)

PY = os.path.abspath(sys.executable)

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
case "$(basename "$0") $1" in
    "launchctl print") [ -e "$FAKE_LOG.loaded" ] ;;
    "launchctl bootstrap") touch "$FAKE_LOG.loaded" ;;
    "launchctl bootout") rm -f "$FAKE_LOG.loaded" ;;
esac
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp HOME with fake service managers first on PATH and none of our settings set."""
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("systemctl", "launchctl", "journalctl", "tail"):
        exe = bin_dir / name
        exe.write_text(FAKE)
        exe.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    for var in list(os.environ):
        if var.startswith(("CLAUDE_USAGED_", "XDG_")) or var == "CLAUDE_CONFIG_DIR":
            monkeypatch.delenv(var)
    return home


def calls(home: Path) -> list[str]:
    log = home.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


UNIT = ".config/systemd/user/claude-usaged.service"
PLIST = f"Library/LaunchAgents/{LAUNCHD_LABEL}.plist"


def test_systemd_unit_runs_this_interpreter_with_the_chosen_settings() -> None:
    """The unit starts this interpreter, sets each chosen setting and may write the data dir."""
    unit = render_systemd(
        program_arguments(),
        {"CLAUDE_USAGED_PORT": "9000", "CLAUDE_USAGED_DB": "/data/my usage/100%.sqlite3"},
        Path("/data/my usage"),
    )
    lines = unit.splitlines()
    assert lines[0].startswith("# Written by `claude-usaged service install`")
    assert f"ExecStart={PY} -m claude_usaged run" in lines
    env = [line for line in lines if line.startswith("Environment=")]
    assert env == [
        'Environment="CLAUDE_USAGED_DB=/data/my usage/100%%.sqlite3"',
        "Environment=CLAUDE_USAGED_PORT=9000",
    ]
    assert 'ReadWritePaths="/data/my usage"' in lines
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "RestartPreventExitStatus=3",
        "WatchdogSec=60",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "WantedBy=default.target",
    ):
        assert line in lines


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze --user verify` accepts the rendered unit without a warning."""
    unit = tmp_path / "claude-usaged.service"
    unit.write_text(
        render_systemd(program_arguments(), {"CLAUDE_USAGED_PORT": "9000"}, tmp_path / "data")
    )
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    proc = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_launchd_plist_has_the_required_keys() -> None:
    """The plist starts this interpreter at load, restarts it on failure, logs to ~/Library/Logs."""
    plist = plistlib.loads(
        render_launchd(program_arguments(), {"CLAUDE_USAGED_PORT": "9000"}, Path("/Users/me"))
    )
    assert plist == {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [PY, "-m", "claude_usaged", "run"],
        "EnvironmentVariables": {"CLAUDE_USAGED_PORT": "9000"},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "ProcessType": "Background",
        "Umask": 0o077,
        "StandardOutPath": "/Users/me/Library/Logs/claude-usaged.log",
        "StandardErrorPath": "/Users/me/Library/Logs/claude-usaged.err.log",
    }


def test_install_dry_run_prints_the_unit_and_commands_and_changes_nothing(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints the file it would write and the commands it would run, and does neither."""
    assert main(["service", "install", "--dry-run", "--platform", "systemd", "--port", "9000"]) == 0
    out = capsys.readouterr().out
    data = home / ".local/share/claude-usaged"
    unit = render_systemd(program_arguments(), {"CLAUDE_USAGED_PORT": "9000"}, data)
    assert out == (
        f"would write {home / UNIT}:\n{unit}"
        f"would create {data}\n"
        "$ systemctl --user daemon-reload\n"
        "$ systemctl --user enable --now claude-usaged.service\n"
    )
    assert files_under(home) == set()
    assert calls(home) == []


def test_systemd_install_writes_the_unit_enables_it_and_is_idempotent(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Install writes the unit and enables it; a second install finds it up to date."""
    assert main(["service", "install", "--platform", "systemd"]) == 0
    data = home / ".local/share/claude-usaged"
    assert (home / UNIT).read_text() == render_systemd(program_arguments(), {}, data)
    assert data.is_dir()
    assert main(["service", "install", "--platform", "systemd"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"wrote {home / UNIT}"
    assert out[3] == f"{home / UNIT} is up to date"
    assert (
        calls(home)
        == [
            "systemctl --user daemon-reload",
            "systemctl --user enable --now claude-usaged.service",
        ]
        * 2
    )


def test_systemd_reinstall_with_other_settings_restarts_the_service(home: Path) -> None:
    """Installing with a changed setting rewrites the unit and restarts a running service."""
    assert main(["service", "install", "--platform", "systemd"]) == 0
    assert main(["service", "install", "--platform", "systemd", "--port", "9100"]) == 0
    assert "Environment=CLAUDE_USAGED_PORT=9100\n" in (home / UNIT).read_text()
    assert calls(home)[-1] == "systemctl --user try-restart claude-usaged.service"


def test_systemd_uninstall_removes_exactly_what_install_wrote(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Uninstall stops the service and removes the unit; a second uninstall has nothing to do."""
    (home / "keep.txt").write_text("mine")
    assert main(["service", "install", "--platform", "systemd"]) == 0
    assert files_under(home) == {"keep.txt", UNIT}
    assert main(["service", "uninstall", "--platform", "systemd"]) == 0
    assert files_under(home) == {"keep.txt"}
    capsys.readouterr()
    assert main(["service", "uninstall", "--platform", "systemd"]) == 0
    assert capsys.readouterr().out == f"not installed ({home / UNIT} does not exist)\n"
    assert calls(home)[2:] == [
        "systemctl --user disable --now claude-usaged.service",
        "systemctl --user daemon-reload",
    ]


FAILING = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
echo "Failed to connect to bus: No medium found" >&2
exit 1
"""


def fail_always(home: Path, name: str) -> None:
    exe = home.parent / "bin" / name
    exe.write_text(FAILING)


def test_systemd_uninstall_without_a_user_bus_still_removes_the_unit(
    home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """When systemctl fails, the unit (which may hold a token) is removed anyway, a warning
    names the failed command, and the exit status is 0."""
    assert main(["service", "install", "--platform", "systemd"]) == 0
    fail_always(home, "systemctl")
    capfd.readouterr()
    assert main(["service", "uninstall", "--platform", "systemd"]) == 0
    assert files_under(home) == set()
    out, err = capfd.readouterr()
    assert out == (
        "$ systemctl --user disable --now claude-usaged.service\n"
        f"removed {home / UNIT}\n"
        "$ systemctl --user daemon-reload\n"
    )
    assert err == (
        "Failed to connect to bus: No medium found\n"
        "claude-usaged: warning: `systemctl --user disable --now claude-usaged.service` "
        "exited with status 1; removing the file anyway; stop the service by hand if it "
        "still runs\n"
        "Failed to connect to bus: No medium found\n"
        "claude-usaged: warning: `systemctl --user daemon-reload` exited with status 1; "
        "the file is removed\n"
    )


def test_launchd_uninstall_removes_the_plist_when_bootout_fails(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing `launchctl bootout` is a warning naming it; the plist is removed, exit 0."""
    assert main(["service", "install", "--platform", "launchd"]) == 0
    (home.parent / "bin" / "launchctl").write_text(
        FAKE.replace(
            '"launchctl bootout") rm -f "$FAKE_LOG.loaded" ;;', '"launchctl bootout") exit 5 ;;'
        )
    )
    capsys.readouterr()
    assert main(["service", "uninstall", "--platform", "launchd"]) == 0
    assert files_under(home) == set()
    target = f"gui/{os.getuid()}/{LAUNCHD_LABEL}"
    assert capsys.readouterr().err == (
        f"claude-usaged: warning: `launchctl bootout {target}` exited with status 5; "
        "removing the file anyway; stop the service by hand if it still runs\n"
    )


def test_uninstall_leaves_a_unit_it_did_not_write(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A unit of the same name without our marker is not touched, and the exit status is 1."""
    (home / UNIT).parent.mkdir(parents=True)
    (home / UNIT).write_text("[Service]\nExecStart=/bin/true\n")
    assert main(["service", "uninstall", "--platform", "systemd"]) == 1
    assert capsys.readouterr().err == (
        f"claude-usaged: {home / UNIT} was not written by claude-usaged; leaving it alone\n"
    )
    assert (home / UNIT).exists()
    assert calls(home) == []


def test_launchd_install_and_uninstall_against_a_temp_home(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The agent is bootstrapped once, kickstarted when already loaded, booted out on uninstall."""
    uid = os.getuid()
    assert main(["service", "install", "--platform", "launchd"]) == 0
    assert (home / PLIST).read_bytes() == render_launchd(program_arguments(), {}, home)
    assert main(["service", "install", "--platform", "launchd"]) == 0
    assert main(["service", "uninstall", "--platform", "launchd"]) == 0
    assert files_under(home) == set()
    target = f"gui/{uid}/{LAUNCHD_LABEL}"
    assert calls(home) == [
        f"launchctl print {target}",
        f"launchctl enable {target}",
        f"launchctl bootstrap gui/{uid} {home / PLIST}",
        f"launchctl print {target}",
        f"launchctl kickstart {target}",
        f"launchctl print {target}",
        f"launchctl bootout {target}",
    ]


def test_status_and_logs_ask_the_service_manager(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status says whether the unit is installed and asks systemctl; logs asks the journal."""
    assert main(["service", "status", "--platform", "systemd"]) == 0
    assert main(["service", "logs", "--platform", "systemd", "-n", "20", "-f"]) == 0
    assert main(["service", "logs", "--platform", "launchd"]) == 0
    logs = home / "Library" / "Logs"
    assert calls(home) == [
        "systemctl --user status --no-pager claude-usaged.service",
        "journalctl --user -u claude-usaged.service -n 20 --no-pager -f",
        f"tail -n 100 {logs}/claude-usaged.log {logs}/claude-usaged.err.log",
    ]
    assert capsys.readouterr().out.splitlines()[0] == f"{home / UNIT}: not installed"


def test_install_with_a_bad_setting_exits_3(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad setting names itself and its source, exits 3, and nothing is written."""
    assert main(["service", "install", "--platform", "systemd", "--port", "99999"]) == 3
    assert capsys.readouterr().err == (
        "claude-usaged: bad setting port (from flag --port): "
        "Input should be less than or equal to 65535\n"
    )
    assert files_under(home) == set()


def test_a_machine_without_systemd_or_launchd_gets_a_clear_message(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With neither service manager, install says so and exits 1."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["service", "install"]) == 1
    assert capsys.readouterr().err == (
        "claude-usaged: found neither systemd (systemctl) nor launchd on this machine; "
        "run `claude-usaged run` under the service manager you use\n"
    )


def test_a_token_is_written_private_and_masked_in_a_dry_run(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forwarding token reaches the unit (mode 0600) but a dry run never prints it."""
    monkeypatch.setenv("CLAUDE_USAGED_FORWARD_TOKEN", "s3cret-token")
    assert main(["service", "install", "--platform", "systemd", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-token" not in out
    assert "Environment=CLAUDE_USAGED_FORWARD_TOKEN=**********\n" in out
    assert main(["service", "install", "--platform", "systemd"]) == 0
    unit = home / UNIT
    assert "Environment=CLAUDE_USAGED_FORWARD_TOKEN=s3cret-token\n" in unit.read_text()
    assert unit.stat().st_mode & 0o777 == 0o600
