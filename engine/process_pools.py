"""Worker processes that never outlive their owner, and pools that stop promptly without hanging.

Every process pool and multiprocessing manager in the product is made here, so two guarantees hold
for all of them:

* **Workers die with their parent.** Each worker (and each manager's server process) runs a
  watchdog thread that exits the process within ~0.5 s of its parent's death, however the parent
  died (SIGKILL included). A parent-death signal (Linux ``PR_SET_PDEATHSIG``) is *not* used: it fires
  when the *thread* that spawned the child ends, and a pool spawns its workers from whichever thread
  submits first (``asyncio.to_thread``'s pool threads, for one), so it would kill healthy workers.
  The watchdog also works on every platform.
* **Stopping never hangs.** :func:`terminate_pool` kills the workers, then makes sure the pool's
  manager thread ends too — nothing is left for ``concurrent.futures``' interpreter-exit hook to join.
  That hook joining a manager thread that could never finish was the cause of ``make test`` printing
  its summary and then never exiting (see :func:`terminate_pool`).

Pool jobs are pure computation (fits, pricing, backtests), so on shutdown their results are not
wanted: cancel what is queued and terminate what is running instead of waiting.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing.managers import SyncManager
from typing import Any

log = logging.getLogger(__name__)

#: niceness of background compute workers (surface fits, chain analytics)
BACKGROUND_NICE = 10
#: how often a worker's watchdog looks for its parent
WATCHDOG_INTERVAL_S = 0.5


def _exit_when_orphaned(parent_pid: int, interval_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(interval_s):
        if os.getppid() != parent_pid:
            # The parent is gone: whatever this worker computes has no reader. os._exit skips
            # atexit and finalizers on purpose — they may wait on pipes to the dead parent.
            os._exit(70)


def start_parent_watchdog(parent_pid: int, interval_s: float = WATCHDOG_INTERVAL_S) -> None:
    """In a child process: exit as soon as ``parent_pid`` is no longer this process's parent."""
    if os.getppid() != parent_pid:  # the parent died while this child was starting
        os._exit(70)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid, interval_s),
                     name="optiondesk-parent-watchdog", daemon=True).start()


def lower_worker_priority() -> None:
    """Run the worker at a lower CPU priority than the workstation. On a 2-core desktop a refit or
    an American-IV batch otherwise takes the core the GUI loop needs at that moment; niced, the loop
    wins and the worker finishes in the idle time. No-op where unsupported."""
    try:
        os.nice(BACKGROUND_NICE)
    except (AttributeError, OSError) as exc:  # Windows, or a sandbox that forbids it
        log.debug("could not lower the worker's priority: %s", exc)


def _init_worker(parent_pid: int, background: bool) -> None:
    start_parent_watchdog(parent_pid)
    # the pool is the parallelism here: a worker that split its pricing batches over threads as well would
    # put two threads on each core the other workers use
    from engine.pricing import _split

    _split.set_threads(1)
    if background:
        lower_worker_priority()


def new_process_pool(max_workers: int | None = None, *, background: bool = False) -> ProcessPoolExecutor:
    """A spawn-context pool whose workers die with this process; ``background`` nices them.

    Spawn, not fork: the parent runs threads (the loop's executors, Qt) and forking a threaded
    process can copy a held lock into the child."""
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(), background))


def new_manager() -> SyncManager:
    """A started multiprocessing manager (queues and events shared with pool workers) whose server
    process dies with this process. Stop it with ``manager.shutdown()``."""
    manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
    manager.start(initializer=start_parent_watchdog, initargs=(os.getpid(),))
    return manager


def terminate_pool(executor: Executor, join_timeout_s: float = 5.0) -> None:
    """Shut ``executor`` down now and wait (bounded) until its workers and manager thread are gone.

    Blocking: call it from a thread, not the loop.

    Why it is more than ``shutdown``: the first ``shutdown(wait=False)`` forgets the pool's manager
    thread, so a later ``shutdown(wait=True)`` joins nothing. And a worker killed while it was writing
    a result leaves that thread blocked in ``recv()`` on a half-written message forever — this
    process holds the write end of the result pipe too, so no end-of-file ever comes. The interpreter's
    exit hook then joins that thread and the process never exits. Closing our copy of the write end
    once the workers are dead turns the blocked read into an end-of-file, and the thread finishes.
    """
    if not isinstance(executor, ProcessPoolExecutor):
        executor.shutdown(wait=True, cancel_futures=True)
        return
    internals = _PoolInternals.of(executor)
    executor.shutdown(wait=False, cancel_futures=True)
    internals.reap(join_timeout_s)


def shutdown_pool(executor: Executor, timeout_s: float = 5.0) -> None:
    """Stop ``executor``, letting running jobs finish for up to ``timeout_s``, then terminate them.

    For pools whose running jobs should complete when they can (a sweep's last cells); blocking."""
    if not isinstance(executor, ProcessPoolExecutor):
        executor.shutdown(wait=True, cancel_futures=True)
        return
    internals = _PoolInternals.of(executor)
    executor.shutdown(wait=False, cancel_futures=True)
    if internals.manager_thread is not None:
        internals.manager_thread.join(timeout_s)
    internals.reap(timeout_s)


class _PoolInternals:
    """What a ``ProcessPoolExecutor`` forgets on ``shutdown(wait=False)`` and we still must reap."""

    def __init__(self, manager_thread: threading.Thread | None, result_queue: Any, processes: list[Any],
                 call_queue: Any = None) -> None:
        self.manager_thread = manager_thread
        self.result_queue = result_queue
        self.processes = processes
        self.call_queue = call_queue

    @classmethod
    def of(cls, executor: ProcessPoolExecutor) -> _PoolInternals:
        return cls(getattr(executor, "_executor_manager_thread", None), getattr(executor, "_result_queue", None),
                   list((getattr(executor, "_processes", None) or {}).values()),
                   getattr(executor, "_call_queue", None))

    def reap(self, join_timeout_s: float) -> None:
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            p.join(join_timeout_s)
            if p.is_alive():  # ignored SIGTERM (stuck in native code): no second chance
                p.kill()
                p.join(1.0)
        # the job queue's feeder thread may be blocked writing a large job into the pipe of a worker that is now
        # dead: nobody will read it, and the interpreter's exit hook would join that thread forever (seen as a
        # suite that passed and never exited). The jobs are cancelled; let the thread go.
        cancel_join = getattr(self.call_queue, "cancel_join_thread", None)
        if cancel_join is not None:
            cancel_join()
        thread = self.manager_thread
        if thread is None or not thread.is_alive():
            return
        thread.join(0.2)  # usually it notices the dead workers by itself
        if thread.is_alive():
            writer = getattr(self.result_queue, "_writer", None)
            if writer is not None:
                try:
                    writer.close()
                except OSError as exc:
                    log.debug("closing the result pipe: %s", exc)
            thread.join(join_timeout_s)
        if thread.is_alive():
            log.error("process pool manager thread did not stop within %.1f s; it is left behind", join_timeout_s)
            _forget_at_exit(thread)


def _forget_at_exit(thread: threading.Thread) -> None:
    """Last resort: keep ``concurrent.futures``' exit hook from joining ``thread`` forever.

    Reached only if the manager thread survived the closed pipe and the dead workers; a process that
    cannot exit is worse for a trader (and for CI) than a thread abandoned at exit."""
    from concurrent.futures import process as cf_process

    registry = getattr(cf_process, "_threads_wakeups", None)
    if registry is not None:
        registry.pop(thread, None)
