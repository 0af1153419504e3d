"""Benchmark of the daemon against ccusage on the same history.

    python benchmarks/bench_daemon.py [--size-mb 500] [--corpus DIR] [--runs 5]

Prints: cold catch-up time and MB/s, the ratio against
`ccusage claude daily --offline --json` on the same files (warm page cache;
the medians and the fastest of --runs runs each, after an untimed one, taken
in turns so that both meet the machine in the same state: here a ccusage run
takes either ~0.67 s or ~0.95 s, back to back too, and the machine's speed
drifts by 10% from one minute to the next; dirty pages are written out before
each run),
peak RSS, restart time, `/stats` latency p50/p99, and append-to-visible
latency p50/p95. Targets (issue 2): ratio < 1, RSS < 100 MB, `/stats` p50 <
2 ms, append-to-visible p95 < 300 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ccusage_ref import find_ccusage, timed_run  # noqa: E402
from corpus import generate  # noqa: E402


def _corpus(args: argparse.Namespace) -> Path:
    if args.corpus:
        return Path(args.corpus)
    kind = "all" if args.all_models else "known"
    target = HERE / f"corpus-{args.size_mb:g}mb-seed{args.seed}-{kind}"
    if not (target / "projects").is_dir():
        print(f"generating a {args.size_mb:g} MB corpus in {target} ...", file=sys.stderr)
        # ccusage spends ~1 ms per line on models it cannot price offline (the 2026
        # ones): by default only models it knows, so the ratio compares reading speed
        generate(
            target,
            args.size_mb,
            args.seed,
            progress_lines=False,
            known_models_only=not args.all_models,
            show_progress=True,
        )
    return target


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "projects").rglob("*.jsonl"))


def _warm(root: Path) -> None:
    for p in (root / "projects").rglob("*.jsonl"):
        with p.open("rb") as f:
            while f.read(1 << 24):
                pass


class Daemon:
    """`python -m claude_usaged run` as a subprocess, talked to over HTTP."""

    def __init__(self, root: Path, db: Path) -> None:
        self.root, self.db = root, db
        self.addr = db.with_name(db.name + ".addr")
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: http.client.HTTPConnection | None = None

    def start(self) -> float:
        """Start; return seconds until the daemon is caught up.

        The moment is its `ingest.caught_up` log event (read from its stderr), not a
        poll of `/health`: while the head start's child catches up the daemon answers
        on its address, and polling it every few ms would take CPU from the catch-up
        it measures. `/health` must then say `caught_up` at once.
        """
        self.addr.unlink(missing_ok=True)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "claude_usaged", "run", "--claude-dir", str(self.root)),
                *("--db", str(self.db), "--port", "0", "--tz", "UTC"),
                *("--log-level", "info", "--log-format", "json"),
            ],
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            event = json.loads(line)
            # the daemon's own, not the head start child's (which logs process=head_start)
            if event["event"] == "ingest.caught_up" and "process" not in event:
                break
        else:
            raise SystemExit("the daemon exited during its start")
        elapsed = time.perf_counter() - t0
        # keep draining its log, so a full pipe never blocks the daemon
        threading.Thread(target=self._drain, daemon=True).start()
        info = json.loads(self.addr.read_text())
        self.conn = http.client.HTTPConnection(info["host"], info["port"], timeout=30)
        if not self.get("/health")["caught_up"]:
            raise SystemExit("logged ingest.caught_up but /health does not say caught_up")
        return elapsed

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for _line in self.proc.stderr:
            pass

    def get(self, path: str) -> dict:  # type: ignore[type-arg]
        assert self.conn is not None
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        return json.loads(resp.read())  # type: ignore[no-any-return]

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def run_once(self) -> None:
        """Start, catch up and stop (a warm-up)."""
        self.start()
        self.stop()

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


def _settle_disk() -> None:
    """Write what the last run left dirty (a daemon's database) now, not during the
    next run: the kernel's writeback would take CPU from it."""
    os.sync()
    time.sleep(0.2)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _append_latency(daemon: Daemon, root: Path, n: int) -> list[float]:
    path = root / "projects" / "-bench-append" / "append.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lat = []
    for i in range(n):
        before = daemon.get("/stats")["total_tokens"]
        line = {
            "type": "assistant",
            "sessionId": "bench-append",
            "cwd": "/bench",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "requestId": f"req_bench_{time.time_ns()}_{i}",
            "message": {
                "id": f"msg_bench_{time.time_ns()}_{i}",
                "model": "claude-sonnet-4-5",
                "usage": {"input_tokens": 7, "output_tokens": 3},
            },
        }
        t0 = time.perf_counter()
        with path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        while daemon.get("/stats")["total_tokens"] < before + 10:
            if time.perf_counter() - t0 > 5:
                raise SystemExit("an appended line did not become visible within 5 s")
        lat.append(time.perf_counter() - t0)
        time.sleep(0.02)
    return lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", help="an existing CLAUDE_CONFIG_DIR-style folder")
    ap.add_argument(
        "--all-models",
        action="store_true",
        help="include models ccusage cannot price offline (it slows ccusage ~30x)",
    )
    ap.add_argument("--runs", type=int, default=5, help="cold catch-ups and ccusage runs")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--appends", type=int, default=60)
    args = ap.parse_args()

    root = _corpus(args)
    size = _size(root)
    files = sum(1 for _ in (root / "projects").rglob("*.jsonl"))
    _warm(root)
    print(f"corpus: {root} — {files} files, {size / 1e6:.0f} MB")

    cc = find_ccusage()
    if cc is None:
        print("ccusage: not found (set CCUSAGE_BIN) — no ratio")
    cc_runs: list[float] = []
    colds: list[float] = []

    with tempfile.TemporaryDirectory() as tmp:
        work = root
        shutil.rmtree(work / "projects" / "-bench-append", ignore_errors=True)
        # one untimed run of each first: the programs' own files into the page cache
        if cc is not None:
            timed_run("daily", root)
        Daemon(work, Path(tmp) / "warm-up.sqlite3").run_once()
        for run in range(max(1, args.runs)):  # ccusage, a cold start; again...
            if cc is not None:
                _settle_disk()
                cc_runs += timed_run("daily", root)
            _settle_disk()
            db = Path(tmp) / f"usage-{run}.sqlite3"
            daemon = Daemon(work, db)
            colds.append(daemon.start())
            if run < args.runs - 1:
                daemon.stop()  # the last one serves the figures below
        cc_s = statistics.median(cc_runs) if cc_runs else None
        if cc_s:
            each = ", ".join(f"{t:.3f}" for t in cc_runs)
            print(
                f"ccusage daily --offline --json: {cc_s:.3f} s (median of {len(cc_runs)}: "
                f"{each}) = {size / 1e6 / cc_s:.0f} MB/s"
            )
        cold = statistics.median(colds)
        rss = daemon.peak_rss_mb()
        stats = daemon.get("/stats")
        print(
            f"cold catch-up: {cold:.3f} s (median of {len(colds)}: "
            f"{', '.join(f'{t:.3f}' for t in colds)}) = {size / 1e6 / cold:.0f} MB/s "
            f"({stats['ingest']['responses']} responses, {stats['total_tokens']} tokens)"
        )
        if cc_s:
            print(
                f"ratio daemon/ccusage (cold catch-up): {cold / cc_s:.2f} (medians), "
                f"{min(colds) / min(cc_runs):.2f} (fastest runs)"
            )
        head = daemon.get("/health").get("head_start")
        if head:
            # the catch-up ran in the forked child (headstart.py): its peak counts too
            print(
                f"head start child: exit {head['exit_status']}, {head['seconds']:.3f} s, "
                f"peak RSS {head['peak_rss_mb']:.0f} MB (the daemon: {rss:.0f} MB)"
            )
            rss = max(rss, head["peak_rss_mb"])
        print(f"peak RSS after catch-up (largest process): {rss:.0f} MB")

        lat = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            daemon.get("/stats")
            lat.append((time.perf_counter() - t0) * 1000)
        print(
            f"/stats latency over {args.requests} requests: p50 {_pct(lat, 0.5):.2f} ms, "
            f"p99 {_pct(lat, 0.99):.2f} ms"
        )
        if cc_s:
            print(
                f"ratio asked again (/stats p50 vs ccusage run): {_pct(lat, 0.5) / 1000 / cc_s:.5f}"
            )

        app = _append_latency(daemon, work, args.appends)
        print(
            f"append-to-visible over {args.appends} appends: "
            f"p50 {_pct(app, 0.5) * 1000:.0f} ms, p95 {_pct(app, 0.95) * 1000:.0f} ms"
        )
        print(f"peak RSS at the end: {daemon.peak_rss_mb():.0f} MB")
        daemon.stop()

        again = Daemon(work, db)
        warm = again.start()
        print(f"restart on the same database (nothing new): {warm:.3f} s")
        again.stop()
        shutil.rmtree(work / "projects" / "-bench-append", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
