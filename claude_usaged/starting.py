"""The daemon's address while the head start's child catches up.

The API reads the database, which the child is still writing (headstart.py), so
until the child is done `run` listens with this stand-in: `GET /health` answers
200 with `"status": "starting"` and `caught_up: false` (what a service manager
or a script waits on), every other request 503 with a JSON error that says why.
So the address file, systemd's `READY=1` and a port already taken come as early
as without a head start.

The daemon binds the listening sockets itself and the stand-in serves copies of
them (`dup`): when it stops, the sockets stay open and the real API serves them,
so a connection made during the handover waits in the backlog instead of being
refused or reset. Every stand-in answer says `Connection: close`, so a client's
next request is a new connection, answered by the real API once it is there.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from claude_usaged import __version__

if TYPE_CHECKING:  # imported where used: headstart (before the fork) calls bind()
    from aiohttp import web

STARTING = (
    "the daemon is reading your transcripts for the first time since it started; "
    "ask again in a moment"
)

BACKLOG = 128


async def _answer(request: web.Request) -> web.Response:
    from aiohttp import web

    headers = {"Connection": "close"}
    if request.method == "GET" and request.path == "/health":
        body = {"status": "starting", "version": __version__, "caught_up": False}
        return web.json_response(body, headers=headers)
    return web.json_response(
        {"status": "starting", "error": STARTING, "caught_up": False}, status=503, headers=headers
    )


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for host:port, one per address, as asyncio binds them
    (SO_REUSEADDR, IPv6 sockets IPv6-only); port 0 takes one free port for all.
    Raises OSError (a port in use, an address not here)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def serve(sockets: list[socket.socket]) -> web.AppRunner:
    """Serve the stand-in on copies of `sockets` (cleaning it up leaves them open)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", _answer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    for sock in sockets:
        await web.SockSite(runner, sock.dup()).start()
    return runner
