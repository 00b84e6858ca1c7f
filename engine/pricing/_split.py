"""Run a compiled kernel over contiguous chunks of a batch on several threads.

Why: the compiled kernels release the GIL, so a large batch (a 100k-option implied-vol book, the exercise
boundaries of a 2,000-option American chain) can use every core the caller allows instead of one. Each chunk
is computed exactly as the whole batch would be (the kernels work option by option), so the results do not
depend on the thread count.

The batch is cut into up to four chunks per thread, which the threads take from a shared counter: a thread
slowed by a harder part of the batch takes fewer (with one half per thread the normal implied-vol book's halves
took 24 and 29 ms, and two threads gave 1.8× one; with shared chunks, 2.1×). The threads are started per call and joined before the call returns: nothing outlives it,
and no pool needs an owner. A thread start costs ~50 µs, against the milliseconds of work that a chunk must be worth
(``min_chunk``) before a batch is split at all.

How many threads: :func:`set_threads` (the workstation keeps one core for its window), else the
``OPTIONDESK_PRICING_THREADS`` environment variable (process-pool workers set 1: the pool is the parallelism
there), else every core this process may run on.
"""

from __future__ import annotations

import itertools
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


#: chunks per thread: the threads take chunks from a shared counter, so a thread slowed by a harder part of the
#: batch (or by the scheduler) takes fewer, instead of the others waiting for it at the join
CHUNKS_PER_THREAD = 4


def run_chunks(fn: Callable[[int, int], None], n: int, min_chunk: int,
               chunks_per_thread: int = CHUNKS_PER_THREAD) -> int:
    """Call ``fn(start, stop)`` over ``[0, n)`` in contiguous chunks of at least ``min_chunk`` items on up to
    :func:`threads` threads, the caller's among them; returns the number of threads used. Each thread takes
    the next chunk from a shared counter until none is left (``chunks_per_thread`` 1: one chunk each, for work
    whose cost per chunk is mostly fixed Python overhead). An exception in any chunk is raised after every
    thread has finished (the output arrays are never left half-written by a running thread). Inside a chunk (a
    solve split per option whose kernels would split again) it runs on the calling thread alone: the outer split
    already uses every thread allowed."""
    k = 1 if getattr(_inside, "active", False) else max(1, min(threads(), n // max(1, min_chunk)))
    if k == 1:
        fn(0, n)
        return 1
    chunks = max(k, min(k * max(1, chunks_per_thread), n // max(1, min_chunk)))
    bounds = [n * i // chunks for i in range(chunks + 1)]
    taken = itertools.count()  # next() on a count is atomic under the GIL
    errors: list[BaseException] = []

    def work() -> None:
        _inside.active = True
        try:
            while not errors:
                i = next(taken)
                if i >= chunks:
                    return
                fn(bounds[i], bounds[i + 1])
        except BaseException as exc:  # re-raised on the caller's thread below
            errors.append(exc)
        finally:
            _inside.active = False

    workers = [threading.Thread(target=work, name="optiondesk-pricing-chunk", daemon=True) for _ in range(k - 1)]
    for worker in workers:
        worker.start()
    try:
        work()
    finally:
        for worker in workers:
            worker.join()
    if errors:
        raise errors[0]
    return k
