"""The notifier: rules → de-duplication → rate limit → destinations, without ever blocking the loop.

Rules are evaluated inline on the bus (cheap). Delivery to e-mail and webhooks runs in this object's own
two-thread pool, one task per (notification, destination) with a per-attempt timeout and exponential
backoff; when every attempt fails, an ``Alert(level="error", source="notify")`` says so in the window. The
desktop destination publishes an ``Alert`` (the Alerts dock; the tray for critical ones).

De-duplication and rate limits count in monotonic seconds: they protect a human's inbox in real time, and
a simulated market running at 60× must not make them 60× looser. The heartbeat watchdog also runs on
monotonic time — a stalled loop is exactly when market time stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.bus.events import Alert, ClockTicked
from engine.credentials import redactor
from engine.notify.config import (
    DesktopDestination,
    Destination,
    EmailDestination,
    NotifyConfig,
    WebhookDestination,
)
from engine.notify.destinations import DeliveryError, send_email, send_webhook
from engine.notify.rules import LEVEL_RANK, Notification, RuleEvaluator
from engine.notify.user_rules import ExposureSource, RearmUserAlert, UserRuleEvaluator

log = logging.getLogger(__name__)


class NotifyError(RuntimeError):
    """A test notification could not be delivered (the message says where and why)."""


@dataclass
class DeliveryStats:
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    rate_limited: int = 0


class Notifier:
    """Owns the rule evaluator, the delivery tasks and the sender threads; ``stop()`` ends all of them."""

    def __init__(self, bus: Any, config: NotifyConfig, *, secrets: Callable[[str], str | None],
                 now: Callable[[], datetime], monotonic: Callable[[], float] = time.monotonic,
                 heartbeat_check_s: float = 1.0, exposure: ExposureSource | None = None) -> None:
        self.bus = bus
        self.config = config
        self._secrets = secrets
        self._now = now
        self._mono = monotonic
        self._heartbeat_check_s = heartbeat_check_s
        self.evaluator = RuleEvaluator(config.rules, self.notify)
        self._exposure = exposure
        self.user_rules = UserRuleEvaluator(config.user_rules, self.notify, exposure)
        self._registered = False
        self.stats: dict[str, DeliveryStats] = {d.name: DeliveryStats() for d in config.destinations}
        self.last_heartbeat = monotonic()
        self._last_sent: dict[str, float] = {}
        self._sent_times: dict[str, deque[float]] = {d.name: deque() for d in config.destinations}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subs: list[Any] = []
        self._pool: ThreadPoolExecutor | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="optiondesk-notify")
        self._subscribe()
        self.bus.register(RearmUserAlert, self._cmd_rearm)
        self._registered = True
        self.last_heartbeat = self._mono()
        if self.evaluator.rules_of("heartbeat_missing"):
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_heartbeat(), name="notify:watchdog")
        self._running = True

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel pending deliveries, then wait (bounded) for the sender threads: a socket timeout ends each."""
        self._running = False
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        if self._registered:  # only the notifier that registered it (a send_test one never does)
            self.bus.unregister(RearmUserAlert)
            self._registered = False
        tasks = [t for t in self._tasks if not t.done()]
        if self._watchdog is not None:
            tasks.append(self._watchdog)
            self._watchdog = None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            threads = list(getattr(pool, "_threads", ()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(_join_all, threads, timeout), timeout + 1.0)

    async def reconfigure(self, config: NotifyConfig) -> None:
        """Apply edited rules and destinations now (the editor's Save): new subscriptions and counters;
        deliveries already under way finish with the old destination."""
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        self.config = config
        self.evaluator = RuleEvaluator(config.rules, self.notify)
        self.user_rules = UserRuleEvaluator(config.user_rules, self.notify, self._exposure)
        self.stats = {d.name: self.stats.get(d.name, DeliveryStats()) for d in config.destinations}
        self._sent_times = {d.name: self._sent_times.get(d.name, deque()) for d in config.destinations}
        if self._running:
            self._subscribe()
            if self.evaluator.rules_of("heartbeat_missing"):
                self._watchdog = asyncio.get_running_loop().create_task(self._watch_heartbeat(),
                                                                        name="notify:watchdog")

    def _subscribe(self) -> None:
        handlers = [*self.evaluator.handlers(), *self.user_rules.handlers()]
        self._subs = [self.bus.subscribe(t, h, name=f"notify:{h.__name__}") for t, h in handlers]
        self._subs.append(self.bus.subscribe(ClockTicked, self._on_heartbeat, name="notify:heartbeat"))

    def _cmd_rearm(self, cmd: RearmUserAlert) -> list[str]:
        """Arm a fired ``once`` alert again; an unknown name is refused with the reason (KeyError)."""
        names = self.user_rules.rearm(cmd.name)
        log.info("user alerts re-armed: %s", ", ".join(names) or "none were disarmed")
        return names

    # ---- heartbeat ------------------------------------------------------------------------------
    def _on_heartbeat(self, _ev: ClockTicked) -> None:
        self.last_heartbeat = self._mono()

    async def _watch_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_check_s)
            self.evaluator.heartbeat_missing(self._mono() - self.last_heartbeat, self._now())

    # ---- routing --------------------------------------------------------------------------------
    def destinations_for(self, n: Notification) -> list[Destination]:
        rule = next((r for r in self.config.all_rules() if r.name == n.rule), None)
        names = set(rule.destinations) if rule is not None and rule.destinations else None
        return [d for d in self.config.destinations if d.enabled and (names is None or d.name in names)
                and LEVEL_RANK[n.level] >= LEVEL_RANK[d.min_level]]

    def notify(self, n: Notification) -> None:
        """Route one notification (inline, never blocks): de-duplicate by rule, rate-limit per destination."""
        if not self._running:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # published from a worker thread: route on the loop, in order
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.notify, n)
            return
        nowm = self._mono()
        last = self._last_sent.get(n.rule)
        if n.dedupe and last is not None and nowm - last < self.config.dedupe_s:
            for d in self.destinations_for(n):
                self.stats[d.name].suppressed += 1
            log.info("notification %s suppressed (same rule within %.0f s)", n.rule, self.config.dedupe_s)
            return
        self._last_sent[n.rule] = nowm
        for d in self.destinations_for(n):
            sent = self._sent_times[d.name]
            while sent and nowm - sent[0] > 3600.0:
                sent.popleft()
            if len(sent) >= self.config.max_per_hour:
                self.stats[d.name].rate_limited += 1
                log.warning("notification %s to %s dropped: %d per hour reached", n.rule, d.name,
                            self.config.max_per_hour)
                continue
            sent.append(nowm)
            if isinstance(d, DesktopDestination):
                log.info("alert %s (%s): %s — %s", n.rule, n.level, n.title, n.message)
                self.bus.publish(Alert(level=n.level, source=f"notify:{n.rule}", message=f"{n.title} — {n.message}"))
                self.stats[d.name].sent += 1
                continue
            task = asyncio.get_running_loop().create_task(self._deliver(d, n), name=f"notify:{d.name}:{n.rule}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, d: Destination, n: Notification) -> None:
        error = ""
        for attempt in range(self.config.attempts):
            if attempt:
                await asyncio.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                await self._attempt(d, n)
            except DeliveryError as exc:
                error = str(exc)
                log.warning("notification %s to %s, attempt %d/%d: %s", n.rule, d.name, attempt + 1,
                            self.config.attempts, error)
                continue
            self.stats[d.name].sent += 1
            return
        self.stats[d.name].failed += 1
        self.bus.publish(Alert(level="error", source="notify", message=(
            f"notification {n.title!r} could not be delivered to {d.name} after {self.config.attempts} "
            f"attempts: {error}")))

    async def _attempt(self, d: Destination, n: Notification) -> None:
        if self._pool is None:
            raise DeliveryError("the notifier is stopped")
        if isinstance(d, EmailDestination):
            fn: Callable[..., None] = send_email
        elif isinstance(d, WebhookDestination):
            fn = send_webhook
        else:
            return
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, fn, d, n, self._secrets)
        try:
            await asyncio.wait_for(fut, d.timeout_s + 5.0)
        except TimeoutError as exc:
            raise DeliveryError(f"{d.name}: no answer within {d.timeout_s + 5.0:.0f} s") from exc
        except DeliveryError:
            raise
        except Exception as exc:  # a sender bug or a secret backend failure: report, never crash the task
            raise DeliveryError(redactor().redact(f"{d.name}: {type(exc).__name__}: {exc}")) from exc

    async def send_test(self, destination: str) -> str:
        """One attempt to ``destination`` now, bypassing de-duplication and rate limits (the "Send test"
        button). Returns a confirmation; raises :class:`NotifyError` with the reason."""
        d = next((x for x in self.config.destinations if x.name == destination), None)
        if d is None:
            raise NotifyError(f"no destination named {destination!r}")
        n = Notification(rule="test", kind="test", level="info", title="Optiondesk test notification",
                         message=f"This is a test of the {destination!r} destination.", ts=self._now())
        if isinstance(d, DesktopDestination):
            self.bus.publish(Alert(level="critical", source="notify:test", message=f"{n.title} — {n.message}"))
            return f"test notification shown on the desktop ({destination})"
        try:
            await self._attempt(d, n)
        except DeliveryError as exc:
            raise NotifyError(str(exc)) from exc
        return f"test notification delivered to {destination}"


def _join_all(threads: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


async def send_test(config: NotifyConfig, destination: str, *, secrets: Callable[[str], str | None],
                    now: Callable[[], datetime], bus: Any = None) -> str:
    """Test a destination of a configuration that is not (yet) the running one — the editor's unsaved
    settings — with its own short-lived sender thread."""
    notifier = Notifier(bus, config, secrets=secrets, now=now)
    d = next((x for x in config.destinations if x.name == destination), None)
    if isinstance(d, DesktopDestination) and bus is None:
        return "desktop notifications appear in the Alerts dock (no engine bus to test against)"
    notifier._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optiondesk-notify-test")
    try:
        return await notifier.send_test(destination)
    finally:
        await notifier.stop()
