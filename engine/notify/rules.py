"""Alert rules evaluated from bus events, on the loop.

Every handler is a plain function (inline on ``publish``) doing O(1) work: compare a number, append a
timestamp. A rule fires on the *edge* — when its condition becomes true — and re-arms when the condition
clears, so a drawdown that stays at 22 % is one notification, not one per account update. Time windows
(rejection spike, feed stall) use event time from the engine clock, so they behave the same on the simulated
market; the missing-heartbeat watchdog is the exception (see :class:`engine.notify.notifier.Notifier`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.bus.events import (
    AccountUpdated,
    Alert,
    ClockTicked,
    KillSwitchReset,
    KillSwitchTripped,
    OrderRejected,
    QuotesUpdated,
    QuoteUpdated,
    StrategyDisabled,
    UnderlyingUpdated,
)
from engine.bus.messages import Event
from engine.notify.config import AlertRule
from engine.risk.regime import RegimeChanged, sizing_regime

LEVEL_RANK = {"debug": 0, "info": 1, "warning": 2, "error": 3, "critical": 4}


@dataclass(frozen=True, slots=True)
class Notification:
    """What a rule says, ready for any destination. ``rule`` is the de-duplication key."""

    rule: str
    kind: str
    level: str
    title: str
    message: str
    ts: datetime
    #: False for a trader's own alerts: each fires on a new edge they asked for, so time-based de-duplication
    #: would swallow the second crossing the rule exists to report (the per-hour limit still applies)
    dedupe: bool = True

    def text(self) -> str:
        return f"[{self.level.upper()}] {self.title}\n{self.message}\n({self.ts.isoformat(timespec='seconds')})"


Emit = Callable[[Notification], None]


class RuleEvaluator:
    """Turns bus events into :class:`Notification` s through the enabled rules of the settings."""

    def __init__(self, rules: list[AlertRule], emit: Emit) -> None:
        self._emit = emit
        self.rules = [r for r in rules if r.enabled]
        self._by_kind: dict[str, list[AlertRule]] = {}
        for r in self.rules:
            self._by_kind.setdefault(r.kind, []).append(r)
        self._fired: set[str] = set()
        self._rejections: dict[str, deque[datetime]] = {r.name: deque() for r in self._by_kind.get("rejection_spike", [])}
        self.peak_equity: float | None = None
        self.last_quote: datetime | None = None
        self._open_since: datetime | None = None

    def handlers(self) -> list[tuple[type[Event], Callable[[Any], None]]]:
        """(event type, handler) pairs to subscribe; only what an enabled rule needs."""
        kinds = set(self._by_kind)
        out: list[tuple[type[Event], Callable[[Any], None]]] = []
        if kinds & {"drawdown", "daily_loss"}:
            out.append((AccountUpdated, self.on_account))
        if "rejection_spike" in kinds:
            out.append((OrderRejected, self.on_rejected))
        if "feed_stall" in kinds:
            out += [(QuotesUpdated, self.on_quote), (QuoteUpdated, self.on_quote),
                    (UnderlyingUpdated, self.on_quote), (ClockTicked, self.on_tick)]
        if "kill_switch" in kinds:
            out += [(KillSwitchTripped, self.on_trip), (KillSwitchReset, self.on_reset)]
        if "regime_high_vol" in kinds:
            out.append((RegimeChanged, self.on_regime))
        if "strategy_disabled" in kinds:
            out += [(StrategyDisabled, self.on_strategy_disabled), (Alert, self.on_alert)]
        return out

    # ---- firing ---------------------------------------------------------------------------------
    def _edge(self, rule: AlertRule, active: bool, ts: datetime, title: str, message: str) -> None:
        if not active:
            self._fired.discard(rule.name)
            return
        if rule.name in self._fired:
            return
        self._fired.add(rule.name)
        self.fire(rule, ts, title, message)

    def fire(self, rule: AlertRule, ts: datetime, title: str, message: str) -> None:
        self._emit(Notification(rule=rule.name, kind=rule.kind, level=rule.level, title=title, message=message, ts=ts))

    def rules_of(self, kind: str) -> list[AlertRule]:
        return self._by_kind.get(kind, [])

    # ---- handlers -------------------------------------------------------------------------------
    def on_account(self, ev: AccountUpdated) -> None:
        acct = ev.account
        nl = float(acct.net_liquidation)
        if not math.isfinite(nl) or nl <= 0:
            return
        self.peak_equity = nl if self.peak_equity is None else max(self.peak_equity, nl)
        dd = 1.0 - nl / self.peak_equity
        for r in self.rules_of("drawdown"):
            self._edge(r, dd >= r.threshold, ev.ts, f"Drawdown {dd:.1%}",
                       f"Equity ${nl:,.0f} is {dd:.1%} below its peak ${self.peak_equity:,.0f} "
                       f"(rule {r.name}: {r.threshold:.0%}).")
        loss = -float(acct.day_pnl)
        for r in self.rules_of("daily_loss"):
            self._edge(r, loss >= r.threshold * nl, ev.ts, f"Daily loss ${loss:,.0f}",
                       f"Lost ${loss:,.2f} today, {loss / nl:.1%} of net liquidation ${nl:,.0f} "
                       f"(rule {r.name}: {r.threshold:.1%}).")

    def on_rejected(self, ev: OrderRejected) -> None:
        for r in self.rules_of("rejection_spike"):
            q = self._rejections[r.name]
            q.append(ev.ts)
            while q and (ev.ts - q[0]).total_seconds() > r.window_s:
                q.popleft()
            n = int(r.threshold)
            self._edge(r, len(q) >= n, ev.ts, f"{len(q)} order rejections",
                       f"{len(q)} orders rejected by the broker within {r.window_s:.0f} s (rule {r.name}: {n}); "
                       f"latest on {ev.order.broker}: {ev.order.reason or 'no reason given'}.")

    def on_quote(self, ev: Event) -> None:
        self.last_quote = ev.ts

    def on_tick(self, ev: ClockTicked) -> None:
        if not ev.market_open:
            self._open_since = None
            for r in self.rules_of("feed_stall"):
                self._fired.discard(r.name)
            return
        if self._open_since is None:
            self._open_since = ev.ts
        since = self.last_quote if self.last_quote is not None and self.last_quote >= self._open_since else self._open_since
        quiet = (ev.ts - since).total_seconds()
        for r in self.rules_of("feed_stall"):
            self._edge(r, quiet >= r.threshold, ev.ts, "Market data stalled",
                       f"No quote for {quiet:.0f} s while the market is open (rule {r.name}: {r.threshold:.0f} s).")

    def on_trip(self, ev: KillSwitchTripped) -> None:
        for r in self.rules_of("kill_switch"):
            self._edge(r, True, ev.ts, "Kill switch tripped",
                       f"Trading HALTED by {ev.by}: {ev.reason}. {ev.cancelled_orders} working orders cancelled"
                       + ("; flattening positions." if ev.flatten else "."))

    def on_reset(self, ev: KillSwitchReset) -> None:
        for r in self.rules_of("kill_switch"):
            self._fired.discard(r.name)

    def on_regime(self, ev: RegimeChanged) -> None:
        high = sizing_regime(ev.regime) == "high_vol"
        for r in self.rules_of("regime_high_vol"):
            self._edge(r, high, ev.ts, f"Regime: {ev.regime}",
                       f"Market regime turned {ev.regime} (was {ev.previous or 'unknown'}); position sizes shrink.")

    def on_strategy_disabled(self, ev: StrategyDisabled) -> None:
        for r in self.rules_of("strategy_disabled"):
            self.fire(r, ev.ts, f"Strategy {ev.strategy_id} disabled", ev.reason or "disabled")

    def on_alert(self, ev: Alert) -> None:
        """A strategy host that reports through ``Alert(source="strategy:<id>", ...)`` with "disabled"."""
        if ev.source.startswith("strategy") and "disabled" in ev.message.lower() \
                and LEVEL_RANK.get(ev.level, 0) >= LEVEL_RANK["warning"]:
            for r in self.rules_of("strategy_disabled"):
                self.fire(r, ev.ts, f"{ev.source} disabled", ev.message)

    def heartbeat_missing(self, silent_s: float, ts: datetime) -> None:
        """Called by the notifier's watchdog with the seconds since the last heartbeat."""
        for r in self.rules_of("heartbeat_missing"):
            self._edge(r, silent_s >= r.threshold, ts, "Engine heartbeat missing",
                       f"No engine heartbeat for {silent_s:.0f} s (rule {r.name}: {r.threshold:.0f} s): the "
                       "engine loop is stalled or its clock stopped.")
