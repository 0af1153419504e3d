"""Benchmark of forwarding: a backlog of 100k responses drained to a local receiver.

    python benchmarks/bench_forward.py [--responses 100000] [--live 20000]

Prints:
- cold catch-up of the history with forwarding off and on (the outbox's cost);
- the drain: responses/s and batches/s from the outbox to a receiver in
  another process on loopback (it parses every body and upserts by key);
- the same drain into a real team server (`claude-usaged run
  --accept-forwarded` in another process: validation, two SQLite stores with
  their aggregates, receipts), and that its totals equal the sender's;
- ingest while draining: new responses applied per second (read, parse,
  store, aggregates, outbox) with and without the drain running beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from claude_usaged.forwarder import Forwarder
from claude_usaged.ingest import Ingest
from claude_usaged.pricing import PriceTable
from claude_usaged.store import Store
from claude_usaged.tailer import read_new

PER_FILE = 1000


def write_history(
    root: Path, responses: int, prefix: str, per_file: int = PER_FILE, after: int = 0
) -> list[Path]:
    """`responses` assistant lines (plus a user line each) in files of `per_file`,
    37 s apart, the first `after` steps after the history's start."""
    base = datetime(2025, 6, 1, tzinfo=UTC) + timedelta(seconds=37 * after)
    paths = []
    for f in range(0, responses, per_file):
        project = f"-home-dev-proj{f // per_file % 17}"
        path = root / "projects" / project / f"{prefix}{f}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for i in range(f, min(f + per_file, responses)):
                ts = (base + timedelta(seconds=37 * i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                session = f"{prefix}{f}"
                out.write(
                    json.dumps(
                        {
                            "type": "user",
                            "sessionId": session,
                            "cwd": f"/home/dev/proj{f // per_file % 17}",
                            "message": {"role": "user", "content": "please fix the tests"},
                            "timestamp": ts,
                        }
                    )
                    + "\n"
                )
                out.write(
                    json.dumps(
                        {
                            "type": "assistant",
                            "isSidechain": False,
                            "sessionId": session,
                            "cwd": f"/home/dev/proj{f // per_file % 17}",
                            "requestId": f"req_{prefix}{i}",
                            "timestamp": ts,
                            "message": {
                                "id": f"msg_{prefix}{i}",
                                "model": "claude-sonnet-4-5-20250929",
                                "role": "assistant",
                                "content": [{"type": "text", "text": "done " * 20}],
                                "usage": {
                                    "input_tokens": 3 + i % 50,
                                    "output_tokens": 100 + i % 900,
                                    "cache_creation_input_tokens": i % 2000,
                                    "cache_read_input_tokens": 10_000 + i % 40_000,
                                },
                            },
                        }
                    )
                    + "\n"
                )
        paths.append(path)
    return paths


# -- the receiver, in its own process --------------------------------------------------


def serve_receiver() -> None:
    """Accept every batch: parse it, upsert snapshots by key, answer 200."""
    seen: dict[str, int] = {}

    async def ingest(request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        for snap in data["snapshots"]:
            seen[snap["key"]] = snap["output_tokens"]
        return web.json_response({"received": len(data["snapshots"]), "total": len(seen)})

    async def main() -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/ingest", ingest)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_receiver() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/ingest"


def start_team_server(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`claude-usaged run --accept-forwarded` on an empty root; its /v1/ingest URL."""
    db = work / "team" / "usage.sqlite3"
    (work / "team-root").mkdir(parents=True)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "claude_usaged", "run", "--accept-forwarded", "--port", "0"),
            *("--db", str(db), "--claude-dir", str(work / "team-root"), "--log-level", "warning"),
        ],
        stdin=subprocess.DEVNULL,
    )
    addr = db.with_name(db.name + ".addr")
    deadline = time.monotonic() + 20
    while not addr.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the team server did not start")
        time.sleep(0.05)
    return proc, json.loads(addr.read_text())["url"] + "/v1/ingest"


def _get_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


# -- phases ------------------------------------------------------------------------------


async def catch_up(root: Path, db: Path, forward_to: str | None) -> float:
    store = await Store.open(db, PriceTable.load(None), forward_to=forward_to)
    try:
        ingest = Ingest(store, [root])
        await ingest.start()
        started = time.perf_counter()
        task = asyncio.create_task(ingest.run())
        await ingest.request_rescan()
        seconds = time.perf_counter() - started
        task.cancel()
        return seconds
    finally:
        await store.close()


def sender_total(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        (total,) = conn.execute(
            "SELECT sum(input + output + cache_creation + cache_read) FROM responses "
            "WHERE counted = 1"
        ).fetchone()
    return int(total)


async def drain(db: Path, url: str) -> tuple[float, int, int]:
    store = await Store.open(db, PriceTable.load(None), forward_to=url)
    try:
        pending = store.outbox_pending
        started = time.perf_counter()
        result = await Forwarder(store, url).drain()
        seconds = time.perf_counter() - started
        assert result.error is None and result.pending == 0, result
        return seconds, pending, result.delivered.batches
    finally:
        await store.close()


async def live_ingest(db: Path, url: str, files: list[Path], draining: bool) -> dict[str, Any]:
    """Apply new files one at a time (as appends arrive), optionally beside a drain."""
    store = await Store.open(db, PriceTable.load(None), forward_to=url)
    forwarder = Forwarder(store, url)
    task = asyncio.create_task(forwarder.run()) if draining else None
    backlog = store.outbox_pending
    try:
        responses = 0
        started = time.perf_counter()
        for path in files:
            result = read_new(str(path), None)
            responses += len((await store.apply([result])).changed)
            forwarder.wake()
            await asyncio.sleep(0)
        seconds = time.perf_counter() - started
        drained = backlog + responses - store.outbox_pending
        return {"responses": responses, "seconds": seconds, "drained_meanwhile": drained}
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-forward-"))
    try:
        root = work / "claude"
        write_history(root, args.responses, "h")
        live_root = work / "live"
        # live appends come after the history, as they do in use
        live = write_history(
            live_root, args.live, "n", per_file=args.live_file, after=args.responses
        )
        proc, url = start_receiver()
        try:
            off = await catch_up(root, work / "off.sqlite3", None)
            on = await catch_up(root, work / "on.sqlite3", url)
            print(
                f"cold catch-up of {args.responses} responses: forwarding off {off:.2f} s, "
                f"on (outbox written) {on:.2f} s"
            )
            shutil.copy(work / "on.sqlite3", work / "live-base.sqlite3")
            shutil.copy(work / "on.sqlite3", work / "live-drain.sqlite3")
            shutil.copy(work / "on.sqlite3", work / "to-team.sqlite3")
            seconds, sent, batches = await drain(work / "on.sqlite3", url)
            print(
                f"drain: {sent} responses in {batches} batches, {seconds:.2f} s: "
                f"{sent / seconds:,.0f} responses/s, {batches / seconds:.1f} batches/s"
            )
            team, team_url = start_team_server(work)
            try:
                seconds, sent, batches = await drain(work / "to-team.sqlite3", team_url)
                base = team_url.removesuffix("/v1/ingest")
                stored = _get_json(base + "/stats")
                machines = _get_json(base + "/machines")["machines"]
            finally:
                team.terminate()
                team.wait()
            expected = sender_total(work / "to-team.sqlite3")
            print(
                f"drain into a team server: {sent} responses in {batches} batches, "
                f"{seconds:.2f} s: {sent / seconds:,.0f} responses/s; its total "
                f"{stored['total_tokens']:,} tokens "
                f"({'equal to' if stored['total_tokens'] == expected else 'NOT equal to'} "
                f"the sender's), {machines[0]['responses']:,} responses"
            )
            base = await live_ingest(work / "live-base.sqlite3", url, live, draining=False)
            busy = await live_ingest(work / "live-drain.sqlite3", url, live, draining=True)
            for name, r in (("alone", base), ("while draining", busy)):
                print(
                    f"live ingest {name}: {r['responses']} responses in {len(live)} appends, "
                    f"{r['seconds']:.2f} s: {r['responses'] / r['seconds']:,.0f} responses/s "
                    f"(outbox drained meanwhile: {r['drained_meanwhile']})"
                )
        finally:
            proc.kill()
            proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    from claude_usaged.log import configure_logging

    configure_logging("json", "warning")  # log lines would be timed too
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--responses", type=int, default=100_000, help="backlog size")
    ap.add_argument("--live", type=int, default=20_000, help="responses ingested live")
    ap.add_argument("--live-file", type=int, default=200, help="responses per live append")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_receiver()
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
