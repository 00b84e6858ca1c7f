"""The backtest's order path and exchange: the same components as paper trading, driven synchronously.

intent → :class:`~engine.oms.factory.OrderFactory` (ids, tick rounding, validation) →
:class:`~engine.risk.engine.RiskEngine` (every pre-trade check at the configured slider level; a failure
is a DENIED order with the failed checks as reason) → auto-approval → :class:`PaperExchange` (the one
simulated exchange shared with paper trading: fills at the touch + slippage, fee presets, buying power,
DAY expiry, settlement/exercise/assignment at expiry).

Speed: the exchange and the risk engine's market view see a day's chain only on days that need it
(an order to check, orders working); positions are marked by this module from the history's columns
(contract id → row by binary search), so a quiet day costs a few microseconds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np

from engine.backtest.config import BacktestConfig
from engine.backtest.data import ChainHistory
from engine.brokers.paper_config import PaperConfig, SlippageConfig
from engine.brokers.paper_exchange import ExecutionReport, PaperExchange
from engine.model import Equity, Leg, Option, OptionChain, OrderIntent, OrderStatus, OrderType, Side
from engine.model.instruments import NEW_YORK
from engine.oms.factory import OrderFactory, OrderValidationError
from engine.risk.config import RiskConfig
from engine.risk.engine import RiskEngine
from engine.risk.kill_switch import limit_breaches
from engine.risk.market_view import MarketView
from engine.risk.state import PortfolioState, TradingState
from engine.strategies.base import SizingLimits

BACKTEST_ACCOUNT = "BACKTEST"
#: what a run with the risk engine switched off says in its log and summary
RISK_CHECKS_BYPASSED = "PRE-TRADE RISK CHECKS BYPASSED"

log = logging.getLogger(__name__)


class BacktestExchange:
    """Order path + paper exchange + marking for one backtest. Not thread-safe; one per run."""

    def __init__(self, config: BacktestConfig, history: ChainHistory) -> None:
        self.config = config
        self.history = history
        self._now: datetime | None = None
        self._day = -1
        self._chain: OptionChain | None = None
        self._chain_fed = False
        self._risk_fed = False
        paper = PaperConfig(account_id=BACKTEST_ACCOUNT, starting_cash=config.initial_cash, fees=config.fee_preset,
                            slippage=SlippageConfig(model=config.slippage_model, value=config.slippage),
                            early_assignment=config.early_assignment)
        self.exchange = PaperExchange(paper)
        self.factory = OrderFactory(now=self.now)
        self.market = MarketView(rate=config.rate, dividend_yields={history.underlying: config.dividend_yield})
        self.portfolio = PortfolioState()
        self.risk = RiskEngine(RiskConfig(level=config.risk_level, risk_free_rate=config.rate,
                                          dividend_yields={history.underlying: config.dividend_yield}),
                               market=self.market, portfolio=self.portfolio, now=self.now,
                               trading_state=lambda: self.trading_state,
                               monotonic=self._monotonic, margin=paper.margin_rules())
        #: the kill switch of this run: tripped by the live rule (daily loss, drawdown), never reset
        self.trading_state = TradingState.ACTIVE
        self.halt: dict[str, str] = {}  # {"at": ISO time, "reason": ...} once tripped
        if not config.risk_checks:
            log.warning("backtest: %s (--no-risk-checks); the kill switch still halts on its limits",
                        RISK_CHECKS_BYPASSED)
        self._cid: dict[str, int] = {}  # option key -> contract id in the history
        self._last_mark: dict[str, float] = {}  # option key -> last valid mid (used while a quote is missing)
        self._mark_step = -1
        self._mark_cache: dict[str, float] = {}  # option key -> its mark on step ``_mark_step``
        self.denials = 0

    # ---- time and market ------------------------------------------------------------------------
    def now(self) -> datetime:
        assert self._now is not None, "backtest clock not started"
        return self._now

    def _monotonic(self) -> float:
        return self._now.timestamp() if self._now is not None else 0.0

    def sizing(self) -> SizingLimits:
        from engine.strategies.live import sizing_from_profile

        return sizing_from_profile(self.risk.profile)

    def begin_day(self, i: int, chain: OptionChain) -> list[ExecutionReport]:
        """Start day ``i``: the clock moves to its close; resting orders meet the new quotes."""
        self._day = i
        self._now = chain.ts
        self._chain = chain
        self._chain_fed = False
        self._risk_fed = False
        ex = self.exchange
        ex._now = chain.ts
        und = self.history.underlying
        h = self.history
        if i == 0 or h.dates[i] != h.dates[i - 1]:  # a new session
            ex.day_start_equity = ex.cash + Decimal(repr(round(self.position_value(i, previous=True), 2)))
            # AM-settled index options settle at the expiry day's opening print: an intraday history's first
            # snapshot of the day is nearest to it; daily closes carry no open, so the previous close stands in
            opening = chain.spot if (h.intraday or i == 0) else float(h.spot[i - 1])
            ex.set_opening_print(und, chain.ts.astimezone(NEW_YORK).date(), opening)
        reports = ex.on_underlying(und, chain.spot, chain.ts)
        self._after(reports)
        if ex.working:
            reports = [*reports, *self._feed_chain()]
        return reports

    def _feed_chain(self) -> list[ExecutionReport]:
        if self._chain_fed or self._chain is None:
            return []
        self._chain_fed = True
        out = self.exchange.on_chain(self._chain, self._now)
        self._after(out)  # a resting order that fills on the new quotes moves positions and reservations
        return out

    def _feed_risk(self) -> None:
        if self._risk_fed or self._chain is None:
            return
        self._risk_fed = True
        self.market.update_chain(self._chain)
        self.portfolio.account = self.exchange.account()

    # ---- the order path -------------------------------------------------------------------------
    def submit(self, intent: OrderIntent) -> list[ExecutionReport]:
        """Factory → risk → auto-approval → exchange. A refusal is a report with a DENIED order."""
        reports = self._feed_chain()
        try:
            order = self.factory.create(intent, broker="paper", account_id=BACKTEST_ACCOUNT)
        except OrderValidationError as exc:
            self.denials += 1
            denied = self.factory.rejected_intent(intent, str(exc), broker="paper", account_id=BACKTEST_ACCOUNT)
            return [*reports, ExecutionReport("rejected", denied.evolve(status=OrderStatus.DENIED, reason=str(exc),
                                                                              updated_at=self.now()),
                                              note="denied")]
        if not self.config.risk_checks and self.trading_state is TradingState.HALTED:
            self.denials += 1
            denied = order.evolve(status=OrderStatus.DENIED, updated_at=self.now(), reason=(
                "trading is HALTED: only cancels (and kill-switch flatten orders) are accepted"))
            return [*reports, ExecutionReport("rejected", denied, note="denied")]
        if self.config.risk_checks:
            self._feed_risk()
            decision = self.risk.check(order)
            if not decision.passed:
                self.denials += 1
                # worded as the OrderManager words it live: the failed checks' messages
                reason = "; ".join(c.message for c in decision.failed)
                denied = order.evolve(status=OrderStatus.DENIED, reason=reason, updated_at=self.now())
                return [*reports, ExecutionReport("rejected", denied, note="denied")]
        approved = order.evolve(status=OrderStatus.SUBMITTED, updated_at=self.now())
        out = self.exchange.submit(approved, self.now())
        self._after(out)
        return [*reports, *out]

    def _after(self, reports: Iterable[ExecutionReport]) -> None:
        """Keep the risk engine's portfolio and reservations in step with the exchange."""
        for r in reports:
            for p in r.positions:
                self.portfolio.apply_position(p)
            if r.order is not None:
                if r.order.status.is_terminal:
                    self.risk.release(r.order.order_id)
                elif r.fills:
                    self.risk.update_fill(r.order)

    # ---- the kill switch ------------------------------------------------------------------------
    def check_limits(self, i: int) -> list[ExecutionReport]:
        """The kill switch's automatic trip, as live (:func:`~engine.risk.kill_switch.limit_breaches`): on a
        daily-loss or drawdown breach trading is HALTED for the rest of the run and working orders are
        cancelled at once. Held positions stay (no flatten, as an automatic trip live) and settle at expiry."""
        if self.trading_state is TradingState.HALTED:
            return []
        ex = self.exchange
        nl = float(ex.cash) + self.position_value(i)
        if not (math.isfinite(nl) and nl > 0):
            return []
        if self.risk.peak_equity is None or nl > self.risk.peak_equity:
            self.risk.peak_equity = nl
        start = float(ex.day_start_equity) if ex.day_start_equity is not None else nl
        for kind, (breached, reason) in limit_breaches(self.risk.profile, nl, nl - start,
                                                       self.risk.peak_equity).items():
            if breached:
                return self.trip(f"{kind}: {reason}")
        return []

    def trip(self, reason: str) -> list[ExecutionReport]:
        """Halt: every new order is denied from now on; every working order is cancelled."""
        self.trading_state = TradingState.HALTED
        self.halt = {"at": self.now().isoformat(), "reason": reason}
        log.warning("backtest: kill switch tripped at %s: %s", self.now().isoformat(), reason)
        out: list[ExecutionReport] = []
        for oid in list(self.exchange.working):
            out.extend(self.exchange.cancel(oid, self.now(), reason=f"kill switch: {reason}"))
        self._after(out)
        return out

    def early_assignments(self, next_day) -> list[ExecutionReport]:
        """On the session before an ex-dividend date: short calls whose time value is below the dividend are
        assigned (only with ``early_assignment``; the exchange flags the fills ``early_assignment``)."""
        amount = self.config.dividends.get(next_day) if next_day is not None else None
        if not amount:
            return []
        out = self.exchange.early_assignments(self.history.underlying, float(amount), self.now())
        self._after(out)
        return out

    def end_of_day(self) -> list[ExecutionReport]:
        """DAY orders placed before the close expire at the close. One placed at the closing snapshot itself
        is good for the next session, as the paper exchange rules live (``PaperExchange.on_time``): a daily
        history's snapshots are the closes, so its orders meet the next day's quotes before they expire."""
        out = self.exchange.expire_day_orders(created_before=self.now())
        self._after(out)
        return out

    def settle(self) -> list[ExecutionReport]:
        """Expiring positions settle at intrinsic value: PM/physical from the day's close, AM from the
        opening print (exercise/assignment per the paper exchange)."""
        out = self.exchange.settle_expired(self.now())
        self._after(out)
        return out

    def liquidation_intents(self) -> list[OrderIntent]:
        """Market orders that sell (buy back) shares received on assignment."""
        out = []
        for pos in list(self.exchange.positions.values()):
            if isinstance(pos.instrument, Equity) and pos.quantity != 0:
                side = Side.SELL if pos.quantity > 0 else Side.BUY
                out.append(OrderIntent(legs=(Leg(pos.instrument, side),), quantity=abs(pos.quantity),
                                       order_type=OrderType.MARKET, source="backtest", strategy_id="backtest",
                                       tag=f"{pos.instrument.key}:liquidate"))
        return out

    # ---- account and marking --------------------------------------------------------------------
    def cash(self) -> Decimal:
        return self.exchange.cash

    def _contract(self, key: str) -> int:
        cid = self._cid.get(key)
        if cid is None:
            hits = np.nonzero(self.history.symbols == key)[0]
            cid = int(hits[0]) if len(hits) else -1
            self._cid[key] = cid
        return cid

    def _rows(self, i: int, keys: list[str]) -> np.ndarray:
        """Rows of day ``i`` for option keys (−1 where the contract has no row that day)."""
        h = self.history
        lo, hi = int(h.offsets[i]), int(h.offsets[i + 1])
        day = h.contract[lo:hi]
        cids = np.array([self._contract(k) for k in keys], dtype=np.int64)
        pos = np.searchsorted(day, cids)
        ok = (cids >= 0) & (pos < len(day))
        ok[ok] &= day[pos[ok]] == cids[ok]
        return np.where(ok, lo + pos, -1)

    def marks_by_symbol(self, i: int) -> dict[str, tuple[float, int]]:
        """(mark per unit, multiplier) of every position on day ``i``: option mid, else its last mid (a quote
        can be missing for a day), else intrinsic value; shares at the spot."""
        out: dict[str, tuple[float, int]] = {}
        if i < 0:
            return out
        h = self.history
        spot = float(h.spot[i])
        # a step marks its positions up to four times (the kill switch twice, the strategy's account, the
        # close): an option's mark on the current step is computed once
        cache: dict[str, float] | None = None
        if i == self._day:
            if self._mark_step != i:
                self._mark_step, self._mark_cache = i, {}
            cache = self._mark_cache
        opts = []
        for p in self.exchange.positions.values():
            if isinstance(p.instrument, Option):
                if cache is not None and p.symbol in cache:
                    out[p.symbol] = (cache[p.symbol], p.multiplier)
                else:
                    opts.append(p)
        if opts:
            rows = self._rows(i, [p.symbol for p in opts])
            for p, r in zip(opts, rows, strict=True):
                m = math.nan
                if r >= 0:
                    b, a = h.bid[r], h.ask[r]
                    if np.isfinite(b) and np.isfinite(a) and 0 <= b <= a:
                        m = 0.5 * (b + a)
                        self._last_mark[p.symbol] = m
                if not math.isfinite(m):
                    m = self._last_mark.get(p.symbol, math.nan)
                if not math.isfinite(m):
                    k = float(p.instrument.strike)
                    m = max(spot - k, 0.0) if p.instrument.is_call else max(k - spot, 0.0)
                out[p.symbol] = (m, p.multiplier)
                if cache is not None:
                    cache[p.symbol] = m
        for p in self.exchange.positions.values():
            if not isinstance(p.instrument, Option):
                out[p.symbol] = (spot, p.multiplier)
        return out

    def position_value(self, i: int, *, previous: bool = False) -> float:
        if previous:
            i -= 1
        marks = self.marks_by_symbol(i)
        return round(float(sum(p.quantity * marks[p.symbol][0] * marks[p.symbol][1]
                               for p in self.exchange.positions.values() if p.symbol in marks)), 2)

    def mark(self, i: int) -> tuple[float, dict[str, float], bool]:
        """(market value of positions, portfolio Greeks, whether anything is held) at day ``i``'s close.

        Greeks: delta in shares, gamma in shares per $1, theta in $ per calendar day, vega in $ per vol point;
        ``margin``: the exchange's buying-power requirement in dollars (options + stock).
        """
        positions = list(self.exchange.positions.values())
        if not positions:
            return 0.0, {}, False
        marks = self.marks_by_symbol(i)
        value = float(sum(p.quantity * marks[p.symbol][0] * marks[p.symbol][1] for p in positions))
        greeks = {"delta": 0.0, "gamma": 0.0, "theta": 0.0, "vega": 0.0}
        opts = [p for p in positions if isinstance(p.instrument, Option)]
        for p in positions:
            if not isinstance(p.instrument, Option):
                greeks["delta"] += p.quantity * p.multiplier
        if opts:
            greeks_add = self._option_greeks(i, opts)
            for k, v in greeks_add.items():
                greeks[k] += v
        ex = self.exchange
        long_v, short_v = ex._stock_values(ex.positions)
        greeks["margin"] = float(ex.requirement()) + ex._stock_margin() * (long_v + short_v)
        return value, greeks, True

    def _option_greeks(self, i: int, opts: list[Any]) -> dict[str, float]:
        from engine.pricing import bsm

        h = self.history
        rows = self._rows(i, [p.symbol for p in opts])
        spot = float(h.spot[i])
        qty = np.array([p.quantity * p.multiplier for p in opts], dtype=float)
        strike = np.array([float(p.instrument.strike) for p in opts])
        call = np.array([p.instrument.is_call for p in opts])
        t = np.array([max(p.instrument.time_to_expiry(self.now()), 0.0) for p in opts])
        vol = np.full(len(opts), np.nan)
        have = rows >= 0
        if h.has_vendor_iv and have.any():
            vol[have] = h.iv[rows[have]]
        need = have & ~np.isfinite(vol) & (t > 0)
        if need.any():
            r = rows[need]
            mid = 0.5 * (h.bid[r] + h.ask[r])
            vol[need] = bsm.implied_vol(mid, np.where(call[need], "c", "p"), spot, strike[need], t[need],
                                        self.config.rate, self.config.dividend_yield)
        ok = np.isfinite(vol) & (t > 0)
        out = {"delta": 0.0, "gamma": 0.0, "theta": 0.0, "vega": 0.0}
        if ok.any():
            g = bsm.greeks(np.where(call[ok], "c", "p"), spot, strike[ok], t[ok], self.config.rate,
                           self.config.dividend_yield, vol[ok])
            q = qty[ok]
            out = {"delta": float(q @ np.nan_to_num(g.delta)), "gamma": float(q @ np.nan_to_num(g.gamma)),
                   "theta": float(q @ np.nan_to_num(g.theta)), "vega": float(q @ np.nan_to_num(g.vega))}
        # options at expiry or without a vol: delta of intrinsic (1 ITM, 0 OTM)
        rest = ~ok
        if rest.any():
            itm = np.where(call[rest], spot > strike[rest], spot < strike[rest])
            out["delta"] += float(qty[rest] @ np.where(itm, np.where(call[rest], 1.0, -1.0), 0.0))
        return out
