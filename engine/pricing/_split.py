"""Run a compiled kernel over contiguous chunks of a batch on several threads.

Why: the compiled kernels release the GIL, so a large batch (a 100k-option implied-vol book, the exercise
boundaries of a 2,000-option American chain) can use every core the caller allows instead of one. Each chunk
is computed exactly as the whole batch would be (the kernels work option by option), so the results do not
depend on the thread count.

The threads are started per call and joined before the call returns: nothing outlives it, and no pool needs an
owner. A thread start costs ~50 µs, against the milliseconds of work that a chunk must be worth
(``min_chunk``) before a batch is split at all.

How many threads: :func:`set_threads` (the workstation keeps one core for its window), else the
``OPTIONDESK_PRICING_THREADS`` environment variable (process-pool workers set 1: the pool is the parallelism
there), else every core this process may run on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

THREADS_ENV = "OPTIONDESK_PRICING_THREADS"

_threads: int | None = None
_inside = threading.local()  # set while this thread runs a chunk: a split inside a chunk runs on it alone


def cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads() -> int:
    """Threads a large batch is split over: :func:`set_threads`, else the environment, else :func:`cores`.
    A malformed environment value is ignored (every core)."""
    if _threads is not None:
        return _threads
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value >= 1:
            return value
    return cores()


def set_threads(n: int | None) -> None:
    """Split batches over at most ``n`` threads in this process (None: back to the environment/cores)."""
    global _threads
    if n is not None and n < 1:
        raise ValueError(f"pricing threads must be at least 1, got {n!r}")
    _threads = n


def run_chunks(fn: Callable[[int, int], None], n: int, min_chunk: int) -> int:
    """Call ``fn(start, stop)`` over ``[0, n)`` in contiguous chunks of at least ``min_chunk`` items, one per
    thread, the caller's thread taking the first; returns the number of chunks. An exception in any chunk is
    raised after every chunk has finished (the output arrays are never left half-written by a running
    thread). Inside a chunk (a solve split per option whose kernels would split again) it runs on the calling
    thread alone: the outer split already uses every thread allowed."""
    k = 1 if getattr(_inside, "active", False) else max(1, min(threads(), n // max(1, min_chunk)))
    if k == 1:
        fn(0, n)
        return 1
    bounds = [n * i // k for i in range(k + 1)]
    errors: list[BaseException] = []

    def as_chunk(start: int, stop: int) -> None:
        _inside.active = True
        try:
            fn(start, stop)
        finally:
            _inside.active = False

    def run(start: int, stop: int) -> None:
        try:
            as_chunk(start, stop)
        except BaseException as exc:  # re-raised on the caller's thread below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(bounds[i], bounds[i + 1]), name="optiondesk-pricing-chunk",
                                daemon=True) for i in range(1, k)]
    for worker in workers:
        worker.start()
    try:
        as_chunk(bounds[0], bounds[1])
    finally:
        for worker in workers:
            worker.join()
    if errors:
        raise errors[0]
    return k
