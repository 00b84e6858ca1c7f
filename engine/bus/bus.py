"""Typed asyncio pub/sub bus.

- Commands: ``register(CommandType, handler)`` once; ``await send(cmd)`` returns the handler's result.
- Events: ``subscribe(EventType, handler)``; the subscription matches the type and its subclasses
  (subscribe to :class:`Event` for everything). ``publish`` never blocks and never raises.

Delivery:
- a plain function handler is called inline from ``publish`` (it must be quick: caches, counters);
- a coroutine handler gets a mailbox drained by its own task, so a slow subscriber never delays the
  publisher or other subscribers. For events whose class sets ``conflate = True`` (quotes, chains,
  clock) the mailbox keeps only the latest event per ``conflation_key()``: a slow subscriber sees the
  newest value per symbol, never an unbounded backlog.

Time: a message published or sent without a ``ts`` is stamped with the bus's clock (the engine's clock),
before any subscriber sees it, so every event carries market time in paper-on-simulation and in a
backtest, not the wall time of the machine.

A handler that raises is isolated: the error is logged and published as :class:`SubscriberFailed`
(never back to the failing subscriber); the bus and other subscribers carry on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from engine.bus.events import SubscriberFailed
from engine.bus.messages import UNSTAMPED, Command, Event, Message
from engine.clock import Clock, WallClock

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Any]


class NoHandlerError(LookupError):
    """No handler is registered for a command type."""


class _Mailbox:
    """Per-subscriber queue for coroutine handlers: FIFO for ordinary events, latest-wins for conflated.

    A drain delivers the pending ordinary events in publish order, then the latest conflated value
    per key (in the order their keys first became pending).
    """

    __slots__ = ("_fifo", "_latest", "_wakeup", "handler", "name", "task")

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self.handler = handler
        self._fifo: deque[Event] = deque()
        self._latest: dict[object, Event] = {}
        self._wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def put(self, event: Event) -> None:
        if event.conflate:
            self._latest[(type(event), event.conflation_key())] = event
        else:
            self._fifo.append(event)
        if not self._wakeup.is_set():
            self._wakeup.set()

    def drain(self) -> list[Event]:
        items = list(self._fifo)
        self._fifo.clear()
        if self._latest:
            items.extend(self._latest.values())
            self._latest.clear()
        return items

    def __len__(self) -> int:
        return len(self._fifo) + len(self._latest)


class Subscription:
    __slots__ = ("_bus", "event_type", "handler", "mailbox", "name")

    def __init__(self, bus: Bus, event_type: type[Event], handler: Handler, name: str, mailbox: _Mailbox | None):
        self._bus = bus
        self.event_type = event_type
        self.handler = handler
        self.name = name
        self.mailbox = mailbox

    def cancel(self) -> None:
        self._bus._unsubscribe(self)

    @property
    def backlog(self) -> int:
        return len(self.mailbox) if self.mailbox else 0


class Bus:
    """The engine's single message bus. Create it on the loop that will run it.

    ``clock`` stamps messages that carry no time; the engine passes its own clock. A bare ``Bus()``
    (tools, unit tests of one component) has no engine behind it, so it stamps with the wall clock."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else WallClock()
        self._subs: list[Subscription] = []
        self._by_type: dict[type, tuple[Subscription, ...]] = {}
        self._handlers: dict[type, Handler] = {}
        self._closed = False
        self.published = 0
        # the loop (and its thread) the bus was created on: a publish from any other thread is handed to it
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._thread = threading.get_ident()
        self._foreign_publishers: set[type] = set()

    # ---- events ---------------------------------------------------------------------------------
    def subscribe(self, event_type: type[E], handler: Callable[[E], Any], *, name: str | None = None) -> Subscription:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"can only subscribe to Event subclasses, got {event_type!r}")
        name = name or str(getattr(handler, "__qualname__", repr(handler)))
        mailbox = None
        call = vars(type(handler)).get("__call__")  # an object whose __call__ is a coroutine function
        if inspect.iscoroutinefunction(handler) or (call is not None and inspect.iscoroutinefunction(call)):
            mailbox = _Mailbox(name, handler)
            mailbox.task = asyncio.get_running_loop().create_task(self._drain(mailbox), name=f"bus:{name}")
        sub = Subscription(self, event_type, handler, name, mailbox)
        self._subs.append(sub)
        self._by_type.clear()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._by_type.clear()
        if sub.mailbox and sub.mailbox.task:
            sub.mailbox.task.cancel()

    def _targets(self, event_type: type) -> tuple[Subscription, ...]:
        try:
            return self._by_type[event_type]
        except KeyError:
            subs = tuple(s for s in self._subs if issubclass(event_type, s.event_type))
            self._by_type[event_type] = subs
            return subs

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every matching subscriber. Never raises, never blocks.

        Subscribers run on the bus's loop: the window's views among them start Qt timers, which Qt allows on
        the GUI thread only (another thread's start crashed the app). So a publish from another thread (a
        backfill or broker SDK thread) is handed to the loop and delivered there, in order."""
        if self._closed:
            return
        if self._loop is not None and threading.get_ident() != self._thread:
            if type(event) not in self._foreign_publishers:
                self._foreign_publishers.add(type(event))
                log.warning("%s published from thread %s, not the bus's loop: delivered on the loop",
                            type(event).__name__, threading.current_thread().name)
            try:
                self._loop.call_soon_threadsafe(self.publish, event)
            except RuntimeError:  # the loop is closed: the engine has stopped, nothing is listening
                pass
            return
        self.published += 1
        self._stamp(event)
        for sub in self._targets(type(event)):
            mb = sub.mailbox
            if mb is not None:
                mb.put(event)
                continue
            try:
                sub.handler(event)
            except Exception as exc:  # one subscriber's bug must not stop delivery to the others: reported as SubscriberFailed
                self._report_failure(sub, event, exc)

    def _stamp(self, message: Message) -> None:
        if message.ts == UNSTAMPED:
            # the message is not yet visible to anyone: setting its time is part of creating it
            object.__setattr__(message, "ts", self.clock.now())

    def _report_failure(self, sub: Subscription, event: Event, exc: BaseException) -> None:
        log.exception("bus subscriber %s failed on %s", sub.name, type(event).__name__, exc_info=exc)
        if isinstance(event, SubscriberFailed):
            return  # never cascade failure reports
        failure = SubscriberFailed(subscriber=sub.name, event_type=type(event).__name__, error=f"{type(exc).__name__}: {exc}")
        self._stamp(failure)
        for other in self._targets(SubscriberFailed):
            if other is sub:
                continue
            if other.mailbox is not None:
                other.mailbox.put(failure)
            else:
                try:
                    other.handler(failure)
                except Exception:  # a failure handler failing must not loop or stop the publisher: logged only
                    log.exception("bus subscriber %s failed on SubscriberFailed", other.name)

    async def _drain(self, mb: _Mailbox) -> None:
        sub_lookup = None
        while True:
            await mb._wakeup.wait()
            mb._wakeup.clear()
            for event in mb.drain():
                try:
                    await mb.handler(event)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one mailbox handler's bug must not kill the drain task of its subscriber
                    if sub_lookup is None:
                        sub_lookup = next((s for s in self._subs if s.mailbox is mb), None)
                    if sub_lookup is not None:
                        self._report_failure(sub_lookup, event, exc)

    # ---- commands -------------------------------------------------------------------------------
    def register(self, command_type: type[Command], handler: Callable[[Any], Any]) -> None:
        if command_type in self._handlers:
            raise ValueError(f"a handler for {command_type.__name__} is already registered")
        self._handlers[command_type] = handler

    def unregister(self, command_type: type[Command]) -> None:
        self._handlers.pop(command_type, None)

    def has_handler(self, command_type: type[Command]) -> bool:
        return command_type in self._handlers

    async def send(self, command: Command) -> Any:
        """Run the command's handler and return its result; its exceptions propagate to the sender."""
        handler = self._handlers.get(type(command))
        if handler is None:
            raise NoHandlerError(f"no handler registered for {type(command).__name__}")
        self._stamp(command)
        result = handler(command)
        if isinstance(result, Awaitable):
            result = await result
        return result

    # ---- lifecycle ------------------------------------------------------------------------------
    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until every mailbox is empty (tests and orderly shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(s.backlog for s in self._subs):
            if loop.time() > deadline:
                raise TimeoutError("bus did not drain in time")
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)

    async def close(self) -> None:
        self._closed = True
        tasks = [s.mailbox.task for s in self._subs if s.mailbox and s.mailbox.task]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._subs.clear()
        self._by_type.clear()
        self._handlers.clear()
