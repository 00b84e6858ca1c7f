"""Shared plumbing for every dockable panel.

- :class:`EventBatch` — what the app's bus bridge hands each panel every ~100 ms: the latest event per
  conflation key for conflated events (quotes, chains, account) and the ordered list of every other
  event (orders, fills, alerts). Type lookups match subclasses (``batch.events(OrderEvent)`` returns
  ``OrderFilled``, ``OrderCancelled`` ...).
- :class:`EventAccumulator` — builds batches: the bridge calls ``add(event)`` from its bus handler and
  ``take()`` on its timer.
- :class:`Panel` — the base ``QWidget`` of a dock: ``Panel(engine, parent=None)``, ``apply_events(batch)``,
  class attributes ``title`` and ``panel_id`` (the dock's object name, used for layout persistence).
- :func:`send_command` — fire a bus command from a Qt slot without blocking: the coroutine is scheduled
  on the running (qasync) loop, failures go to a callback and the log. Never a modal ``exec()`` in
  async code.

Widgets render engine results; they hold no pricing, risk, order or fitting logic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from PySide6 import QtCore, QtWidgets

from engine.bus.messages import Command, Event
from widgets.links import links_for

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


class EventBatch:
    """Events gathered between two GUI refreshes.

    ``latest(T)`` -> ``{conflation_key: newest event}`` for conflated events of type ``T`` (or a subclass);
    ``events(T)`` -> every non-conflated event of type ``T`` in publication order; ``has(T)`` -> either.
    Keys of ``latest`` are the events' :meth:`~engine.bus.messages.Event.conflation_key`.
    """

    __slots__ = ("_events", "_latest")

    def __init__(
        self,
        latest: dict[tuple[type, object], Event] | None = None,
        events: list[Event] | None = None,
    ) -> None:
        self._latest: dict[tuple[type, object], Event] = dict(latest or {})
        self._events: list[Event] = list(events or [])

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> EventBatch:
        """Conflate a stream of events the way the bridge does (latest wins per type and key)."""
        acc = EventAccumulator()
        for e in events:
            acc.add(e)
        return acc.take()

    def latest(self, event_type: type[E]) -> dict[object, E]:
        """Newest conflated event per key, for ``event_type`` and its subclasses."""
        return {key: ev for (etype, key), ev in self._latest.items() if issubclass(etype, event_type)}  # type: ignore[misc]

    def events(self, event_type: type[E]) -> list[E]:
        """Non-conflated events of ``event_type`` (and subclasses), oldest first."""
        return [e for e in self._events if isinstance(e, event_type)]

    def has(self, event_type: type[Event]) -> bool:
        return any(issubclass(t, event_type) for t, _ in self._latest) or any(
            isinstance(e, event_type) for e in self._events
        )

    def all_events(self) -> list[Event]:
        """Every event in the batch: the ordered list, then the conflated ones."""
        return [*self._events, *self._latest.values()]

    def __len__(self) -> int:
        return len(self._latest) + len(self._events)

    def __bool__(self) -> bool:
        return bool(self._latest) or bool(self._events)

    def __repr__(self) -> str:
        return f"EventBatch(latest={len(self._latest)}, events={len(self._events)})"


class EventAccumulator:
    """Collects bus events between refreshes; ``take()`` returns an :class:`EventBatch` and starts afresh."""

    __slots__ = ("_events", "_latest")

    def __init__(self) -> None:
        self._latest: dict[tuple[type, object], Event] = {}
        self._events: list[Event] = []

    def add(self, event: Event) -> None:
        if event.conflate:
            key = (type(event), event.conflation_key())
            self._latest.pop(key, None)  # keep insertion order = recency
            self._latest[key] = event
        else:
            self._events.append(event)

    def take(self) -> EventBatch:
        batch = EventBatch(self._latest, self._events)
        self._latest = {}
        self._events = []
        return batch

    def __len__(self) -> int:
        return len(self._latest) + len(self._events)


def qt_alive(obj: Any) -> bool:
    """False once the C++ side of a Qt object is gone (a worker's result arriving after the window
    closed must not touch it)."""
    import shiboken6

    return bool(shiboken6.isValid(obj))


def send_command(
    engine: Engine | None,
    command: Command,
    on_error: Callable[[str], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> asyncio.Future[Any] | None:
    """Schedule ``engine.bus.send(command)`` on the running asyncio (qasync) loop and return the task.

    A failure (the handler raised, no handler registered, no loop) is logged and passed to ``on_error``
    as a one-line message; a success passes the handler's result to ``on_result``. Never blocks.
    """

    def fail(message: str) -> None:
        log.warning("command %s failed: %s", type(command).__name__, message)
        if on_error is not None:
            on_error(message)

    if engine is None:
        fail("no engine")
        return None
    bus = engine.bus
    if bus is None:
        fail("engine has no bus (not started)")
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            fail("no asyncio event loop is running")
            return None
    if loop.is_closed():
        fail("the asyncio event loop is closed")
        return None
    try:
        task = loop.create_task(bus.send(command), name=f"gui:{type(command).__name__}")
    except Exception as exc:  # e.g. the bus refuses the command synchronously
        fail(f"{type(exc).__name__}: {exc}")
        return None

    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            fail("cancelled")
            return
        exc = fut.exception()
        if exc is not None:
            fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        if on_result is not None:
            try:
                on_result(fut.result())
            except Exception:
                log.exception("result callback of %s failed", type(command).__name__)

    task.add_done_callback(done)
    return task


def schedule(
    awaitable: Any, *, what: str, on_error: Callable[[str], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> asyncio.Future[Any] | None:
    """Run a coroutine of an engine component (e.g. ``feed.subscribe``) on the running loop, like
    :func:`send_command`: never blocks, failures go to ``on_error`` and the log."""

    def fail(message: str) -> None:
        log.warning("%s failed: %s", what, message)
        if on_error is not None:
            on_error(message)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            fail("no asyncio event loop is running")
            return None
    task = asyncio.ensure_future(awaitable, loop=loop)

    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            fail(f"{type(exc).__name__}: {exc}")
        elif on_result is not None:
            on_result(fut.result())

    task.add_done_callback(done)
    return task


class Panel(QtWidgets.QWidget):
    """Base of every dockable panel.

    Subclasses set ``title`` (the dock's caption) and ``panel_id`` (stable object name for layout
    persistence) and override :meth:`apply_events`. ``status`` carries short user-facing messages
    (command failures, validation) that the app may mirror into its log.
    """

    title: ClassVar[str] = "Panel"
    panel_id: ClassVar[str] = "panel"

    status = QtCore.Signal(str)

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.links = links_for(engine)
        self.setObjectName(self.panel_id)
        self.last_error: str = ""

    def apply_events(self, batch: EventBatch) -> None:
        """Render the events of one refresh. Called on the GUI thread ~10 times a second."""

    def report_error(self, message: str) -> None:
        """Show a command failure without a modal dialog."""
        self.last_error = message
        self.status.emit(message)

    def send(self, command: Command, on_result: Callable[[Any], None] | None = None) -> asyncio.Future[Any] | None:
        """:func:`send_command` with this panel's error reporting."""
        return send_command(self.engine, command, on_error=self.report_error, on_result=on_result)

    def apply_theme(self, theme: str) -> None:
        """Called by the main window after a dark/light switch: plots follow the new palette."""
        from widgets.plots import restyle_plots

        restyle_plots(self)

    def panel_state(self) -> dict[str, Any]:
        """Small JSON-able state (selected underlying, window size ...) the app saves with the layout."""
        return {}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`panel_state`; unknown keys are ignored."""


def worker_outcome(fut: Any) -> tuple[Any, str]:
    """(result, "") or (None, error) of a finished worker future, always retrieving its exception.

    At stop the engine terminates its worker processes: a pending job then fails with
    ``BrokenProcessPool`` (or is cancelled). That is the expected end of the job, not an error, and
    its exception must be retrieved here, or asyncio logs "Task exception was never retrieved".
    """
    from concurrent.futures.process import BrokenProcessPool

    if fut.cancelled():
        return None, ""
    exc = fut.exception()
    if exc is None:
        return fut.result(), ""
    if isinstance(exc, BrokenProcessPool):
        return None, ""
    return None, f"{type(exc).__name__}: {exc}"
