"""terminate_pool: stopping a process pool never hangs, even when a worker dies while sending a result."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from engine.process_pools import terminate_pool


# jobs are builtins: the spawned workers cannot import this test module (--import-mode=importlib)
def _terminate_in_thread(pool: ProcessPoolExecutor, timeout_s: float) -> bool:
    done = threading.Event()

    def run() -> None:
        terminate_pool(pool, join_timeout_s=2.0)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(timeout_s)


def test_terminating_a_worker_mid_result_does_not_hang_the_pool() -> None:
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    assert pool.submit(abs, -1).result(timeout=60) == 1  # worker up
    # a 400 MB result (bytes(n)) takes the worker a while to write; the manager thread starts reading it
    pool.submit(bytes, 400_000_000)
    time.sleep(0.8)
    assert _terminate_in_thread(pool, timeout_s=15.0), "terminate_pool hung on a half-read result"


def test_terminate_pool_stops_a_running_job_promptly() -> None:
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(time.sleep, 60.0)
    time.sleep(1.0)
    workers = list(pool._processes.values())
    assert workers and all(p.is_alive() for p in workers)
    t0 = time.monotonic()
    assert _terminate_in_thread(pool, timeout_s=15.0)
    assert time.monotonic() - t0 < 10.0  # not the 60 s the job would take
    assert not any(p.is_alive() for p in workers)
