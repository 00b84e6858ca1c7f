"""One kernel: the live order path, running inside a backtest on its own event loop and the backtest clock.

A backtest must not have an order path of its own: a second copy of validation, risk, approval and the kill
switch drifts from the one that trades money (docs/architecture.md §4, the way nautilus_trader runs one kernel
for backtest and live). So each run builds the live components — a :class:`~engine.bus.Bus`, a
:class:`~engine.store.Store` (in memory), :class:`~engine.oms.manager.OrderManager` (OrderFactory → RiskEngine →
ApprovalGate → ModeRouter), :class:`~engine.risk.kill_switch.KillSwitch` and a
:class:`~engine.brokers.paper.PaperBroker` whose exchange is the backtest's
:class:`~engine.brokers.paper_exchange.PaperExchange` — on a private asyncio loop, and drives that loop
synchronously: every call publishes or submits, then runs the loop until nothing is left to do. Fills, denials,
cancels and settlements come back as bus events, exactly as live; this module turns them into
:class:`~engine.brokers.paper_exchange.ExecutionReport` rows for the backtest's ledger and the strategy.

The backtest is the kill switch's only clock: its automatic trip (daily loss, drawdown) runs on the account
updates the paper broker publishes at each step, and a trip halts the rest of the run as it would halt live
trading. Approval is in the path and automatic (``approval_in_paper`` off), as in paper trading by default.

Ownership: the kernel owns its loop, bus, store and components; :meth:`close` stops them in order with a
bounded wait and closes the loop. It cannot run inside a running event loop (a backtest is CPU work: it runs in
a worker process, a thread or the CLI).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

import numpy as np

from engine.brokers.paper import PaperBroker, PositionsSettled
from engine.brokers.paper_config import PaperConfig
from engine.brokers.paper_exchange import ExecutionReport, PaperExchange, ReportKind
from engine.bus import Bus
from engine.bus.events import (
    ChainUpdated,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    QuotesUpdated,
    UnderlyingUpdated,
)
from engine.clock import ManualClock
from engine.model import Option, OptionChain, Order, OrderIntent
from engine.oms.config import OmsConfig
from engine.oms.manager import OrderManager
from engine.oms.router import ModeRouter
from engine.risk.config import RiskConfig
from engine.risk.engine import RiskDecision, RiskEngine
from engine.risk.kill_switch import KillSwitch
from engine.risk.market_view import MarketView
from engine.risk.state import PortfolioState, TradingState
from engine.store import Store

log = logging.getLogger(__name__)

#: checks that still decide when a run switches the risk checks off: a malformed order and the trading state
#: (the kill switch halts a run with or without checks)
ALWAYS_ENFORCED = frozenset({"order_valid", "trading_state"})

_KIND: dict[type, ReportKind] = {OrderAccepted: "accepted", OrderFilled: "filled", OrderDenied: "rejected",
                                 OrderRejected: "rejected", OrderCancelled: "cancelled", OrderExpired: "expired"}


class AdvisoryRiskEngine(RiskEngine):
    """The risk engine of a run with ``risk_checks`` off: every check still runs and its verdict is recorded on
    the order's decision, but only :data:`ALWAYS_ENFORCED` checks deny. The run's log, audit table and summary
    say the checks were bypassed (see :data:`engine.backtest.execution.RISK_CHECKS_BYPASSED`)."""

    def check(self, order: Order, *, consume: bool = True, skip: frozenset[str] = frozenset()) -> RiskDecision:
        decision = super().check(order, consume=consume, skip=skip)
        if decision.passed or any(r.name in ALWAYS_ENFORCED for r in decision.failed):
            return decision
        advisory = dataclasses.replace(decision, passed=True)
        if consume:
            self.reserve(order, advisory)
        return advisory


class KernelStuck(RuntimeError):
    """The order path still had work running after the settle timeout (a retry loop, a hung task)."""


class BacktestKernel:
    """The live order path over ``exchange`` on a private loop. Not thread-safe; one per run; :meth:`close` it."""

    #: how long one step may keep the loop busy (wall seconds) before the run fails instead of hanging
    SETTLE_TIMEOUT_S = 30.0

    def __init__(self, exchange: PaperExchange, paper: PaperConfig, risk: RiskConfig, *, start: datetime,
                 monotonic: Callable[[], float], risk_checks: bool = True, underlying: str = "") -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("a backtest runs its own event loop: run it in a worker thread or process "
                               "(asyncio.to_thread, the backtest service), not inside a coroutine")
        self.clock = ManualClock(start)
        self.exchange = exchange
        self._closed = False
        self.store = Store.open(":memory:", clock=self.clock)
        self.loop = asyncio.new_event_loop()
        self.denials = 0
        self.denied_by_check: Counter[str] = Counter()
        self._reports: list[ExecutionReport] = []
        #: the step's chains by underlying (several in a multi-underlying replay: an index and its members)
        self._chains: dict[str, OptionChain] = {}
        self._fed: set[str] = set()  # underlyings whose chain of this step is on the bus
        #: per underlying, the last chain on the bus (QuotesUpdated rows refer to it)
        self._published: dict[str, OptionChain] = {}
        self._last_flat: tuple[Any, Any] | None = None  # (cash, day start) of the last account update while flat
        self._resident: set[asyncio.Task[Any]] = set()
        try:
            self.loop.run_until_complete(self._start(paper, risk, monotonic, risk_checks, underlying))
        except BaseException:
            self.close()
            raise

    async def _start(self, paper: PaperConfig, risk: RiskConfig, monotonic: Callable[[], float],
                     risk_checks: bool, underlying: str) -> None:
        bus = self.bus = Bus(self.clock)
        # market-only account updates follow the backtest's steps (see :meth:`account`), never the wall clock
        self.paper = PaperBroker(bus, None, paper, clock=self.clock, exchange=self.exchange,
                                 account_update_interval_s=math.inf)
        self.market = MarketView(bus, rate=risk.risk_free_rate, dividend_yields=risk.dividend_yields,
                                 monotonic=monotonic)
        self.portfolio = PortfolioState(bus)
        self.kill_switch = KillSwitch(self.store, bus, risk)
        engine_cls = RiskEngine if risk_checks else AdvisoryRiskEngine
        self.risk = engine_cls(risk, market=self.market, portfolio=self.portfolio, now=self.clock.now,
                               trading_state=lambda: self.kill_switch.state, monotonic=monotonic,
                               margin=paper.margin_rules())
        self.oms = OrderManager(bus, self.store, ModeRouter({"paper": self.paper}), self.risk, self.kill_switch,
                                config=OmsConfig(approval_in_paper=False), now=self.clock.now)
        self.oms.register()  # first: the OMS's state reflects each report before anyone else sees it
        self.kill_switch.watch(self.risk)
        self._subs = [bus.subscribe(ev, self._collect, name="backtest:reports") for ev in (*_KIND, PositionsSettled)]
        if not risk_checks:
            self.store.audit.record("backtest", "risk_checks_off", {"underlying": underlying})
        await self.paper.connect()
        await self.oms.start(reconcile=False)  # a fresh account: nothing to reconcile
        await self.oms.load_portfolio()
        me = asyncio.current_task()
        self._resident = {t for t in asyncio.all_tasks() if t is not me}  # the bus's mailbox drains

    # ---- driving the loop -----------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, Any] | None = None) -> list[ExecutionReport]:
        """Run ``coro`` (if any), then the loop until idle; returns the reports collected meanwhile."""
        if self._closed:
            if coro is not None:
                coro.close()
            raise RuntimeError("the backtest kernel is closed")
        self.loop.run_until_complete(self._settle(coro))
        out, self._reports = self._reports, []
        return out

    def call(self, fn: Callable[[], object]) -> list[ExecutionReport]:
        """Call ``fn`` on the loop (publishers and the tasks they spawn need a running loop), then run it idle."""
        async def inside() -> None:
            fn()

        return self.run(inside())

    async def _settle(self, coro: Coroutine[Any, Any, Any] | None) -> None:
        if coro is not None:
            await coro
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        deadline = loop.time() + self.SETTLE_TIMEOUT_S
        while True:
            if self._resident:  # coroutine subscribers have mailboxes: let them drain
                await self.bus.idle(max(deadline - loop.time(), 0.001))
            pending = [t for t in asyncio.all_tasks() if t is not me and t not in self._resident and not t.done()]
            if not pending:
                return
            left = deadline - loop.time()
            if left <= 0:
                raise KernelStuck("the order path did not settle within "
                                  f"{self.SETTLE_TIMEOUT_S:.0f}s: {', '.join(t.get_name() for t in pending)}")
            await asyncio.wait(pending, timeout=left)

    def _collect(self, ev: Any) -> None:
        if isinstance(ev, PositionsSettled):
            self._reports.append(ExecutionReport("settlement", None, tuple(ev.fills), note=ev.note))
            return
        order = self.oms.order(ev.order.order_id) or ev.order  # the OMS's record (updated before this handler)
        note = ""
        if isinstance(ev, OrderDenied):
            self.denials += 1
            self.denied_by_check.update(c.name for c in ev.checks)
            note = "denied"
        fills = tuple(ev.fills) if isinstance(ev, OrderFilled) else ()
        self._reports.append(ExecutionReport(_KIND[type(ev)], order, fills, note=note))

    # ---- what the backtest does to the world -------------------------------------------------------
    def quotes(self, chain: OptionChain, *others: OptionChain) -> list[ExecutionReport]:
        """A step's market data, as a feed publishes it: with orders working, the underlying and the whole chain;
        with only positions held, the underlying and the held contracts' quotes; with neither, nothing until an
        order needs the step's chain (:meth:`submit`). ``others``: the chains of more underlyings at the same
        instant (a multi-underlying replay), each handled the same way."""
        self.clock.set(chain.ts)
        self._chains = {c.underlying: c for c in (chain, *others)}
        self._fed = set()
        ex = self.exchange
        if ex.working:
            return self.call(self._publish_chain)  # every leg of every working order meets the new quotes
        if not ex.positions:
            return []  # published with the step's first order, if any (see _publish_chain)
        held = {und: self._held_rows(c) for und, c in self._chains.items()}
        if any(rows is None for rows in held.values()):
            return self.call(self._publish_chain)

        def publish_held() -> None:
            for und, rows in held.items():
                self._publish_held(self._chains[und], rows or [])  # the spot too: shares held are marked on it

        return self.call(publish_held)

    def _held_rows(self, chain: OptionChain) -> list[tuple[int, int]] | None:
        """(row in the last published chain, row in ``chain`` or −1) of every option of ``chain``'s underlying
        held; None when such an option is not in that underlying's last published chain (then the whole chain
        goes out)."""
        last = self._published.get(chain.underlying)
        out = []
        for key, pos in self.exchange.positions.items():
            if not isinstance(pos.instrument, Option) or pos.instrument.underlying != chain.underlying:
                continue
            if last is None:
                return None
            hit = np.flatnonzero(last.symbol == key)
            if not len(hit):
                return None
            now = np.flatnonzero(chain.symbol == key)
            out.append((int(hit[0]), int(now[0]) if len(now) else -1))
        return out

    def _publish_held(self, chain: OptionChain, rows: list[tuple[int, int]]) -> None:
        """A step where only positions need marks: the underlying and the held contracts' quotes, as a
        streaming feed sends them (``QuotesUpdated`` rows of the last chain). A contract without a quote
        today keeps its last one (its mark stays the last valid mid, as the backtest marks it)."""
        if math.isfinite(chain.spot) and chain.spot > 0:
            self.bus.publish(UnderlyingUpdated(symbol=chain.underlying, price=float(chain.spot)))
        quoted = [(old, new) for old, new in rows if new >= 0]
        if quoted:
            old_rows = np.array([o for o, _ in quoted], dtype=np.int64)
            new_rows = np.array([n for _, n in quoted], dtype=np.int64)
            self.bus.publish(QuotesUpdated(underlying=chain.underlying, rows=old_rows,
                                           bid=np.asarray(chain.bid, dtype=float)[new_rows],
                                           ask=np.asarray(chain.ask, dtype=float)[new_rows]))

    def _publish_chain(self) -> None:
        """The step's underlying prices and chains, once each. A step with nothing working, nothing held and no
        order publishes nothing: the paper exchange's book and the risk engine's market view are read only by
        orders and marks (speed: a chain is thousands of rows, and most days of a selective strategy need none).
        In a multi-underlying replay every underlying's chain goes out together: an order on one leg of a
        dispersion trade is checked against a portfolio holding the others."""
        for und, chain in self._chains.items():
            if und in self._fed:
                continue
            self._fed.add(und)
            self._published[und] = chain
            if math.isfinite(chain.spot) and chain.spot > 0:
                self.bus.publish(UnderlyingUpdated(symbol=chain.underlying, price=float(chain.spot)))
            self.bus.publish(ChainUpdated(chain=chain))

    def submit(self, intent: OrderIntent) -> list[ExecutionReport]:
        """The strategy's intent down the one order path (the same call a live strategy's SubmitOrder makes)."""
        async def send() -> None:
            self._publish_chain()  # the exchange and the risk engine see the step's quotes before the order
            await self.oms.submit(intent)

        return self.run(send())

    def publish(self, reports: list[ExecutionReport]) -> list[ExecutionReport]:
        """Reports of exchange calls the backtest makes itself (DAY expiry at the close, settlement, early
        assignment): published by the paper broker as live, and collected back."""
        if not reports:
            return []
        return self.call(lambda: self.paper.report(reports))

    def account(self) -> list[ExecutionReport]:
        """The paper account at the current marks on the bus: the portfolio, the risk engine and the kill
        switch's automatic trip see it (a trip cancels every working order; those reports come back)."""
        ex = self.exchange
        flat = None if ex.positions else (ex.cash, ex.day_start_equity)
        if flat is not None and flat == self._last_flat:
            return []  # nothing held and no cash moved since the last update: it would say the same
        self._last_flat = flat
        return self.call(lambda: self.paper.report([]))

    def trip(self, reason: str, by: str = "backtest") -> list[ExecutionReport]:
        return self.run(self.kill_switch.trip(reason, by=by))

    @property
    def trading_state(self) -> TradingState:
        return self.kill_switch.state

    def halt(self) -> dict[str, str]:
        """{"at": ISO time, "reason": ...} once the kill switch has tripped, else {}."""
        st = self.kill_switch.status
        return {"at": st.since, "reason": st.reason} if st.state is TradingState.HALTED else {}

    def orders(self) -> list[Order]:
        """Every order of the run as the OMS stored it, oldest first."""
        return self.store.orders.list(None)

    # ---- shutdown -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the components in order (bounded), cancel whatever is left, close the loop and the store."""
        if self._closed:
            return
        self._closed = True
        loop = self.loop
        try:
            if hasattr(self, "oms"):
                loop.run_until_complete(asyncio.wait_for(self._stop(), self.SETTLE_TIMEOUT_S))
        except Exception:  # closing must still shut the private loop down, whatever the stop raised
            log.exception("backtest kernel: orderly stop failed")
        finally:
            try:
                left = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in left:
                    t.cancel()
                if left:
                    loop.run_until_complete(asyncio.wait(left, timeout=self.SETTLE_TIMEOUT_S))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self.store.close()

    async def _stop(self) -> None:
        for s in getattr(self, "_subs", []):
            s.cancel()
        await self.oms.stop()
        await self.kill_switch.stop()
        await self.paper.disconnect()
        self.portfolio.close()
        self.market.close()
        await self.bus.close()

    def __enter__(self) -> BacktestKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ALWAYS_ENFORCED", "AdvisoryRiskEngine", "BacktestKernel", "KernelStuck"]
