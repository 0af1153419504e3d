"""Run the reference tool, ccusage 20.0.11, on a Claude config dir and parse its JSON.

Importable helper and script::

    python benchmarks/ccusage_ref.py CONFIG_DIR [daily|blocks] [--time]

The command form this build understands is::

    ccusage claude daily  --offline --json --timezone UTC
    ccusage claude blocks --offline --json --timezone UTC

(`ccusage daily` without `claude` also works but reads every supported agent's
data; `claude <kind>` restricts the run to Claude Code transcripts.) ccusage is
started with a fresh, empty ``HOME`` so that no other history and no user config
file can leak in, ``CLAUDE_CONFIG_DIR`` pointing at the corpus root (the folder
that holds ``projects/``) and ``LOG_LEVEL=0``.

The npm package's ``.bin/ccusage`` is a Node.js wrapper (``dist/cli.js``) that
spawns the native binary from ``@ccusage/ccusage-<platform>-<arch>/bin/ccusage``.
`find_ccusage` returns that native binary when it sits beside the wrapper (it is
what the wrapper would run; skipping Node saves ~40 ms per run), unless
``native=False`` is given. `ccusage_problem` says why the build found cannot
serve as the reference: none found, or ``ccusage --version`` is not 20.0.11.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRED_VERSION = "20.0.11"

Kind = Literal["daily", "blocks"]


def _native_for_wrapper(wrapper: Path) -> Path | None:
    """The native binary the npm wrapper at `wrapper` would spawn, if present."""
    try:
        real = wrapper.resolve()
    except OSError:
        return None
    # node_modules/ccusage/dist/cli.js -> node_modules/@ccusage/ccusage-<os>-<arch>/bin/ccusage
    if real.name != "cli.js":
        return None
    node_modules = real.parent.parent.parent
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    osname = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform)
    if arch is None or osname is None:
        return None
    exe = "ccusage.exe" if osname == "win32" else "ccusage"
    native = node_modules / "@ccusage" / f"ccusage-{osname}-{arch}" / "bin" / exe
    return native if native.is_file() and os.access(native, os.X_OK) else None


def find_ccusage(native: bool = True) -> list[str] | None:
    """Argv prefix that runs ccusage, or None when it cannot be found.

    Looks at ``$CCUSAGE_BIN`` (may hold several words, e.g. ``npx ccusage@20.0.11``),
    then ``node_modules/.bin/ccusage`` in the repo root, then ``ccusage`` on PATH.
    Its version is not checked here: see `ccusage_problem`.
    """
    env = os.environ.get("CCUSAGE_BIN")
    if env:
        return env.split()
    candidates = [REPO_ROOT / "node_modules" / ".bin" / "ccusage"]
    on_path = shutil.which("ccusage")
    if on_path:
        candidates.append(Path(on_path))
    for cand in candidates:
        if cand.exists() and os.access(cand, os.X_OK):
            if native:
                real = _native_for_wrapper(cand)
                if real is not None:
                    return [str(real)]
            return [str(cand)]
    return None


@functools.lru_cache(maxsize=8)
def ccusage_version(base: tuple[str, ...]) -> str:
    """What ``ccusage --version`` says (``ccusage 20.0.11`` -> ``20.0.11``); raises
    RuntimeError when it cannot be run or fails."""
    argv = [*base, "--version"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"`{' '.join(argv)}` could not run: {exc}") from None
    words = proc.stdout.split()
    if proc.returncode != 0 or not words:
        detail = (proc.stderr or proc.stdout).strip()[:300]
        raise RuntimeError(f"`{' '.join(argv)}` exited {proc.returncode}: {detail}")
    return words[-1].removeprefix("v")


def ccusage_problem(native: bool = True) -> str | None:
    """Why there is no usable reference build (none found, or not version 20.0.11);
    None when there is one."""
    base = find_ccusage(native)
    if base is None:
        return (
            f"ccusage not found: set CCUSAGE_BIN, or install ccusage@{REQUIRED_VERSION} "
            "in ./node_modules or on PATH"
        )
    try:
        version = ccusage_version(tuple(base))
    except RuntimeError as exc:
        return str(exc)
    if version != REQUIRED_VERSION:
        return (
            f"{' '.join(base)} is ccusage {version}, not the reference {REQUIRED_VERSION}: "
            f"set CCUSAGE_BIN to a ccusage {REQUIRED_VERSION} build"
        )
    return None


def ccusage_argv(kind: Kind, tz: str = "UTC", extra: list[str] | None = None) -> list[str]:
    """Full argv for one report (raises when ccusage is missing or not 20.0.11)."""
    problem = ccusage_problem()
    if problem is not None:
        raise RuntimeError(problem)
    base = find_ccusage()
    assert base is not None
    return [*base, "claude", kind, "--offline", "--json", "--timezone", tz, *(extra or [])]


def _env(config_dir: Path, home: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CLAUDE_CONFIG_DIR", "XDG_CONFIG_HOME", "CCUSAGE_CONFIG")
    }
    env.update(
        HOME=home,
        CLAUDE_CONFIG_DIR=str(Path(config_dir).resolve()),
        LOG_LEVEL="0",
        NO_COLOR="1",
        TZ="UTC",
    )
    return env


def _run(
    kind: Kind, config_dir: Path, tz: str, extra: list[str] | None
) -> tuple[subprocess.CompletedProcess[str], float]:
    argv = ccusage_argv(kind, tz, extra)
    with tempfile.TemporaryDirectory(prefix="ccusage-home-") as home:
        t0 = time.perf_counter()
        proc = subprocess.run(
            argv,
            env=_env(Path(config_dir), home),
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[:2000]}"
        )
    return proc, wall


def run_ccusage(
    kind: Kind, config_dir: Path, tz: str = "UTC", extra: list[str] | None = None
) -> dict[str, Any]:
    """Run ``ccusage claude <kind> --offline --json --timezone <tz>`` and parse stdout.

    An empty history makes ccusage print a non-JSON notice; that is returned as
    ``{"daily": []}`` or ``{"blocks": []}``.
    """
    proc, _ = _run(kind, config_dir, tz, extra)
    out = proc.stdout.strip()
    if not out.startswith("{"):
        return {kind: []}
    result: dict[str, Any] = json.loads(out)
    return result


def timed_run(kind: Kind, config_dir: Path, tz: str = "UTC", repeat: int = 1) -> list[float]:
    """Wall-clock seconds of each of `repeat` runs (the first run's output is checked)."""
    times: list[float] = []
    for i in range(max(1, repeat)):
        proc, wall = _run(kind, config_dir, tz, None)
        if i == 0 and proc.stdout.strip().startswith("{"):
            json.loads(proc.stdout)
        times.append(wall)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config_dir", type=Path)
    ap.add_argument("kind", nargs="?", default="daily", choices=["daily", "blocks"])
    ap.add_argument("--tz", default="UTC")
    ap.add_argument("--time", type=int, default=0, metavar="N", help="time N runs instead")
    args = ap.parse_args(argv)
    problem = ccusage_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    if args.time:
        times = timed_run(args.kind, args.config_dir, args.tz, repeat=args.time)
        print(json.dumps({"argv": ccusage_argv(args.kind, args.tz), "wall_s": times}))
        return 0
    print(json.dumps(run_ccusage(args.kind, args.config_dir, args.tz), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
