"""StrategyHost: runs the strategies of the settings inside the engine, one :class:`StrategyRunner` each, on the
engine loop — the same runner the live/backtest parity test drives, so a hosted strategy trades exactly as it
backtests. Owned by the ``Engine`` (``engine.strategies``), started after the order path, history and surfaces,
stopped before them.

**Orders.** Every intent goes down the one order path as ``SubmitOrder`` (OrderFactory → RiskEngine →
ApprovalGate → ModeRouter → broker): risk checks, the approval mode and the kill switch apply to strategy orders
as to manual ones. Orders carry ``strategy_id`` and a tag ``<trade>:open`` / ``<trade>:close:<reason>``.

**States** (``StrategyStatus.state``): ``running`` (sees chains and the clock, sends orders), ``paused`` (sends
nothing and sees no market data; its books keep following its orders' reports), ``stopped`` (no runner; the
books are kept in the store), ``disabled`` (its code raised, or its settings entry is invalid; an alert says
why). A kill-switch trip pauses every running strategy; they run again only by ``StartStrategy`` after the
kill switch is reset. A strategy whose account disagrees with the engine's mode is paused until they agree.
The state chosen by a command survives a restart; a settings entry with ``enabled = false`` is ``stopped``.

**Commands** (engine/bus/commands.py, handled in :mod:`engine.strategies.host_commands`; each raises
:class:`StrategyCommandError` with the reason when refused, and each is audited): ``StartStrategy(strategy_id)``, ``PauseStrategy(strategy_id, reason)``,
``StopStrategy(strategy_id, cancel_orders=True)``, ``SetStrategyParams(strategy_id, params)`` (validated by the
strategy's parameter model; until restart — the settings file keeps the saved ones) and
``SetStrategyMode(strategy_id, mode, confirm_account)`` (live needs ``confirm_account`` equal to a connected
live broker's account id, and no open trades or working orders).

**Events** (engine/bus/events.py): ``StrategyStateChanged(strategy_id, name, state, previous, mode, reason)``,
``StrategySignal(strategy_id, action, confidence, reason, tag)`` for every open/close decision,
``StrategyDisabled(strategy_id, reason)`` (the notifier's ``strategy_disabled`` rule) plus an ``Alert``.

**Reads** for views: :meth:`StrategyHost.statuses` / :meth:`status` (state, mode, last signal, open trades,
working orders, P&L today and total), :meth:`log` (the strategy's own event log), :meth:`report` (orders, fills
and trades; ``optiondesk trade --json``).

**Attribution.** Fills of a strategy's orders, and settlement fills of contracts it holds, are booked in its
own :class:`~engine.backtest.ledger.TradeLedger` (the backtest's bookkeeping) and stored in ``strategy_fills``.
P&L total = Σ trade cash flows − fees + open holdings at mid; P&L today = total − total at the day's first look.

**Budget** (:mod:`engine.strategies.host_budget`). :meth:`check_budget` is the risk engine's ``strategy_budget``
check: orders of a strategy must go to the account its mode names (every order), and opening orders must fit its
budget — max open trades, capital (Σ max loss of its active trades + this order) and max loss per day. The
denial names the strategy and limit.

**Persistence** (:mod:`engine.strategies.host_books`, with the attribution). A strategy's state (its books via
:meth:`Strategy.state`, working orders, seen fills, budget bookkeeping) is written to ``strategy_state`` at once after an order report or when it sent orders, and within
``WRITE_EVERY_S`` when market data alone changed it; at the next start it is restored, so a restart in the
middle of a trade manages that trade's exit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from engine.backtest.ledger import TradeLedger
from engine.bus import Bus
from engine.bus.commands import (
    PauseStrategy,
    SetStrategyMode,
    SetStrategyParams,
    StartStrategy,
    StopStrategy,
)
from engine.bus.events import (
    Alert,
    ClockTicked,
    KillSwitchTripped,
    ModeChanged,
    OrderEvent,
    StrategyDisabled,
    StrategySignal,
    StrategyStateChanged,
)
from engine.clock import Clock
from engine.credentials import mask_account
from engine.model import Fill, Instrument, Order, OrderIntent
from engine.strategies import host_books, host_budget, host_commands
from engine.strategies.base import ManagedStrategy, Strategy, market_date
from engine.strategies.config import StrategyEntry
from engine.strategies.host_books import ALERT_SOURCE
from engine.strategies.host_commands import StrategyCommandError as StrategyCommandError
from engine.strategies.live import LiveContext, StrategyRunner, sizing_from_profile

log = logging.getLogger(__name__)

STATES = ("stopped", "running", "paused", "disabled")
#: at most this often (wall seconds) a strategy's state changed by market data alone is written
WRITE_EVERY_S = 1.0


@dataclass
class Hosted:
    """One strategy of the settings and everything the host keeps about it."""

    strategy_id: str
    name: str
    entry: StrategyEntry | None  # None: the settings entry was invalid
    state: str = "stopped"
    reason: str = ""
    mode: str = "paper"
    live_account: str = ""
    strategy: Strategy | None = None
    runner: StrategyRunner | None = None
    ledger: TradeLedger = field(default_factory=TradeLedger)
    fills: list[Fill] = field(default_factory=list)
    fill_ids: set[str] = field(default_factory=set)
    orders: dict[str, Order] = field(default_factory=dict)
    instruments: dict[str, Instrument] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    entry_risk: dict[str, float] = field(default_factory=dict)  # trade tag -> max loss $ at its entry check
    day: str = ""
    day_start_total: float = 0.0
    paused_by: str = ""  # "kill_switch" | "mode" | "user"
    last_signal: StrategySignal | None = None
    events: deque[tuple[datetime, str]] = field(default_factory=lambda: deque(maxlen=200))
    persisted: str = ""
    dirty: bool = False  # changed by market data only, not stored yet (flushed within WRITE_EVERY_S)
    last_write: float = -1e18  # time.monotonic() of the last write
    payload: dict[str, Any] = field(default_factory=dict)  # the last stored payload (restored at start)


@dataclass(frozen=True)
class StrategyStatus:
    """What the Strategies panel shows for one strategy."""

    strategy_id: str
    name: str
    state: str
    mode: str
    reason: str
    open_trades: int
    working_orders: int
    pnl_today: float
    pnl_total: float
    last_signal: StrategySignal | None
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        sig = self.last_signal
        return {"id": self.strategy_id, "name": self.name, "state": self.state, "mode": self.mode,
                "reason": self.reason, "open_trades": self.open_trades, "working_orders": self.working_orders,
                "pnl_today": round(self.pnl_today, 2), "pnl_total": round(self.pnl_total, 2),
                "last_signal": None if sig is None else {
                    "action": sig.action, "confidence": None if math.isnan(sig.confidence) else sig.confidence,
                    "reason": sig.reason, "tag": sig.tag, "ts": sig.ts.isoformat()},
                "params": self.params}


class StrategyHost:
    """See the module docstring. ``engine`` supplies the running components (bus, store, risk, router, kill
    switch, portfolio, surfaces, history, risk service); tests may pass a stand-in with the same attributes."""

    def __init__(self, bus: Bus, store: Any, *, clock: Clock, entries: Sequence[StrategyEntry],
                 invalid: Sequence[tuple[str, str]] = (), risk: Any, router: Any, kill_switch: Any,
                 net_liquidation: Callable[[], float], iv_rank: Callable[[str], float],
                 regime: Callable[[str], str], next_event: Callable[[str], date | None] | None = None,
                 models_dir: Path | None = None) -> None:
        self.bus = bus
        self.store = store
        self.clock = clock
        self.risk = risk
        self.router = router
        self.kill_switch = kill_switch
        self._nl = net_liquidation
        self._ivr = iv_rank
        self._regime = regime
        self._next_event = next_event  # the market's earnings calendar (the simulated one), for event strategies
        self.hosted: dict[str, Hosted] = {}
        for e in entries:
            self.hosted[e.id] = Hosted(e.id, e.name, e, mode=e.mode, live_account=e.live_account)
        for label, message in invalid:
            if label not in self.hosted:
                self.hosted[label] = Hosted(label, label, None, state="disabled", reason=message)
        self._subs: list[Any] = []
        self._registered: list[type] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ml: Any = None  # engine.ml.signal.LiveMLSignals, created at the first ML-filtered entry
        #: the registry ``ml.model`` names are looked up in: the engine's own (where its ML service trains), so
        #: an engine on another data folder never scores with the user's default folder's models
        self._models_dir = models_dir
        self._started = False

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore each strategy's stored state and run the enabled ones (a bad one is disabled, never fatal)."""
        for cmd, fn in ((StartStrategy, host_commands.start), (PauseStrategy, host_commands.pause),
                        (StopStrategy, host_commands.stop), (SetStrategyParams, host_commands.set_params),
                        (SetStrategyMode, host_commands.set_mode)):
            self.bus.register(cmd, functools.partial(fn, self))
            self._registered.append(cmd)
        self._subs = [
            self.bus.subscribe(OrderEvent, self._on_order_event, name="strategies:orders"),
            self.bus.subscribe(KillSwitchTripped, self._on_kill, name="strategies:kill-switch"),
            self.bus.subscribe(ModeChanged, self._on_mode, name="strategies:mode"),
            self.bus.subscribe(ClockTicked, self._on_tick, name="strategies:day"),
        ]
        try:
            from engine.brokers.paper import PositionsSettled

            self._subs.append(self.bus.subscribe(PositionsSettled, self._on_settled, name="strategies:settled"))
        except ImportError:  # a build without the paper broker has no settlement events to attribute
            log.debug("no paper broker: settlement fills are not attributed")
        self.risk.strategy_budget = self.check_budget
        self._started = True
        for hs in self.hosted.values():
            if hs.entry is None:
                self._alert_disabled(hs, hs.reason)
                continue
            try:
                self._start_one(hs)
            except Exception as exc:  # unreadable stored books, a broken strategy: this one is off, not the engine
                log.exception("strategy %s could not start", hs.strategy_id)
                hs.runner = None
                self._disable(hs, f"could not start ({type(exc).__name__}: {exc})")

    def _start_one(self, hs: Hosted) -> None:
        """One strategy at engine start: the state its owner left it in (a command's choice survives restarts)."""
        assert hs.entry is not None
        self._load(hs)
        stored = hs.payload.get("host_state")
        wanted = stored if stored in ("paused", "stopped", "disabled") else "running"
        if not hs.entry.enabled:
            wanted = "stopped"
        if wanted in ("running", "paused"):
            self._build(hs)
            if hs.runner is None:
                return  # _build disabled it and said why
        before = str(hs.payload.get("reason", "")) or f"{wanted} before the restart"
        if wanted == "running":
            self._run(hs, reason="started with the engine", by="engine")
        elif wanted == "paused" and hs.runner is not None:
            hs.runner.pause()
            hs.runner.start()  # paused: its books still follow its orders' reports
            hs.paused_by = "user"
            self._set_state(hs, "paused", before)
        else:
            self._set_state(hs, wanted, before)
            if wanted == "disabled":
                self.bus.publish(Alert(level="warning", source=ALERT_SOURCE, message=(
                    f"strategy {hs.strategy_id} is still disabled ({before}): start it when it is fixed")))

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop every runner (bounded) and store each strategy's state; idempotent."""
        if not self._started:
            return
        self._started = False
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        for cmd in self._registered:
            self.bus.unregister(cmd)
        self._registered.clear()
        if getattr(self.risk, "strategy_budget", None) == self.check_budget:
            self.risk.strategy_budget = None
        for hs in self.hosted.values():
            if hs.runner is not None:
                try:
                    await hs.runner.stop(timeout)
                except Exception:  # one strategy failing to stop must not keep the others (or the engine) from stopping
                    log.exception("strategy %s did not stop cleanly", hs.strategy_id)
                self._persist(hs)
                hs.runner = None
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._tasks.clear()

    # ---- building and running ---------------------------------------------------------------------
    def _build(self, hs: Hosted) -> None:
        """A fresh strategy object with the stored books, and its runner (not yet subscribed)."""
        from engine import strategies

        assert hs.entry is not None
        try:
            strategy = strategies.create(hs.entry.name, dict(hs.entry.params), strategy_id=hs.strategy_id)
        except ValueError as exc:  # unknown name, bad parameters: the message says which
            self._disable(hs, str(exc))
            return
        except Exception as exc:  # a strategy module that fails to import or construct: this one is off
            log.exception("strategy %s could not be created", hs.strategy_id)
            self._disable(hs, f"could not be created ({type(exc).__name__}: {exc})")
            return
        try:
            if hs.payload.get("strategy"):
                strategy.restore(hs.payload["strategy"])
        except Exception as exc:  # a strategy's own restore code may raise anything: that strategy is disabled, not the host
            log.exception("strategy %s: stored state not restored", hs.strategy_id)
            self._disable(hs, f"its stored state could not be restored ({type(exc).__name__}: {exc})")
            return
        from engine.history.service import read_snapshot
        from engine.strategies.delta_hedge import delta_of_positions

        ctx = LiveContext(self.clock, net_liquidation=lambda: self._net_liquidation(hs), iv_rank=self._ivr,
                          regime=self._regime, sizing=lambda: sizing_from_profile(self.risk.profile),
                          realized_vol=lambda u, w: read_snapshot(self.store, u, realized_vol_window=w).realized_vol,
                          portfolio_delta=lambda u, sid: delta_of_positions(
                              self.risk.portfolio.positions.values(), self.risk.market, self.clock.now(), u, sid),
                          next_event=self._next_event, ml_probability=lambda u, m: self._ml_signals()(u, m))
        runner = StrategyRunner(self.bus, strategy, ctx, on_error=lambda exc, where: self._failed(hs, exc, where),
                                on_change=lambda urgent: self._changed(hs, urgent), on_intents=lambda i: self._signals(hs, i))
        orders = [o for o in (self.store.orders.get(oid) for oid in hs.payload.get("orders", ())) if o is not None]
        runner.restore([tuple(p) for p in hs.payload.get("seen_fills", ())], orders)
        hs.strategy, hs.runner = strategy, runner

    def _run(self, hs: Hosted, *, reason: str, by: str) -> None:
        assert hs.runner is not None
        if self.kill_switch is not None and self.kill_switch.tripped:
            hs.paused_by = "kill_switch"
            hs.runner.pause()
            self._set_state(hs, "paused", "the kill switch is tripped: start it again after the reset")
        elif (problem := self._mode_problem(hs)) is not None:
            hs.paused_by = "mode"
            hs.runner.pause()
            self._set_state(hs, "paused", problem)
        else:
            hs.paused_by = ""
            hs.runner.resume()
            self._set_state(hs, "running", reason)
        hs.runner.start()
        self.store.audit.record(by, "strategy_state", {"strategy_id": hs.strategy_id, "state": hs.state})

    def _set_state(self, hs: Hosted, state: str, reason: str) -> None:
        previous = hs.state
        hs.state, hs.reason = state, reason
        self._note(hs, f"{previous} → {state}: {reason}")
        self.bus.publish(StrategyStateChanged(strategy_id=hs.strategy_id, name=hs.name, state=state,
                                              previous=previous, mode=hs.mode, reason=reason))
        self._persist(hs, force=True)

    def _disable(self, hs: Hosted, reason: str) -> None:
        if hs.runner is not None:
            hs.runner.pause()
            self._spawn(hs.runner.stop(), f"strategy:{hs.strategy_id}:stop")
            hs.runner = None
        self._set_state(hs, "disabled", reason)
        self._alert_disabled(hs, reason)

    def _alert_disabled(self, hs: Hosted, reason: str) -> None:
        if hs.state != "disabled":
            hs.state = "disabled"
        self.bus.publish(StrategyDisabled(strategy_id=hs.strategy_id, reason=reason))
        self.bus.publish(Alert(level="error", source=ALERT_SOURCE,
                               message=f"strategy {hs.strategy_id} is off: {reason}"))

    def _failed(self, hs: Hosted, exc: BaseException, where: str) -> None:
        """A callback raised: this strategy stops, the others carry on. Its books as last stored (before the
        failing callback) are what a later start resumes from: the object that raised may be half-updated."""
        hs.strategy = None
        self._disable(hs, f"{type(exc).__name__} in {where}: {exc}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- mode ---------------------------------------------------------------------------------------
    def _mode_problem(self, hs: Hosted) -> str | None:
        """Why this strategy must not trade in the engine's current mode (None: it may)."""
        live = bool(getattr(self.router, "is_live", False))
        if hs.mode == "paper" and live:
            return (f"strategy {hs.strategy_id} trades on the paper account but the engine is in live mode "
                    f"({self.router.active_name}): paused until the engine is back on paper")
        if hs.mode == "live":
            if not live:
                return (f"strategy {hs.strategy_id} is enabled for live account {mask_account(hs.live_account)} "
                        "but the engine is in paper mode")
            if self.router.account_id() != hs.live_account:
                return (f"strategy {hs.strategy_id} is enabled for live account {mask_account(hs.live_account)} "
                        f"but the engine is live on {mask_account(self.router.account_id())}")
        return None

    def _account_problem(self, hs: Hosted, order: Order) -> str | None:
        """Why ``order`` would reach another account than the strategy's mode names (None: it would not)."""
        paper = self.router.paper_name
        if hs.mode == "paper" and order.broker != paper:
            return (f"strategy {hs.strategy_id} trades on the paper account but this order would go to "
                    f"{order.broker} account {mask_account(order.account_id)}")
        if hs.mode == "live" and (order.broker == paper or order.account_id != hs.live_account):
            return (f"strategy {hs.strategy_id} is enabled for live account {mask_account(hs.live_account)} but "
                    f"this order would go to {order.broker} account {mask_account(order.account_id)}")
        return None

    def _on_mode(self, ev: ModeChanged) -> None:
        for hs in self.hosted.values():
            if hs.runner is None:
                continue
            problem = self._mode_problem(hs)
            if hs.state == "running" and problem is not None:
                hs.runner.pause()
                hs.paused_by = "mode"
                self._set_state(hs, "paused", problem)
            elif hs.state == "paused" and hs.paused_by == "mode" and problem is None:
                hs.runner.resume()
                hs.paused_by = ""
                self._set_state(hs, "running", f"the engine is in {ev.mode} mode again")

    def _on_kill(self, ev: KillSwitchTripped) -> None:
        for hs in self.hosted.values():
            if hs.state == "running" and hs.runner is not None:
                hs.runner.pause()
                hs.paused_by = "kill_switch"
                self._set_state(hs, "paused", f"kill switch tripped ({ev.reason}): start it again after the reset")

    # ---- the budget check (RiskEngine.strategy_budget; engine/strategies/host_budget.py) ------------------
    def check_budget(self, order: Order, reducing: bool, risk: float) -> list[Any]:
        return host_budget.check_budget(self, order, reducing, risk)

    def _open_trade_count(self, hs: Hosted, exclude: str = "") -> int:
        return host_budget.open_trade_count(hs, exclude)

    # ---- attribution (engine/strategies/host_books.py) -------------------------------------------------
    def _on_order_event(self, ev: OrderEvent) -> None:
        host_books.on_order_event(self, ev)

    def _on_settled(self, ev: Any) -> None:
        host_books.on_settled(self, ev)

    def _ml_signals(self) -> Any:
        """Registered models' probabilities for strategies with an ``ml`` filter (engine/ml/signal.py)."""
        if self._ml is None:
            from engine.ml.signal import LiveMLSignals

            self._ml = LiveMLSignals(self.store, self.clock, models_dir=self._models_dir)
        return self._ml

    def _signals(self, hs: Hosted, intents: Sequence[OrderIntent]) -> None:
        for i in intents:
            tag, _, rest = i.tag.partition(":")
            action = "close" if rest.startswith("close") else "open" if rest.startswith("open") else rest or "order"
            conf = math.nan
            reason = rest.split(":", 1)[1] if action == "close" and ":" in rest else ""
            trade = getattr(hs.strategy, "trades", {}).get(tag)
            if trade is not None and action == "open":
                conf = float(trade.info.get("confidence", math.nan))
                info = ", ".join(f"{k} {v:.2f}" for k, v in trade.info.items() if k != "confidence")
                reason = f"{trade.quantity}× {len(trade.legs)}-leg entry" + (f" ({info})" if info else "")
            ml_p, ml_why = math.nan, ""
            if trade is not None and action == "open" and "ml_probability" in trade.info:
                ml_p = float(trade.info["ml_probability"])
                ml_why = str((getattr(hs.strategy, "ml_last", None) or {}).get("reason", ""))
            sig = StrategySignal(strategy_id=hs.strategy_id, action=action, confidence=conf, reason=reason, tag=tag,
                                 ml_probability=ml_p, ml_reason=ml_why)
            hs.last_signal = sig
            self.bus.publish(sig)
            self._note(hs, sig.describe())

    # ---- P&L --------------------------------------------------------------------------------------------
    def _mark(self, hs: Hosted, key: str) -> float:
        inst = hs.instruments.get(key)
        mid = math.nan
        if inst is not None:
            try:
                mid = float(self.risk.market.mid(inst))
            except Exception:  # no usable price for a leg, whatever the market view raised: NaN means unknown
                mid = math.nan
        if math.isfinite(mid):
            hs.marks[key] = mid
            return mid
        return hs.marks.get(key, 0.0)

    def pnl(self, hs: Hosted) -> tuple[float, float]:
        """(P&L today, P&L total) in dollars: trade cash flows − fees + what is still held, at mid."""
        total = float(sum(t.net_pnl for t in hs.ledger.trades.values()))
        for t in hs.ledger.open():
            for key, q in t.holdings.items():
                inst = hs.instruments.get(key)
                mult = inst.multiplier if inst is not None else 1
                total += q * self._mark(hs, key) * mult
        day = market_date(self.clock.now()).isoformat()
        if hs.day != day:
            hs.day, hs.day_start_total = day, total
        return total - hs.day_start_total, total

    def _on_tick(self, ev: ClockTicked) -> None:
        day = market_date(ev.now).isoformat()
        wall = time.monotonic()
        for hs in self.hosted.values():
            if hs.day != day and hs.entry is not None:
                self.pnl(hs)  # the day's baseline at its first look
            if hs.dirty and wall - hs.last_write >= WRITE_EVERY_S:
                self._persist(hs)

    # ---- persistence (engine/strategies/host_books.py) -------------------------------------------------
    def _changed(self, hs: Hosted, urgent: bool) -> None:
        host_books.changed(self, hs, urgent)

    def _load(self, hs: Hosted) -> None:
        host_books.load(self, hs)

    def _persist(self, hs: Hosted, *, force: bool = False, runner: StrategyRunner | None = None) -> None:
        host_books.persist(self, hs, force=force, runner=runner)

    # ---- reads ----------------------------------------------------------------------------------------------
    def _net_liquidation(self, hs: Hosted) -> float:
        """What the strategy sizes with: the account's net liquidation, capped at its budget's capital."""
        nl = float(self._nl())
        cap = hs.entry.budget.capital if hs.entry is not None else None
        return min(nl, cap) if cap is not None and math.isfinite(nl) else nl

    def _note(self, hs: Hosted, text: str) -> None:
        hs.events.append((self.clock.now(), text))

    def status(self, strategy_id: str) -> StrategyStatus:
        hs = self.hosted[strategy_id]
        today, total = self.pnl(hs) if hs.entry is not None else (0.0, 0.0)
        params = hs.strategy.params.model_dump(mode="json") if hs.strategy is not None else \
            dict(hs.entry.params) if hs.entry is not None else {}
        return StrategyStatus(hs.strategy_id, hs.name, hs.state, hs.mode, hs.reason,
                              self._open_trade_count(hs), len(hs.runner.open_orders()) if hs.runner else 0,
                              today, total, hs.last_signal, params)

    def statuses(self) -> list[StrategyStatus]:
        return [self.status(sid) for sid in self.hosted]

    def log(self, strategy_id: str) -> list[tuple[datetime, str]]:
        """The strategy's own event log, oldest first (state changes, signals, denials, fills)."""
        return list(self.hosted[strategy_id].events)

    def report(self, strategy_id: str) -> dict[str, Any]:
        """Orders, fills, trades and P&L of one strategy (``optiondesk trade --json``)."""
        hs = self.hosted[strategy_id]
        out = self.status(strategy_id).to_dict()
        out["orders"] = [{"id": o.order_id, "tag": o.tag, "status": o.status.value, "reason": o.reason,
                          "quantity": o.quantity, "filled": o.filled_quantity,
                          "limit_price": None if o.limit_price is None else str(o.limit_price),
                          "avg_fill_price": None if o.avg_fill_price is None else str(o.avg_fill_price)}
                         for o in sorted(hs.orders.values(), key=lambda o: o.created_at)]
        out["fills"] = [{"id": f.fill_id, "order_id": f.order_id, "symbol": f.instrument.key, "quantity": f.quantity,
                         "price": str(f.price), "fee": str(f.fee), "kind": f.kind, "ts": f.ts.isoformat()}
                        for f in hs.fills]
        out["trades"] = [t.as_row() for t in hs.ledger.trades.values()]
        out["fees"] = f"{hs.ledger.fees:.2f}"
        return out

    def open_trades(self, strategy_id: str) -> list[Any]:
        """The strategy's own trade books (``OpenTrade`` s still opening, open or closing)."""
        s = self.hosted[strategy_id].strategy
        return s.active_trades() if isinstance(s, ManagedStrategy) else []

    def live_accounts(self) -> dict[str, str]:
        """Account id → broker name of every connected live broker: the accounts ``SetStrategyMode`` accepts for
        live, so a confirmation dialog can name exactly the ones the check will take."""
        return {b.account_id: name for name, b in self.router.brokers.items()
                if name != self.router.paper_name and getattr(b, "connected", False) and b.account_id}

