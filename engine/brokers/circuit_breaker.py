"""Circuit breaker on broker calls: CLOSED → OPEN → HALF_OPEN → CLOSED.

- CLOSED: calls pass; ``failure_threshold`` consecutive transport failures (timeouts, dropped
  connections, 5xx) open it. A broker *rejection* is not a failure: the broker answered.
- OPEN: calls fail fast with :class:`CircuitOpenError` until ``reset_timeout_s`` has passed.
- HALF_OPEN: one probe call passes; success closes the breaker, failure opens it again.

Every transition publishes :class:`CircuitBreakerStateChanged`; the OMS sets the trading state to
REDUCING (or the kill switch trips) when a breaker opens (docs/architecture.md §5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, TypeVar

from engine.brokers.base import BrokerError
from engine.bus.messages import Event

if TYPE_CHECKING:
    from engine.bus import Bus

log = logging.getLogger(__name__)
T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreakerStateChanged(Event):
    """A broker circuit breaker changed state. ``state``/``previous``: closed | open | half_open."""

    severity: ClassVar[str] = "warning"
    breaker: str  # e.g. "broker:tastytrade"
    state: str
    previous: str
    reason: str = ""
    failures: int = 0

    @property
    def opened(self) -> bool:
        return self.state == BreakerState.OPEN.value

    def describe(self) -> str:
        return f"Circuit breaker {self.breaker}: {self.previous} → {self.state}" + (
            f" ({self.reason})" if self.reason else "")


class CircuitOpenError(BrokerError):
    """The breaker is open: the call was not attempted."""


class CircuitBreaker:
    """Guards broker calls. ``clock`` returns monotonic seconds (injectable for tests)."""

    def __init__(self, name: str, bus: Bus | None = None, *, failure_threshold: int = 3,
                 reset_timeout_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_timeout_s <= 0:
            raise ValueError(f"reset_timeout_s must be > 0, got {reset_timeout_s}")
        self.name = name
        self.bus = bus
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.last_reason = ""

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._transition(BreakerState.HALF_OPEN, "reset timeout elapsed; next call is a probe")
        return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def _transition(self, new: BreakerState, reason: str) -> None:
        if new is self._state:
            return
        previous, self._state = self._state, new
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        if new is not BreakerState.HALF_OPEN:
            self._probe_in_flight = False
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        log.log(level, "circuit breaker %s: %s -> %s (%s)", self.name, previous.value, new.value, reason)
        if self.bus is not None:
            self.bus.publish(CircuitBreakerStateChanged(
                breaker=self.name, state=new.value, previous=previous.value, reason=reason, failures=self._failures))

    def allow(self) -> bool:
        """May a call go out now? In HALF_OPEN only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED, "call succeeded")

    def record_failure(self, reason: str) -> None:
        self._failures += 1
        self.last_reason = reason
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN:
            self._transition(BreakerState.OPEN, f"probe failed: {reason}")
        elif self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._transition(BreakerState.OPEN, f"{self._failures} consecutive failures; last: {reason}")

    def reset(self) -> None:
        self._failures = 0
        self._transition(BreakerState.CLOSED, "manual reset")

    async def call(self, what: str, fn: Callable[[], Awaitable[T]],
                   is_failure: Callable[[BaseException], bool] | None = None) -> T:
        """Run ``fn()`` through the breaker. Exceptions for which ``is_failure`` is False (rejections)
        pass through without counting; by default every :class:`BrokerError` and ``OSError`` counts."""
        if not self.allow():
            raise CircuitOpenError(f"{self.name}: circuit open, {what} not sent ({self.last_reason})")
        try:
            result = await fn()
        except BaseException as exc:
            failure = is_failure(exc) if is_failure else isinstance(exc, (BrokerError, OSError, TimeoutError))
            if failure:
                self.record_failure(f"{what}: {exc}")
            else:
                self._probe_in_flight = False
            raise
        self.record_success()
        return result
