"""Kill switch and trading state: ACTIVE / REDUCING / HALTED (docs/architecture.md §5), persisted in the store.

The kill switch wins under faults:

- ``trip(reason)`` halts **in memory first** (every new order is denied from that instant), makes one quick
  attempt to write HALTED (with the flatten intent), then cancels every open order — the store's and any other
  order the active broker reports for the account — then makes sure HALTED is stored. The early write is why a
  SIGKILL anywhere after the trip began still finds HALTED (and the flatten intent) at the next start. It is
  never retried before the cancels, and every write of the trip waits for a database another process holds
  busy at most ``_EARLY_WRITE_BUSY_MS`` (not the store's 10 s), so a full disk or a locked database cannot
  delay or stop the cancels: a failed write raises a critical alert and is retried with backoff while the
  in-memory HALTED holds (a crash before the write lands then loses HALTED, but the cancels are already out). With ``flatten=True`` every position is then closed with marketable limit orders through
  the order path (source ``kill_switch``: exempt from approval and the price collar, allowed while HALTED). The
  flatten intent is cleared only once no position is open: closing orders that end without closing (rejected,
  expired, cancelled) are sent again, and one resting unfilled is re-priced; a crash before the account is
  flat flattens at the next start.
- Trading-state writes are compare-and-set on the stored record: the engine's own REDUCING/ACTIVE changes
  (circuit breakers, reconciliation) are written only if nobody else wrote since the engine last read it;
  otherwise the engine adopts what is stored. HALTED is left only by an explicit reset (:meth:`reset` with
  ``confirmed=True`` or ``optiondesk kill --reset --yes``), never by another state change.
- Another process (``optiondesk kill``) trips it by writing the store (:func:`trip_in_store`); the running
  engine polls the record every ``kill_switch_poll_s`` (0.1 s) and acts within 200 ms.
- A record that cannot be read (bad JSON, wrong shape or types) means HALTED, with a critical alert naming it.
- Automatic trips: daily loss limit, drawdown limit, broker circuit breaker open longer than
  ``breaker_open_halt_s`` (REDUCING before that), reconciliation mismatch (called by the OMS).
Every change is audited (``audit`` and ``risk_events`` tables) and published as ``TradingStateChanged``
(plus ``KillSwitchTripped`` / ``KillSwitchReset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from engine.bus.events import AccountUpdated, Alert, KillSwitchReset, KillSwitchTripped, TradingStateChanged
from engine.risk.state import TradingState, TradingStatus
from engine.risk.trading_record import (
    KV_LEVEL,
    KV_PEAK,
    KV_SNAPSHOT,
    KV_STATE,
    StateRecord,
    now_iso,
    parse_record,
    read_raw,
    read_record,
    read_status,
    reset_in_store,
    short_busy_wait,
    trip_in_store,
    unreadable_record,
    write_record,
)

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.risk.config import RiskConfig
    from engine.risk.engine import RiskEngine
    from engine.store import Store

log = logging.getLogger(__name__)

#: the record's API, used through this module by the CLI, the risk service and the tests
__all__ = ["KV_LEVEL", "KV_PEAK", "KV_SNAPSHOT", "KV_STATE", "KillSwitch", "StateRecord", "limit_breaches",
           "parse_record", "read_record", "read_status", "reset_in_store", "trip_in_store", "write_record"]

#: how long the trip's early write (before the cancels) waits for a database another process holds busy
_EARLY_WRITE_BUSY_MS = 100
#: flatten follow-through: how often it looks, how long a closing order may rest unfilled before it is
#: re-priced, and after how many sends an alert says the account is still not flat
FLATTEN_POLL_S = 0.25
FLATTEN_REPRICE_S = 10.0
FLATTEN_ALERT_AFTER = 3


def limit_breaches(profile: Any, nl: float, day_pnl: float, peak: float | None) -> dict[str, tuple[bool, str]]:
    """The automatic trips' rule, shared by live trading and the backtester (one kernel): for ``daily_loss``
    and ``drawdown``, whether the account at net liquidation ``nl`` breaches the profile's limit, and why."""
    p = profile
    day_loss = -day_pnl
    dd = 1.0 - nl / peak if peak else 0.0
    return {
        "daily_loss": (day_loss >= p.max_daily_loss_pct * nl,
                       f"daily loss limit: lost ${day_loss:,.2f} today, limit {p.max_daily_loss_pct:.1%} of "
                       f"${nl:,.0f} = ${p.max_daily_loss_pct * nl:,.2f}"),
        "drawdown": (dd >= p.max_drawdown_pct,
                     f"drawdown limit: equity ${nl:,.0f} is {dd:.1%} below peak ${peak or 0:,.0f}, "
                     f"limit {p.max_drawdown_pct:.1%}"),
    }


class KillSwitch:
    """Owns the trading state. The OMS registers ``cancel_all`` / ``flatten`` actions with :meth:`bind`."""

    def __init__(self, store: Store, bus: Bus | None = None, config: RiskConfig | None = None) -> None:
        from engine.risk.config import RiskConfig

        self.store = store
        self.bus = bus
        self.config = config or RiskConfig()
        try:
            rec = read_record(store)
        except Exception as exc:  # the record cannot even be queried: that is not ACTIVE either
            rec = unreadable_record(None, f"could not be read ({exc})")
        self._status = rec.status
        self._raw = rec.raw  # the record text this engine last wrote or adopted
        self._flatten_pending = rec.flatten
        self._start_record: StateRecord | None = rec if not rec.readable else None
        self._unsaved = False  # HALTED holds in memory but is not on disk yet (write failed; being retried)
        self._cancel_all: Callable[[str], Awaitable[int]] | None = None
        self._flatten: Callable[[str], Awaitable[int]] | None = None
        self._flatten_progress: Callable[[], tuple[int, int]] | None = None
        self._cancel_flatten: Callable[[str], Awaitable[int]] | None = None
        self._flatten_task: asyncio.Task[None] | None = None
        self._reducing_causes: dict[str, str] = {}
        self._breaker_timers: dict[str, asyncio.TimerHandle] = {}
        self._poll_task: asyncio.Task[None] | None = None
        self._persist_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subs: list[Any] = []
        self._risk: RiskEngine | None = None
        self._trip_lock = asyncio.Lock()
        self._auto_kinds: set[str] = set()  # auto-trip causes of the current HALT
        self._suppressed: set[str] = set()  # breached limits the user reset past (re-arm once they clear)
        self.last_trip_cancelled = 0

    # ---- wiring ---------------------------------------------------------------------------------
    def bind(self, cancel_all: Callable[[str], Awaitable[int]],
             flatten: Callable[[str], Awaitable[int]] | None = None,
             flatten_progress: Callable[[], tuple[int, int]] | None = None,
             cancel_flatten: Callable[[str], Awaitable[int]] | None = None) -> None:
        """``flatten_progress()`` → (positions still open, flatten orders still working); with it a flatten
        intent is kept until the account is flat, re-sending (and re-pricing) closing orders that ended
        without closing — a rejected, expired or unfilled flatten order does not leave a position open."""
        self._cancel_all = cancel_all
        self._flatten = flatten
        self._flatten_progress = flatten_progress
        self._cancel_flatten = cancel_flatten

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
        """Start polling the store for trips by other processes; act on a persisted HALTED (and a stored
        flatten intent) at start."""
        self._poll_task = asyncio.get_running_loop().create_task(self._poll(), name="kill_switch:poll")

    async def stop(self) -> None:
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        for h in self._breaker_timers.values():
            h.cancel()
        self._breaker_timers.clear()
        tasks = [t for t in (self._poll_task, self._persist_task, *self._tasks) if t is not None]
        self._poll_task = self._persist_task = None
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._unsaved:  # one last attempt; the alert already said HALTED may not survive a restart
            self._persist_halt(alert=False)

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

    @property
    def flatten_pending(self) -> bool:
        """A flatten was asked for and has not been carried out yet (it is stored with HALTED)."""
        return self._flatten_pending

    @property
    def unsaved(self) -> bool:
        """HALTED holds in memory but could not be written yet (retrying)."""
        return self._unsaved

    def _show(self, status: TradingStatus) -> None:
        previous = self._status.state
        self._status = status
        if self.bus is not None and previous is not status.state:
            self.bus.publish(TradingStateChanged(state=status.state.value, previous=previous.value,
                                                 reason=status.reason))

    def _halt_in_memory(self, reason: str, by: str, flatten: bool) -> None:
        if flatten:
            self._flatten_pending = True
        self._show(TradingStatus(TradingState.HALTED, reason, by, now_iso(self.store)))

    def _persist_halt(self, *, alert: bool = True, quick: bool = False) -> bool:
        """Write the in-memory HALTED (best effort). On failure: alert once and retry with backoff (in the
        background: nothing waits for the retries). ``quick``: wait for a busy database only briefly — the
        trip's early write, which must not hold up the cancels behind it."""
        try:
            if quick:
                with short_busy_wait(self.store, _EARLY_WRITE_BUSY_MS):
                    _ok, rec = write_record(self.store, self._status, flatten=self._flatten_pending)
            else:
                _ok, rec = write_record(self.store, self._status, flatten=self._flatten_pending)
        except Exception as exc:  # a full disk, a locked database, anything: HALTED holds in memory and the write is retried
            log.exception("kill switch: could not save HALTED")
            if alert and not self._unsaved:
                self._alert("critical", f"trading state HALTED could not be saved ({exc}): HALTED holds in memory "
                                        "and every new order is denied; retrying the write")
            self._unsaved = True
            if self._persist_task is None or self._persist_task.done():
                with contextlib.suppress(RuntimeError):  # no running loop (stop() at interpreter exit)
                    self._persist_task = asyncio.get_running_loop().create_task(
                        self._retry_persist(), name="kill_switch:persist")
            return False
        self._raw = rec.raw
        if self._unsaved:
            self._unsaved = False
            self._alert("info", "trading state HALTED is saved now")
        return True

    async def _retry_persist(self) -> None:
        delay = 0.1
        while self._unsaved and self.tripped:
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
            self._persist_halt(quick=True)  # a locked database must not freeze the loop (and the cancels on it)

    def _change(self, state: TradingState, reason: str, by: str) -> None:
        """The engine's own REDUCING/ACTIVE changes: compare-and-set against the record it last saw."""
        new = TradingStatus(state, reason, by, now_iso(self.store))
        try:
            ok, rec = write_record(self.store, new, expect=self._raw)
        except Exception as exc:  # cannot save: still apply (the stored state is the stricter one or equal)
            log.exception("kill switch: could not save %s", state.value)
            self._alert("warning", f"trading state {state.value} could not be saved: {exc}")
            self._show(new)
            return
        if not ok:  # somebody else wrote since (optiondesk kill): theirs wins
            self._adopt(rec)
            return
        self._raw = rec.raw
        self._show(new)

    async def trip(self, reason: str, by: str = "user", flatten: bool = False) -> int:
        """HALT trading (in memory, then on disk before the cancels), cancel every open order, make sure HALTED is
        stored, optionally flatten. Returns the number cancelled."""
        if not reason:
            raise ValueError("a kill-switch trip needs a reason")
        self._halt_in_memory(reason, by, flatten)
        return await self._act(reason, by, flatten, persist=True)

    async def _act(self, reason: str, by: str, flatten: bool, *, persist: bool) -> int:
        """Write early (quick, no retry), cancel, then make sure HALTED is stored (retries in the background).

        The early write comes before the trip lock: a trip that arrives while an earlier one is still cancelling
        (a second click with flatten) is on disk at once, not after the earlier cancels."""
        saved_early = persist and self.tripped and self._persist_halt(quick=True)
        async with self._trip_lock:
            cancelled = 0
            if self._cancel_all is not None:
                try:
                    cancelled = await self._cancel_all(f"kill switch: {reason}")
                except Exception as exc:  # the kill switch must carry on to persist and flatten whatever cancel-all raised
                    log.exception("kill switch: cancel-all failed")
                    self._alert("critical", f"kill switch could not cancel every order: {exc}")
            if persist and self.tripped and (not saved_early or self._unsaved):
                self._persist_halt(quick=True)  # one more attempt now the cancels are out; retries go on behind
            flatten = (flatten or self._flatten_pending) and self.tripped
            if flatten and self._flatten is not None:
                if self._flatten_progress is None:  # no way to watch the result: sent is done
                    try:
                        await self._flatten(f"kill switch flatten: {reason}")
                    except Exception as exc:  # a failed flatten is alerted and its stored intent retried at the next start; the trip goes on
                        log.exception("kill switch: flatten failed")
                        self._alert("critical", f"kill switch could not flatten every position: {exc}; it is "
                                                "tried again at the next start")
                    else:
                        self._flatten_done()
                elif self._flatten_task is None or self._flatten_task.done():
                    # the first closing orders go out before the trip returns; a task follows them through
                    why = f"kill switch flatten: {reason}"
                    try:
                        sent = await self._flatten(why)
                    except Exception as exc:  # a failed send is alerted and retried by the follow-through task; the trip goes on
                        log.exception("kill switch: flatten failed")
                        self._alert("critical", f"kill switch could not send every closing order: {exc}; retrying")
                        sent = 0
                    self._flatten_task = asyncio.get_running_loop().create_task(
                        self._flatten_until_flat(why, sent), name="kill_switch:flatten")
                    self._tasks.add(self._flatten_task)
                    self._flatten_task.add_done_callback(self._tasks.discard)
            self.last_trip_cancelled = cancelled
            if self.bus is not None:
                self.bus.publish(KillSwitchTripped(reason=reason, by=by, flatten=flatten, cancelled_orders=cancelled))
            return cancelled

    async def _flatten_until_flat(self, reason: str, first_sent: int = 0) -> None:
        """Send the closing orders, then watch: flat → the intent is cleared; closing orders that ended
        with positions still open (rejected, expired, cancelled) → send again; closing orders resting
        unfilled for ``FLATTEN_REPRICE_S`` → cancel and send again at the current natural. Runs while
        HALTED with the intent pending; a reset or stop ends it (a stored intent resumes at the next start)."""
        assert self._flatten is not None and self._flatten_progress is not None
        loop = asyncio.get_running_loop()
        attempts = 1
        resting_since: float | None = loop.time() if first_sent else None
        while self.tripped and self._flatten_pending:
            open_positions, working = self._flatten_progress()
            if open_positions == 0:
                self._flatten_done()
                self._alert("info", "kill switch flatten complete: no position is open")
                return
            if working and resting_since is not None and loop.time() - resting_since >= FLATTEN_REPRICE_S:
                if self._cancel_flatten is not None:
                    with contextlib.suppress(Exception):  # a failed cancel is retried by the OMS itself
                        await self._cancel_flatten(f"{reason}: re-pricing")
                resting_since = None
            elif not working:
                if attempts == FLATTEN_ALERT_AFTER:
                    self._alert("critical", f"kill switch flatten: {open_positions} position(s) still open after "
                                            f"{attempts} attempts; still trying")
                attempts += 1
                try:
                    sent = await self._flatten(reason)
                except Exception as exc:  # whatever one attempt raised, the follow-through keeps trying until the account is flat
                    log.exception("kill switch: flatten failed")
                    self._alert("critical", f"kill switch could not send every closing order: {exc}; retrying")
                    sent = 0
                resting_since = loop.time() if sent else None
                if not sent:
                    await asyncio.sleep(min(FLATTEN_POLL_S * 2 ** min(attempts, 5), FLATTEN_REPRICE_S))
                    continue
            await asyncio.sleep(FLATTEN_POLL_S)

    def _flatten_done(self) -> None:
        self._flatten_pending = False
        if self._unsaved:
            return  # the retried write carries flatten=False now
        try:
            ok, rec = write_record(self.store, self._status, flatten=False, keep_flatten=False, expect=self._raw)
        except Exception:  # the intent stays stored and runs again at the next start: safe, so log and go on
            log.exception("kill switch: could not clear the stored flatten intent")
            return
        if ok:
            self._raw = rec.raw  # on a conflict the poll adopts the newer record (a new request)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reset(self, by: str = "user", confirmed: bool = False) -> TradingStatus:
        """Return to ACTIVE. Requires an explicit confirmation (the GUI's dialog sets ``confirmed``).

        The reset is written before it takes effect: when the store cannot be written, it raises and trading
        stays HALTED (a reset that would not survive a restart is not a reset)."""
        if not confirmed:
            raise ValueError("resetting the kill switch needs confirmed=True (an explicit user confirmation)")
        new = TradingStatus(TradingState.ACTIVE, "reset", by, now_iso(self.store))
        _ok, rec = write_record(self.store, new, reset=True)
        self._raw = rec.raw
        self._unsaved = False
        self._flatten_pending = False
        self._after_reset()
        self._show(new)
        if self.bus is not None:
            self.bus.publish(KillSwitchReset(by=by))
        return new

    def _after_reset(self) -> None:
        self._reducing_causes.clear()
        self._suppressed |= self._auto_kinds  # still-breached auto limits wait until they clear once
        self._auto_kinds.clear()

    def set_reducing(self, cause: str, reason: str, by: str = "system") -> None:
        """Enter REDUCING for ``cause`` (no-op when HALTED). Cleared by :meth:`clear_reducing` with the cause."""
        self._reducing_causes[cause] = reason
        if self._status.state is TradingState.ACTIVE:
            self._change(TradingState.REDUCING, reason, by)

    def clear_reducing(self, cause: str, by: str = "system") -> None:
        self._reducing_causes.pop(cause, None)
        if self._status.state is TradingState.REDUCING and not self._reducing_causes:
            self._change(TradingState.ACTIVE, f"{cause} cleared", by)

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
        breaches = limit_breaches(risk.profile, nl, float(acct.day_pnl), risk.peak_equity)
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
        self._halt_in_memory(reason, "risk", False)
        self._alert("critical", f"kill switch tripped: {reason}")
        self._spawn(self._act(reason, "risk", False, persist=True), "kill_switch:auto")

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
        if self._start_record is not None:  # damaged at start: HALTED, said loudly, rewritten readable
            self._alert("critical", f"{self._status.reason}; trading is HALTED until an explicit reset")
            self._start_record = None
            await self._act(self._status.reason, self._status.by or "system", False, persist=True)
        elif self.tripped:  # persisted HALTED at start: nothing may stay working; a stored flatten runs now
            await self._act(self._status.reason, self._status.by or "restart", self._flatten_pending, persist=False)
        while True:
            await asyncio.sleep(self.config.kill_switch_poll_s)
            try:
                self.check_store()
            except Exception:  # the poll loop must outlive any one failed read, or another process's trip would go unseen
                log.exception("kill switch: polling the store failed")

    def check_store(self) -> bool:
        """Adopt a record written by another process. Returns True when the stored record changed."""
        raw = read_raw(self.store)
        if raw == self._raw:
            return False
        self._adopt(parse_record(raw))
        return True

    def _adopt(self, rec: StateRecord) -> None:
        self._raw = rec.raw
        if not rec.readable:
            self._halt_in_memory(rec.status.reason, "system", False)
            self._alert("critical", f"{rec.status.reason}; trading is HALTED until an explicit reset")
            self._spawn(self._act(rec.status.reason, "system", False, persist=True), "kill_switch:unreadable")
            return
        st = rec.status
        if st.state is TradingState.HALTED:
            self._flatten_pending = self._flatten_pending or rec.flatten
            self._unsaved = False
            self._show(st)
            self._spawn(self._act(st.reason, st.by or "external", rec.flatten, persist=False), "kill_switch:external")
            return
        if self.tripped and not rec.reset:
            # HALTED is left only by an explicit reset: whatever else was written, HALTED goes back
            self._spawn(self._rewrite_halt(), "kill_switch:rehalt")
            return
        was_tripped = self.tripped
        if rec.reset:
            self._unsaved = False
            self._flatten_pending = False
            self._after_reset()
        self._show(st)
        if was_tripped and st.state is TradingState.ACTIVE and self.bus is not None:
            self.bus.publish(KillSwitchReset(by=st.by or "external"))

    async def _rewrite_halt(self) -> None:
        self._persist_halt()
