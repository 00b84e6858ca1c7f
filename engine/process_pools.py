"""Stopping process pools promptly: their jobs are pure computation (fits, pricing), so on shutdown
the results are not wanted — cancel what is queued and terminate what is running instead of waiting."""

from __future__ import annotations

from concurrent.futures import Executor, ProcessPoolExecutor


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
