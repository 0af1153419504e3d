"""systemd's notify protocol: one datagram of `KEY=value` lines to `$NOTIFY_SOCKET`.

Enough of `sd_notify(3)` for a `Type=notify` unit: `READY=1`, `STATUS=...`,
`STOPPING=1` and `WATCHDOG=1`, sent with a plain AF_UNIX datagram socket so
no dependency is needed. Outside systemd (no `$NOTIFY_SOCKET`) every call is a
cheap no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `fields` (e.g. "READY=1", "STATUS=caught up") as one message; True if sent.

    A failure to send is not an error for the daemon: systemd may have gone
    away, and a notification is advisory.
    """
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address or not fields:
        return False
    if address.startswith("@"):
        # an abstract socket: the leading "@" stands for a NUL byte
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode("utf-8"))
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between `WATCHDOG=1` pings: half of `$WATCHDOG_USEC`, or None when unset.

    `$WATCHDOG_PID`, when set, names the process the watchdog is meant for; a
    child that inherited the variables must not ping on the parent's behalf.
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000
