"""Kill switch and trading state: ACTIVE / REDUCING / HALTED (DESIGN.md §5), persisted in the store.

- ``trip(reason)`` writes HALTED to the store *first*, then cancels every working order at once and,
  with ``flatten=True``, closes every position with marketable limit orders that still take the order path
  (source ``kill_switch``: exempt from approval and the price collar, allowed while HALTED).
- A tripped switch stays tripped across restarts; only :meth:`reset` with ``confirmed=True`` returns to ACTIVE.
- Another process (``optiondesk kill``) trips it by writing the store (:func:`trip_in_store`); the running
  engine polls the store every ``kill_switch_poll_s`` (≤ 1 s) and then cancels everything itself.
- Automatic trips: daily loss limit, drawdown limit, broker circuit breaker open longer than
  ``breaker_open_halt_s`` (REDUCING before that), reconciliation mismatch (called by the OMS).
Every change is audited (``audit`` and ``risk_events`` tables) and published as ``TradingStateChanged``
(plus ``KillSwitchTripped`` / ``KillSwitchReset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.bus.events import AccountUpdated, Alert, KillSwitchReset, KillSwitchTripped, TradingStateChanged
from engine.risk.state import TradingState, TradingStatus

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.risk.config import RiskConfig
    from engine.risk.engine import RiskEngine
    from engine.store import Store

log = logging.getLogger(__name__)

KV_STATE = "risk.trading_state"
KV_PEAK = "risk.peak_equity"
KV_LEVEL = "risk.level"
KV_SNAPSHOT = "risk.snapshot"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def read_status(store: Store) -> TradingStatus:
    raw = store.kv.get(KV_STATE)
    if not raw:
        return TradingStatus(TradingState.ACTIVE)
    try:
        return TradingStatus(TradingState(raw["state"]), raw.get("reason", ""), raw.get("by", ""),
                             raw.get("since", ""))
    except (KeyError, ValueError, TypeError):
        # an unreadable record must never silently mean ACTIVE
        return TradingStatus(TradingState.HALTED, f"unreadable trading-state record {raw!r}", "system")


def _write_status(store: Store, status: TradingStatus, *, seq: int, flatten: bool = False) -> None:
    with store.transaction():
        store.kv.set(KV_STATE, {"state": status.state.value, "reason": status.reason, "by": status.by,
                                "since": status.since, "seq": seq, "flatten": flatten})
        store.audit.record(status.by or "system", f"trading_state:{status.state.value}",
                           {"reason": status.reason, "flatten": flatten})
        store.execute("INSERT INTO risk_events(ts, kind, order_id, detail) VALUES (?,?,?,?)",
                      (_now_iso(), f"trading_state:{status.state.value}", None,
                       json.dumps({"reason": status.reason, "by": status.by, "flatten": flatten})))


def trip_in_store(store: Store, reason: str, by: str = "cli", flatten: bool = False) -> TradingStatus:
    """Trip the switch from any process sharing the database (the running engine acts within 1 s)."""
    raw = store.kv.get(KV_STATE) or {}
    seq = int(raw.get("seq", 0)) + 1 if isinstance(raw, dict) else 1
    status = TradingStatus(TradingState.HALTED, reason, by, _now_iso())
    _write_status(store, status, seq=seq, flatten=flatten)
    return status


def reset_in_store(store: Store, by: str = "cli") -> TradingStatus:
    """Reset to ACTIVE from another process (explicit: the CLI requires ``--yes``)."""
    raw = store.kv.get(KV_STATE) or {}
    seq = int(raw.get("seq", 0)) + 1 if isinstance(raw, dict) else 1
    status = TradingStatus(TradingState.ACTIVE, "reset", by, _now_iso())
    _write_status(store, status, seq=seq)
    return status


class KillSwitch:
    """Owns the trading state. The OMS registers ``cancel_all`` / ``flatten`` actions with :meth:`bind`."""

    def __init__(self, store: Store, bus: Bus | None = None, config: RiskConfig | None = None) -> None:
        from engine.risk.config import RiskConfig

        self.store = store
        self.bus = bus
        self.config = config or RiskConfig()
        self._status = read_status(store)
        raw = store.kv.get(KV_STATE) or {}
        self._seq = int(raw.get("seq", 0)) if isinstance(raw, dict) else 0
        self._cancel_all: Callable[[str], Awaitable[int]] | None = None
        self._flatten: Callable[[str], Awaitable[int]] | None = None
        self._reducing_causes: dict[str, str] = {}
        self._breaker_timers: dict[str, asyncio.TimerHandle] = {}
        self._poll_task: asyncio.Task[None] | None = None
        self._subs: list[Any] = []
        self._risk: RiskEngine | None = None
        self._trip_lock = asyncio.Lock()
        self._auto_kinds: set[str] = set()  # auto-trip causes of the current HALT
        self._suppressed: set[str] = set()  # breached limits the user reset past (re-arm once they clear)
        self.last_trip_cancelled = 0

    # ---- wiring ---------------------------------------------------------------------------------
    def bind(self, cancel_all: Callable[[str], Awaitable[int]],
             flatten: Callable[[str], Awaitable[int]] | None = None) -> None:
        self._cancel_all = cancel_all
        self._flatten = flatten

    def watch(self, risk: RiskEngine | None = None) -> None:
        """Subscribe to account updates (daily loss / drawdown) and broker circuit breakers."""
        self._risk = risk
        if self.bus is None:
            return
        from engine.brokers.circuit_breaker import CircuitBreakerStateChanged

        self._subs = [
            self.bus.subscribe(AccountUpdated, self._on_account, name="kill_switch:account"),
            self.bus.subscribe(CircuitBreakerStateChanged, self._on_breaker, name="kill_switch:breaker"),
        ]
        if risk is not None:
            peak = self.store.kv.get(KV_PEAK)
            if isinstance(peak, int | float) and peak > 0:
                risk.peak_equity = float(peak)

    async def start(self) -> None:
        """Start polling the store for trips by other processes; act on a persisted HALTED at start."""
        self._poll_task = asyncio.get_running_loop().create_task(self._poll(), name="kill_switch:poll")

    async def stop(self) -> None:
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        for h in self._breaker_timers.values():
            h.cancel()
        self._breaker_timers.clear()
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None

    # ---- state ----------------------------------------------------------------------------------
    @property
    def state(self) -> TradingState:
        return self._status.state

    @property
    def status(self) -> TradingStatus:
        return self._status

    @property
    def tripped(self) -> bool:
        return self._status.state is TradingState.HALTED

    def _set(self, state: TradingState, reason: str, by: str, *, flatten: bool = False) -> TradingStatus:
        previous = self._status.state
        self._seq += 1
        self._status = TradingStatus(state, reason, by, _now_iso())
        _write_status(self.store, self._status, seq=self._seq, flatten=flatten)  # persist before acting
        if self.bus is not None and previous is not state:
            self.bus.publish(TradingStateChanged(state=state.value, previous=previous.value, reason=reason))
        return self._status

    async def trip(self, reason: str, by: str = "user", flatten: bool = False) -> int:
        """HALT trading, cancel every working order, optionally flatten. Returns the number cancelled."""
        if not reason:
            raise ValueError("a kill-switch trip needs a reason")
        self._set(TradingState.HALTED, reason, by, flatten=flatten)
        return await self._act(reason, by, flatten)

    async def _act(self, reason: str, by: str, flatten: bool) -> int:
        async with self._trip_lock:
            cancelled = 0
            if self._cancel_all is not None:
                try:
                    cancelled = await self._cancel_all(f"kill switch: {reason}")
                except Exception as exc:
                    log.exception("kill switch: cancel-all failed")
                    self._alert("critical", f"kill switch could not cancel every order: {exc}")
            if flatten and self._flatten is not None:
                try:
                    await self._flatten(f"kill switch flatten: {reason}")
                except Exception as exc:
                    log.exception("kill switch: flatten failed")
                    self._alert("critical", f"kill switch could not flatten every position: {exc}")
            self.last_trip_cancelled = cancelled
            if self.bus is not None:
                self.bus.publish(KillSwitchTripped(reason=reason, by=by, flatten=flatten, cancelled_orders=cancelled))
            return cancelled

    async def reset(self, by: str = "user", confirmed: bool = False) -> TradingStatus:
        """Return to ACTIVE. Requires an explicit confirmation (the GUI's dialog sets ``confirmed``)."""
        if not confirmed:
            raise ValueError("resetting the kill switch needs confirmed=True (an explicit user confirmation)")
        self._reducing_causes.clear()
        self._suppressed |= self._auto_kinds  # still-breached auto limits wait until they clear once
        self._auto_kinds.clear()
        st = self._set(TradingState.ACTIVE, "reset", by)
        if self.bus is not None:
            self.bus.publish(KillSwitchReset(by=by))
        return st

    def set_reducing(self, cause: str, reason: str, by: str = "system") -> None:
        """Enter REDUCING for ``cause`` (no-op when HALTED). Cleared by :meth:`clear_reducing` with the cause."""
        self._reducing_causes[cause] = reason
        if self._status.state is TradingState.ACTIVE:
            self._set(TradingState.REDUCING, reason, by)

    def clear_reducing(self, cause: str, by: str = "system") -> None:
        self._reducing_causes.pop(cause, None)
        if self._status.state is TradingState.REDUCING and not self._reducing_causes:
            self._set(TradingState.ACTIVE, f"{cause} cleared", by)

    # ---- automatic trips ------------------------------------------------------------------------
    def _on_account(self, ev: AccountUpdated) -> None:
        """Auto-trip on the daily-loss and drawdown limits.

        After a manual reset, a limit that is *still* breached does not trip again until it has cleared once
        (otherwise the user could never close positions by hand); the pre-trade checks keep denying every
        order that would add risk meanwhile.
        """
        risk = self._risk
        if risk is None:
            return
        acct = ev.account
        nl = float(acct.net_liquidation)
        if not math.isfinite(nl) or nl <= 0:
            return
        if risk.peak_equity is None or nl > risk.peak_equity:
            risk.peak_equity = nl
            self.store.kv.set(KV_PEAK, nl)
        p = risk.profile
        day_loss = -float(acct.day_pnl)
        dd = 1.0 - nl / risk.peak_equity if risk.peak_equity else 0.0
        breaches = {
            "daily_loss": (day_loss >= p.max_daily_loss_pct * nl,
                           f"daily loss limit: lost ${day_loss:,.2f} today, limit {p.max_daily_loss_pct:.1%} of "
                           f"${nl:,.0f} = ${p.max_daily_loss_pct * nl:,.2f}"),
            "drawdown": (dd >= p.max_drawdown_pct,
                         f"drawdown limit: equity ${nl:,.0f} is {dd:.1%} below peak ${risk.peak_equity:,.0f}, "
                         f"limit {p.max_drawdown_pct:.1%}"),
        }
        for kind, (breached, reason) in breaches.items():
            if not breached:
                self._suppressed.discard(kind)
                continue
            if kind in self._suppressed or self.tripped:
                continue
            self._auto_kinds.add(kind)
            self._spawn_trip(reason)
            return

    def _spawn_trip(self, reason: str) -> None:
        if self.tripped:
            return
        self._set(TradingState.HALTED, reason, "risk")
        self._alert("critical", f"kill switch tripped: {reason}")
        asyncio.get_running_loop().create_task(self._act(reason, "risk", False), name="kill_switch:auto")

    def _on_breaker(self, ev: Any) -> None:
        name = ev.breaker
        cause = f"breaker:{name}"
        if ev.state == "open":
            self.set_reducing(cause, f"circuit breaker {name} open: {ev.reason}")
            if name not in self._breaker_timers:
                loop = asyncio.get_running_loop()
                self._breaker_timers[name] = loop.call_later(
                    self.config.breaker_open_halt_s, self._breaker_expired, name)
        elif ev.state == "closed":
            h = self._breaker_timers.pop(name, None)
            if h is not None:
                h.cancel()
            self.clear_reducing(cause)
        # half_open: keep REDUCING and the timer; the probe decides

    def _breaker_expired(self, name: str) -> None:
        self._breaker_timers.pop(name, None)
        self._spawn_trip(f"circuit breaker {name} open for more than {self.config.breaker_open_halt_s:.0f}s")

    def _alert(self, level: str, message: str) -> None:
        if self.bus is not None:
            self.bus.publish(Alert(level=level, message=message, source="kill switch"))

    # ---- cross-process --------------------------------------------------------------------------
    async def _poll(self) -> None:
        if self.tripped:  # persisted HALTED at start: make sure nothing is left working
            await self._act(self._status.reason, self._status.by or "restart", False)
        while True:
            await asyncio.sleep(self.config.kill_switch_poll_s)
            try:
                self.check_store()
            except Exception:
                log.exception("kill switch: polling the store failed")

    def check_store(self) -> bool:
        """Adopt a state written by another process. Returns True when something changed."""
        raw = self.store.kv.get(KV_STATE) or {}
        seq = int(raw.get("seq", 0)) if isinstance(raw, dict) else 0
        if seq <= self._seq:
            return False
        previous = self._status.state
        self._seq = seq
        self._status = read_status(self.store)
        if self.bus is not None and previous is not self._status.state:
            self.bus.publish(TradingStateChanged(state=self._status.state.value, previous=previous.value,
                                                 reason=self._status.reason))
        if self._status.state is TradingState.HALTED:
            flatten = bool(raw.get("flatten", False)) if isinstance(raw, dict) else False
            asyncio.get_running_loop().create_task(
                self._act(self._status.reason, self._status.by or "external", flatten), name="kill_switch:external")
        elif self._status.state is TradingState.ACTIVE and previous is not TradingState.ACTIVE and self.bus:
            self.bus.publish(KillSwitchReset(by=self._status.by or "external"))
        return True
