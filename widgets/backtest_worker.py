"""The Backtest panel's worker process and one run in it (:class:`BacktestWorker`, :class:`BacktestJob`).

The run is :func:`engine.backtest.worker.run_backtest_job` in a one-process ``spawn`` pool: the UI thread
only polls a progress queue on a timer, so the window stays responsive, and Cancel sets a shared event the
backtest loop checks every day. Kept apart from the panel because it owns processes: whatever the panel does,
these classes are what must stop them."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from PySide6 import QtCore

from widgets.base import qt_alive

log = logging.getLogger("widgets.backtest_runner")  # the name its records had before the module was split off

#: the worker starts this long after the panel is first shown: the panel is visible in the default layout,
#: and the spawn and imports (~1.5 s of CPU) must not compete with the window's start-up on a 2-core machine
WORKER_WARM_DELAY_MS = 5000
#: a worker without a run for this long is stopped (it holds the last history: ~0.2 GB of arrays for 5 years)
WORKER_IDLE_S = 300.0


class BacktestWorker:
    """The panel's worker process (and the multiprocessing manager that carries its progress queue and
    cancel event), started ahead of the first run and kept between runs.

    Why: a fresh spawn worker pays the interpreter start and ~1 s of imports before the run begins, and
    a warm worker keeps the last history it loaded (``run_backtest_job(reuse_history=True)``), so a run
    from the panel costs what the CLI's does, and a second run on the same data less. Its owner (the
    panel) stops it after ``idle_s`` without a run, when the panel is destroyed and when the application
    quits. Thread-safe: :meth:`ensure_started` may run on a helper thread while the GUI thread reads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._manager: Any = None
        self.starts = 0  # how many worker processes were started (tests, diagnostics)

    @property
    def started(self) -> bool:
        return self._pool is not None

    def ensure_started(self) -> None:
        """Start the worker process and begin its imports, unless it is running (blocks ~0.1-0.3 s while
        the manager process starts: call it off the GUI thread when nothing waits for it)."""
        from engine.backtest.worker import warm_worker
        from engine.process_pools import new_manager, new_process_pool

        with self._lock:
            if self._pool is not None:
                return
            manager = new_manager()
            pool = new_process_pool(1)
            pool.submit(warm_worker)  # queued before any run: the imports happen now, not on Run
            self.starts += 1
            self._manager, self._pool = manager, pool

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Any, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args, **kwargs)`` in the worker (started if needed); returns an asyncio future."""
        import functools

        self.ensure_started()
        return loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def channel(self) -> tuple[Any, Any]:
        """A fresh (progress queue, cancel event) pair for one run, shared with the worker."""
        self.ensure_started()
        return self._manager.Queue(), self._manager.Event()

    def terminate(self) -> int:
        """Kill the worker process (a run that ignores cancel); the next run starts a new one."""
        with self._lock:
            pool = self._pool
        procs = [p for p in getattr(pool, "_processes", {}).values() if p.is_alive()] if pool else []
        for p in procs:
            p.terminate()
        self.stop()
        return len(procs)

    def stop(self, wait: bool = False) -> None:
        """Stop the worker and the manager (bounded waits) on a helper thread, or here when ``wait``."""
        with self._lock:
            pool, manager = self._pool, self._manager
            self._pool = self._manager = None
        if pool is None and manager is None:
            return

        from engine.process_pools import shutdown_pool

        def stop() -> None:
            if pool is not None:
                shutdown_pool(pool, timeout_s=5.0)
            if manager is not None:
                try:
                    manager.shutdown()
                except Exception as exc:
                    log.debug("manager shutdown: %s", exc)

        if wait:
            stop()
        else:
            threading.Thread(target=stop, name="backtest-worker-shutdown", daemon=False).start()


class BacktestJob(QtCore.QObject):
    """One backtest in a worker process. Emits ``progressed(fraction, eta_s, day, stage)`` and ``finished``.

    Must be started on a running asyncio (qasync) loop. ``cancel()`` is cooperative; the result then has
    ``status == "cancelled"``. Runs on the given :class:`BacktestWorker` (kept warm by its owner), or on
    one of its own that it stops when the run ends.
    """

    progressed = QtCore.Signal(float, float, str, str)
    finished = QtCore.Signal(object, str)  # BacktestResult or None, error message

    def __init__(self, config: dict[str, Any], parent: QtCore.QObject | None = None,
                 worker: BacktestWorker | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.result: Any = None
        self.error = ""
        self.started_at = math.nan
        self.cancel_requested = False
        self._owns_worker = worker is None
        self._worker = worker if worker is not None else BacktestWorker()
        self._queue: Any = None
        self._cancel: Any = None
        self._future: asyncio.Future[Any] | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)

    @property
    def running(self) -> bool:
        return self._future is not None and not self._future.done()

    def start(self) -> None:
        from engine.backtest.worker import run_backtest_job

        loop = asyncio.get_event_loop()
        self.started_at = time.monotonic()
        self._queue, self._cancel = self._worker.channel()
        self._future = self._worker.submit(loop, run_backtest_job, self.config, self._queue, self._cancel,
                                           reuse_history=True)
        self._future.add_done_callback(self._done)
        self._timer.start()

    def cancel(self, grace_s: float = 2.0) -> None:
        """Ask the loop to stop; if the worker has not returned after ``grace_s`` (e.g. still generating the
        simulated history, which has no cancel points), terminate the worker process."""
        if not self.running:
            return
        self.cancel_requested = True
        if self._cancel is not None:
            try:
                self._cancel.set()
            except Exception as exc:  # the manager died with the worker
                log.warning("could not signal cancel: %s", exc)
        QtCore.QTimer.singleShot(int(grace_s * 1000), self._terminate_if_running)

    def _terminate_if_running(self) -> None:
        if not self.running:
            return
        n = self._worker.terminate()
        log.info("backtest worker terminated after cancel (%d process(es))", n)

    def _poll(self) -> None:
        q = self._queue
        if q is None:
            return
        latest = None
        try:
            while not q.empty():
                latest = q.get_nowait()
        except Exception:  # queue closed while shutting down
            return
        if latest is not None:
            self.progressed.emit(float(latest.fraction), float(latest.eta_s), latest.day, latest.stage)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        # retrieve the outcome first: when the window closes mid-run the worker is terminated
        # (BrokenProcessPool) and this job may already be deleted; an exception nobody retrieved is
        # logged as "Task exception was never retrieved" at shutdown
        exc = None if fut.cancelled() else fut.exception()
        if not qt_alive(self):
            self._worker.stop()
            return
        self._poll()
        self._timer.stop()
        if fut.cancelled():
            self.error = "cancelled"
        elif exc is not None:
            self.error = ("cancelled: worker stopped" if self.cancel_requested
                          else f"worker failed: {type(exc).__name__}: {exc}")
            self._worker.stop()  # a broken pool cannot run again: the next run starts a new worker
        else:
            self.result = fut.result()
            self.error = getattr(self.result, "error", "") or ""
        self._queue = self._cancel = None
        if self._owns_worker:
            self._worker.stop()
        self.finished.emit(self.result, self.error)
