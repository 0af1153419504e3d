"""The daemon's logging set-up: JSON lines without rich, tracebacks still in them."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import sys
from claude_usaged.log import configure_logging
configure_logging({fmt!r}, "info", lean=True)
import structlog
try:
    1 / 0
except ZeroDivisionError:
    structlog.get_logger("t").exception("boom", n=1)
print(sys.modules.get("rich") is not None)  # None: import blocked
"""


def run(fmt: str) -> tuple[bool, str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(fmt=fmt)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip() == "True", done.stderr


def test_lean_json_logging_imports_no_rich_and_keeps_the_traceback() -> None:
    imported, stderr = run("json")
    assert imported is False
    (line,) = stderr.splitlines()
    event = json.loads(line)
    assert (event["event"], event["n"], event["level"]) == ("boom", 1, "error")
    assert "ZeroDivisionError: division by zero" in event["exception"]
    assert "Traceback (most recent call last)" in event["exception"]


def test_console_logging_keeps_rich_for_its_tracebacks() -> None:
    imported, stderr = run("console")
    assert imported is True
    assert "boom" in stderr and "ZeroDivisionError" in stderr
