"""Splitting a batch over threads: the chunks cover the batch exactly once, errors reach the caller after every
chunk has finished, and the thread count comes from the setting, the environment or the cores, in that order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.pricing import _split


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv(_split.THREADS_ENV, raising=False)
    yield
    _split.set_threads(None)


def test_chunks_cover_the_batch_once_in_contiguous_parts_on_distinct_threads() -> None:
    _split.set_threads(4)
    seen = np.zeros(1003, dtype=int)
    ran_on: list[int] = []
    parts: list[tuple[int, int]] = []
    together = threading.Barrier(4, timeout=10)  # passes only if four threads run chunks at the same time

    def fn(start: int, stop: int) -> None:
        if threading.get_ident() not in ran_on:
            ran_on.append(threading.get_ident())
            together.wait()
        parts.append((start, stop))
        seen[start:stop] += 1

    assert _split.run_chunks(fn, 1003, min_chunk=100) == 4
    assert (seen == 1).all()
    assert len(set(ran_on)) == 4 and threading.get_ident() in ran_on  # the caller takes chunks too
    # more chunks than threads (taken from a shared counter), each at least min_chunk, together contiguous
    parts.sort()
    assert len(parts) == 10 and all(b - a >= 100 for a, b in parts)
    assert parts[0][0] == 0 and parts[-1][1] == 1003 and all(parts[i][1] == parts[i + 1][0] for i in range(9))


def test_small_batches_and_one_thread_run_on_the_caller_alone() -> None:
    calls: list[tuple[int, int, str]] = []

    def fn(start: int, stop: int) -> None:
        calls.append((start, stop, threading.current_thread().name))

    _split.set_threads(8)
    assert _split.run_chunks(fn, 150, min_chunk=100) == 1  # not worth a second thread
    _split.set_threads(1)
    assert _split.run_chunks(fn, 10_000, min_chunk=100) == 1
    assert _split.run_chunks(fn, 0, min_chunk=100) == 1
    me = threading.current_thread().name
    assert calls == [(0, 150, me), (0, 10_000, me), (0, 0, me)]


def test_an_error_in_a_chunk_is_raised_after_every_chunk_has_finished() -> None:
    _split.set_threads(3)
    finished: list[int] = []

    def fn(start: int, stop: int) -> None:
        if start == 0:
            time.sleep(0.05)  # the caller's chunk outlives the failing one
            finished.append(start)
            return
        if stop == 300:
            raise ZeroDivisionError("chunk failed")
        finished.append(start)

    with pytest.raises(ZeroDivisionError, match="chunk failed"):
        _split.run_chunks(fn, 300, min_chunk=100)
    assert sorted(finished) == [0, 100]
    assert not [t for t in threading.enumerate() if t.name == "optiondesk-pricing-chunk"]  # all joined


def test_thread_count_setting_then_environment_then_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _split.threads() == _split.cores() >= 1
    monkeypatch.setenv(_split.THREADS_ENV, "3")
    assert _split.threads() == 3
    _split.set_threads(2)
    assert _split.threads() == 2
    _split.set_threads(None)
    for garbage in ("zero", "0", "-4", ""):
        monkeypatch.setenv(_split.THREADS_ENV, garbage)
        assert _split.threads() == _split.cores()
    with pytest.raises(ValueError, match="at least 1"):
        _split.set_threads(0)


def test_a_split_inside_a_chunk_runs_on_that_chunks_thread_alone() -> None:
    """An implied-vol solve split per option calls kernels that split too: the inner split must not start
    threads of its own (it would put two threads on each core)."""
    _split.set_threads(2)
    inner: list[tuple[int, int]] = []

    def outer(start: int, stop: int) -> None:
        me = threading.get_ident()
        ran_on: list[int] = []
        chunks = _split.run_chunks(lambda a, b: ran_on.append(threading.get_ident()), 10_000, min_chunk=10)
        inner.append((chunks, len(set(ran_on) - {me})))

    assert _split.run_chunks(outer, 1000, min_chunk=100) == 2
    assert len(inner) == 8 and set(inner) == {(1, 0)}  # 8 chunks on 2 threads, none split again
    assert _split.run_chunks(lambda a, b: None, 10_000, min_chunk=10) == 2  # outside a chunk it splits again


def test_one_chunk_per_thread_when_asked() -> None:
    """The numpy American implied-vol solve costs per call more than per option: it asks for one chunk per
    thread."""
    _split.set_threads(2)
    parts: list[tuple[int, int]] = []
    assert _split.run_chunks(lambda a, b: parts.append((a, b)), 1000, min_chunk=100, chunks_per_thread=1) == 2
    assert sorted(parts) == [(0, 500), (500, 1000)]
