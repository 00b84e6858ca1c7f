"""Stopping process pools promptly: their jobs are pure computation (fits, pricing), so on shutdown
the results are not wanted — cancel what is queued and terminate what is running instead of waiting."""

from __future__ import annotations

import logging
import os
from concurrent.futures import Executor, ProcessPoolExecutor

log = logging.getLogger(__name__)

#: niceness of background compute workers (surface fits, chain analytics)
BACKGROUND_NICE = 10


def lower_worker_priority() -> None:
    """Process-pool initializer: run the worker at a lower CPU priority than the workstation. On a
    2-core desktop a refit or an American-IV batch otherwise takes the core the GUI loop needs at that
    moment; niced, the loop wins and the worker finishes in the idle time. No-op where unsupported."""
    try:
        os.nice(BACKGROUND_NICE)
    except (AttributeError, OSError) as exc:  # Windows, or a sandbox that forbids it
        log.debug("could not lower the worker's priority: %s", exc)


def terminate_pool(executor: Executor, join_timeout_s: float = 5.0) -> None:
    """Shut ``executor`` down now. Blocking (joins the workers): call it from a thread, not the loop."""
    if not isinstance(executor, ProcessPoolExecutor):
        executor.shutdown(wait=True, cancel_futures=True)
        return
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(join_timeout_s)
    executor.shutdown(wait=True)  # reaps the pool's management thread once its workers are gone
