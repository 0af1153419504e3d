"""`--offline`: answer a client command from the transcripts, without a daemon.

One catch-up of the transcript roots into a temporary database, with the
daemon's own parts (Store, Ingest, ReadModel), then the daemon's own API
(`make_app`) answers the one request on a loopback port that lives as long as
the request: what is printed is what a running daemon on the same files
prints, a refused parameter included, by construction. The temporary
database is removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from aiohttp import web

from claude_usaged.api import ApiContext, make_app
from claude_usaged.client import fetch_text
from claude_usaged.daemon import StartupError
from claude_usaged.ingest import PROGRESS_EVERY, Ingest, catch_up
from claude_usaged.pricing import PriceFileError, PriceTable
from claude_usaged.scan import transcript_paths
from claude_usaged.settings import Settings
from claude_usaged.stats import ReadModel
from claude_usaged.store import Store, StoreError


def _total_bytes(roots: Sequence[Path]) -> int:
    total = 0
    for path in transcript_paths(roots):
        with contextlib.suppress(OSError):
            total += os.path.getsize(path)
    return total


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f}"


@dataclass
class Progress:
    """Lines on stderr while a catch-up takes longer than `every` seconds, and one when
    it is done; nothing at all for a quick one."""

    ingest: Ingest
    total_bytes: int
    out: TextIO
    every: float = PROGRESS_EVERY
    lines: int = 0

    def say(self, text: str) -> None:
        print(f"claude-usaged: {text}", file=self.out, flush=True)
        self.lines += 1

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.say(
                f"reading transcripts: {_megabytes(self.ingest.state.bytes_read)} "
                f"of {_megabytes(self.total_bytes)} MB"
            )

    def done(self) -> None:
        if self.lines:
            state = self.ingest.state
            self.say(f"caught up: {state.files} files, {_megabytes(state.bytes_read)} MB")


async def _ask_api(ctx: ApiContext, path: str) -> str:
    """GET path from the daemon's API app, served on a loopback port for this one request."""
    runner = web.AppRunner(make_app(ctx), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return await asyncio.to_thread(fetch_text, f"http://{host}:{port}", path)
    finally:
        await runner.cleanup()


async def answer(
    settings: Settings, path: str, progress: TextIO, every: float = PROGRESS_EVERY
) -> str:
    """Catch up on every transcript into a temporary database; the API's body for path.

    Raises StartupError (bad price file, unusable temporary directory) and the
    client's ApiError (a parameter the API refuses).
    """
    try:
        prices = PriceTable.load(settings.prices)
    except PriceFileError as exc:
        raise StartupError(f"bad price file: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="claude-usaged-offline-") as tmp:
        db = Path(tmp) / "usage.sqlite3"
        try:
            store = await Store.open(db, prices)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        try:
            ingest = Ingest(store, settings.claude_dirs)
            total = await asyncio.to_thread(_total_bytes, settings.claude_dirs)
            report = Progress(ingest, total, progress, every)
            reporter = asyncio.create_task(report.run(), name="progress")
            try:
                await catch_up(ingest)
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            report.done()
            read = await ReadModel.open(db, settings.zone, lambda: store.generation)
            try:
                ctx = ApiContext(
                    read=read,
                    ingest=ingest,
                    watcher=None,
                    db_path=str(db),
                    started_at=time.time(),
                )
                return await _ask_api(ctx, path)
            finally:
                await read.close()
        finally:
            await store.close()
