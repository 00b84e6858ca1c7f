"""The surface service's worker process loads the compiled pricing kernels itself (the engine's warm-up runs
in the engine's process, which a worker is not), in the background, and its fits match the numpy path."""

from __future__ import annotations

import time

import pytest

from engine.pricing import _kernels
from engine.process_pools import new_process_pool, shutdown_pool
from engine.surface.service import _warm_worker


@pytest.mark.skipif(not _kernels.numba_available() or _kernels.disabled_by_env(), reason="numba not in use here")
def test_the_surface_worker_loads_the_compiled_kernels_off_its_job_thread() -> None:
    pool = new_process_pool(1, background=True)  # as SurfaceService.start makes it
    try:
        assert pool.submit(_warm_worker).result(timeout=120) is True  # returns at once: the load is a thread
        deadline = time.monotonic() + 150.0  # a first run compiles into the cache: tens of seconds
        state = pool.submit(_kernels.status).result(timeout=30)
        while not state["in_use"] and state["failure"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
            state = pool.submit(_kernels.status).result(timeout=30)
        assert state["failure"] is None, state["failure"]
        assert state["in_use"] is True and state["loaded_on_thread"] == "optiondesk-numba-warmup"
    finally:
        shutdown_pool(pool)
