"""terminate_pool: stopping a process pool never hangs, even when a worker dies while sending a result."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from engine.process_pools import new_process_pool, shutdown_pool, terminate_pool

ROOT = Path(__file__).resolve().parents[2]


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
    manager_thread = pool._executor_manager_thread
    # a 400 MB result (bytes(n)) takes the worker a while to write; the manager thread starts reading it
    pool.submit(bytes, 400_000_000)
    time.sleep(0.8)
    assert _terminate_in_thread(pool, timeout_s=15.0), "terminate_pool hung on a half-read result"
    # The manager thread must be gone too: left blocked on the half-written result, the interpreter's
    # exit hook joined it forever (make test printed its summary and never exited).
    assert manager_thread is not None and not manager_thread.is_alive()


def test_terminate_pool_when_idle_then_no_manager_thread_is_left() -> None:
    pool = new_process_pool(2)
    assert list(pool.map(abs, [-1, -2])) == [1, 2]
    manager_thread = pool._executor_manager_thread
    assert _terminate_in_thread(pool, timeout_s=15.0)
    assert not manager_thread.is_alive()


def test_shutdown_pool_lets_a_short_job_finish_and_stops_a_long_one() -> None:
    pool = new_process_pool(2)
    short = pool.submit(sum, [1, 2, 3])
    pool.submit(time.sleep, 60.0)
    assert short.result(timeout=60) == 6
    workers = list(pool._processes.values())
    t0 = time.monotonic()
    shutdown_pool(pool, timeout_s=1.0)
    assert time.monotonic() - t0 < 10.0
    assert not any(p.is_alive() for p in workers)


def test_a_new_process_pool_worker_exits_when_its_parent_is_gone() -> None:
    """The watchdog sees a parent pid that is not its parent (as after the parent's death) and exits."""
    pool = new_process_pool(1)
    try:  # the watchdog is armed with this process's pid: the worker's parent
        assert pool.submit(os.getppid).result(timeout=60) == os.getpid()
    finally:
        terminate_pool(pool)
    # the same watchdog, started for a parent that is already gone, ends its process at once
    code = subprocess.run([sys.executable, "-c", "import os, time\n"
                           "from engine.process_pools import start_parent_watchdog\n"
                           "start_parent_watchdog(os.getppid() + 999_999)\n"
                           "time.sleep(30)\nprint('still here')"],
                          capture_output=True, text=True, timeout=20)
    assert code.returncode == 70 and "still here" not in code.stdout


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


def test_the_two_file_reproduction_exits_by_itself() -> None:
    """The smallest reproduction of the exit hang (2026-12-05: 4 of 7 runs never exited) runs to the end."""
    if os.environ.get("OPTIONDESK_INNER_PYTEST"):
        return  # this test, run by itself below, must not recurse
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "tests/foundation/test_cli_and_engine.py", "tests/foundation/test_process_pools.py",
           "--deselect", "tests/foundation/test_cli_and_engine.py::"
           "test_select_underlying_when_sent_then_the_current_feed_streams_that_window"]
    try:
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                             env={**os.environ, "OPTIONDESK_INNER_PYTEST": "1"})
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"pytest did not exit within 240 s:\n{exc.stdout}") from None
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_terminating_a_pool_with_a_large_job_still_in_the_pipe_lets_the_interpreter_exit() -> None:
    """A job too large for the pipe stays half-written by the job queue's feeder thread while the only worker is
    busy; terminating the pool kills the reader, and the exit hook must not wait for that thread forever."""
    code = textwrap.dedent("""
        import os, signal, time
        from engine.process_pools import new_process_pool, terminate_pool

        pool = new_process_pool(1)
        busy = pool.submit(time.sleep, 30)
        time.sleep(0.5)  # the worker has taken the sleep
        big = [pool.submit(len, b"x" * 4_000_000) for _ in range(4)]  # 4 MB each: more than a pipe holds
        time.sleep(0.5)  # the feeder thread is now blocked writing into the busy worker's pipe
        for f in big[2:]:
            f.cancel()  # as an engine stop cancels the asyncio side of pending jobs
        os.kill(next(iter(pool._processes)), signal.SIGKILL)  # the worker dies with the job half-written
        time.sleep(1.0)  # CPython's broken-pool handler now fails on the cancelled futures (InvalidStateError)
        terminate_pool(pool, join_timeout_s=5.0)
        print("terminated", flush=True)
    """)
    started = time.monotonic()
    try:
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the interpreter did not exit within 60 s of terminating the pool: {exc.stdout!r}") \
            from None
    assert run.returncode == 0 and "terminated" in run.stdout, run.stderr[-2000:]
    assert time.monotonic() - started < 60


def test_pool_workers_price_on_one_thread_each_while_the_parent_keeps_its_setting() -> None:
    """The pool is the parallelism: its workers do not split pricing batches over threads as well."""
    from engine.pricing import _split

    _split.set_threads(3)
    pool = new_process_pool(max_workers=1)
    try:
        assert pool.submit(_split.threads).result(timeout=60) == 1
        assert _split.threads() == 3
    finally:
        shutdown_pool(pool)
        _split.set_threads(None)
