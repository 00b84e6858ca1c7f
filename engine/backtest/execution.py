"""The backtest's order path and exchange: the live kernel, driven synchronously on the backtest clock.

intent → :class:`~engine.oms.manager.OrderManager` (OrderFactory → RiskEngine → ApprovalGate, automatic →
ModeRouter) → :class:`~engine.brokers.paper.PaperBroker` → :class:`PaperExchange` (the one simulated exchange
shared with paper trading: fills at the touch + slippage, fee presets, buying power, DAY expiry,
settlement/exercise/assignment at expiry), with the live :class:`~engine.risk.kill_switch.KillSwitch` —
all on a private event loop (:mod:`engine.backtest.kernel`). Fills, denials and settlements come back as bus
events, as live. This module adds what only a backtest has: the session's close (DAY expiry, settlement, early
assignment) driven by the history's steps, and marking positions from the history's columns.

Speed: positions are marked by this module from the history's columns (contract id → row by binary search), so
a quiet day costs little beyond handing the day's chain to the paper exchange.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
from pydantic import ValidationError

from engine.backtest.config import BacktestConfig
from engine.backtest.data import ChainHistory
from engine.backtest.kernel import BacktestKernel
from engine.brokers.paper_config import PaperConfig, SlippageConfig
from engine.brokers.paper_exchange import ExecutionReport, PaperExchange
from engine.model import Equity, Leg, Option, OptionChain, OrderIntent, OrderType, Position, Side
from engine.model.instruments import NEW_YORK
from engine.risk.config import RiskConfig, RiskPreset
from engine.risk.state import TradingState
from engine.strategies.base import SizingLimits

BACKTEST_ACCOUNT = "BACKTEST"
#: what a run with the risk engine switched off says in its log and summary
RISK_CHECKS_BYPASSED = "PRE-TRADE RISK CHECKS BYPASSED"

log = logging.getLogger(__name__)
_EPOCH = datetime(2000, 1, 3, 21, tzinfo=UTC)  # an empty history's clock: nothing happens on it


def risk_config(config: BacktestConfig, underlying: str, limits: dict[str, float]) -> RiskConfig:
    """The run's risk settings: the slider level, with ``limits`` written into every preset (validated as
    the settings file's presets are: a bad value names the limit)."""
    # a run replays one underlying: beta-weighting against it (not an absent SPY, whose missing price would deny
    # every order of a non-SPY run for lack of market data)
    base = RiskConfig(level=config.risk_level, risk_free_rate=config.rate,
                      dividend_yields={underlying: config.dividend_yield}, beta_benchmark=underlying)
    if not limits:
        return base
    try:
        presets = {name: RiskPreset.model_validate({**getattr(base, name).model_dump(), **limits})
                   for name in ("low", "moderate", "high")}
    except ValidationError as exc:
        raise ValueError(f"bad risk limits {limits}: {exc}") from None
    return base.model_copy(update=presets)


class BacktestExchange:
    """Order path + paper exchange + marking for one backtest. Not thread-safe; one per run; :meth:`close` it
    (the runner does) to stop its kernel's loop and store."""

    def __init__(self, config: BacktestConfig, history: ChainHistory, *,
                 risk_limits: dict[str, float] | None = None,
                 members: dict[str, ChainHistory] | None = None) -> None:
        self.config = config
        self.history = history
        #: every underlying replayed, by symbol: ``history`` and the ``members`` beside it on the same steps
        self.histories: dict[str, ChainHistory] = {history.underlying: history, **(members or {})}
        self._now: datetime | None = history.timestamp(0) if history.n_days else None
        self._day = -1
        paper = PaperConfig(account_id=BACKTEST_ACCOUNT, starting_cash=config.initial_cash, fees=config.fee_preset,
                            slippage=SlippageConfig(model=config.slippage_model, value=config.slippage),
                            early_assignment=config.early_assignment)
        self.exchange = PaperExchange(paper)
        if not config.risk_checks:
            log.warning("backtest: %s (--no-risk-checks): only malformed orders and the trading state deny; the "
                        "kill switch still halts on its limits", RISK_CHECKS_BYPASSED)
        #: the profile limits this run changed: the strategy's declared needs, then the config's overrides
        self.risk_limits = {**(risk_limits or {}), **config.risk_limits}
        risk = risk_config(config, history.underlying, self.risk_limits)
        if members:  # the members' yields are the run's too (risk_config names the replayed underlying only)
            risk = risk.model_copy(update={"dividend_yields": {u: config.dividend_yield for u in self.histories}})
        self.kernel = BacktestKernel(self.exchange, paper, risk, start=self._now or _EPOCH,
                                     monotonic=self._monotonic, risk_checks=config.risk_checks,
                                     underlying=history.underlying)
        self.risk = self.kernel.risk
        self._cid: dict[str, int] = {}  # option key -> contract id in the history
        self._last_mark: dict[str, float] = {}  # option key -> last valid mid (used while a quote is missing)
        self._mark_step = -1
        self._mark_cache: dict[str, float] = {}  # option key -> its mark on step ``_mark_step``
        self._delivered: dict[str, int] = {}  # stock key -> shares delivered by settlement, not yet liquidated

    def close(self) -> None:
        self.kernel.close()

    # ---- time and market ------------------------------------------------------------------------
    def now(self) -> datetime:
        assert self._now is not None, "backtest clock not started"
        return self._now

    def _monotonic(self) -> float:
        return self._now.timestamp() if self._now is not None else 0.0

    def sizing(self) -> SizingLimits:
        from engine.strategies.live import sizing_from_profile

        return sizing_from_profile(self.risk.profile)

    @property
    def denials(self) -> int:
        return self.kernel.denials

    @property
    def trading_state(self) -> TradingState:
        return self.kernel.trading_state

    @property
    def halt(self) -> dict[str, str]:
        return self.kernel.halt()

    def begin_day(self, i: int, chain: OptionChain, others: tuple[OptionChain, ...] = ()) -> list[ExecutionReport]:
        """Start step ``i``: the clock moves to its snapshot; the feed publishes the quotes (resting orders meet
        them at the paper exchange). ``others``: the members' chains of the same step."""
        self._day = i
        self._now = chain.ts
        ex = self.exchange
        ex._now = chain.ts
        h = self.history
        if i == 0 or h.dates[i] != h.dates[i - 1]:  # a new session
            ex.day_start_equity = ex.cash + Decimal(repr(round(self.position_value(i, previous=True), 2)))
            # AM-settled index options settle at the expiry day's opening print: an intraday history's first
            # snapshot of the day is nearest to it; daily closes carry no open, so the previous close stands in
            for c in (chain, *others):
                hu = self.histories[c.underlying]
                opening = c.spot if (hu.intraday or i == 0) else float(hu.spot[i - 1])
                ex.set_opening_print(c.underlying, c.ts.astimezone(NEW_YORK).date(), opening)
        return self.kernel.quotes(chain, *others)

    # ---- the order path -------------------------------------------------------------------------
    def submit(self, intent: OrderIntent) -> list[ExecutionReport]:
        """The live path: OMS → risk → approval (automatic) → router → paper broker. A refusal is a report with
        a DENIED order, worded as live (the failed checks' messages)."""
        return self.kernel.submit(intent)

    def cancel(self, order_id: str, reason: str) -> list[ExecutionReport]:
        """Cancel a working order through the OMS (as a strategy's cancel goes live)."""
        return self.kernel.run(self.kernel.oms.cancel(order_id, by="strategy", reason=reason))

    # ---- the kill switch ------------------------------------------------------------------------
    def check_limits(self, i: int) -> list[ExecutionReport]:
        """The account at the step's marks goes on the bus; the live kill switch trips on a daily-loss or
        drawdown breach (:func:`~engine.risk.kill_switch.limit_breaches`): trading is HALTED for the rest of
        the run and working orders are cancelled at once. Held positions stay (no flatten, as an automatic trip
        live) and settle at expiry."""
        return self.kernel.account()

    def trip(self, reason: str) -> list[ExecutionReport]:
        """Halt by hand (the kill switch's trip): every new order is denied; every working order is cancelled."""
        return self.kernel.trip(reason)

    def early_assignments(self, next_day) -> list[ExecutionReport]:
        """On the session before an ex-dividend date: short calls whose time value is below the dividend are
        assigned (only with ``early_assignment``; the exchange flags the fills ``early_assignment``)."""
        amount = self.config.dividends.get(next_day) if next_day is not None else None
        if not amount:
            return []
        return self._delivered_by(self.kernel.publish(self.exchange.early_assignments(
            self.history.underlying, float(amount), self.now())))

    def end_of_day(self) -> list[ExecutionReport]:
        """DAY orders placed before the close expire at the close. One placed at the closing snapshot itself
        is good for the next session, as the paper exchange rules live (``PaperExchange.on_time``): a daily
        history's snapshots are the closes, so its orders meet the next day's quotes before they expire."""
        return self.kernel.publish(self.exchange.expire_day_orders(created_before=self.now()))

    def settle(self) -> list[ExecutionReport]:
        """Expiring positions settle at intrinsic value: PM/physical from the day's close, AM from the
        opening print (exercise/assignment per the paper exchange)."""
        return self._delivered_by(self.kernel.publish(self.exchange.settle_expired(self.now())))

    def _delivered_by(self, reports: list[ExecutionReport]) -> list[ExecutionReport]:
        """Remember the shares exercise and assignment delivered: only those are liquidated, never the shares a
        strategy trades itself (a delta hedge)."""
        for r in reports:
            for f in r.fills:
                if isinstance(f.instrument, Equity) and f.kind != "trade":
                    key = f.instrument.key
                    self._delivered[key] = self._delivered.get(key, 0) + f.quantity
        return reports

    def liquidation_intents(self) -> list[OrderIntent]:
        """Market orders that sell (buy back) shares received on exercise or assignment — at most what is still
        held on that side; shares a strategy bought or sold itself stay its own."""
        out = []
        delivered, self._delivered = self._delivered, {}
        for pos in list(self.exchange.positions.values()):
            got = delivered.get(pos.instrument.key, 0)
            if isinstance(pos.instrument, Equity) and pos.quantity != 0 and got * pos.quantity > 0:
                qty = min(abs(got), abs(pos.quantity))
                side = Side.SELL if pos.quantity > 0 else Side.BUY
                out.append(OrderIntent(legs=(Leg(pos.instrument, side),), quantity=qty,
                                       order_type=OrderType.MARKET, source="backtest", strategy_id="backtest",
                                       tag=f"{pos.instrument.key}:liquidate"))
        return out

    # ---- account and marking --------------------------------------------------------------------
    def cash(self) -> Decimal:
        return self.exchange.cash

    def _history_of(self, underlying: str) -> ChainHistory:
        """The replayed history of ``underlying`` (the run's own when it is not replayed: its marks fall back)."""
        return self.histories.get(underlying, self.history)

    def _contract(self, h: ChainHistory, key: str) -> int:
        cid = self._cid.get(key)  # OCC keys name their root: one table serves every underlying
        if cid is None:
            hits = np.nonzero(h.symbols == key)[0]
            cid = int(hits[0]) if len(hits) else -1
            self._cid[key] = cid
        return cid

    def _rows(self, i: int, keys: list[str], h: ChainHistory | None = None) -> np.ndarray:
        """Rows of day ``i`` of ``h`` (default: the run's history) for option keys (−1 where the contract has no
        row that day)."""
        h = h if h is not None else self.history
        lo, hi = int(h.offsets[i]), int(h.offsets[i + 1])
        day = h.contract[lo:hi]
        cids = np.array([self._contract(h, k) for k in keys], dtype=np.int64)
        pos = np.searchsorted(day, cids)
        ok = (cids >= 0) & (pos < len(day))
        ok[ok] &= day[pos[ok]] == cids[ok]
        return np.where(ok, lo + pos, -1)

    def marks_by_symbol(self, i: int) -> dict[str, tuple[float, int]]:
        """(mark per unit, multiplier) of every position on day ``i``: option mid, else its last mid (a quote
        can be missing for a day), else intrinsic value; shares at the spot — each from its own underlying's
        history in a multi-underlying replay."""
        out: dict[str, tuple[float, int]] = {}
        if i < 0:
            return out
        # a step marks its positions up to four times (the kill switch twice, the strategy's account, the
        # close): an option's mark on the current step is computed once
        cache: dict[str, float] | None = None
        if i == self._day:
            if self._mark_step != i:
                self._mark_step, self._mark_cache = i, {}
            cache = self._mark_cache
        by_und: dict[str, list[tuple[Position, Option]]] = {}
        for p in self.exchange.positions.values():
            if isinstance(p.instrument, Option):
                if cache is not None and p.symbol in cache:
                    out[p.symbol] = (cache[p.symbol], p.multiplier)
                else:
                    by_und.setdefault(p.instrument.underlying, []).append((p, p.instrument))
        for und, opts in by_und.items():
            h = self._history_of(und)
            spot = float(h.spot[i])
            rows = self._rows(i, [p.symbol for p, _ in opts], h)
            for (p, opt), r in zip(opts, rows, strict=True):
                m = math.nan
                if r >= 0:
                    b, a = h.bid[r], h.ask[r]
                    if np.isfinite(b) and np.isfinite(a) and 0 <= b <= a:
                        m = 0.5 * (b + a)
                        self._last_mark[p.symbol] = m
                if not math.isfinite(m):
                    m = self._last_mark.get(p.symbol, math.nan)
                if not math.isfinite(m):
                    k = float(opt.strike)
                    m = max(spot - k, 0.0) if opt.is_call else max(k - spot, 0.0)
                out[p.symbol] = (m, p.multiplier)
                if cache is not None:
                    cache[p.symbol] = m
        for p in self.exchange.positions.values():
            if not isinstance(p.instrument, Option):
                out[p.symbol] = (float(self._history_of(p.symbol).spot[i]), p.multiplier)
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
        by_und: dict[str, list[Any]] = {}
        for p in opts:
            inst = p.instrument
            if isinstance(inst, Option):
                by_und.setdefault(inst.underlying, []).append(p)
        for und, group in by_und.items():  # several underlyings: Greeks in each one's own shares, added up
            for k, v in self._option_greeks(i, group, self._history_of(und)).items():
                greeks[k] += v
        ex = self.exchange
        long_v, short_v = ex._stock_values(ex.positions)
        greeks["margin"] = float(ex.requirement()) + ex._stock_margin() * (long_v + short_v)
        return value, greeks, True

    def _option_greeks(self, i: int, opts: list[Any], h: ChainHistory) -> dict[str, float]:
        from engine.pricing import bsm

        rows = self._rows(i, [p.symbol for p in opts], h)
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
