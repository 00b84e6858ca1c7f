"""Shared pytest-qt + qasync fixtures (docs/architecture.md §10). Used by tests/app and tests/widgets.

Import in a conftest with::

    from tests.qt_fixtures import *  # noqa: F403  (qasync_loop, async_cleanup, run_async)

Rules encoded here:
- ONE ``qasync.QEventLoop(qapp, already_running=True)`` for the whole test session, set as the current
  loop; pytest-qt's event pumping (``qtbot.wait``/``waitUntil``/``waitSignal``) then drives asyncio too.
- Never ``loop.stop()`` / ``loop.close()`` in a fixture: ``stop()`` calls ``QApplication.exit()`` with
  no ``exec()`` running, which sets Qt's quit flag, and every later ``qtbot.wait`` returns at once.
- After each test, the tasks it left on the loop are cancelled and awaited (by pumping Qt).
- Test functions stay synchronous; run a coroutine with ``run_async(qtbot, coro)`` (never call
  ``qtbot.waitUntil`` from inside a coroutine: re-entrancy error).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")

import pytest  # noqa: I001  (order matters: PySide6 before qasync, docs/architecture.md §10)
from PySide6.QtWidgets import QApplication
import qasync

T = TypeVar("T")

__all__ = ["async_cleanup", "qasync_loop", "run_async", "wait_for_condition"]

_SESSION_LOOP: qasync.QEventLoop | None = None
_COLLECTOR: Any = None


def _session_loop(app: QApplication) -> qasync.QEventLoop:
    global _SESSION_LOOP
    if _SESSION_LOOP is None:
        _SESSION_LOOP = qasync.QEventLoop(app, already_running=True)
        # qasync's default executor runs QThreads, which Qt aborts on when still running at exit;
        # asyncio.to_thread / run_in_executor(None) get a plain thread pool instead.
        _SESSION_LOOP.set_default_executor(ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-loop"))
        # as in the app (app.runtime.run_event_loop): collections run on the GUI thread only, never on
        # a worker thread that would destroy Qt objects there (a deadlock seen in the 20-starts test)
        from app.runtime import GuiThreadCollector

        global _COLLECTOR
        _COLLECTOR = GuiThreadCollector(parent=app)
    return _SESSION_LOOP


@pytest.fixture(scope="session")
def qasync_loop(qapp: QApplication) -> qasync.QEventLoop:
    """The single qasync loop of the test session (already running on top of pytest-qt's pumping)."""
    loop = _session_loop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    # Deliberately no loop.stop()/close(): see module docstring.


@pytest.fixture()
def async_cleanup(qasync_loop: qasync.QEventLoop, qtbot: Any) -> qasync.QEventLoop:
    """Per-test: make the session loop current and running; afterwards cancel and await leftover tasks."""
    asyncio.set_event_loop(qasync_loop)
    asyncio.events._set_running_loop(qasync_loop)  # pytest-asyncio tests in other areas may have reset it
    before = set(asyncio.all_tasks(qasync_loop))
    yield qasync_loop
    leftover = [t for t in asyncio.all_tasks(qasync_loop) if t not in before and not t.done()]
    for task in leftover:
        task.cancel()
    if leftover:
        qtbot.waitUntil(lambda: all(t.done() for t in leftover), timeout=5000)


def run_async(qtbot: Any, awaitable: Awaitable[T], timeout: float = 10.0) -> T:
    """Run ``awaitable`` on the session qasync loop by pumping Qt until it is done; return its result.

    Raises the coroutine's exception, or ``TimeoutError`` (after cancelling it) when it takes longer
    than ``timeout`` seconds.
    """
    loop = asyncio.get_event_loop()
    task = asyncio.ensure_future(awaitable, loop=loop)
    try:
        qtbot.waitUntil(task.done, timeout=int(timeout * 1000))
    except Exception:
        task.cancel()
        qtbot.waitUntil(task.done, timeout=2000)
        raise TimeoutError(f"coroutine did not finish within {timeout} s") from None
    return task.result()


def wait_for_condition(qtbot: Any, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Pump Qt (and so asyncio) until ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    qtbot.waitUntil(predicate, timeout=int(timeout * 1000))
