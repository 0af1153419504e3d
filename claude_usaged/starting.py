"""The daemon's address while the head start's child catches up.

The API reads the database, which the child is still writing (headstart.py), so
until the child is done `run` listens with this stand-in: `GET /health` answers
200 with `"status": "starting"` and `caught_up: false` (what a service manager
or a script waits on), every other request 503 with a JSON error that says why.
So the address file, systemd's `READY=1` and a port already taken come as early
as without a head start. The real API then takes over the same address.

Every answer says `Connection: close`: a client's next request opens a new
connection, which the real API answers once it has taken over.
"""

from __future__ import annotations

from aiohttp import web

from claude_usaged import __version__

STARTING = (
    "the daemon is reading your transcripts for the first time since it started; "
    "ask again in a moment"
)


async def _answer(request: web.Request) -> web.Response:
    headers = {"Connection": "close"}
    if request.method == "GET" and request.path == "/health":
        body = {"status": "starting", "version": __version__, "caught_up": False}
        return web.json_response(body, headers=headers)
    return web.json_response(
        {"status": "starting", "error": STARTING, "caught_up": False}, status=503, headers=headers
    )


async def listen(host: str, port: int) -> tuple[web.AppRunner, str, int]:
    """Serve the stand-in on host:port; returns its runner and the address bound.
    Raises OSError as binding the real API would (a port in use...)."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", _answer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, bound_host, bound_port
