"""Read many transcripts at once: in threads, or in worker processes.

A cold catch-up reads hundreds of MB. With the C scanner (fastpath.py) the
parsing runs without the GIL, so above a threshold the files are spread over
a thread pool (one thread per core): no process start-up, no pickling, one
interner. Without it parsing is CPU-bound Python, and the files go to a spawn
process pool instead. Either way each task returns `TailResult`s and the
single writer still applies them. Small reads (the normal case: a few
appended lines) stay in one thread.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from claude_usaged import fastpath
from claude_usaged.parser import new_interner
from claude_usaged.tailer import Cursor, TailResult, read_fresh, read_new

PARALLEL_BYTES = 48 << 20
"""Below this many unread bytes a process pool costs more to start than it saves."""

THREAD_PARALLEL_BYTES = 8 << 20
"""The same for threads, which start in microseconds (below: one reader thread)."""

IN_FLIGHT_PER_WORKER = 8
"""Groups submitted ahead per worker; the others wait (and a stop drops them). A new
group goes out only when the writer takes a finished one, so while it writes a batch
the readers live on these: with 2 they ran dry (a cold catch-up took 3-5% longer).
A group's records take a few hundred kB."""

ReadOutcome = TailResult | OSError


def read_or_error(path: str, cursor: Cursor | None) -> tuple[str, ReadOutcome]:
    """`read_new`, with an OSError returned instead of raised (it crosses processes)."""
    try:
        return path, read_new(path, cursor, _worker_intern)
    except OSError as exc:
        return path, exc


_worker_intern = new_interner()


def unread_bytes(sizes: dict[str, int], cursors: dict[str, Cursor]) -> int:
    total = 0
    for path, size in sizes.items():
        cursor = cursors.get(path)
        total += size - cursor.offset if cursor and size >= cursor.offset else size
    return total


def worker_count() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


async def read_all(
    paths: Sequence[str], cursors: dict[str, Cursor]
) -> AsyncIterator[tuple[str, ReadOutcome]]:
    """Yield (path, outcome) for every path; order is not kept in parallel mode."""
    workers = worker_count()
    threads = fastpath.enabled()
    threshold = THREAD_PARALLEL_BYTES if threads else PARALLEL_BYTES
    # how much there is to read (a file that vanished: 0) says whether a pool pays
    sizes = {path: _size(path) for path in paths} if workers > 1 and len(paths) > 1 else {}
    if not sizes or unread_bytes(sizes, cursors) < threshold:
        for path in paths:
            yield await asyncio.to_thread(read_or_error, path, cursors.get(path))
        return
    pool = _pool(workers, threads)
    # threads need no big tasks to amortise pickling: smaller groups, less held at once
    todo = iter(_groups(sizes, workers, 32 if threads else 8))
    running: set[asyncio.Future[list[tuple[str, ReadOutcome]]]] = set()

    def submit() -> None:
        group = next(todo, None)
        if group is not None:
            items = [(p, cursors.get(p)) for p in group]
            running.add(asyncio.wrap_future(pool.submit(read_group, items)))

    try:
        # a few groups per worker in flight: readers faster than the writer
        # must not pile up the records of every file read (memory stays bounded)
        for _ in range(IN_FLIGHT_PER_WORKER * workers):
            submit()
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                running.discard(future)
                submit()
                for item in future.result():
                    yield item
    finally:
        # on a stop mid-way, drop the groups not started instead of reading them all
        pool.shutdown(wait=False, cancel_futures=True)


def _pool(workers: int, threads: bool) -> Executor:
    if threads:  # the C scanner releases the GIL while it parses
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reader")
    # spawn: the daemon has threads (watchdog, sqlite), which fork does not copy safely
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def read_group(items: list[tuple[str, Cursor | None]]) -> list[tuple[str, ReadOutcome]]:
    """One pool task: several files, so each round trip carries enough work. Files
    without a cursor are read whole at once where they can be (`read_fresh`)."""
    fresh = [path for path, cursor in items if cursor is None]
    done = dict(zip(fresh, read_fresh(fresh, _worker_intern), strict=True))
    results: list[tuple[str, ReadOutcome]] = []
    for path, cursor in items:
        outcome = done.get(path)
        results.append((path, outcome) if outcome is not None else read_or_error(path, cursor))
    return results


def _groups(sizes: dict[str, int], workers: int, per_worker: int) -> list[list[str]]:
    """Files in groups of similar bytes, the biggest file's group first (a huge file must
    not finish last), then `_interleaved`."""
    sized = sorted(((size, p) for p, size in sizes.items()), reverse=True)
    target = max(4 << 20, sum(size for size, _ in sized) // (workers * per_worker))
    groups: list[list[str]] = []
    current: list[str] = []
    held = 0
    for size, path in sized:
        current.append(path)
        held += size
        if held >= target:
            groups.append(current)
            current, held = [], 0
    if current:
        groups.append(current)
    return _interleaved(groups)


def _interleaved(groups: list[list[str]]) -> list[list[str]]:
    """Groups of big files and of many small ones, taken in turns: first, last, second,
    second to last... A small file costs a reader more GIL-bound work (syscalls, Python)
    for its bytes than a big one, so the two readers do not both end on that work at
    once. Small as the effect is since small files are read in C (`read_fresh`), it is
    there: a 500 MB catch-up took 0.400 s against 0.413 s (medians of 12)."""
    order: list[list[str]] = []
    low, high = 0, len(groups) - 1
    while low <= high:
        order.append(groups[low])
        if low != high:
            order.append(groups[high])
        low, high = low + 1, high - 1
    return order


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
