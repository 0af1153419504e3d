"""Wall time of `claude-usaged statusline`, and of `ccusage statusline` on the same history.

    python benchmarks/bench_statusline.py [--corpus DIR | --size-mb 500] [--runs 50]

Starts the daemon on the history (a generated one in a temp dir unless
`--corpus` names a CLAUDE_CONFIG_DIR-style folder), waits until it has caught
up, then runs the status-line command `--runs` times as Claude Code does: a new
process with the session JSON on stdin. Prints p50/p95/max wall time in ms.
When `benchmarks/ccusage_ref.find_ccusage()` finds ccusage, its `statusline`
gets the same JSON, with its output cache off (`--no-cache`: every run
computes, as ours does by asking the daemon) and on (its default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ccusage_ref import find_ccusage

SESSION_JSON = {
    "session_id": "00000000-0000-4000-8000-000000000000",
    "transcript_path": "/nonexistent/transcript.jsonl",
    "cwd": "/home/dev/api",
    "model": {"id": "claude-sonnet-4-5-20250929", "display_name": "Sonnet 4.5"},
    "workspace": {"current_dir": "/home/dev/api", "project_dir": "/home/dev/api"},
    "version": "2.0.37",
}


def our_command() -> list[str]:
    """The console script beside this interpreter (what users put in settings.json)."""
    script = Path(sys.executable).parent / "claude-usaged"
    if script.exists():
        return [str(script), "statusline"]
    return [sys.executable, "-m", "claude_usaged", "statusline"]


def timed(argv: list[str], env: dict[str, str], runs: int) -> tuple[list[float], str]:
    stdin = json.dumps(SESSION_JSON)
    times, out = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True)
        times.append((time.perf_counter() - t0) * 1000)
        out = proc.stdout.strip() or proc.stderr.strip()[:200]
    return times, out


def report(name: str, times: list[float], line: str) -> None:
    times = sorted(times)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(
        f"{name:<34} runs={len(times):3d}  p50={statistics.median(times):7.1f} ms  "
        f"p95={p95:7.1f} ms  max={times[-1]:7.1f} ms"
    )
    print(f"{'':<34} {line}")


def start_daemon(root: Path, work: Path) -> subprocess.Popen[bytes]:
    db = work / "usage.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGED_")}
    popen = subprocess.Popen(
        [
            *(sys.executable, "-m", "claude_usaged", "run", "--db", str(db), "--port", "0"),
            *("--claude-dir", str(root), "--log-level", "warning"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    addr = db.with_name(db.name + ".addr")
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise SystemExit("the daemon exited")
        if addr.exists():
            url = json.loads(addr.read_text())["url"]
            with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                if json.loads(resp.read())["caught_up"]:
                    return popen
        time.sleep(0.1)
    raise SystemExit("the daemon did not catch up in 30 minutes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, help="an existing CLAUDE_CONFIG_DIR-style folder")
    ap.add_argument("--size-mb", type=float, default=20, help="size of a generated history")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--ccusage-runs", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-statusline-") as tmp:
        work = Path(tmp)
        root = args.corpus
        if root is None:
            from corpus import generate

            root = work / "claude"
            generate(root, size_mb=args.size_mb, seed=1)
        size = sum(p.stat().st_size for p in root.rglob("*.jsonl")) / 1e6
        print(f"history: {root} ({size:.0f} MB)")
        daemon = start_daemon(root, work)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGED_")}
            env["CLAUDE_USAGED_DB"] = str(work / "usage.sqlite3")
            # as installed by pip: bytecode compiled once, not on every run
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            timed(our_command(), env, 1)
            times, line = timed(our_command(), env, args.runs)
            report("claude-usaged statusline", times, line)
        finally:
            daemon.terminate()
            daemon.wait()
        ccusage = find_ccusage()
        if ccusage is None:
            print("ccusage not found (set CCUSAGE_BIN): no comparison")
            return 0
        with tempfile.TemporaryDirectory(prefix="ccusage-home-") as home:
            env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_CONFIG_DIR",)}
            env.update(HOME=home, CLAUDE_CONFIG_DIR=str(root.resolve()), LOG_LEVEL="0")
            for name, extra in (("--no-cache", ["--no-cache"]), ("cached", [])):
                argv = [*ccusage, "statusline", "--offline", *extra]
                times, line = timed(argv, env, args.ccusage_runs)
                report(f"ccusage statusline ({name})", times, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
