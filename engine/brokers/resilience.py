"""Timeouts on every broker call and reconnect with exponential backoff + jitter.

Neither SDK retries anything (tastytrade) or times anything out (ib_async ``*Async`` calls can hang
forever), so every call an adapter makes goes through :func:`with_timeout`, and connection loss is
handled by :class:`Reconnector`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from engine.brokers.base import BrokerError
from engine.bus.events import ConnectionStateChanged

if TYPE_CHECKING:
    from engine.brokers.config import ReconnectConfig
    from engine.bus import Bus

log = logging.getLogger(__name__)
T = TypeVar("T")


async def import_sdk(module: str) -> Any:
    """Import a broker SDK off the event loop (``tastytrade`` takes seconds: pydantic models, pandas).

    In the workstation the import's allocations cannot start a garbage collection on this worker
    thread: the GUI process collects on its own thread only (``app.runtime.GuiThreadCollector``)."""
    if module in sys.modules:
        return sys.modules[module]
    return await asyncio.get_running_loop().run_in_executor(None, importlib.import_module, module)


class BrokerTimeout(BrokerError, TimeoutError):
    """A broker call did not answer within its timeout."""


#: the longest a Retry-After is honoured: a broker asking for more is asked again after this (a bad or far-future
#: date must not park a kill switch's cancel for an hour; a broker still limiting answers 429 again)
MAX_RETRY_AFTER_S = 60.0


class BrokerRateLimited(BrokerError):
    """The broker refused the request for its rate (HTTP 429): it was **not processed**, so sending it again is
    safe — a cancel is retried, a submit is a clean refusal (nothing was placed). ``retry_after_s``: how long the
    broker asked us to wait (its Retry-After header; None when it did not say)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_seconds(value: str | None, date: str | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds, or an HTTP date measured against the same
    response's Date header (the server's clock against the server's clock: no local clock is read, and a
    skewed one cannot stretch the wait). None when absent or unparseable; capped at :data:`MAX_RETRY_AFTER_S`."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    from email.utils import parsedate_to_datetime

    try:
        until = parsedate_to_datetime(text)
        now = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError, IndexError):
        return None
    if now is None or until.tzinfo is None or now.tzinfo is None:
        return None
    return min(max(0.0, (until - now).total_seconds()), MAX_RETRY_AFTER_S)


def retry_delay(exc: BaseException, backoff_s: float) -> float:
    """The wait before retrying after ``exc``: the backoff delay, or longer when the broker said how long."""
    hint = exc.retry_after_s if isinstance(exc, BrokerRateLimited) else None
    return backoff_s if hint is None else max(backoff_s, hint)


async def with_timeout(awaitable: Awaitable[T], timeout_s: float, what: str) -> T:
    """Await ``awaitable`` for at most ``timeout_s`` seconds; raises :class:`BrokerTimeout` naming ``what``."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        raise BrokerTimeout(f"{what} timed out after {timeout_s:g} s") from None


def backoff_delays(initial_s: float = 1.0, max_s: float = 60.0, multiplier: float = 2.0,
                   jitter: float = 0.2, rng: random.Random | None = None) -> Iterator[float]:
    """Endless delays ``min(max_s, initial_s × multiplier^n)`` each scaled by a factor in [1-jitter, 1+jitter]."""
    if initial_s <= 0 or max_s <= 0:
        raise ValueError("backoff delays must be positive")
    rng = rng or random.Random()
    base = initial_s
    while True:
        factor = 1.0 + (rng.uniform(-jitter, jitter) if jitter else 0.0)
        yield max(0.0, min(max_s, base) * factor)
        base = min(max_s, base * multiplier)


class Reconnector:
    """Runs ``connect()`` until it succeeds, sleeping a backoff delay between attempts.

    Publishes ``ConnectionStateChanged`` (connecting / connected with latency / failed) for
    ``component``. ``on_connected`` runs after each success (resubscribe + reconciliation).
    """

    def __init__(self, component: str, connect: Callable[[], Awaitable[None]], *, bus: Bus | None = None,
                 config: ReconnectConfig | None = None, rng: random.Random | None = None,
                 on_connected: Callable[[], Awaitable[None]] | None = None) -> None:
        from engine.brokers.config import ReconnectConfig

        self.component = component
        self._connect = connect
        self.bus = bus
        self.config = config or ReconnectConfig()
        self._rng = rng or random.Random()
        self._on_connected = on_connected
        self._task: asyncio.Task[bool] | None = None
        self.attempts = 0
        self.last_error = ""

    def _publish(self, state: str, detail: str = "", latency_ms: float | None = None) -> None:
        if self.bus is not None:
            self.bus.publish(ConnectionStateChanged(component=self.component, state=state, detail=detail,
                                                    latency_ms=latency_ms))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def trigger(self, reason: str) -> None:
        """Start reconnecting in the background (no-op when already reconnecting)."""
        if self.running:
            return
        log.warning("%s: connection lost (%s); reconnecting with backoff", self.component, reason)
        self._publish("disconnected", reason)
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"reconnect:{self.component}")

    async def run(self) -> bool:
        """Attempt until connected (True) or ``max_attempts`` exhausted (False)."""
        cfg = self.config
        delays = backoff_delays(cfg.initial_delay_s, cfg.max_delay_s, cfg.multiplier, cfg.jitter, self._rng)
        self.attempts = 0
        while True:
            self.attempts += 1
            self._publish("connecting", f"attempt {self.attempts}")
            t0 = time.perf_counter()
            try:
                await self._connect()
                if self._on_connected is not None:
                    await self._on_connected()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failed connect attempt is retried with backoff, whatever the SDK raised
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: connect attempt %d failed: %s", self.component, self.attempts, self.last_error)
                if cfg.max_attempts is not None and self.attempts >= cfg.max_attempts:
                    self._publish("failed", self.last_error)
                    return False
                self._publish("disconnected", self.last_error)
                await asyncio.sleep(next(delays))
                continue
            self._publish("connected", f"after {self.attempts} attempt(s)", (time.perf_counter() - t0) * 1e3)
            return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


# ---- supervisor tasks around SDK streamers (anyio task groups inside) ------------------------------------
# Cancelling a task from outside while it sits inside an anyio task group can lose the cancellation when
# the group is cancelling itself at the same moment (a stream failure): the task never finishes. So stream
# supervisors are *asked* to stop through an event and leave their ``async with`` normally; cancellation
# is only the last resort after a timeout.
async def run_until_stopped(consumers: list[Awaitable[Any]], stop: asyncio.Event) -> None:
    """Run ``consumers`` until ``stop`` is set (return) or one of them fails (re-raise); cancel the rest."""
    tasks = [asyncio.ensure_future(c) for c in consumers]
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        for t in (*tasks, stopper):
            t.cancel()


async def sleep_or_stop(delay_s: float, stop: asyncio.Event) -> bool:
    """Sleep ``delay_s`` unless ``stop`` is set first; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), delay_s)
    except TimeoutError:
        return False
    return True


async def stop_supervisor(task: asyncio.Task[Any] | None, stop: asyncio.Event, timeout_s: float = 5.0) -> None:
    """Set ``stop`` and wait for ``task`` to finish by itself; cancel it only if it does not within the timeout."""
    stop.set()
    if task is None or task.done():
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        log.warning("%s did not stop within %.0f s; cancelling it", task.get_name(), timeout_s)
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except (TimeoutError, asyncio.CancelledError, Exception):
            log.error("%s still running after cancel; abandoning it", task.get_name())
    except asyncio.CancelledError:
        if asyncio.current_task() is not None and asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise
    except Exception:  # stopping a task must not raise what the task itself failed with: logged
        log.exception("%s ended with an error", task.get_name())


class BrokerNotArmed(BrokerError):
    """An order-sending call reached an adapter that the mode router has not armed for live trading."""


class LiveArm:
    """The per-adapter live-trading interlock (docs/architecture.md §4/§6).

    Only the OMS ``ModeRouter`` calls :meth:`arm` when it switches to live mode for this broker (after the
    user confirmed the account) and :meth:`disarm` when it leaves live mode or the kill switch trips.
    ``submit``/``replace`` call :meth:`check` first and refuse with :class:`BrokerNotArmed` otherwise.
    Cancels are never blocked. Sandbox and paper-port accounts are armed exactly like real ones.
    """

    def __init__(self, broker: str) -> None:
        self.broker = broker
        self._account: str | None = None

    @property
    def armed_account(self) -> str | None:
        return self._account

    def arm(self, account_id: str, connected_account: str) -> None:
        if not account_id:
            raise ValueError("arm_live needs the account id the user confirmed")
        if account_id != connected_account:
            from engine.credentials import mask_account

            raise BrokerNotArmed(f"{self.broker}: cannot arm account {mask_account(account_id)}: the connected "
                                 f"account is {mask_account(connected_account) if connected_account else 'none'}")
        self._account = account_id
        log.warning("%s: armed for LIVE orders", self.broker)

    def disarm(self) -> None:
        if self._account is not None:
            log.warning("%s: disarmed (no orders will be sent)", self.broker)
        self._account = None

    def check(self, account_id: str, what: str) -> None:
        if self._account is None:
            raise BrokerNotArmed(f"{self.broker}: {what} refused: adapter is not armed for live trading "
                                 "(only the mode router in live mode may send orders)")
        if account_id and account_id != self._account:
            raise BrokerNotArmed(f"{self.broker}: {what} refused: order account differs from the armed account")


class ArmedAdapterMixin:
    """What a live broker adapter shares: arming for live orders and the connection's identity.

    Expects ``self.conn`` (with ``connected`` and ``account_id``) and ``self._arm`` (a :class:`LiveArm`).
    """

    conn: Any
    _arm: LiveArm

    def arm_live(self, account_id: str) -> None:
        """Allow ``submit``/``replace`` for ``account_id`` (the mode router's call after confirmation)."""
        self._arm.arm(account_id, self.conn.account_id)

    def disarm(self) -> None:
        self._arm.disarm()

    @property
    def armed(self) -> bool:
        return self._arm.armed_account is not None

    @property
    def connected(self) -> bool:
        return self.conn.connected

    @property
    def account_id(self) -> str:
        return self.conn.account_id


